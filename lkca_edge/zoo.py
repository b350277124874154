"""The LKCA model zoo: a registry of named configs, each with the weights it ships.

A zoo entry is data (a ``ModelConfig``, aliases, weights with their metadata) plus one builder,
in the manner of timm's ``register_model`` and torchvision's weight enums. This module imports
no torch at all, so ``lkca-edge zoo`` and ``--help`` stay instant; ``lkca_edge.builder`` builds
the networks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from lkca_edge.errors import UserError, unknown_name
from lkca_edge.models_config import ModelConfig, count_macs, count_params
from lkca_edge.preprocessing import Preprocessing

WEIGHTS_DIR = Path(__file__).parent / "weights"

DIGITS_PREPROCESSING = Preprocessing(
    image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    labels=tuple(str(i) for i in range(10)),
)


@dataclass(frozen=True)
class Weights:
    """Trained weights shipped with the package, and what they were trained and measured on."""

    tag: str
    file: str
    dataset: str
    test_accuracy: float
    preprocessing: Preprocessing
    recipe: str = ""

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config: ModelConfig
    aliases: tuple[str, ...] = ()
    weights: tuple[Weights, ...] = ()
    description: str = ""

    @property
    def family(self) -> str:
        return self.config.family

    def get_weights(self, tag: str | bool) -> Weights:
        if not self.weights:
            raise UserError(f"{self.name} ships no pretrained weights; train it with `lkca-edge train {self.name}`")
        if tag is True or tag == "default":
            return self.weights[0]
        for w in self.weights:
            if w.tag == tag:
                return w
        raise unknown_name(f"weights for {self.name}", str(tag), [w.tag for w in self.weights])

    def summary(self) -> dict:
        c = self.config
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "family": c.family,
            "params": count_params(c),
            "macs": count_macs(c),
            "dim": c.dim,
            "depth": c.depth,
            "heads": c.heads,
            "mlp_ratio": c.mlp_ratio,
            "image_size": c.image_size,
            "patch_size": c.patch_size,
            "num_classes": c.num_classes,
            "weights": [w.tag for w in self.weights],
        }


_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a zoo entry; its name and aliases must be new."""
    for key in (spec.name, *spec.aliases):
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(f"model name {key!r} is already registered")
    _REGISTRY[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


def list_models() -> list[ModelSpec]:
    return list(_REGISTRY.values())


def model_names(with_aliases: bool = False) -> list[str]:
    return list(_REGISTRY) + (list(_ALIASES) if with_aliases else [])


def get_spec(name: str) -> ModelSpec:
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise unknown_name("model", name, model_names(with_aliases=True))
    return _REGISTRY[key]


CONFIG_OVERRIDES = ("image_size", "patch_size", "in_channels", "num_classes")


def resolve_config(spec_config: ModelConfig, **overrides) -> ModelConfig:
    """Apply user overrides; the patch size follows the image size (patch 4 at 32 px, 8 at 64)."""
    unknown = set(overrides) - set(CONFIG_OVERRIDES)
    if unknown:
        raise UserError(f"unknown model override(s): {', '.join(sorted(unknown))} "
                        f"(valid: {', '.join(CONFIG_OVERRIDES)}, form)")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "image_size" in overrides and "patch_size" not in overrides:
        overrides["patch_size"] = max(1, overrides["image_size"] // 8)
    config = replace(spec_config, **overrides)
    try:
        config.validate()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return config


def _lkca(name: str, dim: int, depth: int, mlp_ratio: int = 2, aliases: tuple[str, ...] = (),
          weights: tuple[Weights, ...] = ()) -> ModelSpec:
    return register_model(ModelSpec(
        name=name, config=ModelConfig("lkca", dim=dim, depth=depth, mlp_ratio=mlp_ratio),
        aliases=aliases, weights=weights,
        description=f"LKCA, dim {dim}, depth {depth}, one shared large kernel per block"))


def _vit(name: str, dim: int, depth: int, heads: int) -> ModelSpec:
    return register_model(ModelSpec(
        name=name, config=ModelConfig("vit", dim=dim, depth=depth, heads=heads),
        description=f"softmax-attention ViT baseline, dim {dim}, depth {depth}, {heads} heads"))


# Trained with `lkca-edge train lkca-1m --dataset digits --epochs 20 --out DIR` (the default
# recipe: AdamW 2e-3, batch 32, 1 warm-up epoch, cosine, +-2 px shifts, seed 0); the training
# log is weights/lkca-1m-digits.metrics.json. Accuracy on the 359-image seeded test split.
LKCA_1M_DIGITS = Weights(
    tag="digits", file="lkca-1m-digits.pt", dataset="digits", test_accuracy=0.9721,
    preprocessing=DIGITS_PREPROCESSING,
    recipe="lkca-edge train lkca-1m --dataset digits --epochs 20",
)

# The paper's trainer configs (arXiv 2401.05738); 32 px, patch 4, 3 channels, 10 classes.
_lkca("lkca-0.5m", 100, 8)
_lkca("lkca-1m", 136, 9, aliases=("lkca-t",), weights=(LKCA_1M_DIGITS,))
_lkca("lkca-2m", 192, 9)
_lkca("lkca-4m", 246, 11)
_lkca("lkca-8m", 306, 14)
_lkca("lkca-12m", 360, 12, mlp_ratio=3, aliases=("lkca-l",))
_lkca("lkca-base", 210, 10, aliases=("lkca-b",))
_vit("vit-0.5m", 120, 4, 4)
_vit("vit-1m", 136, 7, 8)
_vit("vit-2m", 200, 6, 8)
_vit("vit-4m", 264, 7, 8)
_vit("vit-8m", 312, 10, 8)


__all__ = ["ModelSpec", "Weights", "register_model", "list_models", "get_spec", "resolve_config"]
