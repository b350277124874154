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
            parts.append(f"top1_agreement >= {self.min_top1_agreement:.0%}")
        return ", ".join(parts)


GATES = {
    "fp32": Gate(max_abs_err=1e-4),
    "fp16": Gate(max_accuracy_drop=0.01, min_top1_agreement=0.98),
    "int8": Gate(max_accuracy_drop=0.01, min_top1_agreement=0.98),
}


def gate_for(precision: str) -> Gate:
    """The gate of a precision; an unknown precision has none (it never gets a lenient one)."""
    if precision not in GATES:
        from lkca_edge.errors import UserError

        raise UserError(f"no validation gate for precision {precision!r} "
                        f"(known: {', '.join(GATES)})")
    return GATES[precision]


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
    return apply_gate(result, gate_for(precision))


def not_runnable(backend: str, precision: str, reference: np.ndarray, labels: np.ndarray,
                 note: str) -> ValidationResult:
    """A result for an artifact this OS cannot run: no accuracy figures, and it says why."""
    result = ValidationResult(
        backend=backend, precision=precision, runnable=False, estimate=False, n_images=int(len(labels)),
        accuracy=None, reference_accuracy=float((reference.argmax(1) == labels).mean()),
        top1_agreement=None, max_abs_err=None, mean_abs_err=None, cosine=None, note=note)
    return apply_gate(result, gate_for(precision))
