"""LiteRT operator facts the Python interpreter does not report: which ops the XNNPACK delegate
takes, and the time per op class.

Delegation: the model is loaded twice with XNNPACK applied, once as deployed (the DELEGATE nodes
are the partitions) and once with ``experimental_disable_delegate_node_fusion`` (every delegated op
becomes its own DELEGATE node, so each original op is delegated exactly when a DELEGATE node writes
its outputs).

Time per op class (there is no Python op profiler, and ``benchmark_model`` is not on PyPI): the
artifact is timed against a variant in which every op of one class is made trivial, runs
alternated (A B A B ...) so drift and other load hit both alike; the class's time is the
difference of the two medians. "Trivial": each op is replaced by the cheapest data-movement op
that writes a tensor of the same shape and type from the same input (RESHAPE when the element
counts match, else PAD or SLICE, then one QUANTIZE where the op's output has another int8 scale
than its input), so the delegate keeps its partitions and every consumer still reads a computed
tensor of the type and scale it expects; the replacement's own (small) cost stays in the class's
time, which is therefore a slight underestimate. Classes that
change a tensor's type (QUANTIZE, DEQUANTIZE, CAST) or are already data movement (RESHAPE) are not
isolated; their time stays in the remainder.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from pathlib import Path

import numpy as np

from lkca_edge.converters.base import read_artifact
from lkca_edge.fileio import temporary_directory

TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier at bytes 4..8 of every .tflite
_NOT_ISOLATED = {"RESHAPE": "already a data-movement op",
                 "QUANTIZE": "changes the tensor type", "DEQUANTIZE": "changes the tensor type",
                 "CAST": "changes the tensor type"}


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _op_names() -> dict[int, str]:
    return {v: k for k, v in vars(_schema().BuiltinOperator).items()
            if not k.startswith("_") and isinstance(v, int)}


def delegation(path: Path, open_interpreter) -> dict:
    """XNNPACK partitions as deployed, and the original ops by type that the delegate took and
    that run as builtin kernels."""
    deployed = open_interpreter(path, 1, fuse=True)
    partitions = sum(1 for op in deployed._get_ops_details() if op["op_name"] == "DELEGATE")
    single = open_interpreter(path, 1, fuse=False)
    ops = single._get_ops_details()
    written = set()
    for op in ops:
        if op["op_name"] == "DELEGATE":
            written |= {int(t) for t in op["outputs"]}
    original = [op for op in ops if op["op_name"] != "DELEGATE"]
    taken = Counter(op["op_name"] for op in original
                    if {int(t) for t in op["outputs"]} <= written)
    builtin = Counter(op["op_name"] for op in original) - taken

    def ordered(c):
        return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))

    return {"xnnpack_partitions": partitions, "delegated": ordered(taken),
            "builtin": ordered(builtin), "delegated_ops": sum(taken.values()),
            "builtin_ops": sum(builtin.values())}


class _Editor:
    """Adds constant int32 tensors and ops to the main subgraph of an unpacked model."""

    def __init__(self, model):
        self.model, self.graph = model, model.subgraphs[0]
        self.schema = _schema()

    def const_int32(self, values) -> int:
        s = self.schema
        data = np.asarray(values, np.int32)
        buffer = s.BufferT()
        buffer.data = np.frombuffer(data.tobytes(), np.uint8)
        self.model.buffers.append(buffer)
        tensor = s.TensorT()
        tensor.shape, tensor.type = list(data.shape), s.TensorType.INT32
        tensor.buffer = len(self.model.buffers) - 1
        tensor.name = f"lkca_trivial_const_{len(self.graph.tensors)}"
        self.graph.tensors.append(tensor)
        return len(self.graph.tensors) - 1

    def tensor_like(self, source: int, shape) -> int:
        tensor = copy.deepcopy(self.graph.tensors[source])
        tensor.shape, tensor.buffer, tensor.shapeSignature = list(shape), 0, None
        tensor.name = f"lkca_trivial_{len(self.graph.tensors)}"
        self.graph.tensors.append(tensor)
        return len(self.graph.tensors) - 1

    def opcode(self, code: int) -> int:
        for i, oc in enumerate(self.model.operatorCodes):
            if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code:
                return i
        oc = self.schema.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
        self.model.operatorCodes.append(oc)
        return len(self.model.operatorCodes) - 1

    def op(self, code: int, inputs, output: int):
        op = self.schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.opcode(code), list(inputs), [output]
        return op

    def data_movement(self, x: int, y: int) -> list | None:
        """Ops writing tensor ``y`` (its shape) from tensor ``x`` by data movement only."""
        B = self.schema.BuiltinOperator
        tx, ty = self.graph.tensors[x], self.graph.tensors[y]
        if tx.type != ty.type or tx.shape is None or ty.shape is None:
            return None
        shape_in, shape_out = [int(d) for d in tx.shape], [int(d) for d in ty.shape]
        if int(np.prod(shape_in)) == int(np.prod(shape_out)):
            return [self.op(B.RESHAPE, [x, self.const_int32(shape_out)], y)]
        ops, cur = [], x
        if len(shape_in) != len(shape_out):  # leading ones added or removed, element count kept
            core = [d for d in shape_in]
            while len(core) > len(shape_out) and core[0] == 1:
                core = core[1:]
            while len(core) < len(shape_out):
                core = [1] + core
            if len(core) != len(shape_out):
                return None
            mid = self.tensor_like(x, core)
            ops.append(self.op(B.RESHAPE, [cur, self.const_int32(core)], mid))
            cur, shape_in = mid, core
        low = [min(a, b) for a, b in zip(shape_in, shape_out)]
        if low != shape_in:
            target = y if low == shape_out else self.tensor_like(x, low)
            ops.append(self.op(B.SLICE, [cur, self.const_int32([0] * len(low)),
                                         self.const_int32(low)], target))
            cur = target
        if low != shape_out:
            pads = [[0, b - a] for a, b in zip(low, shape_out)]
            ops.append(self.op(B.PAD, [cur, self.const_int32(pads)], y))
        return ops


def _quant(tensor):
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    return (tuple(np.asarray(q.scale).tolist()), tuple(np.asarray(q.zeroPoint).tolist()))


def trivialized(content: bytes, op_type: str) -> bytes | None:
    """``content`` with every ``op_type`` op replaced by data movement, or None when some op of
    the class has no such replacement."""
    import flatbuffers

    s = _schema()
    model = s.ModelT.InitFromObj(s.Model.GetRootAs(content, 0))
    editor = _Editor(model)
    names = _op_names()
    graph = model.subgraphs[0]
    produced = {int(t) for op in graph.operators for t in op.outputs} | {int(t) for t in graph.inputs}
    new_ops, replaced = [], 0
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) != op_type:
            new_ops.append(op)
            continue
        outs = [int(t) for t in op.outputs if t >= 0]
        if len(outs) != 1:
            return None
        y = outs[0]
        x = next((int(t) for t in op.inputs if t >= 0 and int(t) in produced
                  and graph.tensors[int(t)].type == graph.tensors[y].type), None)
        if x is None:
            return None
        requantize = _quant(graph.tensors[x]) != _quant(graph.tensors[y])
        target = editor.tensor_like(x, graph.tensors[y].shape) if requantize else y
        ops = editor.data_movement(x, target)
        if ops is None:
            return None
        if requantize:  # data movement keeps x's scale; one requantization writes y's
            ops.append(editor.op(s.BuiltinOperator.QUANTIZE, [target], y))
        new_ops += ops
        replaced += 1
    if not replaced:
        return None
    graph.operators = new_ops
    builder = flatbuffers.Builder(len(content) + 65536)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _time(interp, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t = time.perf_counter_ns()
        interp.invoke()
        out.append((time.perf_counter_ns() - t) / 1e6)
    return out


def class_times(path: Path, open_interpreter, set_input, op_counts: dict[str, int],
                delegated: dict[str, int], runs: int) -> tuple[list[dict], dict]:
    """(``_graph.op_table``-style entries, one per isolated op class; facts about the method).
    ``open_interpreter(path, threads)`` opens and allocates an interpreter of the runner's
    thread count, ``set_input(interp)`` writes the profiled image into one."""
    rounds = max(40, 4 * int(runs))
    base = open_interpreter(path, None)
    set_input(base)
    _time(base, 5)
    content = read_artifact(path)
    entries, skipped, base_times = [], {}, []
    with temporary_directory("op-classes") as tmp:
        for op_type, count in op_counts.items():
            if op_type in _NOT_ISOLATED:
                skipped[op_type] = _NOT_ISOLATED[op_type]
                continue
            variant = trivialized(content, op_type)
            if variant is None:
                skipped[op_type] = "no same-shape data-movement replacement"
                continue
            vpath = Path(tmp) / f"{op_type}.tflite"
            vpath.write_bytes(variant)
            try:
                other = open_interpreter(vpath, None)
            except Exception as exc:  # noqa: BLE001 - a variant the runtime refuses: say so
                skipped[op_type] = f"the variant does not load ({str(exc)[:80]})"
                continue
            set_input(other)
            _time(other, 5)
            a, b = [], []
            for _ in range(rounds):
                a += _time(base, 1)
                b += _time(other, 1)
            base_times += a
            delta = float(np.median(a) - np.median(b))
            diff = np.asarray(a) - np.asarray(b)  # robust spread: preempted runs do not count
            noise = float(1.4826 * np.median(np.abs(diff - np.median(diff))) / np.sqrt(rounds))
            entries.append({"name": op_type, "type": op_type, "module": None, "count": int(count),
                            "total_ms": max(0.0, delta), "mean_ms": max(0.0, delta) / count,
                            "measured_delta_ms": delta, "noise_ms": noise,
                            "delegated": delegated.get(op_type, 0) == count,
                            "op": op_type, "ms": max(0.0, delta)})
    whole = float(np.median(base_times)) if base_times else None
    for e in entries:
        e["share"] = e["total_ms"] / whole if whole else None
    entries.sort(key=lambda e: -e["total_ms"])
    facts = {"whole_model_ms": whole, "rounds": rounds, "not_isolated": skipped,
             "attributed_ms": sum(e["total_ms"] for e in entries)}
    return entries, facts
