"""Run an artifact through its own runtime on held-out images and compare it with the fp32
model it came from: by default on the validation pack written beside it at export (its images,
labels and the fp32 reference logits; no torch needed), or with --dataset on another data set's
test split (its labels matched to the model's by name; the fp32 source is rebuilt from the
manifest, which needs torch). --remote ssh://USER@HOST runs the board's own lkca-edge on the
artifact and its validation pack, so the gate is recomputed where the runtime runs."""

from __future__ import annotations

HELP = "check that an artifact computes the same function as its source model, on real images"


def add_arguments(p) -> None:
    p.add_argument("artifact", help="a .pte, .tflite, .onnx or .mlpackage made by `lkca-edge export`")
    p.add_argument("--dataset", default=None, metavar="SPEC",
                   help="validate on other data: digits, cifar10:DIR, cifar100:DIR or folder:DIR, "
                        "labels matched by name (default: the artifact's validation pack, "
                        "no torch needed)")
    p.add_argument("--limit", type=int, help="use at most N test images")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-verify", action="store_true", help="skip the manifest sha256 check")
    p.add_argument("--per-layer", action="store_true",
                   help="also compare every layer's output with the source model's (SQNR, max "
                        "abs error, cosine), named by the source model's modules (needs torch)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    from lkca_edge.commands.common import add_remote_arguments

    add_remote_arguments(p, "validate")


def run(args) -> int:
    from lkca_edge.commands.common import print_json, say
    from lkca_edge.errors import UserError
    from lkca_edge.pipelines.validate import validate_artifact, validate_per_layer

    layers = None
    if args.per_layer:
        if args.remote:
            raise UserError("--per-layer runs here (it needs the fp32 source model): drop --remote")
        result, layers = validate_per_layer(args.artifact, dataset=args.dataset, limit=args.limit,
                                            threads=args.threads, verify=not args.no_verify)
    else:
        result = validate_artifact(args.artifact, dataset=args.dataset, limit=args.limit,
                                   threads=args.threads, verify=not args.no_verify,
                                   remote=args.remote, remote_command=args.remote_command,
                                   ssh_options=args.ssh_option)
    if args.json:
        print_json({**layers.to_dict(), "validation": result.to_dict()} if layers
                   else result.to_dict())
    else:
        from lkca_edge.apps.console import layer_lines, validation_lines

        for line in validation_lines(result.to_dict()):
            say(line)
        if layers is not None:
            for line in layer_lines(layers.to_dict()):
                say(line)
    return 0 if result.passed is not False else 3
