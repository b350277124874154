"""Classify real image files with any exported artifact that runs on this machine.

Each image (PNG, JPEG, ...; any size; RGB, RGBA, grayscale or palette) is prepared with the
preprocessing stored in the artifact's manifest, so the artifact sees exactly what it was
validated on; the logits become probabilities by a softmax. The artifact runs in a child process
(``lkca_edge.isolation``), so a runtime crash on a corrupt file is one error line, not a dead CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lkca_edge.errors import UserError


@dataclass
class Prediction:
    image: str
    top: list[tuple[str, int, float]]   # (label, class index, probability), best first

    def to_dict(self) -> dict:
        return {"image": self.image,
                "top": [{"label": lab, "index": i, "probability": p} for lab, i, p in self.top]}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable for large logits)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _run(backend_name: str, artifact: Path, images: np.ndarray, threads: int,
         isolate: bool) -> np.ndarray:
    from lkca_edge.isolation import run_isolated
    from lkca_edge.pipelines.artifacts import run_artifact

    if not isolate:
        return np.asarray(run_artifact(backend_name, str(artifact), images, threads), np.float32)
    logits = run_isolated(run_artifact, backend_name, str(artifact), images, threads,
                          what=f"the {backend_name} runtime running {artifact.name}")
    return np.asarray(logits, np.float32)


def classify(images: list[str | Path], artifact: str | Path, top_k: int = 5, threads: int = 1,
             verify: bool = True, isolate: bool = True) -> list[Prediction]:
    """Top-k (label, index, probability) per image. Every image is read before anything runs,
    so a bad file fails fast with one clear line."""
    from lkca_edge.pipelines.artifacts import open_artifact
    from lkca_edge.preprocessing import Preprocessing

    if not images:
        raise UserError("give at least one image file")
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    artifact, manifest, backend = open_artifact(artifact, verify)
    reason = backend.runnable()
    if reason is not None:
        raise UserError(f"{artifact.name} cannot run on this machine: {reason}")
    prep = Preprocessing.from_dict(manifest.preprocessing)

    batch = np.concatenate([prep.load_image(p) for p in images])  # UserError names a bad file
    batch = prep.as_input(batch, manifest.input_kind)  # uint8 RGB pixels for an image input
    expected = (manifest.inputs[0].get("shape") if manifest.inputs else None) or []
    if expected and list(batch.shape[1:]) != [int(s) for s in expected[1:]]:
        raise UserError(f"{artifact.name} takes inputs of shape {expected}, but its preprocessing "
                        f"makes {[1, *batch.shape[1:]]}: the manifest is inconsistent")
    logits = _run(backend.name, artifact, batch, threads, isolate)
    if logits.ndim != 2 or logits.shape[0] != len(images):
        raise UserError(f"{artifact.name} returned logits of shape {list(logits.shape)}, "
                        f"expected [{len(images)}, classes]")
    if not np.all(np.isfinite(logits)):
        raise UserError(f"{artifact.name} returned non-finite logits")
    probs = softmax(logits)
    n_classes = probs.shape[1]
    labels = list(prep.labels) if len(prep.labels) == n_classes else [str(i) for i in range(n_classes)]
    k = min(top_k, n_classes)
    out = []
    for path, p in zip(images, probs):
        order = np.argsort(-p, kind="stable")[:k]
        out.append(Prediction(str(path), [(labels[i], int(i), float(p[i])) for i in order]))
    return out


def format_predictions(predictions: list[Prediction]) -> str:
    lines = []
    for pred in predictions:
        lines.append(f"{pred.image}:")
        width = max(len(lab) for lab, _, _ in pred.top)
        for rank, (lab, _, prob) in enumerate(pred.top, 1):
            lines.append(f"  {rank}. {lab.ljust(width)}  {prob:.4f}")
    return "\n".join(lines)
