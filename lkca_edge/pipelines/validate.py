"""``lkca-edge validate``: an artifact against its fp32 source on real held-out images."""

from __future__ import annotations

from lkca_edge.errors import UserError
from lkca_edge.evaluation import reference_logits
from lkca_edge.gates import GATES, ValidationResult, apply_gate, not_runnable, validate_logits


def static_validation(backend, path, model, images, labels, reference, precision: str,
                      reason: str) -> ValidationResult:
    """For an artifact this OS cannot run: the backend's structural checks, plus its off-device
    accuracy estimate where it has one (labelled ``estimate``; never a device measurement)."""
    result = not_runnable(backend.name, precision, reference, labels, reason)
    if not hasattr(backend, "validate_static"):
        return result
    static = backend.validate_static(path, model, images=images, labels=labels)
    est = static.get("estimate")
    if est and est.get("accuracy") is not None:
        result.estimate = True
        for key in ("accuracy", "top1_agreement", "max_abs_err", "mean_abs_err"):
            setattr(result, key, est.get(key))
        apply_gate(result, GATES.get(precision, GATES["int8"]))
    if static.get("passed") is False:
        result.passed = False
        result.failures = list(static.get("failures", [])) + result.failures
    result.note = f"{reason}. {static.get('note', '')}".strip()
    return result


def _validation_inputs(artifact, dataset: str | None, limit: int | None, verify: bool):
    """(artifact, manifest, backend, test images, labels, fp32 source model) for validate."""
    from lkca_edge.builder import rebuild_source_model
    from lkca_edge.data import load_dataset
    from lkca_edge.pipelines.artifacts import open_artifact
    from lkca_edge.preprocessing import Preprocessing

    artifact, manifest, backend = open_artifact(artifact, verify)
    prep = Preprocessing.from_dict(manifest.preprocessing)
    spec = dataset or (manifest.calibration or {}).get("dataset") or "digits"
    data = load_dataset(spec, prep)
    n = min(limit or len(data.test_x), len(data.test_x))
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    return artifact, manifest, backend, data.test_x[:n], data.test_y[:n], rebuild_source_model(manifest)


def _validate(artifact, manifest, backend, x, y, model, threads: int) -> ValidationResult:
    from lkca_edge.isolation import run_isolated
    from lkca_edge.pipelines.artifacts import run_artifact, static_check

    ref = reference_logits(model, x)
    reason = backend.runnable()
    if reason is not None:
        static_check(backend, artifact)  # a file its backend cannot even read is refused
        result = not_runnable(backend.name, manifest.precision, ref, y, reason)
        stored = manifest.validation or {}
        if stored.get("estimate"):
            result.note = f"{reason}; export-time estimate: {stored.get('note', '')}"
        return result
    logits = run_isolated(run_artifact, backend.name, str(artifact), x, threads,
                          what=f"the {backend.name} runtime loading {artifact.name}")
    return validate_logits(logits, ref, y, backend.name, manifest.precision)


def validate_artifact(artifact, dataset: str | None = None, limit: int | None = None,
                      threads: int = 1, verify: bool = True) -> ValidationResult:
    """`lkca-edge validate`: the artifact against its rebuilt fp32 source on real test images."""
    return _validate(*_validation_inputs(artifact, dataset, limit, verify), threads)


def validate_per_layer(artifact, dataset: str | None = None, limit: int | None = None,
                       threads: int = 1, verify: bool = True):
    """`lkca-edge validate --per-layer`: the validation and every layer's error, on the same
    images. Runs whatever the gate says: a failing artifact is when the layers matter."""
    from lkca_edge.pipelines.per_layer import measure_layers

    artifact, manifest, backend, x, y, model = _validation_inputs(artifact, dataset, limit, verify)
    result = _validate(artifact, manifest, backend, x, y, model, threads)
    layers = measure_layers(backend, artifact, model, x, precision=manifest.precision,
                            recipe=(manifest.recipe or {}).get("name", ""), threads=threads)
    return result, layers
