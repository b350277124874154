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
from lkca_edge.fileio import atomic_path, ensure_dir, private_tempdir
from lkca_edge.forms import check_form, default_export_form
from lkca_edge.manifest import SCHEMA, Manifest, now_iso, size_of
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


def export_model(req: ExportRequest, model=None, dataset=None) -> ExportResult:
    """Run the whole export of one (model, backend, recipe) cell.

    A ``model`` passed in is copied first: the caller's model is never changed (its form, its
    weights), so one model can feed many exports. Every temporary file (the converters' too)
    lives in a directory of this process's own, removed however the export ends.
    """
    with private_tempdir():
        return _export(req, model, dataset)


def _export(req: ExportRequest, model=None, dataset=None) -> ExportResult:
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
    from lkca_edge.hostinfo import cap_threads
    from lkca_edge.ranges import check_arg, check_optional

    check_arg("calibration_size", req.calibration_size)
    check_optional("limit", req.validation_limit)
    threads = cap_threads(check_arg("threads", req.threads))
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

    if req.name is not None and (not req.name or Path(req.name).name != req.name):
        raise UserError(f"the artifact name must be a plain file name, got {req.name!r}")
    stem = req.name or f"{model.zoo_name}_{backend.name}_{recipe.name}"
    artifact = Path(out_dir) / f"{stem}{backend.extension}"
    replaceable(artifact)  # before the conversion: refuse fast
    graph_model = model.export_module()  # form "fused": the compact fused network
    with atomic_path(artifact, replace=replaceable) as tmp:
        t0 = time.perf_counter()
        with quiet():
            conversion = backend.convert(graph_model, example, recipe, calibration, tmp)
        seconds = time.perf_counter() - t0

        validation = None
        if req.validate:
            limit = req.validation_limit or len(data.test_x)
            x, y = data.test_x[:limit], data.test_y[:limit]
            ref = reference_logits(model, x)
            reason = backend.runnable()
            if reason is None:
                with quiet():  # runtimes log to fd 2 when they start (ExecuTorch's cpuinfo)
                    runner = backend.load(tmp, threads=threads)
                    logits = runner.run_many(x)
                validation = validate_logits(logits, ref, y, backend.name, recipe.precision)
            else:
                validation = static_validation(backend, tmp, model, x, y, ref, recipe.precision, reason)
            if validation.passed is False and req.enforce_gate:
                raise GateFailed(f"{stem}{backend.extension} failed its {recipe.precision} gate: "
                                 f"{'; '.join(validation.failures)} (nothing written)")

        manifest = Manifest(
            schema=SCHEMA, artifact=artifact.name, sha256=backend.digest(tmp),
            size_bytes=size_of(tmp, backend.artifact_files(tmp)),
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

