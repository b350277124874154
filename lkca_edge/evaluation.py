"""Running a torch model on preprocessed arrays: logits and top-1 accuracy (fp32, no grad)."""

from __future__ import annotations

import numpy as np


def reference_logits(model, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """fp32 logits of a torch model for (N, C, H, W) float32 images."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            out.append(model(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size]))).numpy())
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out).astype(np.float32)


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy (0..1) of a torch model on preprocessed arrays (the model is put in eval)."""
    model.eval()
    if len(x) == 0:
        return 0.0
    logits = reference_logits(model, x, batch_size)
    return float((logits.argmax(1) == y).mean())
