"""Architecture configs and their analytic sizes (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters of one network (all a checkpoint needs to rebuild it)."""

    family: str  # "lkca" or "vit"
    dim: int
    depth: int
    heads: int = 1
    mlp_ratio: int = 2
    image_size: int = 32
    patch_size: int = 4
    in_channels: int = 3
    num_classes: int = 10

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid**2

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.patch_size**2

    def validate(self) -> None:
        if self.family not in ("lkca", "vit"):
            raise ValueError(f"unknown model family {self.family!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.family == "vit" and self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        for field in ("dim", "depth", "heads", "mlp_ratio", "image_size", "patch_size",
                      "in_channels", "num_classes"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")


def count_params(config: ModelConfig) -> int:
    """Parameter count of a config, computed without building the network."""
    c = config
    hidden = c.dim * c.mlp_ratio
    per_block = 4 * c.dim + (c.dim * hidden + hidden) + (hidden * c.dim + c.dim)
    if c.family == "lkca":
        per_block += c.dim * c.dim + (c.dim * c.dim + c.dim) + (2 * c.grid - 1) ** 2
    else:
        per_block += c.dim * 3 * c.dim + (c.dim * c.dim + c.dim)
    head = 2 * c.dim + c.dim * c.num_classes + c.num_classes
    embed = c.patch_dim * c.dim + c.dim + c.num_tokens * c.dim
    return embed + c.depth * per_block + head


def count_macs(config: ModelConfig, form: str | None = None) -> int:
    """Multiply-accumulates of one image: matmuls and the dense token mixing (norms excluded).

    Form ``fused`` merges each LKCA mixer's two dim x dim Linears into one, so it executes one
    dim x dim matmul fewer per block; every other form executes the model's nominal count.
    """
    c = config
    if form == "fused" and c.family == "lkca":
        return count_macs(c) - c.depth * c.num_tokens * c.dim * c.dim
    n = c.num_tokens
    hidden = c.dim * c.mlp_ratio
    if c.family == "lkca":
        mixer = 2 * n * c.dim * c.dim + n * n * c.dim
    else:
        mixer = 4 * n * c.dim * c.dim + 2 * n * n * c.dim
    per_block = mixer + 2 * n * c.dim * hidden
    return n * c.patch_dim * c.dim + c.depth * per_block + c.dim * c.num_classes
