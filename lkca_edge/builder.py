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


def create_model(name: str | None = None, checkpoint: str | Path | None = None,
                 pretrained: bool | str = False, form: str | None = None, **overrides):
    """Build a model in eval mode; input (N, C, H, W) float32, output logits.

    ``name`` is a zoo entry (optional when a ``checkpoint`` says what it is); ``checkpoint``
    loads weights from a file (this toolkit's format, or the paper's official trainer's, detected
    by itself) with the checkpoint's own architecture, which a given name must match;
    ``pretrained=True`` (or a tag) loads the weights the zoo ships. ``form`` picks the LKCA
    operator form (conv, toeplitz, frozen, frozen-linear, fused). The model carries
    ``preprocessing`` (how images must be prepared, with its label names), ``data_record`` (the
    data it was trained on, when known) and ``trained`` (False for a fresh zoo config).
    """
    spec = get_spec(name) if name is not None else None
    if checkpoint is not None and pretrained:
        raise UserError("give either a checkpoint or pretrained weights, not both")
    if pretrained:
        if spec is None:
            raise UserError("pretrained weights need a zoo model name")
        weights = spec.get_weights(pretrained)
        model = build_from_checkpoint(weights.path, spec, form=form, **overrides)
        if model.data_record is None:
            from lkca_edge.datarecord import DataRecord

            model.data_record = DataRecord.from_dict(weights.dataset)
        return model
    if checkpoint is not None:
        return build_from_checkpoint(checkpoint, spec, form=form, **overrides)
    if spec is None:
        raise UserError("name a zoo model (see `lkca-edge zoo`) or give a checkpoint")
    config = resolve_config(spec.config, **overrides)
    prep = Preprocessing(image_size=config.image_size)
    model = build_model(spec.name, config, prep, form=form)
    model.data_record, model.trained = None, False
    return model


def build_model_from(name: str | None, checkpoint: str | None, overrides: dict,
                     form: str | None = None):
    """The model a command means: ``checkpoint`` if given (``name`` optional), else the zoo
    entry's shipped weights when it has some and the overrides fit them, else a fresh config."""
    if checkpoint is not None:
        return create_model(name, checkpoint=checkpoint, form=form, **overrides)
    if name is None:
        raise UserError("name a zoo model (see `lkca-edge zoo`) or give --checkpoint")
    spec = get_spec(name)
    given = {k: v for k, v in overrides.items() if v is not None}
    fits = all(getattr(spec.config, k) == v for k, v in given.items())
    if spec.weights and fits:
        return create_model(name, pretrained=True, form=form)
    return create_model(name, form=form, **overrides)


def model_source(model) -> dict:
    """How to rebuild the torch source model later (for `validate --dataset`)."""
    info = getattr(model, "checkpoint_info", {}) or {}
    source: dict = {"checkpoint": None, "pretrained": None, "format": info.get("format"),
                    "zoo": None}
    try:
        spec = get_spec(model.zoo_name)
        source["zoo"] = spec.name
    except (UserError, AttributeError):
        spec = None
    path = info.get("path")
    for w in (spec.weights if spec is not None else ()):
        if path and Path(path).resolve() == w.path.resolve():
            source["pretrained"] = w.tag
            break
    else:
        if path:
            source["checkpoint"] = str(Path(path).resolve())
    if not hasattr(model, "config"):  # a user's own torch module (the Python API)
        source["module"] = f"{type(model).__module__}.{type(model).__name__}"
        return source
    source["checkpoint_sha256"] = sha256_of(path) if path else None
    c = model.config
    source["overrides"] = {"image_size": c.image_size, "patch_size": c.patch_size,
                           "num_classes": c.num_classes}
    return source


def rebuild_source_model(manifest: Manifest):
    """The torch fp32 model an artifact came from, in the artifact's form."""
    src = manifest.source
    if src.get("module"):
        raise UserError(f"this artifact was exported from a Python module ({src['module']}), "
                        f"which cannot be rebuilt: validate it on its validation pack (no --dataset)")
    if src.get("checkpoint") and not Path(src["checkpoint"]).exists():
        raise UserError(f"the source checkpoint {src['checkpoint']} of this artifact is gone; "
                        f"cannot rebuild the fp32 reference")
    zoo = src.get("zoo", manifest.model)
    if src.get("checkpoint"):
        model = create_model(src.get("zoo"), checkpoint=src["checkpoint"], form=manifest.form)
    else:
        model = create_model(zoo, pretrained=src.get("pretrained") or False, form=manifest.form,
                             **({} if src.get("pretrained") else src.get("overrides", {})))
    path = (getattr(model, "checkpoint_info", {}) or {}).get("path")
    if src.get("checkpoint_sha256") and path and sha256_of(path) != src["checkpoint_sha256"]:
        raise UserError(f"the source weights ({path}) changed since this artifact was exported "
                        f"(sha256 differs): re-export it to validate against them")
    return model
