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


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")
