"""``lkca-edge export``: data -> form -> calibrate -> convert -> validate -> artifact, validation
pack and manifest.

The calibration and validation data default to the data the model records (its checkpoint's,
or the shipped weights'): never a silent fall-back to digits. Its labels are matched to the
model's by name. The artifact is written under a temporary name and renamed into place only
after it passed its gate, so a silently wrong model is never left looking like a success; a model
whose weights are not finite, or that is at chance on the data, fails before anything is written.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lkca_edge.errors import GateFailed, UserError
from lkca_edge.fileio import atomic_path, ensure_dir, private_tempdir, write_bytes
from lkca_edge.forms import check_form, default_export_form
from lkca_edge.manifest import SCHEMA, Manifest, now_iso, size_of
from lkca_edge.versions import CORE_PACKAGES, tool_versions

UNTRAINED_DATA = "digits"  # what an untrained zoo config (a latency study) is calibrated on


@dataclass
class ExportRequest:
    model: str | None = None   # zoo name; optional with a checkpoint that says what it is
    backend: str = ""         # a backend name or alias (required)
    precision: str | None = None  # None: the recipe decides (fp32 when no recipe either)
    recipe: str | None = None
    checkpoint: str | None = None
    form: str | None = None
    calibration: str | None = None  # data set spec; None: the data the model records
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
    fallback: bool = False  # int8 gate failed: keep the layers adding the most error in float


@dataclass
class ExportResult:
    artifact: Path
    manifest: Manifest
    manifest_path: Path

    @property
    def validation(self) -> dict | None:
        return self.manifest.validation


def choose_form(model, backend: str, precision: str, forced: str | None) -> str | None:
    config = getattr(model, "config", None)
    if config is None or config.family != "lkca" or not hasattr(model, "set_form"):
        if forced:
            raise UserError(f"{model_label(model)} is not an LKCA model; --form applies only to LKCA")
        return None
    return check_form(forced) if forced else default_export_form(backend, precision)


def replaceable(artifact: Path) -> None:
    """Export replaces only its own earlier artifact (one whose manifest beside it names it);
    anything else at that path, a user's file or directory, is refused and left alone."""
    from lkca_edge.manifest import read_manifest

    if not artifact.exists() and not artifact.is_symlink():
        return
    try:
        own = not artifact.is_symlink() and read_manifest(artifact).artifact == artifact.name
    except UserError:
        own = False
    if not own:
        raise UserError(f"{artifact} already exists and is not an artifact made by `lkca-edge "
                        f"export` (no manifest beside it names it); it is left alone: move it "
                        f"or choose another --out")


def model_label(model) -> str:
    return getattr(model, "zoo_name", None) or type(model).__name__


def first_nonfinite_weight(model) -> str | None:
    """'blocks.3.mlp.fc1.weight holds NaN' for the first non-finite weight, else None."""
    import torch

    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            kind = "NaN" if torch.isnan(tensor).any() else "Inf"
            return f"its weight {name} holds {kind}"
    return None


def export_data(model, given: str | None, dataset=None):
    """The data set an export calibrates and validates on, its labels matched to the model's."""
    from lkca_edge.data import load_for_model, recorded_spec

    if dataset is not None:
        return dataset
    trained = getattr(model, "trained", True)
    if given is None and not trained:
        given = UNTRAINED_DATA  # a latency study: any real images calibrate it
    spec = recorded_spec(given, getattr(model, "data_record", None), "--calibration",
                         f"{model_label(model)}")
    return load_for_model(spec, model.preprocessing, model.preprocessing.labels,
                          _num_classes(model), model_label(model))


def _num_classes(model) -> int:
    config = getattr(model, "config", None)
    if config is not None:
        return int(config.num_classes)
    return int(getattr(model, "num_outputs", 0) or len(model.preprocessing.labels))


def export_model(req: ExportRequest, model=None, dataset=None) -> ExportResult:
    """Run the whole export of one (model, backend, recipe) cell.

    A ``model`` passed in is copied first: the caller's model is never changed (its form, its
    weights), so one model can feed many exports. ``dataset`` (already matched to the model's
    labels) skips loading the data. Every temporary file (the converters' too) lives in a
    directory of this process's own, removed however the export ends.
    """
    with private_tempdir():
        return _export(req, model, dataset)


def _export(req: ExportRequest, model=None, dataset=None) -> ExportResult:
    from lkca_edge.converters import get_backend
    from lkca_edge.zoo import get_spec

    if model is None and req.model is not None and req.checkpoint is None:
        get_spec(req.model)  # an unknown name is refused before torch is imported
    backend = get_backend(req.backend)
    recipe = backend.recipe(req.precision, req.recipe)
    _check_float_layer_options(req, recipe)
    input_kind = backend.input_kind(req.input)
    extension = artifact_extension(backend, req)
    backend.require_available()
    from lkca_edge.hostinfo import cap_threads
    from lkca_edge.ranges import check_arg, check_optional

    check_arg("calibration_size", req.calibration_size)
    check_optional("limit", req.validation_limit)
    threads = cap_threads(check_arg("threads", req.threads))
    req = dataclasses.replace(req, threads=threads)
    out_dir = ensure_dir(req.out)

    from lkca_edge.builder import build_model_from

    if model is None:
        model = build_model_from(req.model, req.checkpoint, req.overrides)
    else:
        model = copy.deepcopy(model)  # set_form below must not change the caller's model
    broken = first_nonfinite_weight(model)
    if broken:
        raise GateFailed(f"{model_label(model)} cannot be exported: {broken} (nothing written)")
    form = choose_form(model, backend.name, recipe.precision, req.form)
    if form is not None:
        model.set_form(form)
    model.eval()

    data = export_data(model, req.calibration, dataset)
    _check_image_shape(model, data)
    app = app_info(model, recipe, input_kind, req.dynamic_batch, data.labels)
    # what the artifact takes: the float arrays, or the uint8 pixels they came from
    calibration = model.preprocessing.as_input(data.calibration(req.calibration_size), input_kind)
    example = calibration[:1]

    if req.name is not None and (not req.name or Path(req.name).name != req.name):
        raise UserError(f"the artifact name must be a plain file name, got {req.name!r}")
    stem = req.name or f"{model_label(model)}_{backend.name}_{recipe.name}"
    artifact = Path(out_dir) / f"{stem}{extension}"
    replaceable(artifact)  # before the conversion: refuse fast
    return _convert_validate_write(req, model, backend, recipe, form, data, calibration, example,
                                   artifact, app)


def _check_image_shape(model, data) -> None:
    config = getattr(model, "config", None)
    if config is None:
        return
    want = (config.in_channels, config.image_size, config.image_size)
    if data.test_x.shape[1:] != want:
        raise UserError(f"dataset images are {data.test_x.shape[1:]}, the model needs {want}")


def _check_float_layer_options(req: ExportRequest, recipe) -> None:
    """Mixed precision (an int8-mixed recipe, --fallback) chooses float layers by validating and
    by reading the artifact's layers: refuse what cannot work before any work is done."""
    if (recipe.option("mixed") or req.fallback) and req.ort:
        raise UserError("an .ort file exposes no intermediate tensors to choose float layers by: "
                        "export the .onnx with this recipe or --fallback (drop --ort)")
    if recipe.option("mixed") and not req.validate:
        raise UserError(f"recipe {recipe.name} chooses its float layers by validating: "
                        f"drop --no-validate")
    if req.fallback and not req.validate:
        raise UserError("--fallback chooses float layers when validation fails: drop --no-validate")


def _convert_validate_write(req, model, backend, recipe, form, data, calibration, example,
                            artifact: Path, app) -> ExportResult:
    from lkca_edge.builder import model_source
    from lkca_edge.logs import quiet
    from lkca_edge.validation_pack import pack_path

    graph_model = model.export_module() if hasattr(model, "export_module") else model
    # form "fused": the compact fused network; an image input puts the normalization in front
    graph_model = backend.graph_for(graph_model, app)
    trained = bool(getattr(model, "trained", True))
    with atomic_path(artifact, replace=replaceable) as tmp:
        def convert(r):
            with quiet():
                return backend.convert(graph_model, example, r, calibration, tmp, app=app)

        t0 = time.perf_counter()
        conversion = convert(recipe)
        seconds = time.perf_counter() - t0

        validation = pack = None
        if req.validate:
            validation, pack = _validate(req, model, backend, recipe, tmp, data, trained, app)

            def validate():
                return _validate(req, model, backend, recipe, tmp, data, trained, app)[0]

            def measure():
                from lkca_edge.pipelines.per_layer import measure_layers

                x = data.test_x[:req.validation_limit or len(data.test_x)]
                return measure_layers(backend, tmp, model, x, precision=recipe.precision,
                                      recipe=recipe.name, threads=req.threads,
                                      inputs=model.preprocessing.as_input(x, app.input_kind))

            fallback = req.fallback and validation.passed is False
            if fallback and not backend.keeps_float(recipe) and req.enforce_gate:
                raise GateFailed(
                    f"{artifact.name} failed its {recipe.precision} gate: "
                    f"{'; '.join(validation.failures)}; --fallback keeps layers in float only in "
                    f"int8 exports of {', '.join(_float_capable())}, and {backend.name} recipe "
                    f"{recipe.name} is not one of them (nothing written)")
            if recipe.option("mixed") or (fallback and backend.keeps_float(recipe)):
                from lkca_edge.pipelines.mixed import keep_sensitive_layers_float

                outcome = keep_sensitive_layers_float(recipe, conversion, validation,
                                                      convert=convert, validate=validate,
                                                      measure=measure, fallback=fallback)
                recipe, conversion, validation = outcome.recipe, outcome.conversion, outcome.validation
                seconds += outcome.seconds
            if validation.passed is False and req.enforce_gate:
                floated = (conversion.details or {}).get("float_layers")
                raise GateFailed(f"{artifact.name} failed its {recipe.precision} gate: "
                                 f"{'; '.join(validation.failures)}"
                                 + (f" with {', '.join(floated)} in float" if floated else "")
                                 + _worst_layers(measure) + " (nothing written)")
        pack_entry = None
        if pack is not None:
            pack_entry = _write_pack(pack_path(artifact), pack)
        record = data.record.to_dict() if data.record is not None else None
        manifest = Manifest(
            schema=SCHEMA, artifact=artifact.name, sha256=backend.digest(tmp),
            size_bytes=size_of(tmp, backend.artifact_files(tmp)),
            backend=backend.name, recipe=recipe.to_dict(), precision=recipe.precision,
            model=model_label(model),
            config=asdict(model.config) if hasattr(model, "config") else {},
            form=form, source=model_source(model), preprocessing=model.preprocessing.to_dict(),
            calibration=({"dataset": data.record.spec if data.record else data.name,
                          "split": "train", "size": int(len(calibration))}
                         if recipe.calibrated else None),
            inputs=conversion.inputs, outputs=conversion.outputs, details=conversion.details,
            tool_versions=tool_versions(CORE_PACKAGES + backend.tool_packages), created=now_iso(),
            conversion_seconds=round(seconds, 2),
            validation=validation.to_dict() if validation else None,
            params=sum(p.numel() for p in model.parameters()),
            macs=model.macs() if hasattr(model, "macs") else 0,
            data=record, validation_pack=pack_entry, trained=trained, input_kind=app.input_kind)
        # Files that travel with the artifact: the labels, and what the backend adds (ORT's
        # required-operators config). Written before the artifact is renamed into place.
        companions = {"labels.txt": app.labels_text().encode("utf-8"), **conversion.companions}
        for suffix, content in companions.items():
            path = Manifest.companion_path(artifact, suffix)
            write_bytes(path, content)
            manifest.files[suffix.rsplit(".", 1)[0].replace(".", "_")] = path.name
    manifest_path = manifest.write(artifact)
    return ExportResult(artifact, manifest, manifest_path)


def _validate(req, model, backend, recipe, path: Path, data, trained: bool, app):
    """The gate on the data's held-out images (fed as the artifact takes them; a dynamic batch
    at batch 1 and 4), and the pack (images, labels, reference logits)."""
    from lkca_edge.evaluation import reference_logits
    from lkca_edge.gates import DYNAMIC_BATCH, validate_logits
    from lkca_edge.logs import quiet
    from lkca_edge.pipelines.validate import static_validation
    from lkca_edge.validation_pack import ValidationPack, capacity

    limit = req.validation_limit or len(data.test_x)
    x, y = data.test_x[:limit], data.test_y[:limit]
    ref = reference_logits(model, x)
    inputs = model.preprocessing.as_input(x, app.input_kind)  # pixels for an image input
    spec = data.record.spec if data.record is not None else data.name
    common = dict(trained=trained, data=spec, labels_note=data.note)
    reason = backend.runnable()
    if reason is None:
        with quiet():  # runtimes log to fd 2 when they start (ExecuTorch's cpuinfo)
            runner = backend.load(path, threads=req.threads)
            logits = runner.run_many(inputs)
            batched = runner.run_many(inputs, DYNAMIC_BATCH) if app.dynamic_batch else None
        validation = validate_logits(logits, ref, y, backend.name, recipe.precision, **common)
        if batched is not None:
            validation.add_batch(validate_logits(batched, ref, y, backend.name, recipe.precision,
                                                 **common), DYNAMIC_BATCH)
    else:
        validation = static_validation(backend, path, model, inputs, y, ref, recipe.precision,
                                       reason, **common)
    pack = None
    if data.test_pixels is not None:
        n = min(len(y), capacity(data.test_pixels.shape[1]))
        pack = ValidationPack(data.test_pixels[:n], y[:n], ref[:n])
    return validation, pack


def _write_pack(path: Path, pack) -> dict:
    """Write the pack atomically beside the artifact; its manifest entry."""
    import hashlib

    from lkca_edge.validation_pack import pack_bytes

    data = pack_bytes(pack.pixels, pack.labels, pack.reference_logits)
    write_bytes(path, data)
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data),
            "n_images": len(pack), "split": "test"}


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

    classes = _num_classes(model)
    labels = tuple(model.preprocessing.labels)
    if len(labels) != classes:
        labels = tuple(dataset_labels) if len(dataset_labels) == classes else tuple(
            str(i) for i in range(classes))
    taken = ("uint8 (1, H, W, 3) RGB pixels, normalized inside the model" if input_kind == "image"
             else "float32 (1, 3, H, W), normalized as the preprocessing says")
    name = model_label(model)
    description = (f"{name} image classifier: {classes} classes, {recipe.name} "
                   f"({recipe.precision}); input {taken}; output logits (apply softmax for "
                   f"probabilities)")
    return AppInfo(model=name, description=description,
                   version=f"{name} {recipe.name}, lkca-edge {__version__}",
                   labels=labels, preprocessing=model.preprocessing.to_dict(),
                   input_kind=input_kind, dynamic_batch=dynamic_batch)



def _worst_layers(measure) -> str:
    """"; layers adding the most error: ..." from a per-layer measurement (why not, if it fails)."""
    try:
        layers = measure()
    except Exception as exc:  # noqa: BLE001 - the gate's failure is the message; this adds to it
        from lkca_edge.errors import first_line

        return f"; no per-layer measurement ({first_line(exc)})"
    return f"; layers adding the most error: {layers.worst_text()}"


def _float_capable() -> list[str]:
    from lkca_edge.converters import backend_names, get_backend

    return [b for b in backend_names() if get_backend(b).keeps_layers_float]
