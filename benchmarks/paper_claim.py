"""The paper's claim on our data: LKCA vs a softmax ViT of matched size, same recipe and budget.

    .venv/bin/python benchmarks/paper_claim.py [--epochs 20] [--models lkca-1m vit-1m]

Trains each model from scratch on scikit-learn digits with the identical TrainConfig and seed,
and prints test accuracy, parameters and wall time side by side.
"""

from __future__ import annotations

import argparse
import json

from lkca_edge import create_model
from lkca_edge.data import load_dataset
from lkca_edge.train import TrainConfig, train
from lkca_edge.zoo import DIGITS_PREPROCESSING


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["lkca-1m", "vit-1m"])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    cfg = TrainConfig(epochs=args.epochs)
    rows = []
    for name in args.models:
        model = create_model(name)
        model.preprocessing = DIGITS_PREPROCESSING
        data = load_dataset("digits", model.preprocessing)
        r = train(model, data, cfg)
        rows.append({"model": name, "params": model.num_params(), "test_accuracy": r.test_accuracy,
                     "best_val_accuracy": r.best_val_accuracy, "wall_seconds": r.wall_seconds,
                     "epochs": args.epochs})
    print(f"{'model':<10} {'params':>10} {'test acc':>9} {'val acc':>8} {'seconds':>8}")
    for r in rows:
        print(f"{r['model']:<10} {r['params']:>10,} {r['test_accuracy']:>9.2%} "
              f"{r['best_val_accuracy']:>8.2%} {r['wall_seconds']:>8.0f}")
    print(f"recipe: {json.dumps(cfg.__dict__)} on digits (1,797 scans, seeded split)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
