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
from lkca_edge.fileio import atomic_path, ensure_dir, write_bytes
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
    input: str | None = None  # "tensor" | "image"; None: the backend's default
    dynamic_batch: bool = False  # a variable batch dimension (validated at batch 1 and 4)
    ort: bool = False  # ONNX only: write the ORT Mobile format (.ort) instead of .onnx


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
    from lkca_edge.gates import DYNAMIC_BATCH, validate_logits
    from lkca_edge.logs import quiet
    from lkca_edge.pipelines.validate import static_validation

    from lkca_edge.zoo import get_spec

    if model is None:
        get_spec(req.model)  # an unknown name is refused before torch is imported
    backend = get_backend(req.backend)
    recipe = backend.recipe(req.precision, req.recipe)
    input_kind = backend.input_kind(req.input)
    extension = artifact_extension(backend, req)
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
    prep = model.preprocessing
    app = app_info(model, recipe, input_kind, req.dynamic_batch, data.labels)
    calibration = prep.as_input(data.calibration(req.calibration_size), input_kind)
    example = calibration[:1]

    stem = req.name or f"{model.zoo_name}_{backend.name}_{recipe.name}"
    artifact = Path(out_dir) / f"{stem}{extension}"
    # form "fused": the compact fused network; an image input puts the normalization in front
    graph_model = backend.graph_for(model.export_module(), app)
    with atomic_path(artifact) as tmp:
        t0 = time.perf_counter()
        with quiet():
            conversion = backend.convert(graph_model, example, recipe, calibration, tmp, app=app)
        seconds = time.perf_counter() - t0

        validation = None
        if req.validate:
            limit = req.validation_limit or len(data.test_x)
            x, y = data.test_x[:limit], data.test_y[:limit]
            ref = reference_logits(model, x)
            inputs = prep.as_input(x, input_kind)  # the artifact's own input (pixels for images)
            reason = backend.runnable()
            if reason is None:
                with quiet():  # runtimes log to fd 2 when they start (ExecuTorch's cpuinfo)
                    runner = backend.load(tmp, threads=req.threads)
                    logits = runner.run_many(inputs)
                    batched = runner.run_many(inputs, DYNAMIC_BATCH) if req.dynamic_batch else None
                validation = validate_logits(logits, ref, y, backend.name, recipe.precision)
                if batched is not None:
                    validation.add_batch(validate_logits(batched, ref, y, backend.name,
                                                         recipe.precision), DYNAMIC_BATCH)
            else:
                validation = static_validation(backend, tmp, model, inputs, y, ref, recipe.precision, reason)
            if validation.passed is False and req.enforce_gate:
                raise GateFailed(f"{stem}{extension} failed its {recipe.precision} gate: "
                                 f"{'; '.join(validation.failures)} (nothing written)")

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
            params=model.num_params(), macs=model.macs(), input_kind=input_kind)
        # Files that travel with the artifact: the labels, and what the backend adds (ORT's
        # required-operators config). Written before the artifact is renamed into place.
        companions = {"labels.txt": app.labels_text().encode("utf-8"), **conversion.companions}
        for suffix, content in companions.items():
            path = Manifest.companion_path(artifact, suffix)
            write_bytes(path, content)
            manifest.files[suffix.rsplit(".", 1)[0].replace(".", "_")] = path.name
    manifest_path = manifest.write(artifact)
    return ExportResult(artifact, manifest, manifest_path)


def artifact_extension(backend, req: ExportRequest) -> str:
    """The artifact's file extension; refuses options this backend does not have."""
    if req.dynamic_batch and not backend.dynamic_batch:
        raise UserError(f"--dynamic-batch is not available for {backend.name} "
                        f"(artifacts are batch 1)")
    if req.ort:
        if ".ort" not in backend.extensions:
            raise UserError(f"--ort (the ORT Mobile format) applies only to onnx, not {backend.name}")
        return ".ort"
    return backend.extension


def app_info(model, recipe, input_kind: str, dynamic_batch: bool, dataset_labels=()):
    """What the artifact carries for apps: names, labels (the model's; else the data set's when
    they match its classes; else the class numbers), preprocessing, input kind."""
    from lkca_edge import __version__
    from lkca_edge.converters import AppInfo

    classes = model.config.num_classes
    labels = tuple(model.preprocessing.labels)
    if len(labels) != classes:
        labels = tuple(dataset_labels) if len(dataset_labels) == classes else tuple(
            str(i) for i in range(classes))
    taken = ("uint8 (1, H, W, 3) RGB pixels, normalized inside the model" if input_kind == "image"
             else "float32 (1, 3, H, W), normalized as the preprocessing says")
    description = (f"{model.zoo_name} image classifier: {classes} classes, {recipe.name} "
                   f"({recipe.precision}); input {taken}; output logits (apply softmax for "
                   f"probabilities)")
    return AppInfo(model=model.zoo_name, description=description,
                   version=f"{model.zoo_name} {recipe.name}, lkca-edge {__version__}",
                   labels=labels, preprocessing=model.preprocessing.to_dict(),
                   input_kind=input_kind, dynamic_batch=dynamic_batch)

