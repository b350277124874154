"""``lkca-edge export``: choose form -> calibrate -> convert -> validate -> write artifact + manifest.

The artifact is written under a temporary name and renamed into place only after it passed its
validation gate, so a silently wrong model is never left looking like a success.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lkca_edge.errors import GateFailed, UserError
from lkca_edge.fileio import atomic_path, ensure_dir
from lkca_edge.forms import check_form, default_export_form
from lkca_edge.manifest import SCHEMA, Manifest, now_iso, sha256_of, size_of
from lkca_edge.versions import CORE_PACKAGES, tool_versions


@dataclass
class ExportRequest:
    model: str
    backend: str
    precision: str | None = None  # None: the recipe decides (fp32 when no recipe either)
    recipe: str | None = None
    checkpoint: str | None = None
    form: str | None = None
    calibration: str = "digits"
    calibration_size: int = 128
    out: str = "out"
    validate: bool = True
    enforce_gate: bool = True
    validation_limit: int | None = None
    threads: int = 1
    overrides: dict = field(default_factory=dict)
    name: str | None = None  # artifact file stem
    fallback: bool = False  # int8 gate failed: keep the layers adding the most error in float


@dataclass
class ExportResult:
    artifact: Path
    manifest: Manifest
    manifest_path: Path


def choose_form(model, backend: str, precision: str, forced: str | None) -> str | None:
    if model.config.family != "lkca":
        if forced:
            raise UserError(f"{model.zoo_name} is a softmax-attention ViT; --form applies only to LKCA")
        return None
    return check_form(forced) if forced else default_export_form(backend, precision)


def export_model(req: ExportRequest, model=None, dataset=None) -> ExportResult:
    """Run the whole export of one (model, backend, recipe) cell.

    A ``model`` passed in is copied first: the caller's model is never changed (its form, its
    weights), so one model can feed many exports.
    """
    from lkca_edge.converters import get_backend
    from lkca_edge.data import load_dataset
    from lkca_edge.evaluation import reference_logits
    from lkca_edge.gates import validate_logits
    from lkca_edge.logs import quiet
    from lkca_edge.pipelines.validate import static_validation

    from lkca_edge.zoo import get_spec

    if model is None:
        get_spec(req.model)  # an unknown name is refused before torch is imported
    backend = get_backend(req.backend)
    recipe = backend.recipe(req.precision, req.recipe)
    backend.require_available()
    if req.calibration_size < 1:
        raise UserError("--calibration-size must be at least 1")
    out_dir = ensure_dir(req.out)

    from lkca_edge.builder import build_model_from, model_source

    if model is None:
        model = build_model_from(req.model, req.checkpoint, req.overrides)
    else:
        model = copy.deepcopy(model)  # set_form below must not change the caller's model
    form = choose_form(model, backend.name, recipe.precision, req.form)
    if form is not None:
        model.set_form(form)
    model.eval()

    data = dataset if dataset is not None else load_dataset(req.calibration, model.preprocessing)
    if data.test_x.shape[1:] != (model.config.in_channels, model.config.image_size, model.config.image_size):
        raise UserError(f"dataset images are {data.test_x.shape[1:]}, the model needs "
                        f"{(model.config.in_channels, model.config.image_size, model.config.image_size)}")
    calibration = data.calibration(req.calibration_size)
    example = calibration[:1]

    stem = req.name or f"{model.zoo_name}_{backend.name}_{recipe.name}"
    artifact = Path(out_dir) / f"{stem}{backend.extension}"
    graph_model = model.export_module()  # form "fused": the compact fused network
    if recipe.option("mixed") and not req.validate:
        raise UserError(f"recipe {recipe.name} chooses its float layers by validating: drop --no-validate")
    with atomic_path(artifact) as tmp:
        def convert(r):
            with quiet():
                return backend.convert(graph_model, example, r, calibration, tmp)

        t0 = time.perf_counter()
        conversion = convert(recipe)
        seconds = time.perf_counter() - t0

        validation = None
        if req.validate:
            limit = req.validation_limit or len(data.test_x)
            x, y = data.test_x[:limit], data.test_y[:limit]
            ref = reference_logits(model, x)

            def validate():
                reason = backend.runnable()
                if reason is None:
                    with quiet():  # runtimes log to fd 2 when they start (ExecuTorch's cpuinfo)
                        runner = backend.load(tmp, threads=req.threads)
                        logits = runner.run_many(x)
                    return validate_logits(logits, ref, y, backend.name, recipe.precision)
                return static_validation(backend, tmp, model, x, y, ref, recipe.precision, reason)

            def measure():
                from lkca_edge.pipelines.per_layer import measure_layers

                return measure_layers(backend, tmp, model, x, precision=recipe.precision,
                                      recipe=recipe.name, threads=req.threads)

            validation = validate()
            fallback = req.fallback and validation.passed is False
            if recipe.option("mixed") or fallback:
                if recipe.precision != "int8" or not backend.keeps_layers_float:
                    raise GateFailed(
                        f"{stem}{backend.extension} failed its {recipe.precision} gate: "
                        f"{'; '.join(validation.failures)}; --fallback keeps layers in float only "
                        f"in int8 exports of {', '.join(_float_capable())} (nothing written)")
                from lkca_edge.pipelines.mixed import keep_sensitive_layers_float

                outcome = keep_sensitive_layers_float(recipe, conversion, validation,
                                                      convert=convert, validate=validate,
                                                      measure=measure, fallback=fallback)
                recipe, conversion, validation = outcome.recipe, outcome.conversion, outcome.validation
                seconds += outcome.seconds
            if validation.passed is False and req.enforce_gate:
                floated = (conversion.details or {}).get("float_layers")
                raise GateFailed(f"{stem}{backend.extension} failed its {recipe.precision} gate: "
                                 f"{'; '.join(validation.failures)}"
                                 + (f" with {', '.join(floated)} in float" if floated else "")
                                 + _worst_layers(measure) + " (nothing written)")

        manifest = Manifest(
            schema=SCHEMA, artifact=artifact.name, sha256=sha256_of(tmp), size_bytes=size_of(tmp),
            backend=backend.name, recipe=recipe.to_dict(), precision=recipe.precision,
            model=model.zoo_name, config=asdict(model.config), form=form, source=model_source(model),
            preprocessing=model.preprocessing.to_dict(),
            calibration=({"dataset": req.calibration, "split": "train", "size": int(len(calibration))}
                         if recipe.calibrated else None),
            inputs=conversion.inputs, outputs=conversion.outputs, details=conversion.details,
            tool_versions=tool_versions(CORE_PACKAGES + backend.tool_packages), created=now_iso(),
            conversion_seconds=round(seconds, 2),
            validation=validation.to_dict() if validation else None,
            params=model.num_params(), macs=model.macs())
    manifest_path = manifest.write(artifact)
    return ExportResult(artifact, manifest, manifest_path)



def _worst_layers(measure) -> str:
    """"; layers adding the most error: ..." from a per-layer measurement ("" if it fails)."""
    try:
        layers = measure()
    except Exception as exc:  # noqa: BLE001 - the gate's failure is the message; this adds to it
        from lkca_edge.errors import first_line

        return f"; no per-layer measurement ({first_line(exc)})"
    return f"; layers adding the most error: {layers.worst_text()}"


def _float_capable() -> list[str]:
    from lkca_edge.converters import backend_names, get_backend

    return [b for b in backend_names() if get_backend(b).keeps_layers_float]
