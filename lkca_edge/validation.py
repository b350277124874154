"""Does an artifact still compute the same function? Compare it with its PyTorch fp32 source on
real held-out images, and gate it: fp32 within 1e-4 of the source logits; int8 within one point
of the source accuracy and agreeing on >= 98 % of top-1 labels."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class Gate:
    max_abs_err: float | None = None
    max_accuracy_drop: float | None = None  # fraction (0.01 = one point)
    min_top1_agreement: float | None = None

    def describe(self) -> str:
        parts = []
        if self.max_abs_err is not None:
            parts.append(f"max_abs_err <= {self.max_abs_err:g}")
        if self.max_accuracy_drop is not None:
            parts.append(f"accuracy drop <= {self.max_accuracy_drop * 100:g} pt")
        if self.min_top1_agreement is not None:
            parts.append(f"top1_agreement >= {self.min_top1_agreement:.0%}")
        return ", ".join(parts)


GATES = {
    "fp32": Gate(max_abs_err=1e-4),
    "fp16": Gate(max_accuracy_drop=0.01, min_top1_agreement=0.98),
    "int8": Gate(max_accuracy_drop=0.01, min_top1_agreement=0.98),
}


@dataclass
class ValidationResult:
    backend: str
    precision: str
    runnable: bool
    estimate: bool
    n_images: int
    accuracy: float | None
    reference_accuracy: float
    top1_agreement: float | None
    max_abs_err: float | None
    mean_abs_err: float | None
    cosine: float | None
    gate: str = ""
    passed: bool | None = None
    failures: list[str] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def compare_logits(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, agreement and error figures of ``logits`` against the reference logits."""
    logits = np.asarray(logits, np.float64)
    reference = np.asarray(reference, np.float64)
    diff = np.abs(logits - reference)
    a, b = logits.reshape(-1), reference.reshape(-1)
    cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))
    pred = logits.argmax(1)
    return {
        "accuracy": float((pred == labels).mean()),
        "reference_accuracy": float((reference.argmax(1) == labels).mean()),
        "top1_agreement": float((pred == reference.argmax(1)).mean()),
        "max_abs_err": float(diff.max()),
        "mean_abs_err": float(diff.mean()),
        "cosine": cosine,
        "n_images": int(len(labels)),
    }


def apply_gate(result: ValidationResult, gate: Gate) -> ValidationResult:
    result.gate = gate.describe()
    if result.accuracy is None:
        result.passed = None
        return result
    fails = []
    if gate.max_abs_err is not None and result.max_abs_err > gate.max_abs_err:
        fails.append(f"max_abs_err {result.max_abs_err:.3g} > {gate.max_abs_err:g}")
    drop = result.reference_accuracy - result.accuracy
    if gate.max_accuracy_drop is not None and drop > gate.max_accuracy_drop + 1e-12:
        fails.append(f"accuracy {result.accuracy:.2%} is {drop * 100:.1f} pt below the "
                     f"fp32 reference {result.reference_accuracy:.2%}")
    if gate.min_top1_agreement is not None and result.top1_agreement < gate.min_top1_agreement:
        fails.append(f"top1_agreement {result.top1_agreement:.2%} < {gate.min_top1_agreement:.0%}")
    result.failures = fails
    result.passed = not fails
    return result


def validate_logits(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray, backend: str,
                    precision: str, estimate: bool = False, note: str = "") -> ValidationResult:
    m = compare_logits(logits, reference, labels)
    result = ValidationResult(backend=backend, precision=precision, runnable=True,
                              estimate=estimate, note=note, **m)
    return apply_gate(result, GATES.get(precision, GATES["int8"]))


def not_runnable(backend: str, precision: str, reference: np.ndarray, labels: np.ndarray,
                 note: str) -> ValidationResult:
    """A result for an artifact this OS cannot run: no accuracy figures, and it says why."""
    result = ValidationResult(
        backend=backend, precision=precision, runnable=False, estimate=False, n_images=int(len(labels)),
        accuracy=None, reference_accuracy=float((reference.argmax(1) == labels).mean()),
        top1_agreement=None, max_abs_err=None, mean_abs_err=None, cosine=None, note=note)
    return apply_gate(result, GATES.get(precision, GATES["int8"]))


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


def reference_logits(model, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """fp32 logits of the torch source model."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            out.append(model(torch.from_numpy(images[i:i + batch_size])).numpy())
    return np.concatenate(out).astype(np.float32)


def static_check(backend, artifact) -> dict:
    """``backend.inspect(artifact)`` for an artifact this machine cannot run: a file the backend
    cannot read is refused (UserError); a missing converter package only skips the check."""
    from lkca_edge.errors import UserError, first_line

    try:
        return backend.inspect(artifact) or {}
    except ImportError:
        return {}
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - parsers of untrusted files raise anything
        raise UserError(f"{artifact} is not a readable {backend.name} artifact "
                        f"({first_line(exc)})") from None


def run_artifact(backend_name: str, path: str, images, threads: int = 1):
    """Load an artifact and return its logits for ``images`` (runs inside an isolated child)."""
    from converters import get_backend
    from converters.base import quiet

    with quiet():  # runtimes (and what they import) log to fd 2; LKCA_EDGE_DEBUG=1 shows it
        runner = get_backend(backend_name).load(path, threads=threads)
        return runner.run_many(images)


def validate_artifact(artifact, dataset: str | None = None, limit: int | None = None,
                      threads: int = 1, verify: bool = True) -> ValidationResult:
    """`lkca-edge validate`: the artifact against its rebuilt fp32 source on real test images."""
    from lkca_edge.data import load_dataset
    from lkca_edge.export import rebuild_source_model
    from lkca_edge.isolation import run_isolated
    from lkca_edge.manifest import open_artifact
    from lkca_edge.preprocessing import Preprocessing

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
