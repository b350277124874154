"""An artifact's dataflow graph as every backend can describe it, and where the source model's
layers are in it.

A backend's runner reads its own file into a ``TensorGraph`` (ops in execution order, each with
the value ids it reads and writes). ``locate_layers`` then finds the model's layers by structure,
the same way on every backend: a transformer's residual stream is a chain of additions
``x + f(x)``, the only additions where one operand is an ancestor of the other. In execution order
the 2 x depth residual additions are ``blocks.{i}`` after its mixer (branch ``blocks.{i}.mixer``)
and after its MLP (branch ``blocks.{i}.mlp``, sum ``blocks.{i}``); the stream they start from is
``patch_embed`` (compared after the positions are added: converters fold the embedding's bias into
the position constant, so the bare embedding is not a tensor of every artifact); the graph output
is ``head``. No op or tensor names are used:
converters rename and fuse them (litert-torch, ORT quantization and XNNPACK all do), the
structure survives. Pure Python: it runs in measuring children without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lkca_edge.errors import UserError


@dataclass
class GraphOp:
    """One op of an artifact's graph: its type as the backend names it and the value ids it
    reads (data operands only, no quantization parameters) and writes."""

    type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    name: str = ""          # the backend's node name, where it has one
    is_add: bool = False    # an elementwise addition of two tensors (ADD, Add, QLinearAdd, XNNAdd)


@dataclass
class TensorGraph:
    """A backend's graph: ops in execution order, the graph's image input(s) and output(s),
    and the element count of every value whose shape is known (batch 1)."""

    ops: list[GraphOp]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    numel: dict[str, int] = field(default_factory=dict)


@dataclass
class LayerLocation:
    """Where the source model's layers are in a graph.

    ``values``: layer name -> value id, in execution order (``head`` is the graph output).
    ``stream``: the residual stream's value ids: the stream entering block 0, then after each
    residual addition (2 x depth + 1 ids). ``op_layers``: for every op of the graph, the layer
    its time is charged to (``patch_embed`` includes the position add; ``blocks.{i}.mixer`` and
    ``blocks.{i}.mlp`` include their LayerNorm and residual add; ``head`` the pooling and norm).
    """

    values: dict[str, str]
    stream: list[str]
    op_layers: list[str]
    missing: dict[str, str] = field(default_factory=dict)  # layer -> why it is not located


def _pass_through(op: GraphOp, depends: set[str]) -> str | None:
    """The one image-dependent input of a single-input op (reshape, convert, (de)quantize)."""
    live = [v for v in op.inputs if v in depends]
    return live[0] if len(live) == 1 and len(op.outputs) == 1 else None


def locate_layers(graph: TensorGraph, depth: int, tokens: int, dim: int) -> LayerLocation:
    """The layers of a ``depth``-block transformer over ``tokens`` x ``dim`` in ``graph``, found by
    the residual-addition rule of this module's docstring. Refuses, with one line, a graph in which
    that rule does not find exactly 2 x ``depth`` residual additions."""
    producer: dict[str, int] = {}
    bit: dict[str, int] = {}
    ancestors: dict[str, int] = {}
    depends = set(graph.inputs)  # values that depend on the image

    def index(v: str) -> int:
        if v not in bit:
            bit[v] = 1 << len(bit)
        return bit[v]

    for v in graph.inputs:
        index(v)
    residual: list[tuple[int, str, str, str]] = []  # (op index, skip input, branch, sum)
    stream_numel = tokens * dim
    for i, op in enumerate(graph.ops):
        mask = 0
        for v in op.inputs:
            mask |= ancestors.get(v, 0) | index(v)
        live = any(v in depends for v in op.inputs)
        for v in op.outputs:
            producer.setdefault(v, i)
            ancestors[v] = mask
            index(v)
            if live:
                depends.add(v)
        if op.is_add and len(op.inputs) == 2 and len(op.outputs) == 1:
            a, b = op.inputs
            out = op.outputs[0]
            if graph.numel.get(out, stream_numel) != stream_numel:
                continue
            if a in depends and b in depends and a != b:
                if ancestors.get(b, 0) & bit[a]:
                    residual.append((i, a, b, out))
                elif ancestors.get(a, 0) & bit[b]:
                    residual.append((i, b, a, out))
    if len(residual) != 2 * depth:
        raise UserError(f"cannot find the model's {depth} blocks in this artifact's graph: it has "
                        f"{len(residual)} residual additions x + f(x), expected {2 * depth}")

    values: dict[str, str] = {}
    missing: dict[str, str] = {}
    start = residual[0][1]
    values["patch_embed"] = start  # the embedding with the positions added
    # the ops of patch_embed: back from the stream entering block 0 to the add of the positions
    embed_op, v = None, start
    for _ in range(16):
        i = producer.get(v)
        if i is None:
            break
        op = graph.ops[i]
        live = [u for u in op.inputs if u in depends]
        if op.is_add and len(live) == 1:
            embed_op = producer.get(live[0], i)
            break
        nxt = _pass_through(op, depends)
        if nxt is None:
            break
        v = nxt
    for b in range(depth):
        _, _, mixer_branch, middle = residual[2 * b]
        _, _, mlp_branch, out = residual[2 * b + 1]
        values[f"blocks.{b}.mixer"] = mixer_branch
        values[f"blocks.{b}.mlp"] = mlp_branch
        values[f"blocks.{b}"] = out
    if graph.outputs:
        values["head"] = graph.outputs[0]

    # every op charged to a layer by its position between the residual additions
    bounds = [r[0] for r in residual]
    first = producer.get(start, -1)
    names = [f"blocks.{b}.{part}" for b in range(depth) for part in ("mixer", "mlp")]
    op_layers = []
    k = 0
    for i in range(len(graph.ops)):
        if i <= first or (embed_op is not None and i <= embed_op):
            op_layers.append("patch_embed")
            continue
        while k < len(bounds) and i > bounds[k]:
            k += 1
        op_layers.append(names[k] if k < len(bounds) else "head")
    stream = [start] + [r[3] for r in residual]
    return LayerLocation(values=values, stream=stream, op_layers=op_layers, missing=missing)


def op_layer_names(graph: TensorGraph, location: LayerLocation) -> dict[str, str]:
    """Backend node name -> the layer its time is charged to (nodes without a name left out)."""
    return {op.name: layer for op, layer in zip(graph.ops, location.op_layers) if op.name}


# -- operator tables ---------------------------------------------------------------------------------
def op_table(events, runs: int) -> list[dict]:
    """The ``ops`` entries of a profile from timed op events over ``runs`` runs.

    ``events``: (type, layer or None, milliseconds, delegated or None), one per executed op
    instance per run (or, with ``runs=1``, one per op instance with its median time). Entries aggregate by (layer, type), most time first:
    ``name`` (``layer/type``, or the type where the layer is unknown), ``type``, ``module`` (the
    source model's layer), ``count`` (instances per run), ``total_ms`` (per run, all instances),
    ``mean_ms`` (per instance), ``share`` (of the entries' total), ``delegated``; ``op``/``ms``
    repeat name and total_ms for older readers.
    """
    runs = max(1, int(runs))
    groups: dict[tuple, dict] = {}
    for op_type, layer, ms, delegated in events:
        g = groups.setdefault((layer, op_type), {"ms": 0.0, "n": 0, "delegated": delegated})
        g["ms"] += float(ms)
        g["n"] += 1
    total = sum(g["ms"] for g in groups.values()) or 1.0
    out = []
    for (layer, op_type), g in groups.items():
        per_run = g["ms"] / runs
        count = max(1, round(g["n"] / runs))
        name = f"{layer}/{op_type}" if layer else op_type
        out.append({"name": name, "type": op_type, "module": layer, "count": count,
                    "total_ms": per_run, "mean_ms": per_run / count, "share": g["ms"] / total,
                    "delegated": g["delegated"], "op": name, "ms": per_run})
    return sorted(out, key=lambda e: -e["total_ms"])


def _kind(op_type: str) -> str:
    return "".join(ch for ch in op_type.lower() if ch.isalnum())


def layers_by_anchors(event_types: list[str], graph: TensorGraph, location: LayerLocation,
                      anchor: str = "fullyconnected", switch: str = "add") -> list[str | None]:
    """The layer of each runtime event when the runtime's events do not name graph nodes
    (XNNPACK's do not) but keep their order: events and graph ops are aligned at the ops whose
    type contains ``anchor`` (matrix products are never fused away), and between two anchors the
    layer changes after as many ``switch`` ops (additions) as the graph has before its change.
    Events of a stretch where the counts disagree get None."""
    ev = [_kind(t) for t in event_types]
    ops = [_kind(op.type) for op in graph.ops]
    ev_anchor = [i for i, t in enumerate(ev) if anchor in t]
    op_anchor = [i for i, t in enumerate(ops) if anchor in t]
    out: list[str | None] = [None] * len(ev)
    if len(ev_anchor) != len(op_anchor) or not op_anchor:
        return out
    bounds_ev = [-1] + ev_anchor + [len(ev)]
    bounds_op = [-1] + op_anchor + [len(ops)]
    for k in range(len(bounds_ev) - 1):
        e0, e1 = bounds_ev[k], bounds_ev[k + 1]
        o0, o1 = bounds_op[k], bounds_op[k + 1]
        if 0 <= e0:
            out[e0] = location.op_layers[o0]
        seg_ops = list(range(o0 + 1, o1))
        seg_ev = list(range(e0 + 1, e1))
        if not seg_ev:
            continue
        layers = [location.op_layers[i] for i in seg_ops] or [location.op_layers[min(o1, len(ops) - 1)]]
        first = layers[0]
        change = next((j for j, name in enumerate(layers) if name != first), None)
        if change is None:
            for i in seg_ev:
                out[i] = first
            continue
        if any(name != layers[change] for name in layers[change:]):
            continue  # more than one change between two anchors: leave it unknown
        adds_before = sum(1 for i in seg_ops[:change] if switch in ops[i])
        seen, layer = 0, first
        ev_adds = [i for i in seg_ev if switch in ev[i]]
        op_adds = [i for i in seg_ops if switch in ops[i]]
        if len(ev_adds) != len(op_adds):
            continue
        for i in seg_ev:
            out[i] = layer
            if switch in ev[i]:
                seen += 1
                if seen == adds_before:
                    layer = layers[change]
        if adds_before == 0:
            for i in seg_ev:
                out[i] = layers[change] if i > e0 else first
    return out
