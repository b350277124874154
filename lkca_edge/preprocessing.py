"""Image preprocessing as data: it travels with every checkpoint and artifact manifest.

numpy + Pillow only (no torch), so a board with just a runtime can preprocess images too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lkca_edge.errors import UserError

RESAMPLE_MODES = ("nearest", "bilinear", "bicubic")
# What an artifact takes: "tensor", the normalised float32 (N, 3, H, W) array (the default), or
# "image", (N, H, W, 3) uint8 RGB pixels at the model's size, normalised inside the graph.
INPUT_KINDS = ("tensor", "image")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclass(frozen=True)
class Preprocessing:
    """How raw pixels become the model's float32 input."""

    image_size: int = 32
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    channel_order: str = "RGB"
    layout: str = "NCHW"
    resize: str = "bilinear"
    scale: float = 1.0 / 255.0  # raw uint8 -> [0, 1] before normalising
    labels: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"], d["labels"] = list(self.mean), list(self.std), list(self.labels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise UserError(f"unknown preprocessing field(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        for key in ("mean", "std", "labels"):
            if key in d:
                if not isinstance(d[key], (list, tuple)):
                    raise UserError(f"preprocessing {key} must be a list, got {d[key]!r}")
                d[key] = tuple(d[key])
        prep = cls(**d)
        prep.check()
        return prep

    def check(self) -> None:
        def number(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        if not isinstance(self.image_size, int) or isinstance(self.image_size, bool) or not 1 <= self.image_size <= 4096:
            raise UserError(f"preprocessing image_size must be a positive integer, got {self.image_size!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise UserError("preprocessing mean and std need 3 values (one per channel)")
        if not all(number(m) for m in self.mean) or not all(number(s) and s > 0 for s in self.std):
            raise UserError("preprocessing mean must be finite numbers and std positive ones")
        if not number(self.scale) or self.scale <= 0:
            raise UserError(f"preprocessing scale must be a positive number, got {self.scale!r}")
        if not all(isinstance(label, str) for label in self.labels):
            raise UserError("preprocessing labels must be strings")
        if self.channel_order not in ("RGB", "BGR"):
            raise UserError(f"preprocessing channel_order must be RGB or BGR, got {self.channel_order!r}")
        if self.layout not in ("NCHW",):
            raise UserError(f"preprocessing layout must be NCHW, got {self.layout!r}")
        if self.resize not in RESAMPLE_MODES:
            raise UserError(f"preprocessing resize must be one of {', '.join(RESAMPLE_MODES)}")

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8-range pixels (N, H, W, 3) RGB -> normalised float32 (N, 3, H, W)."""
        x = pixels.astype(np.float32) * np.float32(self.scale)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def pixel_affine(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(multiplier, offset) per model channel: ``normalize`` is ``pixel * m + o`` (after the
        channel reorder for BGR models)."""
        multiplier = tuple(float(self.scale / s) for s in self.std)
        offset = tuple(float(-m / s) for m, s in zip(self.mean, self.std))
        return multiplier, offset

    def pixel_mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """mean and std in raw pixel units (0..255): ``normalize`` is ``(pixel - mean) / std``,
        as TFLite metadata's NormalizationOptions and ONNX/Core ML apps state it."""
        return (tuple(float(m / self.scale) for m in self.mean),
                tuple(float(s / self.scale) for s in self.std))

    def to_pixels(self, x: np.ndarray) -> np.ndarray:
        """The inverse of ``normalize``: float32 (N, 3, H, W) -> (N, H, W, 3) uint8 RGB. Exact
        for arrays ``normalize`` made from uint8 pixels (the float error is far below 0.5)."""
        x = np.asarray(x, np.float32).transpose(0, 2, 3, 1)
        pixels = (x * np.asarray(self.std, np.float32) + np.asarray(self.mean, np.float32)) / np.float32(self.scale)
        if self.channel_order == "BGR":
            pixels = pixels[..., ::-1]
        return np.ascontiguousarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))

    def as_input(self, x: np.ndarray, kind: str) -> np.ndarray:
        """Normalised float32 (N, 3, H, W) arrays as an artifact of input ``kind`` takes them."""
        if kind == "image":
            return self.to_pixels(x)
        if kind == "tensor":
            return np.ascontiguousarray(x, np.float32)
        raise UserError(f"unknown input kind {kind!r} (valid: {', '.join(INPUT_KINDS)})")

    def resize_rgb(self, image) -> np.ndarray:
        """A PIL image of any mode and size -> (H, W, 3) uint8 RGB at the model's size."""
        from PIL import Image

        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            # Composite transparency on black, the digits' background.
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            image = Image.alpha_composite(background, rgba)
        image = image.convert("RGB")
        size = (self.image_size, self.image_size)
        if image.size != size:
            image = image.resize(size, getattr(Image.Resampling, self.resize.upper()))
        return np.asarray(image, dtype=np.uint8)

    def load_rgb(self, path: str | Path) -> np.ndarray:
        """Read an image file -> (H, W, 3) uint8 RGB at the model's size. One clear error on bad
        files."""
        from PIL import Image, UnidentifiedImageError

        path = Path(path)
        if not path.exists():
            raise UserError(f"image not found: {path}")
        if path.is_dir():
            raise UserError(f"{path} is a directory, not an image")
        try:
            with Image.open(path) as im:
                im.load()
                return self.resize_rgb(im)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise UserError(f"{path} is not a readable image ({type(exc).__name__}: {exc})") from None

    def load_image(self, path: str | Path) -> np.ndarray:
        """Read an image file -> (1, 3, H, W) float32 model input. One clear error on bad files."""
        return self.normalize(self.load_rgb(path)[None])
