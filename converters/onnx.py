"""ONNX (.onnx) for ONNX Runtime: torch.onnx dynamo export, then onnxruntime quantization.

Steps: export (one file, no external data; optionally a dynamic batch dimension) -> check ->
[pre-process -> quantize] -> labels and preprocessing into ``metadata_props`` -> save ->
[ORT Mobile: onnxruntime's own converter to the .ort format, with the required-operators
configuration for a reduced build beside it].
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from lkca_edge.converters.base import (MAX_ARTIFACT_BYTES, AppInfo, Backend, ConversionResult,
                                       Recipe, Runner, float_io, inside, num_outputs,
                                       register_backend)
from lkca_edge.errors import UserError, first_line

INPUT_NAME, OUTPUT_NAME = "images", "logits"
OPSET = 20
BATCH_DIM = "batch"  # the name of a dynamic batch dimension in the graph and the manifest
ORT_IDENTIFIER = b"ORTM"  # flatbuffer file identifier at bytes 4..8 of an ORT format model
# ORT Mobile conversion: optimizations fixed at conversion time, for the ARM CPUs of phones and
# boards (x86-only layouts such as NCHWc left out), with per-operator types in the config.
ORT_CONVERTER = ("onnxruntime.tools.convert_onnx_models_to_ort", "--optimization_style", "Fixed",
                 "--target_platform", "arm", "--enable_type_reduction")
ORT_CONVERT_TIMEOUT = 600
# The reduced-build configuration beside an .ort (operators and their types), passed to
# onnxruntime's build.py as --include_ops_by_config <artifact>.required_operators.config.
REQUIRED_OPERATORS = "required_operators.config"

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
        self.input_dtype = np.uint8 if self.session.get_inputs()[0].type == "tensor(uint8)" else np.float32

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, self.input_dtype)})[0]

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
                sess.run(None, {self.input_name: np.ascontiguousarray(x, self.input_dtype)})
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
    input_kinds = ("tensor", "image")
    dynamic_batch = True
    extensions = (".ort",)

    def convert(self, model, example, recipe: Recipe, calibration, out_path: Path,
                app: AppInfo | None = None) -> ConversionResult:
        import onnx

        out_path = Path(out_path)
        dynamic = bool(app and app.dynamic_batch)
        ort_format = out_path.suffix == ".ort"
        companions: dict[str, bytes] = {}
        details: dict = {"opset": OPSET}
        with tempfile.TemporaryDirectory() as work:
            work = Path(work)
            fp32_path, onnx_path = work / "fp32.onnx", work / "model.onnx"
            self._export(model, example, fp32_path, dynamic)
            if recipe.precision == "fp32":
                fp32_path.replace(onnx_path)
            else:
                self._quantize(fp32_path, onnx_path, recipe, calibration, work)
            if app is not None:
                self._write_metadata(onnx_path, app)
            onnx.checker.check_model(str(onnx_path))
            details.update(self.inspect(onnx_path))
            if ort_format:
                config_name, config = self._to_ort(onnx_path, out_path, work)
                companions[config_name] = config
                details["format"] = "ort"
                details["ort_conversion"] = " ".join(ORT_CONVERTER[1:])
                details["required_operators"] = config_name
            else:
                onnx_path.replace(out_path)
        inputs, outputs = float_io(example, num_outputs(model, example), INPUT_NAME, OUTPUT_NAME,
                                   batch=BATCH_DIM if dynamic else None)
        return ConversionResult(inputs, outputs, details, companions)

    # -- steps -----------------------------------------------------------------------------------
    @staticmethod
    def _export(model, example: np.ndarray, path: Path, dynamic_batch: bool = False) -> None:
        import torch

        kwargs = {}
        if dynamic_batch:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim(BATCH_DIM, min=1, max=1024)},)
        program = torch.onnx.export(model, (torch.from_numpy(example),), dynamo=True,
                                    opset_version=OPSET, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], verbose=False, **kwargs)
        program.save(str(path), external_data=False)
        if dynamic_batch:
            _name_batch_dim(path)

    @staticmethod
    def _write_metadata(path: Path, app: AppInfo) -> None:
        """``labels`` (a JSON list) and ``preprocessing`` (JSON, as in the manifest) into the
        model's ``metadata_props``, beside what the quantizer wrote; the description as its
        doc string."""
        import onnx

        m = onnx.load(str(path))
        props = {p.key: p.value for p in m.metadata_props}
        props.update({"labels": json.dumps(list(app.labels)),
                      "preprocessing": json.dumps(app.preprocessing),
                      "input_kind": app.input_kind, "model": app.model, "version": app.version})
        del m.metadata_props[:]
        for key, value in props.items():
            m.metadata_props.add(key=key, value=value)
        m.doc_string = app.description
        m.producer_name, m.producer_version = "lkca-edge", app.version.rsplit(" ", 1)[-1]
        onnx.save(m, str(path))

    @staticmethod
    def _to_ort(onnx_path: Path, out_path: Path, work: Path) -> tuple[str, bytes]:
        """onnxruntime's own converter (``python -m onnxruntime.tools.convert_onnx_models_to_ort``)
        -> the .ort at ``out_path``; returns the required-operators config (name, bytes)."""
        src, dst = work / "ort_src", work / "ort_out"
        src.mkdir()
        onnx_path.replace(src / "model.onnx")
        try:
            proc = subprocess.run([sys.executable, "-m", *ORT_CONVERTER, "--output_dir", str(dst),
                                   str(src / "model.onnx")], capture_output=True, text=True,
                                  timeout=ORT_CONVERT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise UserError(f"the ORT format converter did not finish in {ORT_CONVERT_TIMEOUT} s") from None
        ort_files = sorted(dst.rglob("*.ort")) if dst.is_dir() else []
        configs = sorted(dst.glob("*.config")) if dst.is_dir() else []
        if proc.returncode != 0 or len(ort_files) != 1 or not configs:
            tail = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            raise UserError(f"the ORT format conversion failed ({tail[-1][:200] if tail else 'no output'})")
        ort_files[0].replace(out_path)
        # The converter names the model it read by its temporary path; name the artifact.
        lines = [f"# - {_final_name(out_path)}"
                 if ln.startswith("# - ") else ln for ln in configs[0].read_text().splitlines()]
        return REQUIRED_OPERATORS, ("\n".join(lines) + "\n").encode("utf-8")

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
        if path.suffix == ".ort":  # the ORT format holds its weights inside the flatbuffer
            check_regular(path, "ORT model", limit=MAX_ARTIFACT_BYTES)
            return [path]
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
    def check_artifact_file(self, path: Path) -> None:
        super().check_artifact_file(path)
        if path.suffix == ".ort":
            with open(path, "rb") as f:
                head = f.read(8)
            if len(head) < 8 or head[4:8] != ORT_IDENTIFIER:
                raise UserError(f"{path} is not an ORT format model (no 'ORTM' flatbuffer identifier)")

    def inspect(self, path) -> dict:
        import onnx

        path = Path(path)
        if path.suffix == ".ort":
            return self._inspect_ort(path)
        try:
            m = onnx.load(str(path))
        except Exception as exc:
            raise UserError(f"{path} is not an ONNX model ({first_line(exc)})") from None
        counts: dict[str, int] = {}
        for node in m.graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        opsets = {o.domain or "ai.onnx": o.version for o in m.opset_import}
        return {"op_counts": dict(sorted(counts.items(), key=lambda kv: -kv[1])), "opsets": opsets,
                "metadata_keys": sorted(p.key for p in m.metadata_props)}

    def _inspect_ort(self, path: Path) -> dict:
        """An .ort file is read by ONNX Runtime only (onnx cannot parse it): its I/O and
        metadata as the session reports them."""
        import onnxruntime as ort

        self.check_artifact_file(path)
        try:
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise UserError(f"{path} is not a loadable ORT format model ({first_line(exc)})") from None
        meta = sess.get_modelmeta()
        return {"format": "ort",
                "io": {"inputs": [{"name": i.name, "shape": i.shape, "type": i.type} for i in sess.get_inputs()],
                       "outputs": [{"name": o.name, "shape": o.shape, "type": o.type} for o in sess.get_outputs()]},
                "metadata_keys": sorted(meta.custom_metadata_map)}


def _final_name(path: Path) -> str:
    """The artifact's name for a path written under an atomic temporary name
    (``.stem.XXXX.partial.ort`` -> ``stem.ort``)."""
    name = path.name
    if name.startswith(".") and ".partial" in name:
        stem = name[1:].rsplit(".", 1)[0]          # 'stem.XXXX.partial'
        stem = stem.rsplit(".", 2)[0]              # 'stem'
        return stem + path.suffix
    return name


def _name_batch_dim(path: Path) -> None:
    """Give the dynamic first dimension of every graph input and output the name ``batch``
    (torch.onnx names it after its symbol, e.g. ``s0``)."""
    import onnx

    m = onnx.load(str(path))
    for value in [*m.graph.input, *m.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_param = BATCH_DIM
    onnx.save(m, str(path))
