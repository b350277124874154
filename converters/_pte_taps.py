"""Intermediate values of a .pte through its XNNPACK delegate, read from the artifact itself.

ExecuTorch's devtools tap (``executorch.devtools.intermediate_output_tap``) marks values as outputs
*before* lowering, so it needs the source and a new conversion; an artifact that was altered, or
that fails its gate, would not be the program examined. Here the .pte is edited instead:

1. the program is read with ExecuTorch's own deserializer (``deserialize_pte_binary``) and each
   XNNPACK delegate's payload (XNNHeader + an ``XNNGraph`` flatbuffer) with Python classes that
   ``flatc --gen-object-api`` (ExecuTorch's bundled flatc) generates from the installed runtime
   schema, so every field, float scales included, round-trips bit for bit;
2. a chosen value inside a delegate is flagged as an external output of that delegate (a value
   the delegate already hands to the program gets a copy: a same-shape static reshape);
3. the program gets one new EValue per tap (its own memory-planned buffer, so planning of the
   original values is untouched), appended to the delegate call's arguments and to the plan's
   outputs, and is serialized with ``serialize_pte_binary``.

The runtime then returns the taps after the logits. XNNPACK computes exactly what it computed
before (the per-layer pipeline checks the logits against the untouched program's). Values that
ExecuTorch's portable kernels compute outside any delegate are not exposed.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lkca_edge.errors import UserError
from lkca_edge.converters.base import read_artifact
from lkca_edge.fileio import temporary_directory

XNNPACK_ID = "XnnpackBackend"
FLAG_EXTERNAL_OUTPUT = 0x2
INVALID_ID = 0xFFFFFFFF
_SCHEMA_MODULE = None


def _xnn_schema():
    """Object-API classes for the installed XNNPACK runtime schema, generated once per process
    with ExecuTorch's flatc (its Python code generator misnames union creators: fixed up)."""
    global _SCHEMA_MODULE
    if _SCHEMA_MODULE is not None:
        return _SCHEMA_MODULE
    import executorch.backends.xnnpack.serialization as serialization
    from executorch.exir._serialize._flatbuffer import _get_flatc_path

    schema = Path(serialization.__path__[0]) / "runtime_schema.fbs"
    with temporary_directory("xnn-schema") as tmp:
        try:
            subprocess.run([_get_flatc_path(), "--python", "--gen-object-api", "--gen-onefile",
                            "-o", tmp, str(schema)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise UserError(f"cannot read XNNPACK payloads: flatc failed ({exc})") from None
        generated = next(Path(tmp).glob("*_generated.py"))
        text = generated.read_text()
        creators = {n.lower(): n for n in re.findall(r"^def (\w+Creator)\(", text, re.M)}
        text = re.sub(r"\b(\w+Creator)\(", lambda m: creators.get(m.group(1).lower(), m.group(1)) + "(",
                      text)
        generated.write_text(text)
        spec = importlib.util.spec_from_file_location("lkca_xnnpack_schema", generated)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    _SCHEMA_MODULE = module
    return module


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass
class _Delegate:
    index: int            # into plan.delegates
    call_args: list[int]  # the DelegateCall's EValue arguments (position = external id)
    header: object
    graph: object         # XNNGraphT
    ident: bytes          # the flatbuffer's file identifier
    constant: bytes       # constant data after the flatbuffer (usually empty: named data store)


@dataclass
class PteGraph:
    """A .pte's forward plan with its XNNPACK delegates opened."""

    pte: object                      # PTEFile
    delegates: list[_Delegate]
    tensor_graph: object             # converters._graph.TensorGraph
    where: dict[str, tuple[int, int]] = field(default_factory=dict)  # value -> (delegate, xvalue)
    plan_index: int = 0              # which execution plan (the program may have constant methods)


def _tensor_value(schema, xvalue):
    u = xvalue.xvalueUnion
    return u if xvalue.xvalueUnionType == schema.XValueUnion.XNNTensorValue else u.tensorValue


def _node_ids(node) -> tuple[list[int], list[int]]:
    """(input value ids, output value ids) of an XNNPACK node (its ``*Id`` fields)."""
    ins, outs = [], []
    for name, value in vars(node.xnodeUnion).items():
        if not name.endswith("Id") or not isinstance(value, int) or value == INVALID_ID:
            continue
        (outs if name.startswith("output") else ins).append(value)
    return ins, outs


def read_pte_graph(path: Path, method: str = "forward") -> PteGraph:
    """The plan ``method`` of a .pte as a ``TensorGraph``: XNNPACK nodes (values ``d{k}.{id}``)
    and portable kernel calls (values ``e{evalue}``), in execution order."""
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import DelegateCall, KernelCall

    from lkca_edge.converters._graph import GraphOp, TensorGraph

    schema = _xnn_schema()
    node_types = _enum_names(schema.XNodeUnion)
    pte = deserialize_pte_binary(read_artifact(path))
    plans = {p.name: i for i, p in enumerate(pte.program.execution_plan)}
    if method not in plans:
        raise UserError(f"{path} has no {method!r} method")
    plan = pte.program.execution_plan[plans[method]]
    ops, delegates, numel, where = [], [], {}, {}
    for k, value in enumerate(plan.values):
        sizes = getattr(value.val, "sizes", None)
        if sizes is not None:
            numel[f"e{k}"] = int(np.prod(sizes)) if len(sizes) else 1
    for chain in plan.chains:
        for instr in chain.instructions:
            args = instr.instr_args
            if isinstance(args, DelegateCall):
                entry = plan.delegates[args.delegate_index]
                if entry.id != XNNPACK_ID:
                    raise UserError(f"{path}: delegate {entry.id} is not XNNPACK; its values "
                                    f"cannot be read")
                blob = bytes(pte.program.backend_delegate_data[entry.processed.index].data)
                header = XNNHeader.from_bytes(blob[:XNNHeader.EXPECTED_LENGTH])
                fb = blob[header.flatbuffer_offset:header.flatbuffer_offset + header.flatbuffer_size]
                graph = schema.XNNGraphT.InitFromObj(schema.XNNGraph.GetRootAs(fb, 0))
                d = len(delegates)
                delegates.append(_Delegate(args.delegate_index, list(args.args), header, graph,
                                           fb[4:8], blob[header.constant_data_offset:
                                                         header.constant_data_offset +
                                                         header.constant_data_size]))

                def vid(x, d=d, graph=graph, call=list(args.args)):
                    tv = _tensor_value(schema, graph.xvalues[x])
                    if tv.externalId != INVALID_ID and tv.externalId < len(call):
                        return f"e{call[tv.externalId]}"
                    return f"d{d}.{x}"

                for x, xv in enumerate(graph.xvalues):
                    tv = _tensor_value(schema, xv)
                    name = vid(x)
                    where.setdefault(name, (d, x))
                    numel.setdefault(name, int(np.prod(tv.dims)) if tv.dims is not None and
                                     len(tv.dims) else 1)
                for node in graph.xnodes:
                    ins, outs = _node_ids(node)
                    kind = node_types.get(node.xnodeUnionType, "?")
                    ops.append(GraphOp(type=kind, inputs=tuple(vid(v) for v in ins),
                                       outputs=tuple(vid(v) for v in outs), is_add=kind == "XNNAdd",
                                       name=f"d{d}:{kind}#{node.debugHandle}"))
            elif isinstance(args, KernelCall):
                op = plan.operators[args.op_index]
                names = [f"e{a}" for a in args.args]
                outs = _kernel_outputs(op.name, op.overload, len(names))
                ops.append(GraphOp(type=op.name, inputs=tuple(names[:-outs]),
                                   outputs=tuple(names[-outs:]), name=op.name,
                                   is_add=op.name in ("aten::add", "aten::add_")))
    graph = TensorGraph(ops=ops, inputs=tuple(f"e{i}" for i in plan.inputs),
                        outputs=tuple(f"e{i}" for i in plan.outputs), numel=numel)
    return PteGraph(pte=pte, delegates=delegates, tensor_graph=graph, where=where,
                    plan_index=plans[method])


def _kernel_outputs(name: str, overload: str, n_args: int) -> int:
    """How many trailing arguments of a kernel call it writes: its out arguments and their
    returned aliases, from the op's torch schema (1 when the schema is unknown)."""
    try:
        import torch

        namespace, op = name.split("::", 1)
        schema = getattr(getattr(getattr(torch.ops, namespace), op), overload or "default")._schema
        outs = sum(1 for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write)
        return max(1, min(n_args - 1, outs + len(schema.returns))) if outs else 1
    except Exception:  # noqa: BLE001 - an op torch does not know: its last argument
        return 1


_SCALAR_TYPES = {"xnn_datatype_fp32": ("FLOAT", np.float32), "xnn_datatype_fp16": ("HALF", np.float16),
                 "xnn_datatype_qint8": ("CHAR", np.int8), "xnn_datatype_quint8": ("BYTE", np.uint8),
                 "xnn_datatype_qint32": ("INT", np.int32), "xnn_datatype_int32": ("INT", np.int32)}


@dataclass
class Tap:
    value: str
    output_index: int                   # position among the plan's outputs
    quantization: tuple[float, int] | None


def tapped_program(pg: PteGraph, values: list[str]) -> tuple[bytes, list[Tap], dict[str, str]]:
    """The .pte bytes with ``values`` as extra outputs of the plan, the taps, and the values that
    cannot be exposed (value -> why)."""
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._program import serialize_pte_binary
    from executorch.exir.schema import (AllocationDetails, EValue, ScalarType, Tensor,
                                        TensorShapeDynamism)
    import flatbuffers

    schema = _xnn_schema()
    datatypes = _enum_names(schema.XNNDatatype)
    plan = pg.pte.program.execution_plan[pg.plan_index]
    calls = {}
    for chain in plan.chains:
        for instr in chain.instructions:
            if hasattr(instr.instr_args, "delegate_index"):
                calls[instr.instr_args.delegate_index] = instr.instr_args
    buffer_id = len(plan.non_const_buffer_sizes)
    offset, taps, missing = 0, [], {}
    outputs = [int(i) for i in plan.outputs]
    for value in dict.fromkeys(values):
        if value in pg.tensor_graph.outputs:
            taps.append(Tap(value, pg.tensor_graph.outputs.index(value), None))
            continue
        if value not in pg.where:
            missing[value] = "computed by an ExecuTorch portable kernel outside the XNNPACK delegate"
            continue
        d, x = pg.where[value]
        delegate = pg.delegates[d]
        g = delegate.graph
        xv = g.xvalues[x]
        tv = _tensor_value(schema, xv)
        dtype = datatypes.get(tv.datatype, "?")
        if dtype not in _SCALAR_TYPES:
            missing[value] = f"an XNNPACK {dtype} tensor"
            continue
        quant = None
        if xv.xvalueUnionType == schema.XValueUnion.XNNQuantizedTensorValue:
            if xv.xvalueUnion.quantParamsType != schema.XNNQuantParams.PerTensorQuant:
                missing[value] = "an XNNPACK tensor quantized per channel"
                continue
            q = xv.xvalueUnion.quantParams
            quant = (float(q.scale), int(q.zeroPoint))
        if tv.externalId != INVALID_ID:  # already handed to the program: tap a copy of it
            import copy

            new = copy.deepcopy(xv)
            new_tv = _tensor_value(schema, new)
            node = schema.XNodeT()
            node.xnodeUnionType = schema.XNodeUnion.XNNStaticReshape
            reshape = schema.XNNStaticReshapeT()
            reshape.numDims, reshape.newShape = len(tv.dims), list(tv.dims)
            reshape.inputId, reshape.outputId, reshape.flags = x, len(g.xvalues), 0
            node.xnodeUnion, node.debugHandle = reshape, 0
            new_tv.idOut = len(g.xvalues)
            g.xvalues.append(new)
            g.xnodes.append(node)
            tv = new_tv
            x = new_tv.idOut
        tv.flags |= FLAG_EXTERNAL_OUTPUT
        tv.externalId = len(delegate.call_args)
        g.outputIds = [int(i) for i in g.outputIds] + [x]
        g.numExterns = int(g.numExterns) + 1
        dims = [int(s) for s in tv.dims]
        scalar, np_type = _SCALAR_TYPES[dtype]
        tensor = Tensor(scalar_type=getattr(ScalarType, scalar), storage_offset=0, sizes=dims,
                        dim_order=list(range(len(dims))), requires_grad=False, layout=0,
                        data_buffer_idx=0, shape_dynamism=TensorShapeDynamism.STATIC,
                        allocation_info=AllocationDetails(memory_id=buffer_id,
                                                          memory_offset_low=offset & 0xFFFFFFFF,
                                                          memory_offset_high=offset >> 32),
                        extra_tensor_info=None)
        offset += -(-int(np.prod(dims or [1])) * np.dtype(np_type).itemsize // 64) * 64
        plan.values.append(EValue(val=tensor))
        evalue = len(plan.values) - 1
        delegate.call_args.append(evalue)
        calls[delegate.index].args.append(evalue)
        outputs.append(evalue)
        taps.append(Tap(value, len(outputs) - 1, quant))
    plan.outputs = outputs
    if offset:
        plan.non_const_buffer_sizes.append(offset)
    for delegate in pg.delegates:
        builder = flatbuffers.Builder(1 << 16)
        builder.Finish(delegate.graph.Pack(builder), file_identifier=delegate.ident)
        fb = bytes(builder.Output())
        head = -(-XNNHeader.EXPECTED_LENGTH // 16) * 16
        body = -(-len(fb) // 16) * 16
        header = XNNHeader(head, len(fb), head + body, len(delegate.constant)).to_bytes()
        entry = plan.delegates[delegate.index]
        pg.pte.program.backend_delegate_data[entry.processed.index].data = (
            header.ljust(head, b"\0") + fb.ljust(body, b"\0") + delegate.constant)
    return bytes(serialize_pte_binary(pg.pte, extract_delegate_segments=True)), taps, missing
