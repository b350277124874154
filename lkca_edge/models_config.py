"""Architecture configs and their analytic sizes (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from lkca_edge.errors import UserError, brief

# The sizes a config may have, checked before anything is allocated (whether the config comes
# from flags, a checkpoint or a manifest). The zoo's largest model (lkca-12m) is far inside them.
LIMITS: dict[str, tuple[int, int]] = {
    "dim": (1, 4096),
    "depth": (1, 64),
    "heads": (1, 64),
    "mlp_ratio": (1, 16),
    "image_size": (1, 512),
    "patch_size": (1, 512),
    "in_channels": (1, 4),
    "num_classes": (1, 100_000),
}
MAX_TOKENS = 1024            # (image_size / patch_size) ** 2: the token-mixing matrices are n x n
MAX_PARAMS = 100_000_000     # 400 MB of fp32 weights
FAMILIES = ("lkca", "vit")


class ConfigError(UserError, ValueError):
    """A model config that cannot be built (a UserError line; a ValueError for older callers)."""


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

    def validate(self, source: str | None = None) -> None:
        """Refuse a config of the wrong types or sizes before anything is allocated;
        ``source`` (a file) is named in the message."""
        where = f"{source}: " if source else ""

        def bad(text: str) -> ConfigError:
            return ConfigError(f"{where}model config {text}")

        if not isinstance(self.family, str) or self.family not in FAMILIES:
            raise bad(f"family must be one of {', '.join(FAMILIES)}, got {brief(self.family)}")
        for name, (lo, hi) in LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise bad(f"{name} must be an integer, got {brief(value)}")
            if not lo <= value <= hi:
                raise bad(f"{name} must be between {lo} and {hi:,}, got {value:,}")
        if self.image_size % self.patch_size:
            raise bad(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.family == "vit" and self.dim % self.heads:
            raise bad(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.num_tokens > MAX_TOKENS:
            raise bad(f"has {self.num_tokens:,} tokens ((image_size / patch_size) ** 2 = "
                      f"({self.image_size} / {self.patch_size}) ** 2), over the limit of "
                      f"{MAX_TOKENS:,}; use a larger patch_size")
        params = count_params(self)
        if params > MAX_PARAMS:
            raise bad(f"has {params:,} parameters, over the limit of {MAX_PARAMS:,}")

    @classmethod
    def from_dict(cls, data, source: str | None = None) -> "ModelConfig":
        """A validated config from a checkpoint's or manifest's ``config`` mapping."""
        where = f"{source}: " if source else ""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}model config must be a mapping, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(brief(k) for k in data if k not in names)
        if unknown:
            raise ConfigError(f"{where}unknown model config field(s) {', '.join(unknown)}")
        missing = [n for n in ("family", "dim", "depth") if n not in data]
        if missing:
            raise ConfigError(f"{where}model config lacks {', '.join(missing)}")
        config = cls(**data)
        config.validate(source)
        return config


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
