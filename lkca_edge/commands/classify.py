"""Classify image files (PNG, JPEG, ...; any size; RGB, RGBA or grayscale) with an exported
artifact that runs on this machine, using the preprocessing stored in its manifest. Prints the
top-k labels with their probabilities (softmax of the logits)."""

from __future__ import annotations

HELP = "classify image files with an exported artifact (top-k labels and probabilities)"


def add_arguments(p) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--artifact", required=True, metavar="PATH",
                   help="an exported artifact (its .manifest.json beside it)")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="labels per image (default 5)")
    p.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
    p.add_argument("--no-verify", action="store_true", help="skip the manifest's sha256 check")
    p.add_argument("--json", action="store_true", help="print a JSON list")


def run(args) -> int:
    from lkca_edge.apps.classify import classify, format_predictions

    preds = classify(args.images, args.artifact, top_k=args.top_k, threads=args.threads,
                     verify=not args.no_verify)
    if args.json:
        from lkca_edge.commands.common import print_json

        print_json([p.to_dict() for p in preds])
    else:
        print(format_predictions(preds))
    return 0
