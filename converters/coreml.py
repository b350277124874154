"""Core ML (.mlpackage) for Apple devices: torch.export -> [PT2E quantize] -> ct.convert ->
[int8 weights] -> save.

Steps: export (ExportedProgram, ATen decompositions) -> [w8a8: PT2E prepare, calibrate on the
real images, convert with folded int8 weights, export again] -> convert to an ML program with the
recipe's deployment target and compute precision -> [int8: per-channel weight quantization] ->
save the package directory.

Conversion runs on any OS; prediction (``MLModel.predict``) runs only on macOS. Elsewhere
``validate_static`` checks the package without running it: its interface, the op counts of its
MIL program, and that every weight stored in it, dequantized, is the source model's weight within
the storage precision. It also estimates the logits off-device by running the torch source with
the package's dequantized weights substituted in (every op's output rounded to fp16 for fp16
programs): an estimate, never a device run.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.base import Backend, ConversionResult, Recipe, Runner, quiet, register_backend
from lkca_edge.errors import UserError, first_line
from lkca_edge.export import float_io

INPUT_NAME, OUTPUT_NAME = "images", "logits"
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
# Storage-precision tolerances of the static weight check (see validate_static).
FP32_RTOL, FP16_RTOL = 1e-6, 1e-3
FP16_MIN_NORMAL, FP32_MIN_NORMAL = 2.0 ** -14, 2.0 ** -126  # below these, spacing is absolute
INT8_STEPS = 1.0  # dequantized int8 weight within one quantization step of its channel
MAX_LISTED = 5  # failures listed by name; the rest are counted


@dataclass(frozen=True)
class CoreMLRecipe(Recipe):
    """A Core ML recipe: the deployment target and compute precision are part of the data."""

    deployment_target: str = "iOS16"   # a coremltools.target name
    compute_precision: str = "FLOAT16"  # a coremltools.precision name
    # None | "int8-weights" (coremltools linear_quantize_weights: symmetric per-channel)
    #      | "pt2e-w8a8" (torchao PT2E with XNNPACKQuantizer: static int8 weights and activations)
    quantization: str | None = None

    def to_dict(self) -> dict:
        return {**super().to_dict(), "deployment_target": self.deployment_target,
                "compute_precision": self.compute_precision, "quantization": self.quantization}


# iOS16 / macOS13 is the oldest target with constexpr int8 weights; it reaches more devices than
# iOS18 and these models need nothing newer. w8a8 needs iOS17's quantize/dequantize ops.
# int8 computes in fp16: the Neural Engine runs only fp16, and fp32 compute would keep an int8
# model off it (int8-fp32 is there for CPU/GPU deployments that want fp32 arithmetic).
RECIPES = {
    r.name: r for r in (
        CoreMLRecipe("fp32", "fp32", "float32 weights and compute (CPU/GPU; the Neural Engine "
                     "cannot run fp32)", compute_precision="FLOAT32"),
        CoreMLRecipe("fp16", "fp16", "float16 weights and compute: the Neural Engine's "
                     "native precision", compute_precision="FLOAT16"),
        CoreMLRecipe("int8", "int8", "int8 symmetric per-channel weights (linear_quantize_weights; "
                     "tensors under 2,048 elements stay fp16), fp16 compute for the Neural Engine",
                     compute_precision="FLOAT16", quantization="int8-weights"),
        CoreMLRecipe("int8-fp32", "int8", "int8 symmetric per-channel weights, fp32 compute "
                     "(CPU/GPU only)", compute_precision="FLOAT32", quantization="int8-weights"),
        CoreMLRecipe("w8a8", "int8", "PT2E static int8: XNNPACKQuantizer per-channel weights and "
                     "per-tensor activations calibrated on real images, fp16 compute",
                     calibrated=True, deployment_target="iOS17", compute_precision="FLOAT16",
                     quantization="pt2e-w8a8"),
    )
}


def _coremltools():
    """coremltools, imported with its import-time warnings (untested torch, no macOS libs) muted."""
    with quiet():
        import coremltools as ct
    return ct


class CoreMLRunner(Runner):
    """``MLModel.predict`` on macOS; compute units ALL (the app default) unless told otherwise."""

    backend = "coreml"

    def __init__(self, path: Path, compute_units: str = "ALL"):
        ct = _coremltools()
        try:
            self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        except Exception as exc:
            raise UserError(f"{path} is not a loadable Core ML package ({first_line(exc)})") from None
        description = self.model.get_spec().description
        self.input_name = description.input[0].name
        self.output_name = description.output[0].name
        self.compute_units = compute_units

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.model.predict({self.input_name: np.ascontiguousarray(x, np.float32)})
        return np.asarray(out[self.output_name], np.float32).reshape(len(x), -1)


@register_backend
class CoreMLBackend(Backend):
    name = "coreml"
    extension = ".mlpackage"
    install_hint = "coremltools"
    convert_modules = ("torch", "coremltools")
    runtime_modules = ("coremltools",)
    recipes = RECIPES
    default_recipes = {"fp32": "fp32", "fp16": "fp16", "int8": "int8"}
    tool_packages = ("coremltools", "torch", "torchao", "executorch")

    # -- availability ---------------------------------------------------------------------------
    def runnable(self) -> str | None:
        if sys.platform != "darwin":
            return f"Core ML prediction needs macOS (this is {platform.system()}): static checks only"
        reason = super().runnable()
        if reason:
            return reason
        if importlib.util.find_spec("coremltools.libcoremlpython") is None:
            return "this coremltools build has no prediction library (libcoremlpython): static checks only"
        return None

    # -- convert --------------------------------------------------------------------------------
    def convert(self, model, example, recipe: Recipe, calibration, out_path: Path) -> ConversionResult:
        recipe = self._coreml_recipe(recipe)
        program = self._export(model, example)
        if recipe.quantization == "pt2e-w8a8":
            program = self._quantize_pt2e(program, example, calibration)
        mlmodel = self._convert(program, example, recipe)
        if recipe.quantization == "int8-weights":
            mlmodel = self._quantize_weights(mlmodel)
        self._describe(mlmodel, model, recipe)
        mlmodel.save(str(out_path))
        inputs, outputs = float_io(example, model.config.num_classes, INPUT_NAME, OUTPUT_NAME)
        return ConversionResult(inputs, outputs, self.inspect(out_path))

    # -- steps -----------------------------------------------------------------------------------
    def _coreml_recipe(self, recipe: Recipe) -> CoreMLRecipe:
        if isinstance(recipe, CoreMLRecipe):
            return recipe
        if recipe.name in self.recipes:
            return self.recipes[recipe.name]
        raise UserError(f"{recipe.name!r} is not a Core ML recipe (valid: {', '.join(self.recipes)})")

    @staticmethod
    def _export(model, example: np.ndarray):
        import torch

        return torch.export.export(model, (torch.from_numpy(example),))

    @staticmethod
    def _quantize_pt2e(program, example: np.ndarray, calibration: np.ndarray):
        """Static int8 with XNNPACK's quantizer; int8 weights folded (Core ML needs that)."""
        import torch
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer, get_symmetric_quantization_config)
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(program.module(), quantizer)
        with _one_thread(), torch.no_grad():  # batch-1 observers: more threads only contend
            for i in range(len(calibration)):
                prepared(torch.from_numpy(calibration[i:i + 1]))
        converted = convert_pt2e(prepared, fold_quantize=True)
        return torch.export.export(converted, (torch.from_numpy(example),))

    @staticmethod
    def _convert(program, example: np.ndarray, recipe: CoreMLRecipe):
        ct = _coremltools()
        return ct.convert(program.run_decompositions({}), convert_to="mlprogram",
                          inputs=[ct.TensorType(name=INPUT_NAME, shape=example.shape, dtype=np.float32)],
                          outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
                          minimum_deployment_target=getattr(ct.target, recipe.deployment_target),
                          compute_precision=getattr(ct.precision, recipe.compute_precision))

    @staticmethod
    def _quantize_weights(mlmodel):
        import coremltools.optimize.coreml as cto

        config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel"))
        return cto.linear_quantize_weights(mlmodel, config=config)

    @staticmethod
    def _describe(mlmodel, model, recipe: CoreMLRecipe) -> None:
        mlmodel.short_description = (f"{model.zoo_name} logits, {recipe.name} recipe "
                                     f"({recipe.description})")
        mlmodel.input_description[INPUT_NAME] = ("float32 (1, C, H, W) image, normalized as the "
                                                 "manifest's preprocessing says")
        mlmodel.output_description[OUTPUT_NAME] = "float32 (1, classes) logits"
        mlmodel.user_defined_metadata.update({"lkca_edge.model": model.zoo_name,
                                              "lkca_edge.recipe": recipe.name})

    # -- run -------------------------------------------------------------------------------------
    def load(self, path, threads: int = 1, compute_units: str | None = None) -> Runner:
        """A predicting runner (macOS only). Core ML picks its own threads; ``threads`` is unused."""
        self.require_runnable()
        path = Path(path)
        self.check_artifact_file(path)
        units = (compute_units or "ALL").upper()
        if units not in COMPUTE_UNITS:
            raise UserError(f"unknown Core ML compute units {compute_units!r} (valid: {', '.join(COMPUTE_UNITS)})")
        return CoreMLRunner(path, units)

    def inspect(self, path) -> dict:
        """Interface, op counts, stored weight bytes and precisions, read from the package's spec."""
        spec, mlmodel = self._read_spec(Path(path))
        function = _main_function(spec)
        ops = function.block_specializations[function.opset].operations
        counts: dict[str, int] = {}
        for op in ops:
            counts[op.type] = counts.get(op.type, 0) + 1
        stored = _stored_weight_summary(ops)
        weights_dir = Path(mlmodel.weights_dir) if mlmodel.weights_dir else None
        weight_bytes = sum(f.stat().st_size for f in weights_dir.rglob("*") if f.is_file()) \
            if weights_dir and weights_dir.is_dir() else 0
        return {
            "spec_version": int(spec.specificationVersion),
            "minimum_deployment_target": _target_name(spec.specificationVersion),
            "opset": function.opset,
            "compute_precision": _compute_precision(ops),
            "inputs": [_feature(f) for f in spec.description.input],
            "outputs": [_feature(f) for f in spec.description.output],
            "op_counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
            "compute_ops": sum(n for t, n in counts.items() if t != "const" and not t.startswith("constexpr")),
            "weight_bytes": int(weight_bytes),
            "stored_weights": stored,  # weight tensors by storage dtype (quantized: data dtype)
        }

    # -- static validation (no prediction) -------------------------------------------------------
    def validate_static(self, path, model, images: np.ndarray | None = None,
                        labels: np.ndarray | None = None) -> dict:
        """Check a package against its torch source without running it.

        Structure: one float32 input of the model's image shape, one float32 output of
        (1, classes), a non-empty MIL program. Weights: every tensor the program stores is read
        and dequantized and compared with the source tensor it came from (matched by the name
        torch.export gave it, else by value among same-shape tensors): fp32 within 1e-6
        relative, fp16 within 1e-3 relative, int8 within one quantization step of its channel.
        Every Linear weight (and frozen token-mixing matrix) of the source must be found.

        Estimate: the torch source with the package's dequantized weights substituted (and every
        op's output rounded to fp16 when the program computes in fp16) on ``images``, else on the
        calibration images the package was just converted with (the pipeline's call); accuracy
        when ``labels`` are given. It does not model Core ML's kernels or w8a8 activation
        quantization: an estimate, not a device run.
        """
        path = Path(path)
        model = model.export_module() if hasattr(model, "export_module") else model
        info = self.inspect(path)
        failures = _check_interface(info, model)
        program = self._read_program(path)
        stored = _stored_tensors(program)
        report = _match_weights(stored, model)
        failures += report["failures"]
        result = {"passed": not failures, "failures": failures, "inputs": info["inputs"],
                  "outputs": info["outputs"], "op_counts": info["op_counts"],
                  "weights": {k: v for k, v in report.items() if k not in ("failures", "values")}}
        source = "given images" if labels is None else "given labelled test images"
        if images is not None and not failures:
            result["estimate"] = _estimate(model, report["values"], info["compute_precision"],
                                           images, labels, "quantize" in info["op_counts"])
            result["estimate"]["images"] = f"{len(images)} {source}"
        result["note"] = _static_note(result, info)
        return result

    # -- reading packages ------------------------------------------------------------------------
    def _read_spec(self, path: Path):
        self.check_artifact_file(path)
        ct = _coremltools()
        try:
            with quiet():
                mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
                spec = mlmodel.get_spec()
        except Exception as exc:
            raise UserError(f"{path} is not a readable Core ML package ({first_line(exc)})") from None
        if spec.WhichOneof("Type") != "mlProgram":
            raise UserError(f"{path} is a Core ML {spec.WhichOneof('Type')} model, not an ML program")
        return spec, mlmodel

    def _read_program(self, path: Path):
        """The package's MIL program with its weights read from the blob file (pymil)."""
        from coremltools.converters.mil.frontend.milproto.load import load as load_mil

        spec, mlmodel = self._read_spec(path)
        try:
            with quiet():
                return load_mil(spec, spec.specificationVersion, mlmodel.weights_dir)
        except Exception as exc:
            raise UserError(f"cannot read the weights of {path} ({first_line(exc)})") from None


# -- spec helpers --------------------------------------------------------------------------------
def _main_function(spec):
    functions = spec.mlProgram.functions
    if "main" not in functions:
        raise UserError(f"the Core ML program has no main function (has: {', '.join(functions)})")
    return functions["main"]


_PROTO_DTYPES = {"FLOAT32": "fp32", "FLOAT16": "fp16", "FLOAT64": "fp64", "INT8": "int8",
                 "UINT8": "uint8", "INT16": "int16", "UINT16": "uint16", "INT32": "int32",
                 "INT4": "int4", "UINT4": "uint4", "BOOL": "bool", "STRING": "string"}


def _dtype_name(code: int) -> str:
    from coremltools.proto import MIL_pb2

    name = MIL_pb2.DataType.Name(code)
    return _PROTO_DTYPES.get(name, name.lower())


def _const_type(op) -> tuple[str | None, list[int]]:
    vt = op.outputs[0].type
    if vt.WhichOneof("type") != "tensorType":
        return None, []
    t = vt.tensorType
    return _dtype_name(t.dataType), [int(d.constant.size) for d in t.dimensions]


_PARAM_DTYPES = ("int32", "int64", "bool", "string")  # shapes, axes, flags: not weights


def _stored_weight_summary(ops) -> dict[str, dict]:
    """Weight tensors by storage dtype: consts, and each constexpr (dequantized at load) counted
    once under its quantized data's dtype, its data/scale/offset consts not counted again."""
    consts = {op.outputs[0].name: _const_type(op) for op in ops if op.type == "const"}
    parts = {arg.name for op in ops if op.type.startswith("constexpr")
             for arg_list in op.inputs.values() for arg in arg_list.arguments if arg.name}
    summary: dict[str, dict] = {}

    def add(dtype, shape):
        if dtype is None or dtype in _PARAM_DTYPES or not shape:
            return
        row = summary.setdefault(dtype, {"tensors": 0, "elements": 0})
        row["tensors"] += 1
        row["elements"] += int(np.prod(shape))

    for op in ops:
        if op.type == "const" and op.outputs[0].name not in parts:
            add(*consts[op.outputs[0].name])
        elif op.type.startswith("constexpr"):
            shape = _const_type(op)[1]
            dtype = None
            for key in ("quantized_data", "data", "indices", "source_val"):
                if key in op.attributes:  # iOS16: the data is an attribute of the op
                    dtype = _dtype_name(op.attributes[key].type.tensorType.dataType)
                elif key in op.inputs:    # iOS18: an input, named const or inline value
                    arg = op.inputs[key].arguments[0]
                    dtype = (consts.get(arg.name, (None, []))[0] if arg.name else
                             _dtype_name(arg.value.type.tensorType.dataType))
                if dtype:
                    break
            add(dtype or op.type, shape)
    return dict(sorted(summary.items(), key=lambda kv: -kv[1]["elements"]))


def _compute_precision(ops) -> str:
    """fp16 when the program's linear/matmul/conv outputs are fp16, else fp32."""
    for op in ops:
        if op.type in ("linear", "matmul", "conv"):
            return _dtype_name(op.outputs[0].type.tensorType.dataType)
    return "unknown"


def _feature(f) -> dict:
    from coremltools.proto import FeatureTypes_pb2

    kind = f.type.WhichOneof("Type")
    if kind != "multiArrayType":
        return {"name": f.name, "type": kind}
    array = f.type.multiArrayType
    dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType).lower()
    return {"name": f.name, "shape": [int(s) for s in array.shape], "dtype": dtype}


def _target_name(spec_version: int) -> str:
    ct = _coremltools()
    try:
        return ct.target(int(spec_version)).name
    except ValueError:
        return f"specification {spec_version}"


# -- static checks -------------------------------------------------------------------------------
def _check_interface(info: dict, model) -> list[str]:
    c = model.config
    want_in = [1, c.in_channels, c.image_size, c.image_size]
    want_out = [1, c.num_classes]
    fails = []
    ins, outs = info["inputs"], info["outputs"]
    if len(ins) != 1 or ins[0].get("shape") != want_in or ins[0].get("dtype") != "float32":
        fails.append(f"inputs are {ins}, expected one float32 {tuple(want_in)} array")
    if len(outs) != 1 or outs[0].get("shape") != want_out or outs[0].get("dtype") != "float32":
        fails.append(f"outputs are {outs}, expected one float32 {tuple(want_out)} array")
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


def _stored_tensors(program) -> list[_Stored]:
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


def _match_weights(stored: list[_Stored], model) -> dict:
    """Pair each stored tensor with its source tensor and check it within its storage precision."""
    tensors, required = _source_tensors(model)
    params = dict(model.named_parameters())
    export_names = {("p_" if name in params else "b_") + name.replace(".", "_"): name
                    for name in tensors}
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


def _estimate(model, values: dict[str, np.ndarray], compute_precision: str, images: np.ndarray,
              labels: np.ndarray | None, activation_quantized: bool) -> dict:
    """Logits of the torch source with the package's weights, every op's output rounded to fp16
    when the program computes in fp16 (fp32 arithmetic inside each op, as accumulators are)."""
    import torch

    from lkca_edge.validation import compare_logits, reference_logits

    with _one_thread():
        reference = reference_logits(model, images)
    half = compute_precision == "fp16"
    twin = copy.deepcopy(model).eval()
    with torch.no_grad(), _one_thread():
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
           "mean_abs_err": m["mean_abs_err"]}
    if labels is not None:
        out["accuracy"], out["reference_accuracy"] = m["accuracy"], m["reference_accuracy"]
    return out


@contextlib.contextmanager
def _one_thread():
    """torch on one thread for a side computation (the machine may be shared), then restored."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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


def _static_note(result: dict, info: dict) -> str:
    w = result["weights"]
    ins, outs = info["inputs"], info["outputs"]
    io = ", ".join(f"{f['name']} {tuple(f.get('shape', []))} {f.get('dtype', '')}" for f in ins + outs)
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



__all__ = ["CoreMLBackend", "CoreMLRecipe", "CoreMLRunner", "RECIPES"]
