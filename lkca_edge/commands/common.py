"""Arguments and helpers shared by several subcommands (no heavy imports)."""

from __future__ import annotations

import json
import sys


def add_model_arguments(p, checkpoint_help: str = "weights file (this toolkit's or the paper's format)") -> None:
    p.add_argument("--checkpoint", metavar="PATH", help=checkpoint_help)
    p.add_argument("--form", help="LKCA operator form: conv, toeplitz, frozen, frozen-linear, fused (default: the measured fastest per backend)")
    p.add_argument("--image-size", type=int, help="input size in pixels (patch = size/8 unless given)")
    p.add_argument("--patch-size", type=int)
    p.add_argument("--num-classes", type=int)


def add_dataset_argument(p, default: str = "digits") -> None:
    p.add_argument("--dataset", default=default, metavar="SPEC",
                   help="digits (default), cifar10:DIR, cifar100:DIR or folder:DIR")


def model_overrides(args) -> dict:
    return {"image_size": args.image_size, "patch_size": args.patch_size,
            "num_classes": args.num_classes}


def build_model_from(name: str, checkpoint: str | None, overrides: dict, form: str | None = None):
    """The named zoo model from ``checkpoint``, else its shipped weights when it has some."""
    from lkca_edge.zoo import create_model, get_spec

    spec = get_spec(name)
    pretrained = checkpoint is None and bool(spec.weights)
    if pretrained and any(overrides.get(k) is not None for k in ("image_size", "patch_size", "num_classes")):
        pretrained = False  # the shipped weights are for the default config only
    return create_model(name, checkpoint=checkpoint, pretrained=pretrained, form=form, **overrides)


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")
