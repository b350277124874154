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
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")


def run(args) -> int:
    from lkca_edge.commands.common import print_json, say
    from lkca_edge.pipelines.validate import validate_artifact

    result = validate_artifact(args.artifact, dataset=args.dataset, limit=args.limit,
                               threads=args.threads, verify=not args.no_verify)
    if args.json:
        print_json(result.to_dict())
    else:
        r = result
        if r.runnable:
            say(f"{r.backend} {r.precision} on {r.n_images} test images: accuracy {r.accuracy:.2%} "
                  f"(fp32 reference {r.reference_accuracy:.2%}), top-1 agreement {r.top1_agreement:.2%}, "
                  f"max |logit err| {r.max_abs_err:.2e}, mean {r.mean_abs_err:.2e}, cosine {r.cosine:.6f}"
                  f"{' (estimate)' if r.estimate else ''}")
        else:
            say(f"{r.backend} {r.precision}: not runnable here: {r.note}")
        say(f"gate ({r.gate}): " + ("PASS" if r.passed else "n/a" if r.passed is None
                                      else "FAIL: " + "; ".join(r.failures)))
    return 0 if result.passed is not False else 3
