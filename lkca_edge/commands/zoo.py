"""List the model zoo: LKCA configs from the paper and matched softmax-ViT baselines."""

from __future__ import annotations

HELP = "list the model zoo (--json for machine-readable output)"

JSON_KEYS = ("name", "aliases", "family", "params", "macs", "image_size", "patch_size",
             "num_classes")


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list")


def run(args) -> int:
    from lkca_edge.commands.common import print_json
    from lkca_edge.zoo import list_models

    rows = [s.summary() for s in list_models()]
    if args.json:
        print_json([{k: r[k] for k in JSON_KEYS} | {"weights": r["weights"]} for r in rows])
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="LKCA model zoo (32 px, patch 4, 10 classes by default)")
    for col in ("name", "aliases", "family", "dim", "depth", "heads", "params", "MMACs", "weights"):
        table.add_column(col, justify="right" if col in ("dim", "depth", "heads", "params", "MMACs") else "left")
    for r in rows:
        table.add_row(r["name"], ", ".join(r["aliases"]), r["family"], str(r["dim"]), str(r["depth"]),
                      str(r["heads"]) if r["family"] == "vit" else "-", f"{r['params']:,}",
                      f"{r['macs'] / 1e6:.1f}", ", ".join(r["weights"]) or "-")
    import sys

    Console(width=None if sys.stdout.isatty() else 140).print(table)  # no truncation in pipes
    return 0
