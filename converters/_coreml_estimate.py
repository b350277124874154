"""Core ML off-device estimate: the torch source with the package's dequantized weights, every op's
output rounded to fp16 when the program computes in fp16. An estimate, never a device run."""

from __future__ import annotations

import contextlib
import copy

import numpy as np

from lkca_edge.converters._pt2e import torch_threads


def estimate(model, values: dict[str, np.ndarray], compute_precision: str, images: np.ndarray,
             labels: np.ndarray | None, activation_quantized: bool) -> dict:
    """Logits of the torch source with the package's weights, every op's output rounded to fp16
    when the program computes in fp16 (fp32 arithmetic inside each op, as accumulators are)."""
    import torch

    from lkca_edge.evaluation import reference_logits
    from lkca_edge.gates import compare_logits

    with torch_threads(1):
        reference = reference_logits(model, images)
    half = compute_precision == "fp16"
    twin = copy.deepcopy(model).eval()
    with torch.no_grad(), torch_threads(1):
        state = {**dict(twin.named_parameters()), **dict(twin.named_buffers())}
        changed = False
        for name, value in values.items():
            changed |= not np.array_equal(state[name].numpy(), value)
            state[name].copy_(torch.from_numpy(value))
        if changed or half:
            with _fp16_activations() if half else contextlib.nullcontext():
                logits = reference_logits(twin, images)
        else:  # bit-identical weights, fp32 compute: the source's own logits
            logits = reference
    fake = labels if labels is not None else reference.argmax(1)
    m = compare_logits(logits, reference, fake)
    out = {"estimate": True,
           "how": ("torch source with the package's dequantized weights"
                   + (", every op output rounded to fp16" if half else ", fp32 activations")
                   + ("; activation quantization not modelled" if activation_quantized else "")),
           "top1_agreement": m["top1_agreement"], "max_abs_err": m["max_abs_err"],
           "mean_abs_err": m["mean_abs_err"], "cosine": m["cosine"],
           "decisive_agreement": m["decisive_agreement"], "n_decisive": m["n_decisive"]}
    if labels is not None:
        out["accuracy"], out["reference_accuracy"] = m["accuracy"], m["reference_accuracy"]
    return out


def layer_values(model, values: dict[str, np.ndarray], compute_precision: str,
                 images: np.ndarray) -> dict[str, np.ndarray]:
    """Every layer's output (``evaluation.layer_outputs``) of the torch source with the package's
    dequantized weights, every op's output rounded to fp16 for fp16 programs."""
    import torch

    from lkca_edge.evaluation import layer_outputs

    twin = copy.deepcopy(model).eval()
    with torch.no_grad(), torch_threads(1):
        state = {**dict(twin.named_parameters()), **dict(twin.named_buffers())}
        for name, value in values.items():
            state[name].copy_(torch.from_numpy(value))
        with _fp16_activations() if compute_precision == "fp16" else contextlib.nullcontext():
            return layer_outputs(twin, images)


def _fp16_activations():
    """A torch function mode that rounds the float output of every op to fp16, as an fp16 ML
    program stores every intermediate tensor."""
    import torch
    from torch.overrides import TorchFunctionMode

    class Fp16Activations(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.dtype == torch.float32:
                return out.half().float()
            return out

    return Fp16Activations()
