"""Compare two bench runs cell by cell (model x backend x precision): latency, peak memory, size
and accuracy, A -> B. A and B are run ids from `lkca-edge runs`, `latest`, `previous`, or a run
directory / results.json. Exit code 1 when B regresses beyond a threshold."""

from __future__ import annotations

HELP = "compare two bench runs; exit 1 on a regression (latency, memory, size, accuracy)"


def add_arguments(p) -> None:
    p.add_argument("a", nargs="?", default="previous", help="the baseline run (default: previous)")
    p.add_argument("b", nargs="?", default="latest", help="the new run (default: latest)")
    p.add_argument("--db", metavar="PATH", help="run history database (default: $LKCA_EDGE_DB, "
                   "else the user's data dir)")
    p.add_argument("--latency-threshold", type=float, default=10.0, metavar="PCT",
                   help="flag a median latency slower by more than PCT %% (default 10)")
    p.add_argument("--accuracy-threshold", type=float, default=0.5, metavar="PTS",
                   help="flag an accuracy lower by more than PTS points (default 0.5)")
    p.add_argument("--memory-threshold", type=float, default=10.0, metavar="PCT",
                   help="flag a peak memory higher by more than PCT %% (default 10; inf = off)")
    p.add_argument("--size-threshold", type=float, default=10.0, metavar="PCT",
                   help="flag an artifact larger by more than PCT %% (default 10; inf = off)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")


def _fmt(v, kind: str) -> str:
    if v is None:
        return "—"
    if kind == "size_bytes":
        return f"{v / 1024:,.0f}"
    if kind == "accuracy":
        return f"{v * 100:.2f}"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _delta(a, b, kind: str) -> str:
    if a is None or b is None:
        return ""
    if kind == "accuracy":
        return f" ({(b - a) * 100:+.2f} pt)"
    return "" if a == 0 else f" ({(b - a) / a * 100:+.1f}%)"


def run(args) -> int:
    import math

    from lkca_edge.errors import UserError
    from lkca_edge.results import (ResultsStore, Thresholds, compare_results, load_run,
                                   resolve_db_path)

    for name in ("latency_threshold", "accuracy_threshold", "memory_threshold", "size_threshold"):
        v = getattr(args, name)
        if math.isnan(v) or v < 0:
            raise UserError(f"--{name.replace('_', '-')} must be 0 or more, got {v}")
    path = resolve_db_path(args.db)
    store = ResultsStore(path) if path.exists() else None
    try:
        a, b = load_run(args.a, store), load_run(args.b, store)
    finally:
        if store is not None:
            store.close()
    t = Thresholds(latency_pct=args.latency_threshold, accuracy_pts=args.accuracy_threshold,
                   memory_pct=args.memory_threshold, size_pct=args.size_threshold)
    changes = compare_results(a, b, t)
    regressions = [c for c in changes if c.regressions]
    from lkca_edge.results.analysis import run_differences

    warnings = run_differences(a, b)

    def label(r, ref):
        return f"run {r['run']['db_id']}" if r["run"].get("db_id") is not None else str(ref)

    la, lb = label(a, args.a), label(b, args.b)
    if args.json:
        from lkca_edge.commands.common import print_json

        print_json({"a": la, "b": lb, "thresholds": t.__dict__, "regressions": len(regressions),
                    "warnings": warnings,
                    "cells": [{"cell": list(c.key), "status_a": c.status_a, "status_b": c.status_b,
                               "a": c.a, "b": c.b, "regressions": c.regressions, "notes": c.notes}
                              for c in changes]})
        return 1 if regressions else 0

    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=220)
    table = Table(title=f"{la} ({a['run'].get('time')}) -> {lb} ({b['run'].get('time')})",
                  title_justify="left", header_style="bold")
    table.add_column("cell")
    for h in ("median ms", "p90 ms", "peak MB", "size KB", "accuracy %"):
        table.add_column(h, justify="right")
    table.add_column("verdict")
    for c in changes:
        row = [" ".join(c.key)]
        for kind in ("latency_median_ms", "latency_p90_ms", "peak_rss_mb", "size_bytes", "accuracy"):
            va, vb = c.a.get(kind), c.b.get(kind)
            row.append(f"{_fmt(va, kind)} -> {_fmt(vb, kind)}{_delta(va, vb, kind)}"
                       if (va is not None or vb is not None) else "—")
        verdict = "; ".join(c.regressions) if c.regressions else ("; ".join(c.notes) or "ok")
        table.add_row(*row, verdict, style="red" if c.regressions else None)
    console.print(table)
    from lkca_edge.errors import printable

    for w in warnings:
        console.print(f"warning: the runs differ in {printable(w)}: their figures compare more "
                      f"than the change", style="yellow", highlight=False, markup=False,
                      soft_wrap=True)
    if regressions:
        console.print(f"{len(regressions)} regressed cell(s) beyond the thresholds (latency "
                      f"{t.latency_pct:g}%, accuracy {t.accuracy_pts:g} pt, memory {t.memory_pct:g}%, "
                      f"size {t.size_pct:g}%)", style="bold red", highlight=False)
        return 1
    console.print(f"no regression beyond the thresholds (latency {t.latency_pct:g}%, accuracy "
                  f"{t.accuracy_pts:g} pt, memory {t.memory_pct:g}%, size {t.size_pct:g}%)",
                  highlight=False)
    return 0
