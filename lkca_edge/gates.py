"""Metrics and gates: does an artifact compute the same function as its fp32 source?

fp32 within 1e-4 of the source logits; fp16 and int8 within one point of the source accuracy and
agreeing on >= 98 % of top-1 labels. numpy only: the gate is recomputed wherever a runtime runs.
"""

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
            parts.append(f"top1_agreement >= {self.min_top1_agreement * 100:g}%")
        return ", ".join(parts)


GATES = {
    "fp32": Gate(max_abs_err=1e-4),
    "fp16": Gate(max_accuracy_drop=0.01, min_top1_agreement=0.98),
    "int8": Gate(max_accuracy_drop=0.01, min_top1_agreement=0.98),
}
# What the int8-mixed recipes aim for, beyond the int8 gate: near fp32 (0.3 point of accuracy,
# 99.5 % of the top-1 labels; on the 359 digits test images: one image either way).
MIXED_TARGET = Gate(max_accuracy_drop=0.003, min_top1_agreement=0.995)


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


SQNR_CAP_DB = 200.0  # identical tensors: a finite, JSON-safe ceiling instead of +inf


class ErrorStats:
    """Error figures of a tensor against its reference, accumulated over batches (so the whole
    tensor never has to be in memory): ``update(ref, actual)`` per batch, then ``metrics()``."""

    def __init__(self):
        self.signal = self.noise = self.dot = self.actual_sq = self.abs_sum = 0.0
        self.max_abs = 0.0
        self.count = 0

    def update(self, reference: np.ndarray, actual: np.ndarray) -> "ErrorStats":
        ref = np.asarray(reference, np.float64).reshape(-1)
        act = np.asarray(actual, np.float64).reshape(-1)
        if ref.shape != act.shape:
            raise ValueError(f"{act.size} values against a reference of {ref.size}")
        diff = ref - act
        self.signal += float(ref @ ref)
        self.noise += float(diff @ diff)
        self.dot += float(ref @ act)
        self.actual_sq += float(act @ act)
        self.abs_sum += float(np.abs(diff).sum())
        if diff.size:
            self.max_abs = max(self.max_abs, float(np.abs(diff).max()))
        self.count += int(ref.size)
        return self

    def noise_ratio(self) -> float:
        """Noise power over signal power (linear)."""
        if self.signal > 0:
            return self.noise / self.signal
        return 0.0 if self.noise == 0 else float("inf")

    def metrics(self) -> dict:
        """SQNR in dB (10 log10 signal / noise power, capped at ``SQNR_CAP_DB``), max and mean
        absolute error, and cosine similarity."""
        if self.noise == 0.0:
            sqnr = SQNR_CAP_DB
        elif self.signal == 0.0:
            sqnr = -SQNR_CAP_DB
        else:
            sqnr = float(min(SQNR_CAP_DB, 10.0 * np.log10(self.signal / self.noise)))
        denom = float(np.sqrt(self.signal * self.actual_sq))
        cosine = self.dot / denom if denom > 0 else (1.0 if self.noise == 0 else 0.0)
        return {"sqnr_db": sqnr, "max_abs_err": self.max_abs,
                "mean_abs_err": self.abs_sum / self.count if self.count else 0.0,
                "cosine": float(cosine)}


def tensor_metrics(reference: np.ndarray, actual: np.ndarray) -> dict:
    """SQNR (dB), max and mean absolute error and cosine similarity of one tensor (any shape,
    compared element by element after flattening) against its reference."""
    return ErrorStats().update(reference, actual).metrics()


def sqnr_db(reference: np.ndarray, actual: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``actual`` against ``reference``, in dB."""
    return tensor_metrics(reference, actual)["sqnr_db"]


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


def meets(result: ValidationResult, gate: Gate) -> bool:
    """Whether ``result`` passes its own gate and ``gate`` (``result`` is not changed)."""
    if result.passed is False:
        return False
    import copy

    return apply_gate(copy.deepcopy(result), gate).passed is True


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
