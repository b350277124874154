"""The bench report: ``report.md`` and a self-contained ``report.html`` from a results object.

Everything here reads only the results object (``results.json``), so a report can be rebuilt
from any recorded run. Plots are drawn with matplotlib's Agg canvas (no display, no pyplot
state) and embedded in the HTML as base64 PNG data; the HTML loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

from lkca_edge.gates import MIXED_TARGET
from lkca_edge.pipelines.mixed import MIXED_BUDGET
from lkca_edge.results import (METRICS, best_cells, cell_key, cell_name, is_estimate, metric,
                               ok_cells, pareto_front, ship_line, what_to_ship)

PRECISION_COLORS = {"fp32": "#3b6fb6", "fp16": "#4c9a52", "int8": "#e08a1e", "int8-mixed": "#a3501b"}
BACKEND_MARKERS = {"executorch": "o", "tflite": "s", "onnx": "^", "coreml": "D"}
BEST = "★"
NA = "—"


# -- formatting ------------------------------------------------------------------------------------------
def _num(v, digits: int = 3) -> str:
    if v is None:
        return NA
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:#.{digits}g}"  # 2.00, not 2


def _pct(v) -> str:
    return NA if v is None else f"{v * 100:.2f}%"


def _kb(v) -> str:
    return NA if v is None else f"{v / 1024:,.0f}"


def _verdict(v) -> str:
    return {True: "ok", False: "OVER", None: NA}.get(v, NA)


LAYERS_LEGEND = ("Every layer of the source model, in execution order, against the fp32 source "
                 "on the same real images (validate --per-layer): SQNR (signal-to-noise of the "
                 "layer's output, dB: higher is closer), max abs error, cosine. patch_embed is "
                 "compared with the positions added; head is the logits. 'adds most error' ranks "
                 "the noise each layer adds to the residual stream: mixed precision keeps those "
                 "layers in float first.")
MIXED_LEGEND = ("int8-mixed: the int8 recipe with the layers that add the most error (per-layer "
                "measurement of the all-int8 artifact) kept in float, one more per conversion, "
                f"until its target ({MIXED_TARGET.describe()}) is met or {MIXED_BUDGET} layers "
                "are float. Latency cost: int8-mixed median minus int8 median, same run.")


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    align: list[str] | None = None   # "l" or "r" per column


LEGEND = ("Budgets mem/lat/acc: the cell against the {device} profile (peak memory, p90 latency, "
          "accuracy drop vs fp32 in points). drop pt = fp32 source accuracy − artifact accuracy "
          "on the held-out test images. est. = an off-device estimate (the backend cannot run "
          "here), never a measurement. ok (static) = converted and checked, not run on this host. "
          "Memory and latency verdicts come only from the device itself: a cell measured "
          "anywhere else shows n/a there (not measured on the device).")

# Columns of the main table: header, metric (for best marks), formatter.
MAIN_COLUMNS = (
    ("conv s", "conversion_s", lambda v: NA if v is None else f"{v:.1f}"),
    ("size KB", "size_bytes", _kb),
    ("load ms", "load_ms", _num),
    ("median ms", "latency_median_ms", _num),
    ("p90 ms", "latency_p90_ms", _num),
    ("peak MB", "peak_rss_mb", lambda v: NA if v is None else f"{v:.0f}"),
    ("accuracy", "accuracy", _pct),
    ("top-1 agree", "top1_agreement", _pct),
)


def summary_table(results: dict, mark_best: bool = True) -> Table:
    """One row per cell: the key figures, best cell per metric marked with a star."""
    best = best_cells(results) if mark_best else {}
    headers = ["model", "backend", "precision", "status"] + [c[0] for c in MAIN_COLUMNS] + \
              ["drop pt", "gate", "budgets mem/lat/acc", "delegated"]
    rows = []
    for c in results.get("cells", []):
        ok = c.get("status") == "ok"
        status = ("ok" if c.get("mode") != "static" else "ok (static)") if ok else \
            f"FAILED ({c.get('failed_step') or '?'})"
        row = [c["model"], c["backend"], c["precision"], status]
        for _, name, fmt in MAIN_COLUMNS:
            text = fmt(metric(c, name))
            if text != NA and is_estimate(c, name):
                text += " est."
            if ok and cell_key(c) in best.get(name, ()) and text != NA:
                text += f" {BEST}"
            row.append(text)
        drop = metric(c, "accuracy_drop_pts")
        row.append(NA if drop is None else f"{drop:+.2f}" + (" est." if is_estimate(c, "accuracy_drop_pts") else ""))
        gate = (c.get("validation") or {}).get("passed")
        row.append({True: "pass", False: "FAIL", None: NA}[gate])
        v = (c.get("profile") or {}).get("verdict") or {}
        row.append(NA if not v else "/".join(_verdict(v.get(k)) for k in
                                             ("memory_ok", "latency_ok", "accuracy_ok")))
        cov = metric(c, "delegation_coverage")
        row.append(NA if cov is None else f"{cov:.0%}")
        rows.append(row)
    return Table(headers, rows, ["l"] * 4 + ["r"] * (len(headers) - 4))


# The terminal's default table: what a decision needs, in 100 columns (the rest: --wide, report).
COMPACT_COLUMNS = (
    ("KB", "size_bytes", _kb),
    ("median ms", "latency_median_ms", _num),
    ("peak MB", "peak_rss_mb", lambda v: NA if v is None else f"{v:.0f}"),
    ("accuracy", "accuracy", _pct),
)


def compact_table(results: dict) -> Table:
    """The summary in at most 100 columns: one row per cell, the figures a choice needs."""
    wide = summary_table(results)
    cells = results.get("cells", [])
    one_model = len({c["model"] for c in cells}) <= 1
    index = {h: i for i, h in enumerate(wide.headers)}
    keep = ([] if one_model else ["model"]) + ["backend", "precision", "status"]
    headers = [{"precision": "prec"}.get(h, h) for h in keep] + [c[0] for c in COMPACT_COLUMNS] + \
        ["drop", "gate", "mem/lat/acc"]
    rows = []
    for c, row in zip(cells, wide.rows):
        # "FAILED (convert)" -> "FAILED": the notes under the table name the step and the error
        status = row[index["status"]].replace("ok (static)", "static")
        status = "FAILED" if status.startswith("FAILED") else status
        out = [row[index[h]] for h in keep[:-1]] + [status]
        for title, name, _ in COMPACT_COLUMNS:
            source = {"KB": "size KB"}.get(title, title)
            out.append(row[index[source]].replace(" est.", "~"))
        untrained = (c.get("validation") or {}).get("trained") is False
        if untrained and out[-1] != NA:
            out[-1] = "n/m"  # untrained: not meaningful
        out += [row[index["drop pt"]].replace(" est.", "~"), row[index["gate"]],
                row[index["budgets mem/lat/acc"]]]
        rows.append(out)
    return Table(headers, rows, ["l"] * len(keep) + ["r"] * (len(headers) - len(keep)))


def notes_list(results: dict, validation_notes: bool = True) -> list[str]:
    """Failed cells with their errors, then the cells' notes (why figures are missing, how they
    were measured), each note once with the cells it applies to; with ``validation_notes`` also
    what a not-runnable artifact's static checks found."""
    import re

    cells = results.get("cells", [])
    one_model = len({c["model"] for c in cells}) == 1

    def short(c):
        return f"{c['backend']} {c['precision']}" if one_model else cell_name(c)

    out = [f"{cell_name(c)} — {c.get('failed_step') or 'failed'} failed: {c.get('error')}"
           for c in cells if c.get("status") != "ok"]
    grouped: dict[str, tuple[str, list[str]]] = {}
    for c in cells:
        if c.get("status") != "ok" or not c.get("note"):
            continue
        for part in c["note"].split("; "):
            part = part.strip()
            if part:
                key = re.sub(r"\d+(\.\d+)?", "#", part)
                grouped.setdefault(key, (part, []))[1].append(short(c))
    for text, names in grouped.values():
        out.append(f"{', '.join(names)} — {text}")
    if validation_notes:
        for c in cells:
            v = c.get("validation") or {}
            if c.get("status") == "ok" and v.get("note") and not v.get("runnable", True):
                out.append(f"{short(c)} — validation: {v['note']}")
    return out


def delegation_table(results: dict) -> Table | None:
    rows = []
    for c in results.get("cells", []):
        d = c.get("delegation")
        if not d:
            continue
        rest = d.get("not_delegated") or {}
        subgraphs = d.get("subgraphs") or {}
        reasons = "; ".join(f"{r['op']} x{r['count']}: {r['reason']}"
                            for r in (d.get("reasons") or [])[:4])
        rows.append([cell_name(c), str(d.get("delegated_ops")), str(d.get("not_delegated_ops")),
                     NA if d.get("coverage") is None else f"{d['coverage']:.1%}",
                     ", ".join(f"{k} x{v}" for k, v in subgraphs.items()) or NA,
                     ", ".join(f"{k} x{v}" for k, v in list(rest.items())[:8]) or "none",
                     reasons or NA])
    if not rows:
        return None
    return Table(["cell", "delegated ops", "not delegated", "coverage", "delegate subgraphs",
                  "ops outside the delegate", "why (partitioner)"], rows,
                 ["l", "r", "r", "r", "l", "l", "l"])


# -- per-layer numerics ----------------------------------------------------------------------------
def layer_cells(results: dict) -> list[dict]:
    """The ok cells that carry a per-layer table (the bench measures every int8 cell)."""
    return [c for c in ok_cells(results) if (c.get("per_layer") or {}).get("layers")]


def layer_table(cell: dict) -> Table:
    """One cell's per-layer table: SQNR, max abs error, cosine; the three layers adding the
    most error marked."""
    p = cell["per_layer"]
    worst = {name: i + 1 for i, name in enumerate(p.get("worst") or [])}
    rows = [[x["name"], f"{x['sqnr_db']:.1f}", f"{x['max_abs_err']:.3g}", f"{x['cosine']:.6f}",
             f"#{worst[x['name']]}" if x["name"] in worst else ""] for x in p["layers"]]
    rows += [[name, NA, NA, NA, why] for name, why in (p.get("missing") or {}).items()]
    return Table(["layer", "SQNR dB", "max abs err", "cosine", "adds most error"], rows,
                 ["l", "r", "r", "r", "l"])


def layer_caption(cell: dict) -> str:
    p = cell["per_layer"]
    how = "STATIC (not run here)" if p.get("mode") == "static" else "measured"
    return (f"{cell_name(cell)} ({cell.get('recipe')}), {how} on {p.get('n_images')} images: "
            f"{p.get('method')}")


def _layers_figure(cell: dict):
    p = cell["per_layer"]
    names = [x["name"] for x in p["layers"]]
    values = [x["sqnr_db"] for x in p["layers"]]
    worst = set(p.get("worst") or [])
    fig = _figure(max(6.0, 0.26 * len(names) + 2), 3.6)
    ax = fig.add_subplot()
    colors = ["#c0392b" if n in worst else PRECISION_COLORS.get(cell["precision"], "#888")
              for n in names]
    ax.bar(range(len(names)), values, color=colors)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("SQNR vs fp32 source, dB")
    ax.set_title(f"{cell_name(cell)}: error per layer (red: the 3 adding the most)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return fig


def _layer_plot_name(cell: dict) -> str:
    import re

    # a file name from model/backend/precision names read from results: nothing else in it
    return "layers_" + re.sub(r"[^A-Za-z0-9._-]", "-", "_".join(cell_key(cell)))


# -- operator time -------------------------------------------------------------------------------------
def op_breakdown(cell: dict, top: int = 10) -> tuple[Table, Table | None, str]:
    """(time by op type, time by source layer or None, how it was measured) of a measured cell."""
    ops = _timed_ops(cell)
    total = sum(o["ms"] for o in ops) or 1.0
    by_type: dict[str, list] = {}
    by_layer: dict[str, float] = {}
    for o in ops:
        t = by_type.setdefault(o.get("type") or o.get("op"), [0.0, 0, o.get("delegated")])
        t[0] += o["ms"]
        t[1] += int(o.get("count") or 1)
        if o.get("module"):
            by_layer[o["module"]] = by_layer.get(o["module"], 0.0) + o["ms"]
    rows = [[name, str(n), f"{ms:.4f}", f"{ms / total:.0%}",
             {True: "yes", False: "no", None: NA}.get(d, NA)]
            for name, (ms, n, d) in sorted(by_type.items(), key=lambda kv: -kv[1][0])[:top]]
    types = Table(["op type", "count", "ms / run", "share", "delegated"], rows,
                  ["l", "r", "r", "r", "l"])
    layers = None
    if by_layer:
        layers = Table(["layer", "ms / run", "share"],
                       [[name, f"{ms:.4f}", f"{ms / total:.0%}"]
                        for name, ms in sorted(by_layer.items(), key=lambda kv: _layer_order(kv[0]))],
                       ["l", "r", "r"])
    d = (cell.get("profile") or {}).get("details") or {}
    how = "; ".join(x for x in (d.get("ops_method"), d.get("ops_note")) if x)
    return types, layers, how


def _layer_order(name: str) -> tuple:
    """Execution order of the source's layers: patch_embed, blocks.i (mixer, mlp), head."""
    import re

    m = re.fullmatch(r"blocks\.(\d+)(?:\.(mixer|mlp))?", name)
    if m:
        return (1, int(m[1]), {"mixer": 0, "mlp": 1, None: 2}[m[2]], name)
    return ({"patch_embed": 0, "head": 2}.get(name, 3), 0, 0, name)


# -- mixed precision -----------------------------------------------------------------------------------
def mixed_table(results: dict) -> Table | None:
    """Each int8-mixed cell beside its backend's default int8 cell: latency, accuracy, the layers
    kept in float."""
    cells = {cell_key(c): c for c in results.get("cells", [])}
    rows = []
    for c in results.get("cells", []):
        if c["precision"] != "int8-mixed":
            continue
        base = cells.get((c["model"], c["backend"], "int8"))
        mixed = ((c.get("manifest") or {}).get("details") or {}).get("mixed_precision") or {}
        lat_b, lat_m = (metric(base, "latency_median_ms") if base else None,
                        metric(c, "latency_median_ms"))
        cost = (NA if lat_b is None or lat_m is None
                else f"{lat_m - lat_b:+.3f} ms ({(lat_m - lat_b) / lat_b:+.0%})")
        rows.append([c["model"], c["backend"], _num(lat_b), _num(lat_m), cost,
                     _pct(metric(base, "accuracy") if base else None), _pct(metric(c, "accuracy")),
                     _pct(metric(base, "top1_agreement") if base else None),
                     _pct(metric(c, "top1_agreement")),
                     ", ".join(mixed.get("float_layers") or []) or "none",
                     {True: "met", False: "NOT met", None: NA}.get(mixed.get("target_met"))])
    if not rows:
        return None
    return Table(["model", "backend", "int8 ms", "int8-mixed ms", "latency cost", "int8 acc",
                  "mixed acc", "int8 agree", "mixed agree", "float layers", "target"], rows,
                 ["l", "l", "r", "r", "r", "r", "r", "r", "r", "l", "l"])


def _measured(results: dict) -> list[dict]:
    return [c for c in ok_cells(results) if metric(c, "latency_median_ms") is not None]


def _timed_ops(cell: dict) -> list[dict]:
    ops = (cell.get("profile") or {}).get("ops") or []
    return [o for o in ops if isinstance(o.get("ms"), (int, float))]


def extreme_cells(results: dict) -> tuple[list[tuple[str, dict]], list[dict]]:
    """The slowest and the fastest measured cell among those whose runtime reported
    per-operator times ([("slowest", cell), ("fastest", cell)], one entry if only one), and the
    measured cells without such a profile."""
    measured = _measured(results)
    timed = [c for c in measured if _timed_ops(c)]
    without = [c for c in measured if not _timed_ops(c)]
    if not timed:
        return [], without
    slow = max(timed, key=lambda c: metric(c, "latency_median_ms"))
    fast = min(timed, key=lambda c: metric(c, "latency_median_ms"))
    return [("slowest", slow)] + ([("fastest", fast)] if fast is not slow else []), without


def ops_note(results: dict) -> str:
    _, without = extreme_cells(results)
    if not without:
        return ""
    names = ", ".join(f"{c['backend']} {c['precision']}" for c in without)
    return (f"Slowest and fastest among the cells whose runtime reports per-operator times; "
            f"no operator profile from: {names}.")


def ops_tables(results: dict, top: int = 8) -> list[tuple[str, Table]]:
    out = []
    for which, c in extreme_cells(results)[0]:
        ops = sorted(_timed_ops(c), key=lambda o: -o["ms"])[:top]
        title = f"{which}: {cell_name(c)} (median {_num(metric(c, 'latency_median_ms'))} ms)"
        total = sum(o["ms"] for o in _timed_ops(c)) or 1.0
        rows = [[str(o.get("op")), f"{o['ms']:.4f}", f"{o['ms'] / total:.0%}", str(o.get("count", NA)),
                 {True: "yes", False: "no", None: NA}.get(o.get("delegated"), NA)] for o in ops]
        out.append((title, Table(["operator", "ms / run", "share", "count", "delegated"], rows,
                                 ["l", "r", "r", "r", "l"])))
    return out


def run_facts(results: dict) -> list[tuple[str, str]]:
    run = results.get("run", {})
    host = run.get("host") or {}
    v = {k: x for k, x in (run.get("versions") or {}).items() if x}
    key_versions = ", ".join(f"{k} {x}" for k, x in v.items())
    dev = run.get("device_profile") or {}
    facts = [
        ("time", f"{run.get('time')} ({run.get('duration_s')} s)"),
        ("host", f"{host.get('name', '?')}: {host.get('cpu', '?')}, {host.get('usable_cores')} usable "
                 f"of {host.get('cores')} cores, {host.get('os', '')}, load {host.get('loadavg')}"),
        ("device profile", f"{run.get('device')} — budgets: peak memory ≤ {dev.get('ram_budget_mb')} MB, "
                           f"p90 ≤ {dev.get('latency_budget_ms')} ms, accuracy drop ≤ "
                           f"{dev.get('accuracy_gate')} pt; threads {dev.get('threads')}"),
        ("measurement", f"batch 1, {run.get('runs')} timed runs after {run.get('warmup')} warm-up on "
                        f"each artifact's own held-out images, in a child process per artifact; "
                        f"accuracy on the test split of the data below vs the fp32 PyTorch source"),
        ("data", "; ".join(f"{m}: {d.get('spec')}" + ("" if d.get("trained", True) else
                                                       " (untrained: accuracy not meaningful)")
                           + (f" ({d['labels_note']})" if d.get("labels_note") else "")
                           for m, d in (run.get("data") or {}).items())
         or run.get("calibration") or NA),
        ("weights", "; ".join(f"{m}: {w}" for m, w in (run.get("weights") or {}).items()) or NA),
        ("command", run.get("command_line") or NA),
        ("versions", key_versions or NA),
    ]
    if run.get("db_id") is not None:
        facts.append(("history", f"run {run['db_id']} in {run.get('db')}"))
    return facts


# -- plots ----------------------------------------------------------------------------------------------------
@dataclass
class Plot:
    name: str
    title: str
    png: bytes
    caption: str = ""


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _groups(results: dict) -> tuple[list[tuple[str, str]], list[str]]:
    cells = results.get("cells", [])
    models = list(dict.fromkeys(c["model"] for c in cells))
    backends = list(dict.fromkeys(c["backend"] for c in cells))
    groups = [(m, b) for m in models for b in backends
              if any(c["model"] == m and c["backend"] == b for c in cells)]
    precisions = list(dict.fromkeys(c["precision"] for c in cells))
    return groups, precisions


def _grouped_bars(results: dict, value, ylabel: str, title: str, whisker=None):
    """Bars per (model, backend) group, one bar per precision; missing values say why."""
    groups, precisions = _groups(results)
    multi_model = len({m for m, _ in groups}) > 1
    cells = {cell_key(c): c for c in results.get("cells", [])}
    fig = _figure(max(6.0, 1.3 * len(groups) + 2), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(precisions))
    top = max([value(c) or 0 for c in cells.values()] + [0]) or 1.0
    for j, prec in enumerate(precisions):
        xs, hs, errs = [], [], []
        for i, (m, b) in enumerate(groups):
            c = cells.get((m, b, prec))
            x = i - 0.4 + width * (j + 0.5)
            v = value(c) if c and c.get("status") == "ok" else None
            if c is None:
                continue
            if v is None:
                why = "failed" if c.get("status") != "ok" else "not run here"
                ax.text(x, top * 0.02, f"{prec}\n{why}", ha="center", va="bottom", fontsize=7,
                        color="#777", rotation=90)
                continue
            xs.append(x)
            hs.append(v)
            errs.append(max(0.0, (whisker(c) or v) - v) if whisker else 0.0)
        if xs:
            ax.bar(xs, hs, width * 0.92, label=prec, color=PRECISION_COLORS.get(prec, "#888"),
                   yerr=[[0] * len(errs), errs] if whisker else None, capsize=3 if whisker else 0,
                   error_kw={"elinewidth": 1, "ecolor": "#333"})
            for x, h, err in zip(xs, hs, errs):
                ax.text(x, h + err, _num(h), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{m}\n{b}" if multi_model else b for m, b in groups])
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title="precision", fontsize=8)
    return fig


def _scatter(results: dict):
    fig = _figure(6.6, 4.4)
    ax = fig.add_subplot()
    front = set(pareto_front(results))
    pts = []
    for c in ok_cells(results):
        x, y = metric(c, "latency_median_ms"), metric(c, "accuracy")
        if x is None or y is None:
            continue
        pts.append((x, y * 100, c))
        ax.scatter([x], [y * 100], s=60, marker=BACKEND_MARKERS.get(c["backend"], "o"),
                   color=PRECISION_COLORS.get(c["precision"], "#888"), edgecolor="black",
                   linewidth=0.6, zorder=3)
    _label_points(ax, pts, multi_model=len({c["model"] for c in ok_cells(results)}) > 1)
    fp = sorted((x, y) for x, y, c in pts if cell_key(c) in front)
    if fp:
        ax.step([p[0] for p in fp], [p[1] for p in fp], where="post", color="#c0392b",
                linestyle="--", linewidth=1.2, label="Pareto front", zorder=2)
        ax.scatter([p[0] for p in fp], [p[1] for p in fp], s=200, facecolors="none",
                   edgecolors="#c0392b", linewidth=1.4, zorder=4)
    if not pts:
        ax.text(0.5, 0.5, "no cell has both a measured latency and accuracy", ha="center",
                va="center", transform=ax.transAxes, color="#777")
    else:
        xs = [p[0] for p in pts]
        if min(xs) > 0 and max(xs) / min(xs) > 8:
            from matplotlib.ticker import FuncFormatter

            ax.set_xscale("log")
            plain = FuncFormatter(lambda v, _pos: f"{v:g}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(FuncFormatter(
                lambda v, _pos: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker=BACKEND_MARKERS.get(b, "o"), linestyle="", color="#999",
                          markeredgecolor="black", label=b)
                   for b in dict.fromkeys(p[2]["backend"] for p in pts)]
        handles += [Line2D([], [], marker="s", linestyle="", color=PRECISION_COLORS.get(pr, "#888"),
                           label=pr) for pr in dict.fromkeys(p[2]["precision"] for p in pts)]
        if fp:
            handles.append(Line2D([], [], color="#c0392b", linestyle="--", label="Pareto front"))
        ax.legend(handles=handles, fontsize=8, loc="best")
    ax.margins(x=0.15, y=0.1)
    ax.set_xlabel("latency median, ms (lower is better)")
    ax.set_ylabel("top-1 accuracy, % (higher is better)")
    ax.set_title("Accuracy vs latency (circled: Pareto front)", fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def _label_points(ax, pts, multi_model: bool) -> None:
    """One label per cluster of nearly coincident points (names stacked), so labels never
    print on top of each other when several cells share a latency and an accuracy."""
    if not pts:
        return
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    xr, yr = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    clusters: list[list] = []
    for p in sorted(pts, key=lambda p: p[0]):
        for cl in clusters:
            if abs(p[0] - cl[0][0]) <= 0.06 * xr and abs(p[1] - cl[0][1]) <= 0.06 * yr:
                cl.append(p)
                break
        else:
            clusters.append([p])
    for cl in clusters:
        names = [cell_name(c) if multi_model else f"{c['backend']} {c['precision']}" for _, _, c in cl]
        ax.annotate("\n".join(names), (cl[0][0], cl[0][1]), fontsize=7, xytext=(6, 6),
                    textcoords="offset points", va="bottom")


def _ops_figure(results: dict):
    extremes = extreme_cells(results)[0]
    if not extremes:
        return None
    fig = _figure(6.2 * len(extremes), 3.8)
    for k, (which, c) in enumerate(extremes):
        ax = fig.add_subplot(1, len(extremes), k + 1)
        ops = sorted(_timed_ops(c), key=lambda o: -o["ms"])[:10]
        ax.set_title(f"{which}: {cell_name(c)}\nmedian {_num(metric(c, 'latency_median_ms'))} ms",
                     fontsize=9)
        names = [str(o.get("op"))[:28] for o in ops][::-1]
        vals = [o["ms"] for o in ops][::-1]
        colors = ["#4c9a52" if o.get("delegated") else PRECISION_COLORS.get(c["precision"], "#888")
                  for o in ops][::-1]
        ax.barh(names, vals, color=colors)
        ax.set_xlabel("ms per run (mean of the operator profile runs)")
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    return fig


def make_plots(results: dict) -> list[Plot]:
    """The report's plots. Names from the results (models, devices, labels) are plain text:
    mathtext is off, so a ``$`` or ``\\`` in a device name never breaks a plot."""
    try:
        import matplotlib
    except ImportError:
        return []
    with matplotlib.rc_context({"text.parse_math": False}):
        return _make_plots(results)


def _make_plots(results: dict) -> list[Plot]:
    """The report's figures as PNG bytes (empty list when matplotlib is missing)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return []
    device = results.get("run", {}).get("device", "")
    plots = [
        Plot("latency", "Latency by backend and precision",
             _png(_grouped_bars(results, lambda c: metric(c, "latency_median_ms"), "ms per image",
                                f"Latency, batch 1 (bar: median, whisker: p90) — device profile {device}",
                                whisker=lambda c: metric(c, "latency_p90_ms"))),
             "Bars are medians, whiskers reach the p90; cells that failed or cannot run here are "
             "labelled."),
        Plot("accuracy_vs_latency", "Accuracy vs latency", _png(_scatter(results)),
             "Marker = backend, colour = precision; the dashed line and circles mark the Pareto "
             "front (no other cell is both faster and more accurate)."),
        Plot("size", "Artifact size by backend and precision",
             _png(_grouped_bars(results, lambda c: (metric(c, "size_bytes") or 0) / 1024 or None,
                                "KB on disk", "Artifact size"))),
    ]
    for c in layer_cells(results):
        plots.append(Plot(_layer_plot_name(c), f"Per-layer error: {cell_name(c)}",
                          _png(_layers_figure(c)), layer_caption(c)))
    ops = _ops_figure(results)
    if ops is not None:
        shown = " and ".join(f"{which} {cell_name(c)}" for which, c in extreme_cells(results)[0])
        plots.append(Plot("operators", f"Operator breakdown: {shown}", _png(ops),
                          f"Time per run of the most expensive operators of {shown}, from the "
                          f"runtime's own profiler (green: delegated). " + ops_note(results)))
    return plots


# -- Markdown ------------------------------------------------------------------------------------------------
def _md_escape(text: str) -> str:
    """Text from the results (names, notes, errors, device fields) as inert Markdown: no
    control characters, HTML escaped, table pipes escaped."""
    from lkca_edge.errors import printable

    return html.escape(printable(text), quote=False).replace("|", "\\|")


def md_table(t: Table) -> str:
    align = t.align or ["l"] * len(t.headers)
    lines = ["| " + " | ".join(_md_escape(h) for h in t.headers) + " |",
             "|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|"]
    lines += ["| " + " | ".join(_md_escape(x) for x in r) + " |" for r in t.rows]
    return "\n".join(lines)


def _ship(results: dict) -> list[tuple[str, list[str]]]:
    """(line per device profile, why each cell does not qualify where nothing does)."""
    entries = results.get("ship") or what_to_ship(results)
    device = results.get("run", {}).get("device")
    out = []
    for entry in entries:
        line = ship_line(entry, device)
        why = [] if entry.get("cell") else [f"{' '.join(r['cell'])}: {r['why']}"
                                            for r in entry.get("rejected", [])]
        if why:
            line = f"{entry['device']}: nothing qualifies, for these reasons per cell"
        out.append((line, why))
    return out


def render_markdown(results: dict, plot_files: dict[str, str] | None = None) -> str:
    run = results.get("run", {})
    cells = results.get("cells", [])
    n_ok = len(ok_cells(results))
    e = _md_escape
    out = [f"# lkca-edge bench — {e(', '.join(run.get('models') or []))} on {e(run.get('device'))}",
           "", f"{n_ok} of {len(cells)} cells ok. {BEST} = best cell per metric among the ok cells.", ""]
    out += ["## What to ship", ""]
    for line, why in _ship(results):
        out.append(f"- {_md_escape(line)}")
        out += [f"    - {_md_escape(w)}" for w in why]
    out.append("")
    out += ["## Results", "", md_table(summary_table(results)), ""]
    out += [e(LEGEND.format(device=run.get("device"))), ""]
    notes = notes_list(results)
    if notes:
        out += ["## Failures and notes", ""] + [f"- {_md_escape(n)}" for n in notes] + [""]
    deleg = delegation_table(results)
    if deleg:
        out += ["## Delegation coverage (ExecuTorch, LiteRT XNNPACK)", "", md_table(deleg), ""]
    plot_files = plot_files or {}
    general = {k: v for k, v in plot_files.items() if not k.startswith("layers_")}
    if general:
        out += ["## Plots", ""]
        for name, (title, rel) in general.items():
            out += [f"### {e(title)}", "", f"![{e(title)}]({rel})", ""]
    mixed = mixed_table(results)
    if mixed:
        out += ["## Mixed precision (int8-mixed beside int8)", "", md_table(mixed), "",
                MIXED_LEGEND, ""]
    if layer_cells(results):
        out += ["## Per-layer numerics", "", LAYERS_LEGEND, ""]
        for c in layer_cells(results):
            out += [f"### {e(cell_name(c))}", "", _md_escape(layer_caption(c)), "", md_table(layer_table(c)), ""]
            if _layer_plot_name(c) in plot_files:
                title, rel = plot_files[_layer_plot_name(c)]
                out += [f"![{e(title)}]({rel})", ""]
    ops = ops_tables(results)
    if ops:
        out += ["## Operator breakdown", ""] + ([e(ops_note(results)), ""] if ops_note(results) else [])
        for title, table in ops:
            out += [f"### {e(title)}", "", md_table(table), ""]
    timed = [c for c in _measured(results) if _timed_ops(c)]
    if timed:
        out += ["## Operator time per cell", ""]
        for c in timed:
            types, layers, how = op_breakdown(c)
            out += [f"### {e(cell_name(c))}", "", _md_escape(how), "", md_table(types), ""]
            if layers:
                out += [md_table(layers), ""]
    out += ["## Run", ""] + [f"- **{k}**: {_md_escape(v)}" for k, v in run_facts(results)] + [""]
    return "\n".join(out)


# -- HTML ------------------------------------------------------------------------------------------------------
CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 margin:24px auto;max-width:1400px;padding:0 16px;color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;white-space:nowrap}th{background:#f3f5f8;text-align:left}
td.r{text-align:right;font-variant-numeric:tabular-nums}tr:nth-child(even) td{background:#fafbfc}
tr.failed td{color:#a33}td.best{font-weight:600;background:#fff6d6 !important}
.ship li{margin:.2em 0}.muted{color:#666}figure{margin:1em 0}figcaption{color:#555;font-size:13px}
img.plot{max-width:100%;height:auto;border:1px solid #eee}
.plots{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}.plots figure{margin:0;max-width:100%}
.plots figcaption{max-width:720px}code{background:#f3f5f8;padding:1px 4px}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 12px}dl.facts dt{font-weight:600}
dl.facts dd{margin:0;word-break:break-word}
"""


def html_table(t: Table, cls: str = "", row_classes: list[str] | None = None) -> str:
    e = html.escape
    align = t.align or ["l"] * len(t.headers)
    parts = [f'<table class="{e(cls)}"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in t.headers)
             + "</tr></thead><tbody>"]
    for i, r in enumerate(t.rows):
        rc = row_classes[i] if row_classes else ""
        tds = []
        for a, x in zip(align, r):
            classes = (["r"] if a == "r" else []) + (["best"] if BEST in x else [])
            tds.append(f'<td class="{" ".join(classes)}">{e(x)}</td>' if classes else f"<td>{e(x)}</td>")
        parts.append(f'<tr class="{rc}">' + "".join(tds) + "</tr>" if rc else "<tr>" + "".join(tds) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def render_html(results: dict, plots: list[Plot]) -> str:
    e = html.escape
    run = results.get("run", {})
    cells = results.get("cells", [])
    title = f"lkca-edge bench — {', '.join(run.get('models') or [])} on {run.get('device')}"
    body = [f"<h1>{e(title)}</h1>",
            f'<p class="muted">{len(ok_cells(results))} of {len(cells)} cells ok · {e(str(run.get("time")))} · '
            f'{e(BEST)} = best cell per metric among the ok cells</p>',
            "<h2>What to ship</h2><ul class=\"ship\">"
            + "".join(f"<li>{e(line)}" + ("<ul>" + "".join(f"<li>{e(w)}</li>" for w in why)
                                          + "</ul>" if why else "") + "</li>"
                      for line, why in _ship(results)) + "</ul>",
            "<h2>Results</h2>",
            html_table(summary_table(results), "results",
                       ["failed" if c.get("status") != "ok" else "" for c in cells]),
            f'<p class="muted">{e(LEGEND.format(device=run.get("device")))}</p>']
    notes = notes_list(results)
    if notes:
        body.append("<h2>Failures and notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    deleg = delegation_table(results)
    if deleg:
        body += ["<h2>Delegation coverage (ExecuTorch, LiteRT XNNPACK)</h2>", html_table(deleg, "delegation")]
    layer_plots = {p.name: p for p in plots if p.name.startswith("layers_")}
    general = [p for p in plots if not p.name.startswith("layers_")]
    if general:
        body.append('<h2>Plots</h2><div class="plots">')
        for p in general:
            data = base64.b64encode(p.png).decode("ascii")
            body.append(f'<figure id="plot-{e(p.name)}"><img class="plot" alt="{e(p.title)}" '
                        f'src="data:image/png;base64,{data}"><figcaption><b>{e(p.title)}.</b> '
                        f"{e(p.caption)}</figcaption></figure>")
        body.append("</div>")
    else:
        body.append('<h2>Plots</h2><p class="muted">matplotlib is not installed: no plots '
                    "(pip install 'lkca-edge[report]')</p>")
    mixed = mixed_table(results)
    if mixed:
        body += ["<h2>Mixed precision (int8-mixed beside int8)</h2>", html_table(mixed, "mixed"),
                 f'<p class="muted">{e(MIXED_LEGEND)}</p>']
    if layer_cells(results):
        body += ["<h2>Per-layer numerics</h2>", f'<p class="muted">{e(LAYERS_LEGEND)}</p>']
        for c in layer_cells(results):
            body += [f"<h3>{e(cell_name(c))}</h3>", f'<p class="muted">{e(layer_caption(c))}</p>',
                     '<div class="plots">' + html_table(layer_table(c), "layers")]
            p = layer_plots.get(_layer_plot_name(c))
            if p is not None:
                data = base64.b64encode(p.png).decode("ascii")
                body.append(f'<figure id="plot-{e(p.name)}"><img class="plot" alt="{e(p.title)}" '
                            f'src="data:image/png;base64,{data}"></figure>')
            body.append("</div>")
    ops = ops_tables(results)
    if ops:
        body.append("<h2>Operator breakdown</h2>")
        if ops_note(results):
            body.append(f'<p class="muted">{e(ops_note(results))}</p>')
        for t, table in ops:
            body.append(f"<h3>{e(t)}</h3>" + html_table(table, "ops"))
    timed = [c for c in _measured(results) if _timed_ops(c)]
    if timed:
        body.append("<h2>Operator time per cell</h2>")
        for c in timed:
            types, layers, how = op_breakdown(c)
            body += [f"<h3>{e(cell_name(c))}</h3>", f'<p class="muted">{e(how)}</p>',
                     '<div class="plots">' + html_table(types, "ops")
                     + (html_table(layers, "ops-layers") if layers else "") + "</div>"]
    body.append("<h2>Run</h2><dl class=\"facts\">" + "".join(
        f"<dt>{e(k)}</dt><dd>{e(str(v))}</dd>" for k, v in run_facts(results)) + "</dl>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# -- files ------------------------------------------------------------------------------------------------------
def write_report(results: dict, out_dir: str | Path) -> dict[str, Path]:
    """report.md, report.html and plots/*.png in ``out_dir`` (each written atomically)."""
    from lkca_edge.fileio import write_bytes, write_text

    out_dir = Path(out_dir)
    plots = make_plots(results)
    files: dict[str, Path] = {}
    plot_files = {}
    for p in plots:
        rel = f"plots/{p.name}.png"
        files[rel] = write_bytes(out_dir / rel, p.png)
        plot_files[p.name] = (p.title, rel)
    files["report.md"] = write_text(out_dir / "report.md", render_markdown(results, plot_files))
    files["report.html"] = write_text(out_dir / "report.html", render_html(results, plots))
    return files


__all__ = ["METRICS", "Plot", "Table", "make_plots", "md_table", "render_html", "render_markdown",
           "summary_table", "write_report"]
