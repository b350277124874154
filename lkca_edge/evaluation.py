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


def layer_outputs(model, images: np.ndarray, batch_size: int = 128) -> dict[str, np.ndarray]:
    """fp32 output of every layer ``models.layer_modules`` names, for (N, C, H, W) images:
    ``{name: (N, ...) float32}``, in execution order. A model in form ``fused`` is read through
    its fused network (the one converters trace), whose layers carry the same names.
    ``patch_embed`` has the position embedding added: the residual stream entering block 0, the
    tensor every artifact has (converters fold the embedding's bias into the positions)."""
    import torch

    from lkca_edge.models import layer_modules

    net = model.export_module() if hasattr(model, "export_module") else model
    layers = layer_modules(net)
    seen: dict[str, list[np.ndarray]] = {name: [] for name, _ in layers}
    hooks = [module.register_forward_hook(
        lambda _m, _inp, out, name=name: seen[name].append(out.detach().float().numpy().copy()))
        for name, module in layers]
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                net(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])))
    finally:
        for h in hooks:
            h.remove()
    out = {name: np.concatenate(parts) for name, parts in seen.items() if parts}
    if "patch_embed" in out:
        out["patch_embed"] = out["patch_embed"] + net.pos_embedding.detach().float().numpy()
    return out
