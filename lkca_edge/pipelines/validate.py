"""``lkca-edge validate``: an artifact against its fp32 source on real held-out images."""

from __future__ import annotations

from lkca_edge.evaluation import reference_logits
from lkca_edge.gates import ValidationResult, apply_gate, gate_for, not_runnable, validate_logits


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
        apply_gate(result, gate_for(precision))
    if static.get("passed") is False:
        result.passed = False
        result.failures = list(static.get("failures", [])) + result.failures
    result.note = f"{reason}. {static.get('note', '')}".strip()
    return result


def validate_artifact(artifact, dataset: str | None = None, limit: int | None = None,
                      threads: int = 1, verify: bool = True) -> ValidationResult:
    """`lkca-edge validate`: the artifact against its rebuilt fp32 source on real test images."""
    from lkca_edge.builder import rebuild_source_model
    from lkca_edge.data import load_dataset
    from lkca_edge.isolation import run_isolated
    from lkca_edge.pipelines.artifacts import open_artifact, run_artifact, static_check
    from lkca_edge.preprocessing import Preprocessing

    from lkca_edge.hostinfo import cap_threads
    from lkca_edge.ranges import check_arg, check_optional

    check_optional("limit", limit)
    threads = cap_threads(check_arg("threads", threads))
    artifact, manifest, backend = open_artifact(artifact, verify)
    prep = Preprocessing.from_dict(manifest.preprocessing)
    spec = dataset or (manifest.calibration or {}).get("dataset") or "digits"
    data = load_dataset(spec, prep)
    n = min(limit or len(data.test_x), len(data.test_x))
    x, y = data.test_x[:n], data.test_y[:n]
    ref = reference_logits(rebuild_source_model(manifest), x)
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
