"""Run an artifact on a dataset's held-out test split through its own runtime and compare it with
the PyTorch fp32 model it came from (rebuilt from its manifest)."""

from __future__ import annotations

HELP = "check that an artifact computes the same function as its source model, on real images"


def add_arguments(p) -> None:
    p.add_argument("artifact", help="a .pte, .tflite, .onnx or .mlpackage made by `lkca-edge export`")
    p.add_argument("--dataset", default=None, metavar="SPEC",
                   help="digits, cifar10:DIR, cifar100:DIR, folder:DIR (default: the manifest's)")
    p.add_argument("--limit", type=int, help="use at most N test images")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-verify", action="store_true", help="skip the manifest sha256 check")
    p.add_argument("--per-layer", action="store_true",
                   help="also compare every layer's output with the source model's (SQNR, max "
                        "abs error, cosine), named by the source model's modules")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")


def run(args) -> int:
    from lkca_edge.commands.common import print_json
    from lkca_edge.pipelines.validate import validate_artifact, validate_per_layer

    layers = None
    if args.per_layer:
        result, layers = validate_per_layer(args.artifact, dataset=args.dataset, limit=args.limit,
                                            threads=args.threads, verify=not args.no_verify)
    else:
        result = validate_artifact(args.artifact, dataset=args.dataset, limit=args.limit,
                                   threads=args.threads, verify=not args.no_verify)
    if args.json:
        print_json({**layers.to_dict(), "validation": result.to_dict()} if layers
                   else result.to_dict())
    else:
        r = result
        if r.runnable:
            print(f"{r.backend} {r.precision} on {r.n_images} test images: accuracy {r.accuracy:.2%} "
                  f"(fp32 reference {r.reference_accuracy:.2%}), top-1 agreement {r.top1_agreement:.2%}, "
                  f"max |logit err| {r.max_abs_err:.2e}, mean {r.mean_abs_err:.2e}, cosine {r.cosine:.6f}"
                  f"{' (estimate)' if r.estimate else ''}")
        else:
            print(f"{r.backend} {r.precision}: not runnable here: {r.note}")
        print(f"gate ({r.gate}): " + ("PASS" if r.passed else "n/a" if r.passed is None
                                      else "FAIL: " + "; ".join(r.failures)))
        if layers is not None:
            print_layers(layers)
    return 0 if result.passed is not False else 3


def print_layers(layers) -> None:
    from lkca_edge.pipelines.per_layer import format_table

    how = "STATIC (not run)" if layers.mode == "static" else "measured"
    print(f"per-layer, {how}, on {layers.n_images} images: {layers.method}")
    for line in format_table(layers):
        print(f"  {line}")
    print(f"  most error added by: {layers.worst_text()}")
    if layers.tap_logit_shift:
        print(f"  note: exposing the layers changed the logits by up to {layers.tap_logit_shift:.3g}")
    if layers.note:
        print(f"  {layers.note}")
