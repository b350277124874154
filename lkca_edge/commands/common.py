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


def add_remote_arguments(p, what: str = "measure") -> None:
    """--remote, --remote-command and --ssh-option (profile, validate, bench)."""
    p.add_argument("--remote", metavar="URL",
                   help=f"{what} on the device itself: ssh://USER@HOST[:PORT] (a board with "
                        f"lkca-edge installed; your ~/.ssh/config, keys and agent apply), "
                        f"adb://SERIAL (an Android phone, with --runner), or local (this machine; "
                        f"default: the device profile's remote:, else local)")
    p.add_argument("--remote-command", metavar="PATH",
                   help="the board's lkca-edge when it is not on the board's PATH "
                        "(e.g. /home/pi/venv/bin/lkca-edge)")
    p.add_argument("--ssh-option", metavar="OPT", action="append", default=[],
                   help="pass -o OPT to ssh (repeatable); LKCA_EDGE_SSH_CONFIG=FILE passes -F FILE")


def model_overrides(args) -> dict:
    return {"image_size": args.image_size, "patch_size": args.patch_size,
            "num_classes": args.num_classes}


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")
