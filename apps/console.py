"""What the commands print: one place for the lines a person reads in a terminal.

Every string from a file the user did not write (labels, model and device names, paths inside
manifests) goes through ``printable`` before it is printed.
"""

from __future__ import annotations

from lkca_edge.errors import printable


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.2%}"


def validation_lines(v: dict) -> list[str]:
    """A validation result (``ValidationResult.to_dict()``) as the lines export/validate print."""
    lines = []
    data = f" of {printable(v['data'])}" if v.get("data") else ""
    if v.get("labels_note"):
        lines.append(f"labels: {printable(v['labels_note'])}")
    if v.get("runnable") and v.get("accuracy") is not None:
        trained = v.get("trained", True)
        acc = (f"accuracy {_pct(v['accuracy'])} (fp32 reference {_pct(v['reference_accuracy'])})"
               if trained else "accuracy not meaningful (untrained)")
        parts = [acc, f"top-1 agreement {_pct(v['top1_agreement'])}"]
        if not trained and v.get("decisive_agreement") is not None:
            parts.append(f"on decisive images {_pct(v['decisive_agreement'])} of {v.get('n_decisive')}")
        parts.append(f"max |logit err| {v['max_abs_err']:.2e}")
        if v.get("cosine") is not None:
            parts.append(f"cosine {v['cosine']:.6f}")
        lines.append(f"{v['backend']} {v['precision']} on {v['n_images']} test images{data}"
                     f"{' (estimate)' if v.get('estimate') else ''}: " + ", ".join(parts))
    elif v.get("runnable") is False:
        lines.append(f"{v['backend']} {v['precision']}: not runnable here: {printable(v.get('note', ''))}")
    elif v.get("failures"):
        lines.append(f"{v['backend']} {v['precision']} on {v['n_images']} test images{data}")
    if v.get("note") and v.get("runnable"):
        lines.append(f"note: {printable(v['note'])}")
    verdict = ("PASS" if v.get("passed") else "n/a" if v.get("passed") is None
               else "FAIL: " + "; ".join(printable(f) for f in v.get("failures", [])))
    lines.append(f"gate ({v.get('gate', '')}): {verdict}")
    return lines


def layer_lines(p: dict) -> list[str]:
    """A per-layer comparison (``PerLayerResult.to_dict()``) as the lines validate prints."""
    how = "STATIC (not run)" if p.get("mode") == "static" else "measured"
    lines = [f"per-layer, {how}, on {p.get('n_images')} images: {printable(p.get('method', ''))}",
             f"  {'layer':<16} {'SQNR dB':>9} {'max abs err':>12} {'cosine':>10}"]
    worst = {name: i + 1 for i, name in enumerate(p.get("worst") or [])}
    for x in p.get("layers", []):
        mark = f"  <- adds the most error #{worst[x['name']]}" if x["name"] in worst else ""
        lines.append(f"  {x['name']:<16} {x['sqnr_db']:>9.1f} {x['max_abs_err']:>12.3g} "
                     f"{x['cosine']:>10.6f}{mark}")
    for name, why in (p.get("missing") or {}).items():
        lines.append(f"  {name:<16} {'—':>9}  ({printable(why)})")
    if p.get("tap_logit_shift"):
        lines.append(f"  note: exposing the layers changed the logits by up to "
                     f"{p['tap_logit_shift']:.3g}")
    if p.get("note"):
        lines.append(f"  {printable(p['note'])}")
    return lines


def mixed_lines(details: dict) -> list[str]:
    """What mixed precision did to an export (the manifest's details.mixed_precision)."""
    m = (details or {}).get("mixed_precision")
    if not m:
        return []
    floated = ", ".join(m.get("float_layers") or []) or "none"
    return [f"mixed precision ({m['trigger']}; target {m['target']}: "
            f"{'met' if m['target_met'] else 'NOT met'}): float layers: {floated}"]


def print_bench_summary(outcome, wide: bool = False) -> None:
    """The bench's terminal summary: the results table (100 columns, or ``wide``), its notes,
    what to ship per device, and where the report and the history record are."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from lkca_edge.apps.report import BEST, compact_table, notes_list, summary_table
    from lkca_edge.results.analysis import ship_line

    results = outcome.results
    console = Console()
    if not console.is_terminal:
        console = Console(width=220 if wide else 100)
    t = summary_table(results) if wide else compact_table(results)
    run = results["run"]
    # Text, not str: rich would read "[bold]" in a model or device name as markup.
    table = Table(title=Text(f"lkca-edge bench: {printable(', '.join(run['models']))} on "
                             f"{printable(run['device'])}"), title_justify="left", header_style="bold",
                  caption=f"{BEST} best per metric" + ("" if wide else
                                                       " · ~ estimate · n/m not meaningful "
                                                       "(untrained) · --wide: every column"),
                  caption_justify="left",
                  # without vertical rules the compact table's columns fit 100 columns whole
                  box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD, show_edge=wide,
                  collapse_padding=not wide, pad_edge=wide)
    for h, a in zip(t.headers, t.align):
        table.add_column(h, justify="right" if a == "r" else "left", no_wrap=True)
    for cell, row in zip(results["cells"], t.rows):
        style = None if cell["status"] == "ok" else "red"
        table.add_row(*[Text(printable(x)) for x in row], style=style)
    console.print(table)
    for note in notes_list(results, validation_notes=False):
        console.print(f"  • {printable(note)}", highlight=False, markup=False, soft_wrap=True)
    console.print("what to ship:", style="bold")
    for entry in results.get("ship", []):
        console.print(f"  {printable(ship_line(entry, run['device']))}", highlight=False,
                      markup=False, soft_wrap=True)
    files = outcome.files
    console.print(printable(f"report: {files.get('report.html')}  (also report.md, results.json, "
                            f"results.csv in {outcome.out_dir})"),
                  highlight=False, markup=False, soft_wrap=True)
    if outcome.run_id is not None:
        console.print(printable(f"recorded as run {outcome.run_id} in {outcome.db_path} "
                                f"(`lkca-edge runs`, `lkca-edge compare previous latest`)"),
                      highlight=False, markup=False, soft_wrap=True)
    elif outcome.db_error:
        console.print(f"warning: not recorded in the run history: {printable(outcome.db_error)}",
                      style="yellow", highlight=False, markup=False, soft_wrap=True)
