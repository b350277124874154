"""ExecuTorch (.pte) with the XNNPACK delegate: torch.export, PT2E quantization, XNNPACK lowering.

Steps, as in ExecuTorch's examples/xnnpack/aot_compiler.py:
export -> [quantize (PT2E, XNNPACKQuantizer) -> export again] -> lower (XnnpackPartitioner) ->
serialize. What XNNPACK did not take (LayerNorm and the final mean in LKCA today) runs on
ExecuTorch's portable/optimized CPU kernels; the split is counted from the lowered graph and
written into the manifest.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import struct
from collections import Counter
from pathlib import Path

import numpy as np

from lkca_edge.converters.base import (AppInfo, Backend, ConversionResult, Recipe, Runner,
                                       float_io, num_outputs, read_artifact,
                                       register_backend)
from lkca_edge.errors import UserError, first_line
from lkca_edge.fileio import temporary_directory
from lkca_edge.logs import quiet

METHOD = "forward"
# Constant methods: what an app reads from the program itself (each returns one JSON string or
# string), e.g. ``module.execute("labels")`` in ExecuTorch's Android/iOS APIs.
LABELS_METHOD, PREPROCESSING_METHOD, INPUT_KIND_METHOD = "labels", "preprocessing", "input_kind"
_POOL_THREADS: int | None = None  # the size this process last gave ExecuTorch's threadpool

RECIPES = {
    r.name: r for r in (
        Recipe("fp32", "fp32", "float32 graph lowered to XNNPACK"),
        Recipe("int8", "int8", "static int8 PT2E (XNNPACKQuantizer, symmetric, per-channel "
               "weights), calibrated on real images, lowered to XNNPACK", calibrated=True,
               options=(("mode", "static"), ("per_channel", True))),
        Recipe("fp32-aten-norms", "fp32", "float32 lowered to XNNPACK without rewriting "
               "LayerNorm/mean, which then run as portable kernels (for comparison)",
               options=(("delegable_norms", False),)),
        Recipe("int8-dynamic", "int8", "dynamic int8 PT2E (XNNPACKQuantizer, symmetric "
               "per-channel weights, activations quantized at run time), lowered to XNNPACK",
               options=(("mode", "dynamic"), ("per_channel", True))),
        Recipe("int8-mixed", "int8", "static int8 as 'int8', with the layers that add the most "
               "error (measured per layer on the int8 artifact) kept in float until the mixed "
               "target is met", calibrated=True,
               options=(("mode", "static"), ("per_channel", True), ("mixed", True))),
    )
}


class ExecuTorchRunner(Runner):
    """One loaded ``forward`` method of a .pte program.

    The pip build of the pybindings links libtorch (``_C`` needs libtorch_python) and
    ``portable_lib`` imports torch itself, and ``Method.execute`` accepts only torch tensors
    ("Unsupported python type numpy.ndarray"). So running a .pte from Python needs torch; a
    board without torch runs the .pte through ExecuTorch's C++ runtime instead. torch is
    imported here, at load time, never when the backend module is imported.
    """

    backend = "executorch"
    planned_memory_label = "ExecuTorch memory-planned buffers (forward)"

    def __init__(self, path: Path, threads: int):
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

        self._path = path
        self._planned: int | None = None
        self.program = _load_program(path)
        # The pybind threadpool defaults to every core; pin it to what the caller asked for.
        # It is process-wide and resetting it under a live runner can abort the process, so it
        # is reset only when the size changes (one thread count per process, as the profiler and
        # validation children use).
        global _POOL_THREADS
        threads = max(1, int(threads))
        if threads != _POOL_THREADS:
            _unsafe_reset_threadpool(threads)
            _POOL_THREADS = threads
        if METHOD not in self.program.method_names:
            raise UserError(f"{path} has no {METHOD!r} method "
                            f"(methods: {', '.join(sorted(self.program.method_names))})")
        try:
            self.method = self.program.load_method(METHOD)
        except RuntimeError as exc:
            raise UserError(f"{path}: cannot load method {METHOD!r} ({first_line(exc)})") from None
        kind = _constant(self.program, INPUT_KIND_METHOD)
        self.input_dtype = np.uint8 if kind == "image" else np.float32

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        out = self.method.execute([torch.from_numpy(np.ascontiguousarray(x, self.input_dtype))])
        return out[0].numpy().astype(np.float32, copy=False)

    def app_metadata(self) -> dict:
        """Labels, preprocessing and input kind as the program's constant methods return them
        (empty for a program exported without them)."""
        return read_constant_methods(self.program)

    def planned_memory_bytes(self) -> int | None:
        """Bytes of the memory-planned (activation) buffers of ``forward``.

        MethodMeta::memory_planned_buffer_size exists in C++ but the Python MethodMeta does not
        expose it, so the same numbers are read from the program itself (the execution plan's
        non_const_buffer_sizes, which is what MethodMeta reports). XNNPACK's own scratch
        workspace is allocated by the delegate at run time and is not included.
        """
        if self._planned is None:
            self._planned = self._program_facts()["plans"][METHOD]["planned_memory_bytes"]
        return self._planned

    def _program_facts(self) -> dict:
        if getattr(self, "_facts", None) is None:
            self._facts = _read_program(self._path)
        return self._facts

    def memory_facts(self) -> dict:
        """The planned activation arena and the constant (weight) bytes, read from the .pte:
        what a device running it holds besides the runtime itself (XNNPACK's packed weights
        and scratch workspace come on top)."""
        facts = self._program_facts()
        return {"activation_arena_bytes": facts["plans"][METHOD]["planned_memory_bytes"],
                "constant_bytes": facts["weight_bytes"]}

    # -- intermediate values -----------------------------------------------------------------------
    tap_method = ("the ExecuTorch runtime with its XNNPACK delegate on a copy of the .pte whose "
                  "delegate hands the layers' values out as extra outputs (converters/_pte_taps.py)")

    def tensor_graph(self):
        """The forward plan's graph: XNNPACK nodes inside each delegate, kernel calls outside."""
        from lkca_edge.converters._pte_taps import read_pte_graph

        return read_pte_graph(self._path, METHOD).tensor_graph

    def run_with_taps(self, images: np.ndarray, values: list[str]):
        """Logits and the dequantized float32 values of ``values`` (those the delegate computes;
        values of portable kernels are left out) for every image."""
        import torch
        from executorch.runtime import Runtime

        from lkca_edge.converters._pte_taps import read_pte_graph, tapped_program

        key = tuple(values)
        if getattr(self, "_tapped", (None,))[0] != key:  # one tapped program per set of values
            content, taps, _missing = tapped_program(read_pte_graph(self._path, METHOD), values)
            try:
                program = Runtime.get().load_program(content)
                self._tapped = (key, program, program.load_method(METHOD), taps)
            except RuntimeError as exc:
                raise UserError(f"{self._path}: the copy with its layers as outputs does not load "
                                f"({first_line(exc)})") from None
        _, _, method, taps = self._tapped
        logits, out = [], {t.value: [] for t in taps}
        for i in range(len(images)):
            result = method.execute([torch.from_numpy(np.ascontiguousarray(images[i:i + 1], self.input_dtype))])
            logits.append(result[0].numpy().astype(np.float32))
            for t in taps:
                v = result[t.output_index].numpy()
                if t.quantization is not None:
                    v = (v.astype(np.float32) - t.quantization[1]) * t.quantization[0]
                out[t.value].append(np.asarray(v, np.float32).reshape(1, -1))
        return np.concatenate(logits), {k: np.concatenate(v) for k, v in out.items()}

    # -- operator profile ----------------------------------------------------------------------
    ops_method = ("ETDump: the .pte run with ExecuTorch's event tracer (load_program(enable_etdump="
                  "True)), read by devtools' Inspector; XNNPACK's own per-operator events, median "
                  "over the profiled runs; charged to the source layers by aligning them with the "
                  "delegate's nodes at the matrix products (XNNPACK's events name no graph node)")

    def operator_profile(self, x: np.ndarray, runs: int = 10, dims=None) -> list[dict]:
        """Per-operator times from an ETDump of ``runs`` runs (after 3 warm-up runs), as
        ``_graph.op_table`` entries; ``ops_note`` says what the tracer saw. Where the
        installed runtime records no operator events (no event tracer compiled in), per delegate
        call instead, and ``ops_note`` says so."""
        import warnings

        import torch
        from executorch.runtime import Runtime

        from lkca_edge.converters._graph import layers_by_anchors, locate_layers, op_table

        warmup = 3
        program = Runtime.get().load_program(self._path, enable_etdump=True, debug_buffer_size=0)
        method = program.load_method(METHOD)
        xt = torch.from_numpy(np.ascontiguousarray(x, self.input_dtype))  # pixels for image inputs
        for _ in range(warmup + runs):
            method.execute([xt])
        with temporary_directory("etdump") as tmp:
            etdump = str(Path(tmp) / "run.etdp")
            program.write_etdump_result_to_file(etdump, str(Path(tmp) / "debug.bin"))
            from executorch.devtools import Inspector

            with warnings.catch_warnings(), quiet():
                warnings.simplefilter("ignore")  # "Output Buffer not found": no debug buffer asked
                inspector = Inspector(etdump_path=etdump)
        events = [e for block in inspector.event_blocks if block.name == "Execute"
                  for e in block.events if e.perf_data is not None and e.perf_data.raw]

        def median(e):
            return float(np.median(e.perf_data.raw[-runs:]))

        ops = [e for e in events if e.is_delegated_op or e.name not in _AGGREGATE_EVENTS]
        total = next((median(e) for e in events if e.name == "Method::execute"), None)
        if ops and any(e.is_delegated_op for e in ops):
            self.ops_note = ("the installed ExecuTorch runtime records per-operator events "
                             "(event tracer compiled in)")
        else:
            ops = [e for e in events if e.name == "DELEGATE_CALL"]
            self.ops_note = ("the installed ExecuTorch runtime records no per-operator events: "
                             "time per delegate call")
        types = [_event_type(e.name) for e in ops]
        layers: list = [None] * len(ops)
        if dims:
            try:
                graph = self.tensor_graph()
                layers = layers_by_anchors(types, graph, locate_layers(graph, *dims))
            except UserError:
                pass
        table = op_table([(t, layer, median(e), bool(e.is_delegated_op))
                          for t, layer, e in zip(types, layers, ops)], 1)
        if total is not None:
            inside = sum(e["total_ms"] for e in table)
            self.ops_note += (f"; the operators sum to {inside:.3f} ms of Method::execute's "
                              f"{total:.3f} ms under the tracer (which times every event: its own "
                              f"cost is in the difference)")
        return table


_AGGREGATE_EVENTS = ("Method::execute", "DELEGATE_CALL", "Method::init", "Program::load_method")


def _event_type(name: str) -> str:
    """'Fully Connected (NC, QS8, QC8W) GEMM' for XNNPACK's event 'Fully Connected (...) GEMM #3'."""
    head, sep, tail = name.rpartition(" #")
    return head if sep and tail.isdigit() else name


@register_backend
class ExecuTorchBackend(Backend):
    name = "executorch"
    order = 0
    aliases = ("xnnpack", "pte", "et")
    extension = ".pte"
    install_hint = "executorch"
    convert_modules = ("torch", "executorch", "torchao")
    runtime_modules = ("executorch",)
    runtime_extra = "runtime-executorch"
    recipes = RECIPES
    keeps_layers_float = True
    default_recipes = {"fp32": "fp32", "int8": "int8"}
    runner_class = ExecuTorchRunner
    tool_packages = ("executorch", "torch", "torchao")
    runtime_distributions = {"executorch": "executorch"}
    runtime_preload = (("executorch.extension.pybindings.portable_lib",), ("executorch.runtime",))
    input_kinds = ("tensor", "image")

    def runnable(self) -> str | None:
        reason = super().runnable()
        if reason is None and importlib.util.find_spec("torch") is None:
            # executorch's requirements do not name torch, yet its Python runtime links it
            return (f"the executorch Python runtime needs torch (its pybindings link libtorch), "
                    f"which is not installed ({self.runtime_install_hint()}; or run the .pte "
                    f"with ExecuTorch's C++ executor_runner)")
        return reason

    def convert(self, model, example, recipe: Recipe, calibration, out_path: Path,
                app: AppInfo | None = None) -> ConversionResult:
        import torch

        from lkca_edge.converters._pt2e import torch_threads
        from lkca_edge.converters._rewrites import explicit_norms, keep_layers_float

        num_classes = num_outputs(model, example)
        x = torch.from_numpy(np.ascontiguousarray(example))
        with torch.no_grad(), torch_threads(1):
            keep_float = ()
            if recipe.option("delegable_norms", True):
                model, keep_float = explicit_norms(model, four_d=True)
            model, float_types = keep_layers_float(model, recipe.option("float_layers", ()))
            keep_float = keep_float + float_types
            if recipe.precision == "int8":
                model = self._quantize(model, example, recipe, calibration, keep_float)
            program = self._export(model, x)
            with partitioner_reasons() as reasons:
                edge = self._lower(program, constant_methods(app))
            delegation = delegation_counts(edge.exported_program(METHOD).graph_module, reasons)
            self._serialize(edge, Path(out_path))
        inputs, outputs = float_io(example, num_classes)
        details = {**delegation, "pte": self.inspect(out_path)}
        if app is not None:
            details["constant_methods"] = sorted(constant_methods(app))
        return ConversionResult(inputs, outputs, details)

    # -- steps -----------------------------------------------------------------------------------
    @staticmethod
    def _export(model, x):
        import torch

        return torch.export.export(model, (x,))

    @staticmethod
    def _quantize(model, example, recipe: Recipe, calibration: np.ndarray, keep_float=()):
        """PT2E with XNNPACKQuantizer (symmetric, per-channel weights), calibrated on real
        images; modules of the types in ``keep_float`` (the rewritten norms) stay fp32."""
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer, get_symmetric_quantization_config)

        from lkca_edge.converters import _pt2e

        dynamic = recipe.option("mode") == "dynamic"
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(
            is_per_channel=bool(recipe.option("per_channel", True)), is_dynamic=dynamic))
        for module_type in keep_float:
            quantizer.set_module_type(module_type, None)  # this quantizer takes the class
        return _pt2e.quantize(model, example, quantizer, calibration, calibrated=recipe.calibrated)

    @staticmethod
    def _lower(program, constants: dict | None = None):
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                           constant_methods=constants or None)

    @staticmethod
    def _serialize(edge, out_path: Path) -> None:
        out_path.write_bytes(edge.to_executorch().buffer)

    # -- run -------------------------------------------------------------------------------------
    def inspect(self, path) -> dict:
        """Static facts read from the .pte: methods, planned memory, stored weight bytes, and
        what ``forward`` executes: kernels outside any delegate (by op) and delegate calls (by
        backend). Ops inside an XNNPACK blob are not listed here (the manifest has them)."""
        path = Path(path)
        self.check_artifact_file(path)
        facts = _read_program(path)
        plan = facts["plans"].get(METHOD, {})
        op_counts = {**plan.get("kernel_calls", {}),
                     **{f"delegate:{b}": n for b, n in plan.get("delegate_calls", {}).items()}}
        return {"size_bytes": path.stat().st_size, "pte_version": facts["version"],
                "methods": sorted(facts["plans"]), "weight_bytes": facts["weight_bytes"],
                **plan, "op_counts": _sorted(Counter(op_counts))}


# -- what apps read from the program ----------------------------------------------------------------
def constant_methods(app: AppInfo | None) -> dict:
    """The constant methods a program carries for ``app``: labels and preprocessing as JSON,
    the input kind as a string."""
    if app is None:
        return {}
    return {LABELS_METHOD: json.dumps(list(app.labels)),
            PREPROCESSING_METHOD: json.dumps(app.preprocessing),
            INPUT_KIND_METHOD: app.input_kind}


def _constant(program, name: str):
    """The value a constant method of a loaded program returns, or None without it."""
    if name not in program.method_names:
        return None
    try:
        out = program.load_method(name).execute([])
    except RuntimeError:
        return None
    return out[0] if len(out) == 1 else list(out)


def read_constant_methods(program) -> dict:
    """{labels, preprocessing, input_kind} from a loaded program's constant methods."""
    out = {}
    for name in (LABELS_METHOD, PREPROCESSING_METHOD, INPUT_KIND_METHOD):
        value = _constant(program, name)
        if value is not None:
            out[name] = json.loads(value) if name != INPUT_KIND_METHOD else value
    return out


# -- delegation coverage ---------------------------------------------------------------------------
_PARTITIONER_LOGGER = "executorch.backends.xnnpack.partition"


@contextlib.contextmanager
def partitioner_reasons():
    """Collect the XNNPACK partitioner's reasons for refusing nodes: its configs call
    ``WhyNoPartition(node, reason)``, which logs at DEBUG on their module loggers. Those loggers
    are opened to DEBUG for the block (and kept from printing); yields {node name: reason}."""
    import logging

    reasons: dict[str, str] = {}

    class Catch(logging.Handler):
        def emit(self, record):
            node, reason = getattr(record.msg, "node", None), getattr(record.msg, "reason", None)
            if node is not None and reason:
                reasons.setdefault(getattr(node, "name", str(node)), str(reason))

    logger = logging.getLogger(_PARTITIONER_LOGGER)
    handler, level, propagate = Catch(logging.DEBUG), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield reasons
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def delegation_counts(graph_module, reasons: dict[str, str] | None = None) -> dict:
    """Ops by type inside XNNPACK subgraphs and outside them, from the lowered edge graph, and
    every op left outside with the partitioner's reason (``partitioner_reasons``)."""
    import operator

    delegated: Counter = Counter()
    not_delegated: Counter = Counter()
    backends: Counter = Counter()
    why: dict[tuple[str, str], int] = {}
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module_"):
            lowered = getattr(graph_module, node.target)
            backends[lowered.backend_id] += 1
            delegated.update(_op_name(n.target) for n in lowered.original_module.graph.nodes
                             if n.op == "call_function" and n.target is not operator.getitem)
        elif (node.op == "call_function" and node.target is not operator.getitem
              and _op_name(node.target) != "executorch_call_delegate"):
            op = _op_name(node.target)
            not_delegated[op] += 1
            reason = (reasons or {}).get(node.name) or "no XNNPACK partitioner config takes this op"
            why[(op, reason)] = why.get((op, reason), 0) + 1
    return {"delegate_subgraphs": dict(backends), "delegated": _sorted(delegated),
            "not_delegated": _sorted(not_delegated),
            "not_delegated_reasons": [{"op": op, "count": n, "reason": reason}
                                      for (op, reason), n in sorted(why.items(), key=lambda kv: -kv[1])]}


def _op_name(target) -> str:
    """'aten.native_layer_norm' for the edge op aten.native_layer_norm.default."""
    name = getattr(target, "__name__", None) or str(target)
    return name[:-len(".default")] if name.endswith(".default") else name


def _sorted(counts: Counter) -> dict:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# -- reading a .pte without running it -------------------------------------------------------------
def _read_header(path: Path) -> None:
    """Check the flatbuffer file identifier (b'ET' + 2 digits at bytes 4..8) and, when present,
    the extended header's sizes against the file.

    The runtime aborts the whole process on files without a valid identifier (it logs the raw
    bytes and the log hook dies decoding them), so this check must come before it.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(64)
    ident = head[4:8]
    if len(head) < 8 or ident[:2] != b"ET" or not ident[2:].isdigit():
        raise UserError(f"{path} is not an ExecuTorch program (.pte): no 'ETnn' file identifier")
    if head[8:12] == b"eh00" and len(head) >= 32:
        length = int.from_bytes(head[12:16], "little")
        program_size, segment_base = struct.unpack_from("<QQ", head, 16)
        segment_size = int.from_bytes(head[32:40], "little") if length >= 32 else 0
        expected = segment_base + segment_size if segment_base else program_size
        if size < expected:
            raise UserError(f"{path} is truncated: {size} bytes, its header says {expected}")


def _load_program(path: Path):
    """The runtime's Program for ``path`` (flatbuffer verified), or a UserError."""
    import torch  # noqa: F401  (portable_lib imports it anyway; see ExecuTorchRunner)
    from executorch.runtime import Runtime

    _read_header(path)  # refuses non-.pte bytes before the runtime sees them
    try:
        return Runtime.get().load_program(path)
    except RuntimeError as exc:
        raise UserError(f"{path} is not a loadable ExecuTorch program ({first_line(exc)})") from None


def _read_program(path: Path) -> dict:
    """Execution plans of a .pte, read by ExecuTorch's own deserializer (exir: imports torch)."""
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import DelegateCall, KernelCall

    # The Python flatbuffer reader has no verifier (corrupt bytes fail anywhere, as TypeError,
    # IndexError, ...): let the runtime's verifier refuse a bad file first, with one line.
    _load_program(path)
    pte = deserialize_pte_binary(read_artifact(path))
    program = pte.program
    plans = {}
    for plan in program.execution_plan:
        ops = [_joined(op.name, op.overload) for op in plan.operators]
        kernels: Counter = Counter()
        delegate_calls: Counter = Counter()
        for chain in plan.chains:
            for instr in chain.instructions:
                args = instr.instr_args
                if isinstance(args, KernelCall):
                    kernels[ops[args.op_index]] += 1
                elif isinstance(args, DelegateCall):
                    delegate_calls[plan.delegates[args.delegate_index].id] += 1
        plans[plan.name] = {
            # Entry 0 of non_const_buffer_sizes is reserved by the format; the rest are the
            # memory-planned buffers (what MethodMeta::memory_planned_buffer_size reports).
            "planned_memory_bytes": int(sum(plan.non_const_buffer_sizes[1:])),
            "kernel_calls": _sorted(kernels),
            "delegate_calls": _sorted(delegate_calls),
        }
    # Weights: XNNPACK's tensors live in the named data store, the rest in constant buffers.
    named = sum(len(b) for b in pte.named_data.buffers) if pte.named_data else 0
    constants = sum(len(b.storage) for b in program.constant_buffer)
    return {"version": int(program.version), "plans": plans, "weight_bytes": named + constants}


def _joined(name: str, overload: str | None) -> str:
    """'aten.native_layer_norm.out' for the kernel aten::native_layer_norm, overload out."""
    name = name.replace("::", ".")
    return name if overload in (None, "", "default") else f"{name}.{overload}"
