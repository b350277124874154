"""ONNX (.onnx) for ONNX Runtime: torch.onnx dynamo export, then onnxruntime quantization.

Steps: export (one file, no external data) -> check -> [pre-process -> quantize] -> save.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from lkca_edge.converters.base import (MAX_ARTIFACT_BYTES, Backend, ConversionResult, Recipe,
                                       Runner, float_io, inside, num_outputs, register_backend)
from lkca_edge.errors import UserError, first_line

INPUT_NAME, OUTPUT_NAME = "images", "logits"
OPSET = 20

RECIPES = {
    r.name: r for r in (
        Recipe("fp32", "fp32", "float32 graph as exported"),
        Recipe("int8", "int8", "static int8 QOperator, u8 activations / s8 per-channel weights, "
               "calibrated on real images", calibrated=True,
               options=(("mode", "static"), ("format", "QOperator"))),
        Recipe("int8-qdq", "int8", "static int8 QDQ, u8 activations / s8 per-channel weights, "
               "calibrated on real images", calibrated=True,
               options=(("mode", "static"), ("format", "QDQ"))),
        Recipe("int8-dynamic", "int8", "dynamic int8: s8 per-channel weights, activations "
               "quantized at run time", options=(("mode", "dynamic"),)),
    )
}


class OrtRunner(Runner):
    backend = "onnx"

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._path, self._threads = path, threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise UserError(f"{path} is not a loadable ONNX model ({first_line(exc)})") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]

    def operator_profile(self, x: np.ndarray, runs: int = 10) -> list[dict]:
        """Per-operator mean time from ORT's own profiler."""
        import json

        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self._threads
        opts.enable_profiling = True
        with tempfile.TemporaryDirectory() as d:
            opts.profile_file_prefix = str(Path(d) / "ort")
            sess = ort.InferenceSession(str(self._path), opts, providers=["CPUExecutionProvider"])
            warmup = 5
            for _ in range(warmup + runs):
                sess.run(None, {self.input_name: x})
            events = json.loads(Path(sess.end_profiling()).read_text())
        kernels = sorted((e for e in events if e.get("cat") == "Node"
                          and e.get("name", "").endswith("_kernel_time")), key=lambda e: e.get("ts", 0))
        per_run = len(kernels) // (warmup + runs)
        totals: dict[str, list[float]] = {}
        for e in kernels[warmup * per_run:]:  # the first runs allocate: leave them out
            op = e.get("args", {}).get("op_name", "?")
            totals.setdefault(op, []).append(e.get("dur", 0) / 1000.0)
        return sorted(({"op": op, "ms": sum(t) / runs, "count": len(t) // max(1, runs),
                        "delegated": None} for op, t in totals.items()),
                      key=lambda r: -r["ms"])


# Where ONNX tensors can live, by protobuf field number (onnx.proto3): message -> {field: message}.
# Every path to a TensorProto, so no external-data entry escapes the walk below.
_PROTO_CHILDREN = {
    "model": {7: "graph", 25: "function"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
}
_MAX_PROTO_DEPTH = 64


def _fields(buf: bytes, start: int, end: int):
    """(field number, wire type, value start, value end) of a protobuf message's fields."""
    pos = start

    def varint():
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= end or shift > 63:
                raise ValueError("truncated varint")
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    groups = 0  # inside a (deprecated) group: skipped, as a protobuf parser skips unknown fields
    while pos < end:
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 3:
            groups += 1
            continue
        if wire == 4:
            if not groups:
                raise ValueError("unbalanced group")
            groups -= 1
            continue
        if wire == 0:
            varint()
            continue
        if wire == 1:
            size = 8
        elif wire == 5:
            size = 4
        elif wire == 2:
            size = varint()
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos + size > end:
            raise ValueError("truncated field")
        if not groups:
            yield number, wire, pos, pos + size
        pos += size
    if groups:
        raise ValueError("unterminated group")


def external_data_locations(data: bytes) -> set[str]:
    """Every ``location`` of an external-data entry of any tensor in a serialised ModelProto
    (initializers, sparse initializers, attribute tensors, subgraphs and functions), read from
    the wire format itself: no ``onnx`` package needed, any field order handled."""
    found: set[str] = set()
    stack = [("model", 0, len(data), 0)]
    try:
        while stack:
            kind, start, end, depth = stack.pop()
            if depth > _MAX_PROTO_DEPTH:
                raise UserError("the ONNX model nests graphs too deeply")
            if kind == "entry":
                entry = {n: data[a:b] for n, w, a, b in _fields(data, start, end) if w == 2}
                if entry.get(1) == b"location":
                    found.add(entry.get(2, b"").decode("utf-8", errors="replace"))
                continue
            children = _PROTO_CHILDREN[kind]
            for number, wire, a, b in _fields(data, start, end):
                if wire == 2 and number in children:
                    stack.append((children[number], a, b, depth + 1))
    except ValueError as exc:
        raise UserError(f"not a readable ONNX model (malformed protobuf: {exc})") from None
    return found


@register_backend
class OnnxBackend(Backend):
    name = "onnx"
    order = 3
    aliases = ("ort", "onnxruntime")
    extension = ".onnx"
    install_hint = "onnx onnxscript onnxruntime"
    convert_modules = ("torch", "onnx", "onnxscript", "onnxruntime")
    runtime_modules = ("onnxruntime",)
    runtime_extra = "runtime-onnx"
    recipes = RECIPES
    # int8 default: dynamic. Faster than static QOperator / QDQ on lkca-1m (form fused, 1 thread:
    # 0.994 vs 1.094 / 1.051 ms) and closer to fp32 (max logit error 0.08 vs 0.24), with no
    # calibration; ORT's static graphs add a Quantize/DequantizeLinear and a QLinearAdd per
    # residual. Numbers: benchmarks/README.md, run of 2026-11-22.
    default_recipes = {"fp32": "fp32", "int8": "int8-dynamic"}
    runner_class = OrtRunner
    tool_packages = ("onnx", "onnxscript", "onnxruntime", "torch")
    runtime_distributions = {"onnxruntime": "onnxruntime"}
    runtime_preload = (("onnxruntime",),)

    def convert(self, model, example, recipe: Recipe, calibration, out_path: Path) -> ConversionResult:
        with tempfile.TemporaryDirectory() as work:
            fp32_path = Path(work) / "fp32.onnx"
            self._export(model, example, fp32_path)
            if recipe.precision == "fp32":
                fp32_path.replace(out_path)
            else:
                self._quantize(fp32_path, out_path, recipe, calibration, Path(work))
        import onnx

        onnx.checker.check_model(str(out_path))
        inputs, outputs = float_io(example, num_outputs(model, example), INPUT_NAME, OUTPUT_NAME)
        return ConversionResult(inputs, outputs, {"opset": OPSET, **self.inspect(out_path)})

    # -- steps -----------------------------------------------------------------------------------
    @staticmethod
    def _export(model, example: np.ndarray, path: Path) -> None:
        import torch

        program = torch.onnx.export(model, (torch.from_numpy(example),), dynamo=True,
                                    opset_version=OPSET, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], verbose=False)
        program.save(str(path), external_data=False)

    @staticmethod
    def _quantize(src: Path, dst: Path, recipe: Recipe, calibration: np.ndarray, work: Path) -> None:
        from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                              quantize_dynamic, quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = work / "pre.onnx"
        quant_pre_process(str(src), str(pre))
        if recipe.option("mode") == "dynamic":
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=True)
            return

        class Images(CalibrationDataReader):
            def __init__(self):
                self._it = iter(calibration[i:i + 1] for i in range(len(calibration)))

            def get_next(self):
                x = next(self._it, None)
                return None if x is None else {INPUT_NAME: x}

        quantize_static(str(pre), str(dst), Images(),
                        quant_format=getattr(QuantFormat, recipe.option("format")),
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True)

    # -- integrity -------------------------------------------------------------------------------
    def artifact_files(self, path) -> list[Path]:
        """The model file and every external-data file its tensors name (ONNX Runtime opens
        them from the model's directory); a location that leaves the directory is refused."""
        from lkca_edge.safeio import check_regular, read_bytes

        path = Path(path)
        data = read_bytes(path, "ONNX model", limit=MAX_ARTIFACT_BYTES)
        files = [path]
        try:
            locations = external_data_locations(data)
        except UserError as exc:
            raise UserError(f"{path} is {exc}") from None
        for location in sorted(locations):
            target = inside(path.parent, location)
            if target is None:
                raise UserError(f"{path} names external data {location!r} outside its directory; "
                                f"refused (ONNX Runtime would read a file the manifest does not cover)")
            check_regular(target, "ONNX external data file", limit=MAX_ARTIFACT_BYTES)
            files.append(target)
        return files

    # -- run -------------------------------------------------------------------------------------
    def inspect(self, path) -> dict:
        import onnx

        try:
            m = onnx.load(str(path))
        except Exception as exc:
            raise UserError(f"{path} is not an ONNX model ({first_line(exc)})") from None
        counts: dict[str, int] = {}
        for node in m.graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        opsets = {o.domain or "ai.onnx": o.version for o in m.opset_import}
        return {"op_counts": dict(sorted(counts.items(), key=lambda kv: -kv[1])), "opsets": opsets}
