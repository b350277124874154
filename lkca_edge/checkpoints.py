"""Checkpoints: this toolkit's format (weights + config + preprocessing) and the paper's.

Both are read with ``torch.load(..., weights_only=True)`` only: a checkpoint can never run code.
The format is detected from the contents, not the file name.
"""

from __future__ import annotations

import io
import re
from dataclasses import asdict
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
    from lkca_edge.safeio import check_expansion, read_bytes

    path = Path(path)
    data = read_bytes(path, "checkpoint")  # a regular file of at most 1 GB (never a FIFO)
    if not (data[:4] == b"PK\x03\x04" or data[:1] == b"\x80"):  # torch's zip, or a legacy pickle
        raise UserError(f"{path} is not a readable checkpoint (not a PyTorch file: neither a zip "
                        f"archive nor a pickle)")
    _check_unpacked_size(data, path)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle with code, random bytes, ...
        first = first_line(exc, 200)
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            first = "it holds Python objects other than tensors, which are refused for safety"
        raise UserError(f"{path} is not a readable checkpoint ({first[:200]})") from None
    check_expansion(obj, "checkpoint", path)  # tensors are leaves; containers must stay small
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return _own_format(obj, path)
    state = _find_state_dict(obj)
    if state is None:
        raise UserError(f"{path} holds no state dict of tensors (not a model checkpoint)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith(("to_patch_embedding.", "transformer.layers.")) for k in state):
        return {"format": "official", "state_dict": _map_official(state, path)}
    return {"format": "state_dict", "state_dict": state}


def _check_unpacked_size(data: bytes, path: Path) -> None:
    """A zip checkpoint whose members claim more than the checkpoint limit unpacked is refused
    before torch allocates them (a compressed member can claim any size)."""
    import zipfile

    from lkca_edge.safeio import human_size, limit_for

    if data[:4] != b"PK\x03\x04":
        return
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            unpacked = sum(max(0, info.file_size) for info in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # torch.load names the problem
    if unpacked > limit_for("checkpoint"):
        raise UserError(f"checkpoint {path} unpacks to {human_size(unpacked)}, over the "
                        f"{human_size(limit_for('checkpoint'))} limit for a checkpoint")


def _own_format(obj: dict, path: Path) -> dict:
    where = f"checkpoint {path}"
    for key, types in (("config", dict), ("preprocessing", dict), ("state_dict", dict),
                       ("model", (str, type(None))), ("metrics", (dict, type(None)))):
        if key in ("config", "preprocessing", "state_dict") and key not in obj:
            raise UserError(f"{where} is missing its {key!r} field")
        if key in obj and not isinstance(obj[key], types):
            raise UserError(f"{where}: field {key!r} has the wrong type ({type(obj[key]).__name__})")
    config = ModelConfig.from_dict(obj["config"], where)  # sizes checked before any allocation
    try:
        prep = Preprocessing.from_dict(dict(obj["preprocessing"]))
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    except TypeError as exc:
        raise UserError(f"{where}: bad preprocessing ({exc})") from None
    state = obj["state_dict"]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UserError(f"{where}: field 'state_dict' must map names to tensors")
    return {"format": FORMAT, "state_dict": state, "config": config, "preprocessing": prep,
            "model": obj.get("model"), "metrics": obj.get("metrics") or {},
            "dataset": obj.get("dataset")}


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


def build_from_checkpoint(spec, path: str | Path, form: str | None = None, **overrides):
    """Build ``spec``'s network and fill it from ``path`` (any supported checkpoint format)."""
    from lkca_edge.zoo import resolve_config

    if spec.family == "vit" and form is not None:
        raise UserError(f"{spec.name} is a softmax-attention ViT; --form applies only to LKCA models")
    ckpt = read_checkpoint(path)
    if ckpt["format"] == FORMAT:
        if ckpt["config"].family != spec.family:
            raise UserError(f"checkpoint {path} is a {ckpt['config'].family} model ({ckpt['model']}), "
                            f"not {spec.name}")
        config = resolve_config(ckpt["config"], **overrides)
        prep = ckpt["preprocessing"]
        if prep.image_size != config.image_size:
            prep = Preprocessing.from_dict({**prep.to_dict(), "image_size": config.image_size})
    else:
        config = resolve_config(spec.config, **overrides)
        prep = Preprocessing.from_dict({**OFFICIAL_PREPROCESSING.to_dict(),
                                        "image_size": config.image_size})
    model = build_model(spec.name, config, prep, form=None)
    load_state(model, ckpt["state_dict"], path)
    if form is not None:
        model.set_form(form)
    elif config.family == "lkca":
        model.set_form("conv")  # recompute anything derived from the loaded kernels
    model.checkpoint_info = {"path": str(path), "format": ckpt["format"],
                             "metrics": ckpt.get("metrics", {}), "dataset": ckpt.get("dataset")}
    return model.eval()


def save_checkpoint(model: VisionTransformer, path: str | Path, dataset: str | None = None,
                    metrics: dict | None = None) -> Path:
    """Write weights + config + preprocessing atomically (readable with weights_only=True)."""
    payload = {
        "format": FORMAT,
        "model": model.zoo_name,
        "config": asdict(model.config),
        "preprocessing": model.preprocessing.to_dict(),
        "dataset": dataset,
        "metrics": metrics or {},
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }
    # Serialised in memory, then written by fileio: torch's zip writer turns a full disk into
    # an opaque RuntimeError, the atomic write into one clear line (and no partial file).
    buf = io.BytesIO()
    torch.save(payload, buf)
    return write_bytes(path, buf.getvalue())
