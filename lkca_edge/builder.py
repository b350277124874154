"""Building networks: zoo names, checkpoints and the source an artifact records.

``create_model`` is the one way a model comes to be (``lkca_edge.create_model``, the CLI, the
export pipeline, the bench); ``model_source`` / ``rebuild_source_model`` turn a model into the
record a manifest keeps and back.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lkca_edge.checkpoints import build_from_checkpoint
from lkca_edge.errors import UserError
from lkca_edge.manifest import sha256_of
from lkca_edge.models import build_model
from lkca_edge.preprocessing import Preprocessing
from lkca_edge.zoo import get_spec, resolve_config

if TYPE_CHECKING:
    from lkca_edge.manifest import Manifest


def create_model(name: str, checkpoint: str | Path | None = None, pretrained: bool | str = False,
                 form: str | None = None, **overrides):
    """Build a zoo model in eval mode; input (N, C, H, W) float32, output logits.

    ``checkpoint`` loads weights from a file (this toolkit's format, or the paper's official
    trainer's, detected by itself); ``pretrained=True`` (or a tag) loads the weights the zoo
    ships. ``form`` picks the LKCA operator form (conv, toeplitz, frozen, frozen-linear, fused).
    The model's ``preprocessing`` attribute says how images must be prepared for it.
    """
    spec = get_spec(name)
    if checkpoint is not None and pretrained:
        raise UserError("give either a checkpoint or pretrained weights, not both")
    if pretrained:
        checkpoint = spec.get_weights(pretrained).path
    if checkpoint is not None:
        return build_from_checkpoint(spec, checkpoint, form=form, **overrides)
    config = resolve_config(spec.config, **overrides)
    prep = Preprocessing(image_size=config.image_size)
    return build_model(spec.name, config, prep, form=form)


def build_model_from(name: str, checkpoint: str | None, overrides: dict, form: str | None = None):
    """The named zoo model from ``checkpoint``, else its shipped weights when it has some."""
    spec = get_spec(name)
    pretrained = checkpoint is None and bool(spec.weights)
    if pretrained and any(overrides.get(k) is not None for k in ("image_size", "patch_size", "num_classes")):
        pretrained = False  # the shipped weights are for the default config only
    return create_model(name, checkpoint=checkpoint, pretrained=pretrained, form=form, **overrides)


def model_source(model) -> dict:
    """How to rebuild the torch source model later (for `validate`)."""
    info = getattr(model, "checkpoint_info", {}) or {}
    spec = get_spec(model.zoo_name)
    source: dict = {"checkpoint": None, "pretrained": None, "format": info.get("format")}
    path = info.get("path")
    for w in spec.weights:
        if path and Path(path).resolve() == w.path.resolve():
            source["pretrained"] = w.tag
            break
    else:
        if path:
            source["checkpoint"] = str(Path(path).resolve())
    source["checkpoint_sha256"] = sha256_of(path) if path else None
    c = model.config
    source["overrides"] = {"image_size": c.image_size, "patch_size": c.patch_size,
                           "num_classes": c.num_classes}
    return source


def rebuild_source_model(manifest: Manifest):
    """The torch fp32 model an artifact came from, in the artifact's form."""
    src = manifest.source
    if src.get("checkpoint") and not Path(src["checkpoint"]).exists():
        raise UserError(f"the source checkpoint {src['checkpoint']} of this artifact is gone; "
                        f"cannot rebuild the fp32 reference")
    model = create_model(manifest.model, checkpoint=src.get("checkpoint"),
                         pretrained=src.get("pretrained") or False, form=manifest.form,
                         **src.get("overrides", {}))
    path = (getattr(model, "checkpoint_info", {}) or {}).get("path")
    if src.get("checkpoint_sha256") and path and sha256_of(path) != src["checkpoint_sha256"]:
        raise UserError(f"the source weights ({path}) changed since this artifact was exported "
                        f"(sha256 differs): re-export it to validate against them")
    return model
