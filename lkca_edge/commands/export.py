"""Convert a zoo model (or your checkpoint) for a backend, validate it on real images, and write
the artifact with its manifest (<artifact>.manifest.json) and validation pack
(<artifact>.validation.npz). Calibration and validation use the data the model records (its
checkpoint's, or the shipped weights') unless --calibration names other data, whose labels are
matched to the model's by name. A gate failure writes nothing. --list-recipes shows every
backend's recipes."""

from __future__ import annotations

from lkca_edge.commands.common import add_model_arguments, model_overrides

HELP = "convert a model to ExecuTorch, Core ML, TFLite/LiteRT or ONNX (validated)"


def add_arguments(p) -> None:
    p.add_argument("model", nargs="?", help="zoo name, e.g. lkca-1m (optional with a checkpoint "
                   "that says what it is)")
    p.add_argument("--backend", help="executorch, coreml, tflite or onnx")
    p.add_argument("--list-recipes", action="store_true",
                   help="list every backend's recipes (precision, default, description) and exit")
    p.add_argument("--precision", default=None, help="fp32 (default), int8, or fp16 (Core ML)")
    p.add_argument("--recipe", help="a backend-specific recipe (see `lkca-edge export --list-recipes`)")
    p.add_argument("--calibration", default=None, metavar="SPEC",
                   help="real images for calibration and validation: digits, cifar10:DIR, "
                        "cifar100:DIR or folder:DIR (default: the data the model records)")
    p.add_argument("--calibration-size", type=int, default=128)
    p.add_argument("--limit", type=int, help="validate on at most N test images")
    p.add_argument("--no-validate", action="store_true", help="skip validation (not recommended)")
    p.add_argument("--no-gate", action="store_true", help="write the artifact even if its gate fails")
    p.add_argument("--input", choices=("tensor", "image"), default=None,
                   help="what the artifact takes: tensor = float32 (1, 3, H, W) normalized (default; "
                        "Core ML: image), image = uint8 (1, H, W, 3) RGB pixels, normalized inside "
                        "the model")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="a variable batch dimension (onnx; validated at batch 1 and 4)")
    p.add_argument("--ort", action="store_true",
                   help="onnx: write the ORT Mobile format (.ort) and its required-operators "
                        "config for a reduced onnxruntime build")
    p.add_argument("--fallback", action="store_true",
                   help="int8: if the gate fails, keep the layers that add the most error (measured "
                        "per layer) in float until it passes; the manifest lists them")
    p.add_argument("--out", help="output directory")
    add_model_arguments(p)


def list_recipes() -> str:
    from lkca_edge.converters import backend_names, get_backend

    lines = []
    for name in backend_names():
        backend = get_backend(name)
        defaults = {r: p for p, r in backend.default_recipes.items()}
        lines.append(f"{name} ({backend.extension}; also {', '.join(backend.aliases)})")
        for recipe in backend.recipes.values():
            mark = f"  [default {defaults[recipe.name]}]" if recipe.name in defaults else ""
            lines.append(f"  {recipe.name:<16} {recipe.precision:<5} {recipe.description}{mark}")
    return "\n".join(lines)


def run(args) -> int:
    from lkca_edge.commands.common import say
    from lkca_edge.errors import UserError
    from lkca_edge.pipelines.export import ExportRequest, export_model

    if args.list_recipes:
        print(list_recipes())
        return 0
    missing = [flag for flag, value in (("--backend", args.backend), ("--out", args.out)) if not value]
    if missing:
        raise UserError(f"export needs {' and '.join(missing)} (see lkca-edge export --help)")
    if args.model is None and args.checkpoint is None:
        raise UserError("name a zoo model (see `lkca-edge zoo`) or give --checkpoint")

    req = ExportRequest(
        model=args.model, backend=args.backend, precision=args.precision, recipe=args.recipe,
        checkpoint=args.checkpoint, form=args.form, calibration=args.calibration,
        calibration_size=args.calibration_size, out=args.out, validate=not args.no_validate,
        enforce_gate=not args.no_gate, validation_limit=args.limit,
        overrides=model_overrides(args), input=args.input, dynamic_batch=args.dynamic_batch,
        ort=args.ort, fallback=args.fallback)
    result = export_model(req)
    m = result.manifest
    say(f"wrote {result.artifact} ({m.size_bytes / 1024:.0f} KB, {m.backend} {m.recipe['name']}, "
          f"form {m.form or 'n/a'}, {m.conversion_seconds:.1f} s)")
    if m.validation is None:
        say("validation: skipped")
    else:
        from lkca_edge.apps.console import mixed_lines, validation_lines

        for line in validation_lines(m.validation) + mixed_lines(m.details):
            say(line)
    say(f"input: {m.input_kind} {m.inputs[0]['dtype'] if m.inputs else ''} "
          f"{m.inputs[0]['shape'] if m.inputs else ''}")
    for path in sorted(m.files.values()):
        say(f"beside it: {result.artifact.parent / path}")
    say(f"manifest: {result.manifest_path}")
    return 0
