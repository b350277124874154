"""Convert a zoo model (or your checkpoint) for a backend, validate it on real images, and write
the artifact with its manifest (<artifact>.manifest.json). A gate failure writes nothing."""

from __future__ import annotations

from lkca_edge.commands.common import add_model_arguments, model_overrides

HELP = "convert a model to ExecuTorch, Core ML, TFLite/LiteRT or ONNX (validated)"


def add_arguments(p) -> None:
    p.add_argument("model", help="zoo name, e.g. lkca-1m")
    p.add_argument("--backend", required=True, help="executorch, coreml, tflite or onnx")
    p.add_argument("--precision", default=None, help="fp32 (default), int8, or fp16 (Core ML)")
    p.add_argument("--recipe", help="a backend-specific recipe (see `lkca-edge export --list-recipes`)")
    p.add_argument("--calibration", default="digits", metavar="DATASET",
                   help="real images for calibration and validation (default: digits)")
    p.add_argument("--calibration-size", type=int, default=128)
    p.add_argument("--limit", type=int, help="validate on at most N test images")
    p.add_argument("--no-validate", action="store_true", help="skip validation (not recommended)")
    p.add_argument("--no-gate", action="store_true", help="write the artifact even if its gate fails")
    p.add_argument("--fallback", action="store_true",
                   help="int8: if the gate fails, keep the layers that add the most error (measured "
                        "per layer) in float until it passes; the manifest lists them")
    p.add_argument("--out", required=True, help="output directory")
    add_model_arguments(p)


def run(args) -> int:
    from lkca_edge.pipelines.export import ExportRequest, export_model

    req = ExportRequest(
        model=args.model, backend=args.backend, precision=args.precision, recipe=args.recipe,
        checkpoint=args.checkpoint, form=args.form, calibration=args.calibration,
        calibration_size=args.calibration_size, out=args.out, validate=not args.no_validate,
        enforce_gate=not args.no_gate, validation_limit=args.limit,
        overrides=model_overrides(args), fallback=args.fallback)
    result = export_model(req)
    m = result.manifest
    print(f"wrote {result.artifact} ({m.size_bytes / 1024:.0f} KB, {m.backend} {m.recipe['name']}, "
          f"form {m.form or 'n/a'}, {m.conversion_seconds:.1f} s)")
    v = m.validation
    if v is None:
        print("validation: skipped")
    elif v["runnable"]:
        print(f"validation on {v['n_images']} test images: accuracy {v['accuracy']:.2%} "
              f"(fp32 reference {v['reference_accuracy']:.2%}), top-1 agreement {v['top1_agreement']:.2%}, "
              f"max |logit err| {v['max_abs_err']:.2e}: {'PASS' if v['passed'] else 'FAIL'} ({v['gate']})")
    else:
        print(f"validation: {v['note']}")
    mixed = (m.details or {}).get("mixed_precision")
    if mixed:
        floated = ", ".join(mixed["float_layers"]) or "none"
        print(f"mixed precision ({mixed['trigger']}; target {mixed['target']}: "
              f"{'met' if mixed['target_met'] else 'NOT met'}): float layers: {floated}")
    print(f"manifest: {result.manifest_path}")
    return 0
