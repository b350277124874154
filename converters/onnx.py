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
from pathlib import Path

import numpy as np

from lkca_edge.converters.base import (MAX_ARTIFACT_BYTES, AppInfo, Backend, ConversionResult,
                                       Recipe, Runner, float_io, inside, num_outputs,
                                       register_backend)
from lkca_edge.errors import UserError, first_line
from lkca_edge.fileio import final_name, temporary_directory

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
        Recipe("int8-mixed", "int8", "dynamic int8 as 'int8-dynamic' (the int8 default), with the "
               "layers that add the most error (measured per layer on the int8 artifact) kept in "
               "float until the mixed target is met", options=(("mode", "dynamic"), ("mixed", True))),
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

    # -- intermediate values -----------------------------------------------------------------------
    @property
    def tap_method(self) -> str:
        if Path(self._path).suffix == ".ort":  # a flatbuffer: no ModelProto to add outputs to
            return ""
        return ("ONNX Runtime on the artifact with the layers' tensors added as extra graph "
                "outputs (in memory; the file is not changed)")

    def _proto(self):
        if getattr(self, "_model_proto", None) is None:
            import onnx

            self._model_proto = onnx.load(str(self._path))
        return self._model_proto

    def tensor_graph(self):
        """The ONNX graph as a ``TensorGraph`` (node order is the exporter's topological order)."""
        return onnx_tensor_graph(self._proto())

    def run_with_taps(self, images: np.ndarray, values: list[str]):
        """Logits and the float32 values of graph tensors ``values`` for every image (batch 1),
        from a session of the artifact with those tensors as extra outputs."""
        import onnx
        import onnxruntime as ort

        key = tuple(values)
        if getattr(self, "_tapped", (None,))[0] != key:  # one session per set of values
            model = onnx.ModelProto()
            model.CopyFrom(self._proto())
            present = {o.name for o in model.graph.output}
            quant = _tensor_quantization(model)
            for v in values:
                if v not in present:
                    model.graph.output.append(onnx.ValueInfoProto(name=v))
                    present.add(v)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self._threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            try:
                session = ort.InferenceSession(model.SerializeToString(), opts,
                                               providers=["CPUExecutionProvider"])
            except Exception as exc:
                raise UserError(f"{self._path}: ONNX Runtime refuses the graph with its "
                                f"intermediate tensors as outputs ({first_line(exc)})") from None
            self._tapped = (key, session, quant)
        _, session, quant = self._tapped
        names = [o.name for o in session.get_outputs()]
        logits, taps = [], {v: [] for v in values}
        for i in range(len(images)):
            out = dict(zip(names, session.run(None, {self.input_name: np.ascontiguousarray(
                images[i:i + 1], self.input_dtype)})))
            logits.append(out[names[0]])
            for v in values:
                taps[v].append(_dequantized(out[v], quant.get(v), v).reshape(1, -1))
        return np.concatenate(logits), {v: np.concatenate(a) for v, a in taps.items()}

    ops_method = ("ONNX Runtime's profiler (SessionOptions.enable_profiling): every node's kernel "
                  "time, median over the profiled runs; nodes charged to the source layers by their position between the residual "
                  "additions (converters/_graph.py)")

    def operator_profile(self, x: np.ndarray, runs: int = 10, dims=None) -> list[dict]:
        """Per-node kernel times from ORT's own profiler, as ``_graph.op_table`` entries; with the
        model's ``dims`` (depth, tokens, dim) each node is charged to its source layer."""
        import json

        import onnxruntime as ort

        from lkca_edge.converters._graph import locate_layers, op_layer_names, op_table

        layer_of: dict[str, str] = {}
        if dims and self.tap_method:  # an .ort file has no ModelProto to map nodes from
            try:  # a graph whose layers cannot be located keeps its op times, unlabelled
                graph = self.tensor_graph()
                layer_of = op_layer_names(graph, locate_layers(graph, *dims))
            except UserError:
                layer_of = {}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self._threads
        opts.enable_profiling = True
        with temporary_directory("ort-profile") as d:
            opts.profile_file_prefix = str(Path(d) / "ort")
            sess = ort.InferenceSession(str(self._path), opts, providers=["CPUExecutionProvider"])
            warmup = 5
            for _ in range(warmup + runs):
                sess.run(None, {self.input_name: np.ascontiguousarray(x, self.input_dtype)})
            events = json.loads(Path(sess.end_profiling()).read_text())
        kernels = sorted((e for e in events if e.get("cat") == "Node"
                          and e.get("name", "").endswith("_kernel_time")), key=lambda e: e.get("ts", 0))
        per_run = len(kernels) // (warmup + runs)
        timed = kernels[warmup * per_run:]  # the first runs allocate: leave them out
        names = [e["name"][:-len("_kernel_time")] for e in timed]
        # nodes ORT made at load time (fusions) carry an original node's name as prefix; the
        # reshapes it adds around them take the layer of the next node it knows
        layers: list[str | None] = [layer_of.get(n, layer_of.get(n.split("/")[0])) for n in names]
        following = None
        for i in range(len(layers) - 1, -1, -1):
            if layers[i] is None:
                layers[i] = following
            following = layers[i]
        # one median per node over the runs: a preempted run does not make an op look slow
        per_node: dict[str, list] = {}
        for e, name, layer in zip(timed, names, layers):
            entry = per_node.setdefault(name, [e.get("args", {}).get("op_name", "?"), layer, []])
            entry[2].append(e.get("dur", 0) / 1000.0)
        return op_table([(t, layer, float(np.median(d)), None) for t, layer, d in per_node.values()], 1)


def _nodes_in_layers(exported: Path, pre: Path, layers) -> list[str]:
    """Names of the nodes of the pre-processed model ``pre`` that belong to the source layers
    ``layers`` (module paths), by the module scopes torch.onnx records on the exported model's
    nodes (pre-processing drops that metadata but keeps the node names as prefixes)."""
    import ast

    import onnx

    layers = set(layers or ())
    if not layers:
        return []
    scopes = {}
    for node in onnx.load(str(exported)).graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        try:
            scopes[node.name] = set(ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]")))
        except (ValueError, SyntaxError):
            continue
    def inside(node_scopes) -> bool:  # the network may sit behind a wrapper (image input)
        return any(s == layer or s.endswith("." + layer) for s in node_scopes for layer in layers)

    names = [n.name for n in onnx.load(str(pre)).graph.node
             if inside(scopes.get(n.name.split("/")[0], ()))]
    if not names:
        raise UserError(f"no ONNX nodes found for the layers {', '.join(sorted(layers))}")
    return names


# -- the graph, for per-layer comparison ------------------------------------------------------------
# Data operands of the quantized ops (the others are scales and zero points).
_DATA_INPUTS = {"QLinearAdd": (0, 3), "QLinearMul": (0, 3), "QLinearMatMul": (0, 3),
                "QGemm": (0, 3), "QuantizeLinear": (0,), "DequantizeLinear": (0,),
                "DynamicQuantizeLinear": (0,), "MatMulInteger": (0, 1)}
# (scale input, zero-point input) of ops whose output is quantized.
_OUTPUT_QUANT = {"QuantizeLinear": (1, 2), "QLinearAdd": (6, 7), "QLinearMul": (6, 7),
                 "QLinearMatMul": (6, 7), "QGemm": (7, 8), "QLinearSigmoid": (3, 4),
                 "QLinearLeakyRelu": (3, 4), "QLinearGlobalAveragePool": (3, 4)}


def onnx_tensor_graph(model):
    """A ``TensorGraph`` of an ONNX model: nodes in file order (topological), data operands only,
    element counts from ONNX shape inference where it knows them."""
    import onnx

    from lkca_edge.converters._graph import GraphOp, TensorGraph

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - a graph inference cannot type: no element counts
        inferred = model
    numel = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            numel[vi.name] = int(np.prod([d.dim_value for d in dims]))
    initializers = {i.name for i in model.graph.initializer}
    ops = []
    for node in model.graph.node:
        picked = _DATA_INPUTS.get(node.op_type)
        inputs = [node.input[k] for k in picked if k < len(node.input)] if picked else list(node.input)
        inputs = tuple(v for v in inputs if v and v not in initializers)
        ops.append(GraphOp(type=node.op_type, inputs=inputs,
                           outputs=tuple(v for v in node.output if v), name=node.name,
                           is_add=node.op_type in ("Add", "QLinearAdd")))
    inputs = tuple(i.name for i in model.graph.input if i.name not in initializers)
    return TensorGraph(ops=ops, inputs=inputs, outputs=tuple(o.name for o in model.graph.output),
                       numel=numel)


# (data input, its scale input, its zero-point input) of ops that read quantized tensors.
_INPUT_QUANT = {"QLinearAdd": ((0, 1, 2), (3, 4, 5)), "QLinearMul": ((0, 1, 2), (3, 4, 5)),
                "QLinearMatMul": ((0, 1, 2), (3, 4, 5)), "QGemm": ((0, 1, 2), (3, 4, 5)),
                "DequantizeLinear": ((0, 1, 2),), "QLinearGlobalAveragePool": ((0, 1, 2),),
                "QLinearSigmoid": ((0, 1, 2),), "QLinearLeakyRelu": ((0, 1, 2),)}
_SAME_QUANT = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten")  # move bytes only


def _tensor_quantization(model) -> dict[str, tuple[float, int]]:
    """(scale, zero point) of every quantized tensor whose quantization is stored as constants:
    from the op that writes it, an op that reads it, or through reshapes and transposes."""
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out: dict[str, tuple[float, int]] = {}

    def record(name, scale_name, zero_name):
        scale, zero = consts.get(scale_name), consts.get(zero_name)
        if name and scale is not None and scale.size == 1 and name not in out:
            out[name] = (float(scale.reshape(-1)[0]),
                         int(zero.reshape(-1)[0]) if zero is not None else 0)

    for node in model.graph.node:
        where = _OUTPUT_QUANT.get(node.op_type)
        if where and max(where) < len(node.input) and node.output:
            record(node.output[0], node.input[where[0]], node.input[where[1]])
        for data, scale, zero in _INPUT_QUANT.get(node.op_type, ()):
            if zero < len(node.input):
                record(node.input[data], node.input[scale], node.input[zero])
    moves = [(n.input[0], n.output[0]) for n in model.graph.node
             if n.op_type in _SAME_QUANT and n.input and n.output]
    changed = True
    while changed:
        changed = False
        for a, b in moves:
            for src, dst in ((a, b), (b, a)):
                if src in out and dst not in out:
                    out[dst] = out[src]
                    changed = True
    return out


def _dequantized(value: np.ndarray, quant, name: str) -> np.ndarray:
    value = np.asarray(value)
    if np.issubdtype(value.dtype, np.floating):
        return value.astype(np.float32, copy=False)
    if quant is None:
        raise UserError(f"graph tensor {name} is {value.dtype} with no stored scale: cannot read it "
                        f"as real values")
    return ((value.astype(np.float32) - quant[1]) * quant[0]).astype(np.float32)


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
    keeps_layers_float = True
    # int8 default: dynamic. It needs no calibration, and ORT's static graphs add a
    # Quantize/DequantizeLinear and a QLinearAdd per residual; the measured comparison of the
    # recipes is the operator-forms table in benchmarks/README.md (benchmarks/operator_forms.py).
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
        with temporary_directory("onnx-convert") as work:
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
        lines = [f"# - {final_name(out_path)}"
                 if ln.startswith("# - ") else ln for ln in configs[0].read_text().splitlines()]
        return REQUIRED_OPERATORS, ("\n".join(lines) + "\n").encode("utf-8")

    @staticmethod
    def _quantize(src: Path, dst: Path, recipe: Recipe, calibration: np.ndarray, work: Path) -> None:
        from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                              quantize_dynamic, quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = work / "pre.onnx"
        quant_pre_process(str(src), str(pre))
        exclude = _nodes_in_layers(src, pre, recipe.option("float_layers", ()))
        if recipe.option("mode") == "dynamic":
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                             nodes_to_exclude=exclude)
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
                        per_channel=True, nodes_to_exclude=exclude)

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
