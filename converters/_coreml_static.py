"""Core ML static checks, for where a package cannot run (every OS but macOS): its interface, and
every weight it stores, dequantized, against the torch source within the storage precision."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Storage-precision tolerances of the static weight check.
FP32_RTOL, FP16_RTOL = 1e-6, 1e-3
FP16_MIN_NORMAL, FP32_MIN_NORMAL = 2.0 ** -14, 2.0 ** -126  # below these, spacing is absolute
INT8_STEPS = 1.0  # dequantized int8 weight within one quantization step of its channel
MAX_LISTED = 5  # failures listed by name; the rest are counted


def check_interface(info: dict, model, example: np.ndarray | None = None, affine=None,
                    labels=None) -> list[str]:
    """The package's I/O against the source: one float32 (1, C, H, W) array input of the
    model's shape, or (with ``affine``) one RGB/BGR image of the model's size normalised by
    exactly that scale and bias; a float32 (1, classes) ``logits`` output, and (with
    ``labels``) a classifier over them; compute ops."""
    from lkca_edge.converters.base import num_outputs

    c = getattr(model, "config", None)
    want_in = ([1, c.in_channels, c.image_size, c.image_size] if c is not None
               else [1, *example.shape[1:]])
    want_out = [1, num_outputs(model, example[:1] if example is not None else None)]
    fails = []
    ins, outs = info["inputs"], info["outputs"]
    if affine is None:
        if len(ins) != 1 or ins[0].get("shape") != want_in or ins[0].get("dtype") != "float32":
            fails.append(f"inputs are {ins}, expected one float32 {tuple(want_in)} array")
    else:
        height, width = want_in[2], want_in[3]
        want = {"type": "image", "width": width, "height": height, "color": affine.color_layout}
        if len(ins) != 1 or {k: ins[0].get(k) for k in want} != want:
            fails.append(f"inputs are {ins}, expected one {affine.color_layout} image of "
                         f"{width}x{height}")
        found = info.get("image_preprocessing") or {}
        if not found:
            fails.append("the image input's scale and bias ops were not found in the program")
        else:
            scale_ok = np.isclose(found["scale"], affine.scale, rtol=FP16_RTOL)
            bias_ok = np.allclose(found["bias"], affine.bias, rtol=FP16_RTOL, atol=FP16_RTOL)
            if not (scale_ok and bias_ok):
                fails.append(f"the image input normalises with scale {found['scale']:.6g}, bias "
                             f"{found['bias']}; the preprocessing needs scale {affine.scale:.6g}, "
                             f"bias {list(affine.bias)}")
    arrays = [o for o in outs if o.get("type", "multiArrayType") == "multiArrayType"]
    if len(arrays) != 1 or arrays[0].get("shape") != want_out or arrays[0].get("dtype") != "float32":
        fails.append(f"outputs are {outs}, expected one float32 {tuple(want_out)} logits array")
    if labels is not None:
        classifier = info.get("classifier") or {}
        if list(classifier.get("labels") or []) != list(labels):
            fails.append(f"the classifier's labels are {classifier.get('labels')}, expected {list(labels)}")
    if info["compute_ops"] == 0:
        fails.append("the MIL program has no compute ops")
    return fails


@dataclass
class _Stored:
    """One tensor the program stores: its dequantized value and how it is stored."""

    name: str
    value: np.ndarray      # float32, dequantized
    storage: str           # fp32 | fp16 | int8 | ...
    step: np.ndarray | None = None  # quantization step per element (quantized storage only)


_SUFFIXES = ("_quantized", "_to_fp16", "_to_fp32", "_cast_fp16", "_cast_fp32")


def _base_name(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for s in _SUFFIXES:
            if name.endswith(s):
                name, changed = name[: -len(s)], True
    return name


def stored_tensors(program) -> list[_Stored]:
    """Float tensors that the program's compute ops read from const or constexpr ops, dequantized."""
    from coremltools.converters.mil.mil import types

    out, seen = [], set()
    for op in program.functions["main"].operations:
        if op.op_type == "const" or op.op_type.startswith("constexpr"):
            continue
        for var in op.inputs.values():
            for v in (var if isinstance(var, (list, tuple)) else [var]):
                src = v.op
                if src is None or id(v) in seen or not types.is_tensor(v.sym_type):
                    continue
                if not types.is_float(v.dtype):
                    continue
                if src.op_type == "const":
                    value = np.asarray(v.val)
                    storage = types.builtin_to_string(v.dtype)
                    step = None
                elif src.op_type.startswith("constexpr"):
                    value = np.asarray(src.materialized_val_inference())
                    data = src.data if hasattr(src, "data") else getattr(src, "quantized_data", None)
                    storage = types.builtin_to_string(data.dtype) if data is not None else src.op_type
                    step = _quantization_step(src, value.shape)
                else:
                    continue
                seen.add(id(v))
                out.append(_Stored(_base_name(v.name), value.astype(np.float32), storage, step))
    return out


def _quantization_step(op, shape) -> np.ndarray | None:
    """The dequantization scale of every element (per-channel or per-block), broadcast to shape."""
    scale = getattr(op, "scale", None)
    if scale is None or scale.val is None:
        return None
    s = np.abs(np.asarray(scale.val, np.float32))
    axis = getattr(op, "axis", None)
    if axis is not None and s.ndim <= 1:  # iOS16 constexpr_affine_dequantize: vector along axis
        view = [1] * len(shape)
        if s.ndim == 1:
            view[int(axis.val)] = s.shape[0]
        return np.broadcast_to(s.reshape(view), shape)
    if s.ndim != len(shape):
        return None
    for d, (n, b) in enumerate(zip(shape, s.shape)):  # iOS18 blockwise: repeat each block
        s = np.repeat(s, n // b, axis=d)
    return s


def _source_tensors(model) -> tuple[dict[str, np.ndarray], set[str]]:
    """Named float tensors of the torch source, and the names that must be found in the package."""
    from torch import nn

    tensors = {name: t.detach().float().numpy() for name, t in model.named_parameters()}
    tensors.update({name: t.detach().float().numpy() for name, t in model.named_buffers()
                    if t.is_floating_point() and t.numel() > 0})
    required = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    required |= {name for name in tensors if name.endswith(("frozen_matrix", "token_mixing_matrix"))}
    return tensors, required


def _compare(stored: _Stored, ref: np.ndarray) -> tuple[bool, float, str]:
    """(within tolerance, error, description) of one stored tensor against its source tensor.

    Float storage: error relative to max(|w|, the format's smallest normal number), so fp16
    subnormals (absolute spacing 2^-24) are judged fairly. int8: error in quantization steps.
    """
    if not np.all(np.isfinite(stored.value)):
        return False, float("inf"), "non-finite values"
    diff = np.abs(stored.value.astype(np.float64) - ref.astype(np.float64))
    if diff.size == 0:
        return True, 0.0, "empty"
    if stored.step is not None:
        worst = float((diff / np.maximum(stored.step, 1e-30)).max())
        return worst <= INT8_STEPS, worst, f"{worst:.2f} quantization steps"
    rtol, floor = (FP16_RTOL, FP16_MIN_NORMAL) if stored.storage == "fp16" else (FP32_RTOL, FP32_MIN_NORMAL)
    worst = float((diff / np.maximum(np.abs(ref), floor)).max())
    return worst <= rtol, worst, f"relative error {worst:.2g}"


def match_weights(stored: list[_Stored], model) -> dict:
    """Pair each stored tensor with its source tensor and check it within its storage precision."""
    tensors, required = _source_tensors(model)
    params = dict(model.named_parameters())
    export_names = {}
    for name in tensors:  # as torch.export names them, bare or under a wrapper's "network"
        flat = name.replace(".", "_")
        prefix = "p_" if name in params else "b_"
        export_names[prefix + flat] = export_names[f"{prefix}network_{flat}"] = name
    pairs: dict[str, _Stored] = {}
    unclaimed = []
    for s in stored:
        name = export_names.get(s.name)
        if name is not None and name not in pairs and tensors[name].shape == s.value.shape:
            pairs[name] = s
        else:
            unclaimed.append(s)
    by_value = 0
    for name in sorted(required - set(pairs)):  # renamed by quantization: match by value
        ref = tensors[name]
        candidates = [s for s in unclaimed if s.value.shape == ref.shape]
        if candidates:
            best = min(candidates, key=lambda s: _compare(s, ref)[1])
            pairs[name] = best
            unclaimed.remove(best)
            by_value += 1
    failures = [f"source weight {name} {tuple(tensors[name].shape)} is not stored in the package"
                for name in sorted(required - set(pairs))]
    failures = failures[:MAX_LISTED] + ([f"and {len(failures) - MAX_LISTED} more weights are missing"]
                                        if len(failures) > MAX_LISTED else [])
    worst: dict[str, float] = {}
    wrong: list[str] = []
    for name, s in pairs.items():
        ok, err, text = _compare(s, tensors[name])
        key = "int8_steps" if s.step is not None else f"{s.storage}_relative_error"
        worst[key] = max(worst.get(key, 0.0), err)
        if not ok:
            wrong.append(f"stored {s.storage} {name} differs from the source ({text})")
    failures += wrong[:MAX_LISTED] + ([f"and {len(wrong) - MAX_LISTED} more differ"]
                                      if len(wrong) > MAX_LISTED else [])
    storage: dict[str, int] = {}
    for s in pairs.values():
        storage[s.storage] = storage.get(s.storage, 0) + 1
    return {"failures": failures, "checked": len(pairs), "required": len(required),
            "matched_by_value": by_value, "storage": storage,
            "worst": {k: float(f"{v:.3g}") for k, v in worst.items()},
            "values": {name: s.value for name, s in pairs.items()}}



def static_note(result: dict, info: dict) -> str:
    w = result["weights"]
    ins, outs = info["inputs"], info["outputs"]
    io = ", ".join(f"{f['name']} {_describe_feature(f)}" for f in ins + outs)
    ops = info["compute_ops"]
    worst = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in w["worst"].items())
    head = "static checks passed" if result["passed"] else "static checks FAILED"
    note = (f"{head}: {io}; {ops} MIL compute ops ({info['compute_precision']}); "
            f"{w['checked']} stored tensors compared with the source weights "
            f"({w['required']} Linear/token-mixing weights required; worst: {worst or 'n/a'})")
    e = result.get("estimate")
    if e:
        acc = (f"accuracy {e['accuracy']:.2%} vs fp32 {e['reference_accuracy']:.2%}, "
               if "accuracy" in e else "")
        note += (f". ESTIMATE, not a device run ({e['how']}, on {e['images']}): {acc}"
                 f"top-1 agreement {e['top1_agreement']:.2%}, max logit err {e['max_abs_err']:.3g}")
    return note


def _describe_feature(f: dict) -> str:
    if f.get("type") == "image":
        return f"{f.get('color')} image {f.get('width')}x{f.get('height')}"
    if "shape" in f:
        return f"{tuple(f['shape'])} {f.get('dtype', '')}"
    return str(f.get("type", ""))
