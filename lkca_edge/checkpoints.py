"""Checkpoints: this toolkit's format (weights + config + preprocessing) and the paper's.

Both are read with ``torch.load(..., weights_only=True)`` only: a checkpoint can never run code.
The format is detected from the contents, not the file name.
"""

from __future__ import annotations

import io
import re
from dataclasses import asdict, fields
from pathlib import Path

import torch

from lkca_edge.errors import UserError, first_line
from lkca_edge.fileio import write_bytes
from lkca_edge.models import VisionTransformer, build_model
from lkca_edge.models_config import ModelConfig
from lkca_edge.preprocessing import Preprocessing

FORMAT = "lkca-edge-checkpoint/1"

# The paper's official trainer (a vit-pytorch descendant) names parameters like this.
OFFICIAL_KEY_MAP: tuple[tuple[str, str], ...] = (
    (r"to_patch_embedding\.1\.(weight|bias)", r"patch_embed.\1"),
    (r"pos_embedding", r"pos_embedding"),
    (r"transformer\.layers\.(\d+)\.0\.norm\.(weight|bias)", r"blocks.\1.mixer_norm.\2"),
    (r"transformer\.layers\.(\d+)\.0\.fn\.to_v\.weight", r"blocks.\1.mixer.to_v.weight"),
    (r"transformer\.layers\.(\d+)\.0\.fn\.to_qkv\.weight", r"blocks.\1.mixer.to_qkv.weight"),
    (r"transformer\.layers\.(\d+)\.0\.fn\.to_out\.0\.(weight|bias)", r"blocks.\1.mixer.to_out.\2"),
    (r"transformer\.layers\.(\d+)\.0\.fn\.dynamicqk", r"blocks.\1.mixer.kernel"),
    (r"transformer\.layers\.(\d+)\.1\.norm\.(weight|bias)", r"blocks.\1.mlp_norm.\2"),
    (r"transformer\.layers\.(\d+)\.1\.fn\.net\.0\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"transformer\.layers\.(\d+)\.1\.fn\.net\.3\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"mlp_head\.0\.(weight|bias)", r"head_norm.\1"),
    (r"mlp_head\.1\.(weight|bias)", r"head.\1"),
)
OFFICIAL_UNUSED = ("cls_token",)
# The paper's ImageNet-style CIFAR normalisation; an official checkpoint carries none.
OFFICIAL_PREPROCESSING = Preprocessing(
    image_size=32, mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010))


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file safely -> {'format', 'state_dict', 'config'?, 'preprocessing'?, ...}."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a directory, not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    if not (data[:4] == b"PK\x03\x04" or data[:1] == b"\x80"):  # torch's zip, or a legacy pickle
        raise UserError(f"{path} is not a readable checkpoint (not a PyTorch file: neither a zip "
                        f"archive nor a pickle)")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle with code, random bytes, ...
        first = first_line(exc, 200)
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            first = "it holds Python objects other than tensors, which are refused for safety"
        raise UserError(f"{path} is not a readable checkpoint ({first[:200]})") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return _own_format(obj, path)
    state = _find_state_dict(obj)
    if state is None:
        raise UserError(f"{path} holds no state dict of tensors (not a model checkpoint)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith(("to_patch_embedding.", "transformer.layers.")) for k in state):
        return {"format": "official", "state_dict": _map_official(state, path)}
    return {"format": "state_dict", "state_dict": state}


def _own_format(obj: dict, path: Path) -> dict:
    try:
        config_fields = {f.name for f in fields(ModelConfig)}
        raw = dict(obj["config"])
        unknown = set(raw) - config_fields
        if unknown:
            raise UserError(f"checkpoint {path}: unknown config field(s) {sorted(unknown)}")
        config = ModelConfig(**raw)
        prep = Preprocessing.from_dict(dict(obj["preprocessing"]))
        state = obj["state_dict"]
    except (KeyError, TypeError) as exc:
        raise UserError(f"checkpoint {path} is missing or has a bad field: {exc}") from None
    data = obj.get("data", obj.get("dataset"))  # "dataset": a spec string, in older files
    if data is not None:
        from lkca_edge.datarecord import DataRecord

        data = DataRecord.from_dict(data, f"checkpoint {path}")
    return {"format": FORMAT, "state_dict": state, "config": config, "preprocessing": prep,
            "model": obj.get("model"), "metrics": obj.get("metrics", {}), "data": data}


def _find_state_dict(obj) -> dict | None:
    def is_state(d) -> bool:
        return isinstance(d, dict) and d and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())

    if is_state(obj):
        return obj
    if isinstance(obj, dict):
        for key in ("model", "net", "state_dict", "model_state_dict"):
            if is_state(obj.get(key)):
                return obj[key]
    return None


def _map_official(state: dict, path: Path) -> dict:
    mapped = {}
    for key, tensor in state.items():
        if key in OFFICIAL_UNUSED:
            continue
        for pattern, repl in OFFICIAL_KEY_MAP:
            if re.fullmatch(pattern, key):
                mapped[re.sub(pattern, repl, key)] = tensor
                break
        else:
            raise UserError(f"{path}: unexpected tensor {key!r} for the paper's LKCA/ViT layout")
    return mapped


def load_state(model: VisionTransformer, state: dict, source: str | Path) -> None:
    """Copy weights into ``model``; refuse with the first mismatching tensor and both shapes."""
    own = model.state_dict()
    state = dict(state)
    pos = state.get("pos_embedding")
    if pos is not None and pos.ndim == 3 and pos.shape[1] == own["pos_embedding"].shape[1] + 1:
        state["pos_embedding"] = pos[:, : own["pos_embedding"].shape[1]]  # slot of an unused class token
    for key, expected in own.items():
        if key not in state:
            raise UserError(f"checkpoint {source} does not fit {model.zoo_name}: "
                            f"tensor {key} (shape {tuple(expected.shape)}) is missing")
        got = state[key]
        if tuple(got.shape) != tuple(expected.shape):
            raise UserError(f"checkpoint {source} does not fit {model.zoo_name}: tensor {key} has "
                            f"shape {tuple(got.shape)}, the model needs {tuple(expected.shape)}")
    extra = sorted(set(state) - set(own))
    if extra:
        raise UserError(f"checkpoint {source} does not fit {model.zoo_name}: "
                        f"unexpected tensor {extra[0]} (shape {tuple(state[extra[0]].shape)})")
    model.load_state_dict({k: state[k].float() for k in own}, strict=True)


ARCHITECTURE = ("family", "dim", "depth", "heads", "mlp_ratio")  # what a name must agree on


def infer_config(state: dict, source: str | Path, heads: int | None = None) -> ModelConfig:
    """The architecture of a state dict in our layout (the paper's is mapped to it first),
    read from its tensor shapes: a checkpoint of any size loads with its own config."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise UserError(f"checkpoint {source}: tensor {key} is missing, so its architecture "
                            f"cannot be read from it")
        return tuple(state[key].shape)

    dim, patch_dim = shape("patch_embed.weight")
    tokens = shape("pos_embedding")[1]
    depth = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1)
    if depth < 1:
        raise UserError(f"checkpoint {source} holds no transformer blocks")
    hidden = shape("blocks.0.mlp.fc1.weight")[0]
    num_classes = shape("head.weight")[0]
    lkca = "blocks.0.mixer.kernel" in state
    if lkca:
        side = shape("blocks.0.mixer.kernel")[-1]
        grid = (side + 1) // 2
        if grid * grid not in (tokens, tokens - 1):
            raise UserError(f"checkpoint {source}: its {side}x{side} kernel and {tokens} positions "
                            f"disagree about the token grid")
    else:
        grid = int(round((tokens - (0 if int(tokens ** 0.5) ** 2 == tokens else 1)) ** 0.5))
        if heads is None:
            raise UserError(f"checkpoint {source} is a softmax ViT in a layout that does not record "
                            f"its number of heads; name the zoo model it belongs to (e.g. vit-1m)")
    in_channels = 3
    patch = int(round((patch_dim / in_channels) ** 0.5))
    if patch * patch * in_channels != patch_dim or hidden % dim:
        raise UserError(f"checkpoint {source}: patch embedding {patch_dim} or MLP width {hidden} "
                        f"does not fit an RGB LKCA/ViT of dim {dim}")
    config = ModelConfig("lkca" if lkca else "vit", dim=dim, depth=depth, heads=1 if lkca else heads,
                         mlp_ratio=hidden // dim, image_size=grid * patch, patch_size=patch,
                         in_channels=in_channels, num_classes=num_classes)
    try:
        config.validate()
    except ValueError as exc:
        raise UserError(f"checkpoint {source}: {exc}") from None
    return config


def model_name_for(config: ModelConfig, recorded: str | None = None) -> str:
    """The zoo name whose architecture this is (the recorded one first), else a descriptive one."""
    from lkca_edge.zoo import get_spec, list_models

    candidates = ([recorded] if recorded else []) + [s.name for s in list_models()]
    for name in candidates:
        try:
            spec = get_spec(name)
        except UserError:
            continue
        if all(getattr(spec.config, f) == getattr(config, f) for f in ARCHITECTURE):
            return spec.name
    return recorded or f"{config.family}-d{config.dim}x{config.depth}"


def _check_name(spec, config: ModelConfig, path) -> None:
    """A zoo name given with a checkpoint must be the checkpoint's architecture."""
    differ = [f for f in ARCHITECTURE if getattr(spec.config, f) != getattr(config, f)]
    if differ:
        have = ", ".join(f"{f} {getattr(config, f)}" for f in ARCHITECTURE[1:]
                         if f != "heads" or config.family == "vit")
        want = ", ".join(f"{f} {getattr(spec.config, f)}" for f in differ)
        raise UserError(f"checkpoint {path} holds a {config.family} model with {have} "
                        f"({model_name_for(config)}), not {spec.name} ({want}); drop the model "
                        f"name to use the checkpoint's own architecture")


def _check_overrides(config: ModelConfig, overrides: dict, path) -> None:
    """Overrides equal to the checkpoint's own values are fine; others cannot fit its weights."""
    for key, value in overrides.items():
        if value is not None and getattr(config, key) != value:
            raise UserError(f"checkpoint {path} is for {key.replace('_', ' ')} "
                            f"{getattr(config, key)}; --{key.replace('_', '-')} {value} does not fit "
                            f"its weights (train a new model with it, or drop the option)")


def build_from_checkpoint(path: str | Path, spec=None, form: str | None = None, **overrides):
    """A network built from ``path`` (any supported format) with the checkpoint's own
    architecture; ``spec`` (a zoo entry the user named) must agree with it."""
    ckpt = read_checkpoint(path)
    if ckpt["format"] == FORMAT:
        config, prep, recorded = ckpt["config"], ckpt["preprocessing"], ckpt.get("model")
        try:
            config.validate()
        except ValueError as exc:
            raise UserError(f"checkpoint {path}: {exc}") from None
    else:
        heads = spec.config.heads if spec is not None and spec.family == "vit" else None
        config = infer_config(ckpt["state_dict"], path, heads=heads)
        prep = Preprocessing.from_dict({**OFFICIAL_PREPROCESSING.to_dict(),
                                        "image_size": config.image_size})
        recorded = None
    if spec is not None:
        _check_name(spec, config, path)
    _check_overrides(config, overrides, path)
    if config.family == "vit" and form is not None:
        raise UserError(f"checkpoint {path} is a softmax-attention ViT; --form applies only to LKCA models")
    if prep.image_size != config.image_size:
        prep = Preprocessing.from_dict({**prep.to_dict(), "image_size": config.image_size})
    name = spec.name if spec is not None else model_name_for(config, recorded)
    model = build_model(name, config, prep, form=None)
    load_state(model, ckpt["state_dict"], path)
    if form is not None:
        model.set_form(form)
    elif config.family == "lkca":
        model.set_form("conv")  # recompute anything derived from the loaded kernels
    model.checkpoint_info = {"path": str(Path(path).resolve()), "format": ckpt["format"],
                             "metrics": ckpt.get("metrics", {})}
    model.data_record = ckpt.get("data")
    model.trained = True
    return model.eval()


def save_checkpoint(model: VisionTransformer, path: str | Path, data=None,
                    metrics: dict | None = None) -> Path:
    """Write weights + config + preprocessing atomically (readable with weights_only=True)."""
    payload = {
        "format": FORMAT,
        "model": model.zoo_name,
        "config": asdict(model.config),
        "preprocessing": model.preprocessing.to_dict(),
        "data": data.to_dict() if hasattr(data, "to_dict") else data,
        "metrics": metrics or {},
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }
    # Serialised in memory, then written by fileio: torch's zip writer turns a full disk into
    # an opaque RuntimeError, the atomic write into one clear line (and no partial file).
    buf = io.BytesIO()
    torch.save(payload, buf)
    return write_bytes(path, buf.getvalue())
