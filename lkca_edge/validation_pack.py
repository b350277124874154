"""The validation pack: ``<artifact>.validation.npz`` beside every exported artifact.

It holds the held-out images the export validated on (uint8 RGB at the model's input size, so
the artifact's own preprocessing recreates the exact float inputs), their labels and the fp32
source model's reference logits. With it, ``validate`` recomputes the gate wherever the runtime
runs, with no torch and no data set on the device. The manifest records its sha256, size and
the data it came from. numpy only; read with ``allow_pickle=False`` and bounded member sizes.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lkca_edge.errors import UserError

SUFFIX = ".validation.npz"
MAX_PIXEL_BYTES = 3 << 20     # the images a pack holds: at most 3 MiB of uint8 pixels
MAX_IMAGES = 1000
MAX_FILE_BYTES = 16 << 20     # refused beyond this on reading (packs are a few MB at most)
MEMBERS = {"pixels": np.uint8, "labels": np.int64, "reference_logits": np.float32}


@dataclass
class ValidationPack:
    pixels: np.ndarray            # (N, H, W, 3) uint8 RGB
    labels: np.ndarray            # (N,) int64 class indices of the model
    reference_logits: np.ndarray  # (N, classes) float32 of the fp32 source model

    def images(self, preprocessing) -> np.ndarray:
        """The float32 (N, 3, H, W) inputs, by the artifact's own preprocessing."""
        return preprocessing.normalize(self.pixels)

    def __len__(self) -> int:
        return len(self.labels)


def pack_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SUFFIX)


def capacity(image_size: int) -> int:
    """How many images of this size one pack holds."""
    return max(1, min(MAX_IMAGES, MAX_PIXEL_BYTES // (image_size * image_size * 3)))


def pack_bytes(pixels: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> bytes:
    """The .npz bytes of a pack (compressed; deterministic for the same arrays)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, pixels=np.ascontiguousarray(pixels, np.uint8),
                        labels=np.ascontiguousarray(labels, np.int64),
                        reference_logits=np.ascontiguousarray(reference, np.float32))
    return buf.getvalue()


def read_pack(artifact: str | Path, entry: dict) -> ValidationPack:
    """The pack beside ``artifact``, checked against the manifest's ``validation_pack`` entry
    (sha256) and for shape and type; one clear line when it is missing or not right."""
    path = pack_path(artifact)
    if not path.is_file():
        raise UserError(f"the validation pack {path.name} beside {Path(artifact).name} is missing; "
                        f"re-export the artifact, or pass --dataset SPEC")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise UserError(f"{path} is {size} bytes, over the {MAX_FILE_BYTES >> 20} MiB a validation "
                        f"pack may have")
    data = path.read_bytes()
    if entry.get("sha256") and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise UserError(f"{path} does not match its manifest (sha256 differs): the validation pack "
                        f"changed since export; re-export the artifact")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():  # bounded: no member may expand past the cap
                if info.file_size > MAX_FILE_BYTES * 4:
                    raise UserError(f"{path}: member {info.filename} expands to {info.file_size} bytes")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in MEMBERS}
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file raises anything
        raise UserError(f"{path} is not a readable validation pack ({type(exc).__name__})") from None
    for name, dtype in MEMBERS.items():
        if arrays[name].dtype != dtype:
            raise UserError(f"{path}: {name} is {arrays[name].dtype}, expected {np.dtype(dtype).name}")
    pixels, labels, reference = arrays["pixels"], arrays["labels"], arrays["reference_logits"]
    n = len(labels)
    if pixels.ndim != 4 or pixels.shape[-1] != 3 or len(pixels) != n or reference.ndim != 2 \
            or len(reference) != n or n == 0:
        raise UserError(f"{path}: inconsistent shapes (pixels {list(pixels.shape)}, labels "
                        f"{list(labels.shape)}, reference_logits {list(reference.shape)})")
    if labels.min() < 0 or labels.max() >= reference.shape[1]:
        raise UserError(f"{path}: labels outside the model's {reference.shape[1]} classes")
    return ValidationPack(pixels, labels, reference)
