"""The paper's claim on our data: LKCA vs a softmax ViT of matched size, same recipe and budget.

    .venv/bin/python benchmarks/paper_claim.py [--epochs 20] [--models lkca-1m vit-1m]
    .venv/bin/python benchmarks/paper_claim.py --json benchmarks/results/paper_claim.json

Trains each model from scratch on scikit-learn digits through the training pipeline
(``lkca-edge train``'s own code) with the identical TrainConfig and seed, and prints test accuracy,
parameters and wall time side by side. ``--json`` also writes the result file
``benchmarks/render_readme.py`` reads (schema ``lkca-edge-paper-claim/1``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCHEMA = "lkca-edge-paper-claim/1"
DEFAULT_MODELS = ("lkca-1m", "vit-1m")
DEFAULT_EPOCHS = 20


def table(result: dict) -> str:
    """The Markdown table of a result (what the script prints and the README shows)."""
    out = ["| model | params | test accuracy | best val accuracy | epochs | train s |",
           "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        out.append(f"| {r['model']} | {r['params']:,} | {r['test_accuracy']:.2%} | "
                   f"{r['best_val_accuracy']:.2%} | {r['epochs']} | {r['wall_seconds']:.0f} |")
    return "\n".join(out)


def measure(models: list[str], epochs: int, argv: list[str]) -> dict:
    from lkca_edge.bench import versions
    from lkca_edge.hostinfo import host_info
    from lkca_edge.models_config import count_params
    from lkca_edge.pipelines.train import train_command
    from lkca_edge.train import TrainConfig
    from lkca_edge.zoo import get_spec

    for name in models:
        get_spec(name)  # an unknown name is refused before any training
    cfg = TrainConfig(epochs=epochs)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lkca-paper-claim-") as work:
        for name in models:
            m = train_command(name, "digits", Path(work) / name, cfg, show_progress=False).metrics
            rows.append({"model": name, "params": count_params(get_spec(name).config),
                         "test_accuracy": m["test_accuracy"],
                         "best_val_accuracy": m["best_val_accuracy"],
                         "wall_seconds": m["wall_seconds"], "epochs": epochs})
    return {"schema": SCHEMA,
            "command": " ".join(shlex.quote(a) for a in [".venv/bin/python",
                                                         "benchmarks/paper_claim.py", *argv]),
            "finished": time.strftime("%Y-%m-%d %H:%M", time.localtime()),
            "host": host_info(), "versions": versions(), "dataset": "digits",
            "recipe": asdict(cfg), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    ap.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    ap.add_argument("--json", help="also write the result file here")
    args = ap.parse_args(argv)
    if args.epochs < 1:
        ap.error(f"--epochs must be at least 1, got {args.epochs}")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from lkca_edge.errors import UserError
    from lkca_edge.fileio import write_json

    try:
        result = measure(args.models, args.epochs, list(sys.argv[1:] if argv is None else argv))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(result))
    print(f"recipe: {result['recipe']} on digits (seeded split)")
    if args.json:
        write_json(args.json, result)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
