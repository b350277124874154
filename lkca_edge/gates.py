"""Metrics and gates: does an artifact compute the same function as its fp32 source, on data the
source model is trained for?

- fp32: within 1e-4 of the source logits; fp16 and int8: within one point of the source accuracy
  and agreeing on >= 98 % of top-1 labels.
- No gate passes nonsense: any NaN or Inf in the reference or the artifact's logits fails, naming
  where it was first seen; a source model at or near chance on the validation data (within 10
  points of 1/classes) fails as "not trained for this data", whatever the artifact does.
- A knowingly untrained model (a zoo config without weights, for a latency study) is gated on
  numerics alone: fp32 as above; fp16/int8 by cosine >= 0.999 to the source logits and top-1
  agreement >= 98 % on the images where the source's top-1 is decisive (its margin over the
  runner-up exceeds the artifact's largest logit error: an untrained network's near-ties flip
  under any rounding and say nothing). Its accuracy is reported as not meaningful.

numpy only: the gate is recomputed wherever a runtime runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from lkca_edge.errors import UserError

CHANCE_MARGIN = 0.10  # a source model within this of 1/classes is "not trained for this data"
UNTRAINED_NOTE = "untrained: accuracy not meaningful"


@dataclass(frozen=True)
class Gate:
    max_abs_err: float | None = None
    max_accuracy_drop: float | None = None  # fraction (0.01 = one point)
    min_top1_agreement: float | None = None
    min_cosine: float | None = None
    decisive_agreement: bool = False        # agreement counted on decisive images only

    def describe(self) -> str:
        parts = []
        if self.max_abs_err is not None:
            parts.append(f"max_abs_err <= {self.max_abs_err:g}")
        if self.max_accuracy_drop is not None:
            parts.append(f"accuracy drop <= {self.max_accuracy_drop * 100:g} pt")
        if self.min_top1_agreement is not None:
            parts.append(f"{'decisive ' if self.decisive_agreement else ''}top1_agreement >= "
                         f"{self.min_top1_agreement * 100:g}%")
        if self.min_cosine is not None:
            parts.append(f"cosine >= {self.min_cosine:g}")
        return ", ".join(parts)


DYNAMIC_BATCH = 4  # a dynamic-batch artifact is validated at batch 1 and at this batch size

GATES = {
    "fp32": Gate(max_abs_err=1e-4),
    "fp16": Gate(max_accuracy_drop=0.01, min_top1_agreement=0.98),
    "int8": Gate(max_accuracy_drop=0.01, min_top1_agreement=0.98),
}
# What the int8-mixed recipes aim for, beyond the int8 gate: near fp32 (0.3 point of accuracy,
# 99.5 % of the top-1 labels; on the 359 digits test images: one image either way).
MIXED_TARGET = Gate(max_accuracy_drop=0.003, min_top1_agreement=0.995)
UNTRAINED_GATES = {
    "fp32": Gate(max_abs_err=1e-4),
    "fp16": Gate(min_cosine=0.999, min_top1_agreement=0.98, decisive_agreement=True),
    "int8": Gate(min_cosine=0.999, min_top1_agreement=0.98, decisive_agreement=True),
}


def gate_for(precision: str, trained: bool = True) -> Gate:
    """The gate of a precision; an unknown precision is refused, never given a lenient gate."""
    gates = GATES if trained else UNTRAINED_GATES
    if precision not in gates:
        raise UserError(f"unknown precision {precision!r} (valid: {', '.join(gates)})")
    return gates[precision]


@dataclass
class ValidationResult:
    backend: str
    precision: str
    runnable: bool
    estimate: bool
    n_images: int
    accuracy: float | None
    reference_accuracy: float | None
    top1_agreement: float | None
    max_abs_err: float | None
    mean_abs_err: float | None
    cosine: float | None
    gate: str = ""
    passed: bool | None = None
    failures: list[str] = field(default_factory=list)
    note: str = ""
    trained: bool = True                   # False: a knowingly untrained model
    decisive_agreement: float | None = None
    n_decisive: int | None = None
    data: str | None = None                # the data set's spec
    labels_note: str = ""                  # how the data's labels were matched to the model's
    source_failures: list[str] = field(default_factory=list)  # the source model's, not the artifact's
    batch_sizes: list[int] = field(default_factory=lambda: [1])  # batch sizes it was run at

    def add_batch(self, other: "ValidationResult", batch_size: int) -> "ValidationResult":
        """Fold in the run of the same images at ``batch_size`` (a dynamic-batch artifact):
        it passes only if both runs pass; the figures reported are the worse of the two."""
        self.batch_sizes = [*self.batch_sizes, int(batch_size)]
        if other.max_abs_err is not None and (self.max_abs_err is None or other.max_abs_err > self.max_abs_err):
            self.max_abs_err, self.mean_abs_err = other.max_abs_err, other.mean_abs_err
        if other.accuracy is not None and self.accuracy is not None:
            self.accuracy = min(self.accuracy, other.accuracy)
            self.top1_agreement = min(self.top1_agreement, other.top1_agreement)
        self.failures += [f"at batch {batch_size}: {f}" for f in other.failures]
        if other.passed is False:
            self.passed = False
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def first_nonfinite(array: np.ndarray, what: str) -> str | None:
    """'<what> hold NaN (first at image 3, class 0)', or None when every value is finite."""
    array = np.asarray(array)
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    index = np.unravel_index(int(np.argmax(bad)), array.shape)
    value = array[index]
    kind = "NaN" if np.isnan(value) else "Inf"
    where = (f"image {index[0]}, class {index[1]}" if len(index) == 2
             else ", ".join(str(i) for i in index))
    return f"{what} hold {kind} (first at {where})"


def compare_logits(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, agreement and error figures of ``logits`` against the reference logits."""
    logits = np.asarray(logits, np.float64)
    reference = np.asarray(reference, np.float64)
    diff = np.abs(logits - reference)
    a, b = logits.reshape(-1), reference.reshape(-1)
    cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))
    pred, ref_pred = logits.argmax(1), reference.argmax(1)
    max_err = float(diff.max()) if diff.size else 0.0
    top2 = np.sort(reference, axis=1)[:, -2:] if reference.shape[1] >= 2 else None
    decisive = (top2[:, 1] - top2[:, 0] > max_err) if top2 is not None else np.ones(len(pred), bool)
    return {
        "accuracy": float((pred == labels).mean()),
        "reference_accuracy": float((ref_pred == labels).mean()),
        "top1_agreement": float((pred == ref_pred).mean()),
        "max_abs_err": max_err,
        "mean_abs_err": float(diff.mean()) if diff.size else 0.0,
        "cosine": cosine,
        "n_images": int(len(labels)),
        "decisive_agreement": float((pred == ref_pred)[decisive].mean()) if decisive.any() else None,
        "n_decisive": int(decisive.sum()),
    }


SQNR_CAP_DB = 200.0  # identical tensors: a finite, JSON-safe ceiling instead of +inf


class ErrorStats:
    """Error figures of a tensor against its reference, accumulated over batches (so the whole
    tensor never has to be in memory): ``update(ref, actual)`` per batch, then ``metrics()``.
    A NaN or infinity in the output makes the tensor as wrong as it can be (SQNR
    ``-SQNR_CAP_DB``, cosine 0, infinite noise ratio); the absolute errors are over the
    finite values, so every figure stays JSON-safe."""

    def __init__(self):
        self.signal = self.noise = self.dot = self.actual_sq = self.abs_sum = 0.0
        self.max_abs = 0.0
        self.count = 0
        self.nonfinite = 0

    def update(self, reference: np.ndarray, actual: np.ndarray) -> "ErrorStats":
        ref = np.asarray(reference, np.float64).reshape(-1)
        act = np.asarray(actual, np.float64).reshape(-1)
        if ref.shape != act.shape:
            raise ValueError(f"{act.size} values against a reference of {ref.size}")
        finite = np.isfinite(ref) & np.isfinite(act)
        if not finite.all():
            self.nonfinite += int(act.size - finite.sum())
            ref, act = ref[finite], act[finite]
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
        """Noise power over signal power (linear); infinite when any value was not finite."""
        if self.nonfinite:
            return float("inf")
        if self.signal > 0:
            return self.noise / self.signal
        return 0.0 if self.noise == 0 else float("inf")

    def metrics(self) -> dict:
        """SQNR in dB (10 log10 signal / noise power, capped at ``SQNR_CAP_DB``), max and mean
        absolute error, and cosine similarity."""
        if self.nonfinite:
            sqnr = -SQNR_CAP_DB
        elif self.noise == 0.0:
            sqnr = SQNR_CAP_DB
        elif self.signal == 0.0:
            sqnr = -SQNR_CAP_DB
        else:
            sqnr = float(min(SQNR_CAP_DB, 10.0 * np.log10(self.signal / self.noise)))
        denom = float(np.sqrt(self.signal * self.actual_sq))
        if self.nonfinite:
            cosine = 0.0
        else:
            cosine = self.dot / denom if denom > 0 else (1.0 if self.noise == 0 else 0.0)
        return {"sqnr_db": sqnr, "max_abs_err": self.max_abs,
                "mean_abs_err": self.abs_sum / self.count if self.count else 0.0,
                "cosine": float(cosine)}


def tensor_metrics(reference: np.ndarray, actual: np.ndarray) -> dict:
    """SQNR (dB), max and mean absolute error and cosine similarity of one tensor (any shape,
    compared element by element after flattening) against its reference."""
    return ErrorStats().update(reference, actual).metrics()


def _chance_failure(reference_accuracy: float | None, n_classes: int) -> str | None:
    if reference_accuracy is None or n_classes < 2:
        return None
    chance = 1.0 / n_classes
    if reference_accuracy <= chance + CHANCE_MARGIN:
        return (f"the fp32 source model scores {reference_accuracy:.1%} on this data (chance is "
                f"{chance:.1%}): this model is not trained for this data")
    return None


def _source_checks(result: ValidationResult, reference: np.ndarray) -> None:
    """What the source model's own logits say, whatever the artifact does: finite, and (for a
    trained model) better than chance on this data."""
    broken = first_nonfinite(reference, "the fp32 source model's logits")
    if broken:
        result.source_failures.append(broken)
        result.reference_accuracy = None
    elif result.trained and reference.ndim == 2:
        chance = _chance_failure(result.reference_accuracy, reference.shape[1])
        if chance:
            result.source_failures.append(chance)
    if not result.trained:
        result.note = f"{UNTRAINED_NOTE}; {result.note}" if result.note else UNTRAINED_NOTE


def apply_gate(result: ValidationResult, gate: Gate) -> ValidationResult:
    """Set ``passed`` and ``failures``: the source's failures plus the gate's (written so that
    NaN never passes)."""
    result.gate = gate.describe()
    fails = list(result.source_failures)
    if result.accuracy is None:  # nothing was run (or estimated) here
        result.failures = fails
        result.passed = False if fails else None
        return result
    if gate.max_abs_err is not None and not result.max_abs_err <= gate.max_abs_err:
        fails.append(f"max_abs_err {result.max_abs_err:.3g} > {gate.max_abs_err:g}")
    if gate.max_accuracy_drop is not None:
        drop = result.reference_accuracy - result.accuracy
        if not drop <= gate.max_accuracy_drop + 1e-12:
            fails.append(f"accuracy {result.accuracy:.2%} is {drop * 100:.1f} pt below the "
                         f"fp32 reference {result.reference_accuracy:.2%}")
    if gate.min_top1_agreement is not None:
        agreement = result.decisive_agreement if gate.decisive_agreement else result.top1_agreement
        if agreement is not None and not agreement >= gate.min_top1_agreement:
            which = "decisive top1_agreement" if gate.decisive_agreement else "top1_agreement"
            fails.append(f"{which} {agreement:.2%} < {gate.min_top1_agreement:.0%}")
    if gate.min_cosine is not None and not result.cosine >= gate.min_cosine:
        fails.append(f"cosine {result.cosine:.6f} < {gate.min_cosine:g}")
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
                    precision: str, estimate: bool = False, note: str = "", *,
                    trained: bool = True, data: str | None = None,
                    labels_note: str = "") -> ValidationResult:
    """Compare an artifact's logits with the fp32 source's on labelled images and gate them."""
    gate = gate_for(precision, trained)
    logits = np.asarray(logits)
    reference = np.asarray(reference)
    labels = np.asarray(labels)
    common = dict(backend=backend, precision=precision, runnable=True, estimate=estimate,
                  note=note, trained=trained, data=data, labels_note=labels_note)
    broken = None
    if logits.shape != reference.shape:
        broken = (f"the artifact returned logits of shape {list(logits.shape)}, expected "
                  f"{list(reference.shape)}")
    broken = broken or first_nonfinite(logits, "the artifact's logits") \
        or first_nonfinite(reference, "the fp32 source model's logits")
    if broken:
        result = _empty(len(labels), **common)
        result.reference_accuracy = _accuracy(reference, labels)
        _source_checks(result, reference)
        result.gate, result.passed = gate.describe(), False
        result.failures = list(dict.fromkeys([*result.source_failures, broken]))
        return result
    result = ValidationResult(**compare_logits(logits, reference, labels), **common)
    _source_checks(result, reference)
    return apply_gate(result, gate)


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float | None:
    if logits.ndim != 2 or not np.all(np.isfinite(logits)) or len(labels) == 0:
        return None
    return float((logits.argmax(1) == labels).mean())


def _empty(n_images: int, **fields) -> ValidationResult:
    return ValidationResult(n_images=int(n_images), accuracy=None, reference_accuracy=None,
                            top1_agreement=None, max_abs_err=None, mean_abs_err=None, cosine=None,
                            **fields)


def not_runnable(backend: str, precision: str, reference: np.ndarray, labels: np.ndarray,
                 note: str, *, trained: bool = True, data: str | None = None,
                 labels_note: str = "") -> ValidationResult:
    """A result for an artifact this OS cannot run: no accuracy figures, and it says why. The
    source model's own checks (finite logits, not at chance) still apply."""
    gate = gate_for(precision, trained)
    reference = np.asarray(reference)
    result = _empty(len(labels), backend=backend, precision=precision, runnable=False,
                    estimate=False, note=note, trained=trained, data=data, labels_note=labels_note)
    result.reference_accuracy = _accuracy(reference, np.asarray(labels))
    _source_checks(result, reference)
    return apply_gate(result, gate)
