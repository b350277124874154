"""The main job: convert every model to every backend at every precision (validated on real
images), profile each artifact for a device profile, and write results.json, results.csv,
report.md and a self-contained report.html (with plots) into a new run directory. Every run is
recorded in the SQLite history (see `lkca-edge runs` and `lkca-edge compare`).

With no arguments: lkca-1m with its shipped digits weights; executorch, coreml, tflite and onnx;
fp32 and int8; the `host` device profile; output in runs/<timestamp>/.

Every finished cell is recorded at once in DIR/cells/, so a bench stopped by Ctrl-C, SIGTERM or a
crash continues where it stopped with `lkca-edge bench --resume DIR` (same options, only the
missing cells). One bench at a time per run directory (DIR/.lock)."""

from __future__ import annotations

HELP = "the main job: convert, validate and profile every backend x precision; write a report"


def add_arguments(p) -> None:
    p.add_argument("--resume", metavar="DIR",
                   help="finish an interrupted run: its recorded options, only the missing cells")
    p.add_argument("--models", nargs="+", metavar="NAME",
                   help="zoo models (default: lkca-1m); space- or comma-separated")
    p.add_argument("--backends", nargs="+", metavar="NAME", help="backends (default: executorch coreml tflite onnx)")
    p.add_argument("--precisions", nargs="+", metavar="P",
                   help="precisions (default: fp32 int8 int8-mixed; fp16 for Core ML; int8-mixed: "
                        "the int8-mixed recipe, on the backends that have it)")
    p.add_argument("--device",
                   help="device profile for budgets and threads (default: host; see `lkca-edge devices`)")
    p.add_argument("--runs", type=int, help="timed runs per artifact (default 100)")
    p.add_argument("--warmup", type=int, help="warm-up runs before timing (default 10)")
    p.add_argument("--op-runs", type=int,
                   help="runs for the per-operator profile (0 = skip; default 10)")
    p.add_argument("--threads", type=int, help="override the device profile's thread count")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/<timestamp>/)")
    p.add_argument("--db", metavar="PATH",
                   help="run history database (default: $LKCA_EDGE_DB, else "
                        "$XDG_DATA_HOME/lkca-edge/runs.sqlite or ~/.local/share/lkca-edge/runs.sqlite)")
    p.add_argument("--no-history", action="store_true", help="do not record this run in the history")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="weights for the (single) model instead of its shipped weights")
    p.add_argument("--limit", type=int, metavar="N", help="validate on at most N test images")
    p.add_argument("--profiles-dir", metavar="DIR", action="append",
                   help="also read *.yaml device profiles from DIR (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or per-cell lines")
    p.add_argument("--strict", action="store_true", help="exit 1 when any cell failed")


DEFAULTS = {"models": ["lkca-1m"], "backends": ["executorch", "coreml", "tflite", "onnx"],
            "precisions": ["fp32", "int8", "int8-mixed"], "device": "host", "runs": 100, "warmup": 10,
            "op_runs": 10}
# options a resumed run takes from its record, never from the command line
RECORDED = ("models", "backends", "precisions", "device", "runs", "warmup", "op_runs", "threads",
            "out", "db", "no_history", "checkpoint", "limit", "profiles_dir")


def run(args) -> int:
    import sys

    from lkca_edge.bench import BenchConfig, resume_bench, run_bench, split_names
    from lkca_edge.errors import UserError

    if args.resume is not None:
        given = [name for name in RECORDED if getattr(args, name) not in (None, False)]
        if given:
            flags = ", ".join("--" + n.replace("_", "-") for n in given)
            raise UserError(f"--resume runs with the options recorded in the run directory; "
                            f"drop {flags}")
        outcome = resume_bench(args.resume, progress=not args.no_progress)
    else:
        for name, value in DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
        cfg = BenchConfig(
            models=split_names(args.models), backends=split_names(args.backends),
            precisions=split_names(args.precisions), device=args.device, runs=args.runs,
            warmup=args.warmup, op_runs=args.op_runs, threads=args.threads, out=args.out,
            db=args.db, record=not args.no_history, checkpoint=args.checkpoint,
            validation_limit=args.limit, profiles_dir=args.profiles_dir,
            progress=not args.no_progress,
            argv=(["lkca-edge", *sys.argv[1:]]
                  if sys.argv and "lkca" in sys.argv[0].replace("_", "-") else None))
        outcome = run_bench(cfg)
    print_summary(outcome)
    cells = outcome.results["cells"]
    n_ok = sum(c["status"] == "ok" for c in cells)
    if n_ok == 0:
        return 1
    return 1 if args.strict and n_ok < len(cells) else 0


def print_summary(outcome) -> None:
    from rich.console import Console
    from rich.table import Table

    from lkca_edge.apps.report import BEST, notes_list, summary_table
    from lkca_edge.results.analysis import ship_line

    results = outcome.results
    console = Console()
    if not console.is_terminal:
        console = Console(width=220)
    t = summary_table(results)
    table = Table(title=f"lkca-edge bench: {', '.join(results['run']['models'])} on "
                        f"{results['run']['device']} ({BEST} = best per metric)",
                  title_justify="left", header_style="bold")
    for h, a in zip(t.headers, t.align):
        table.add_column(h, justify="right" if a == "r" else "left", no_wrap=True)
    for cell, row in zip(results["cells"], t.rows):
        style = None if cell["status"] == "ok" else "red"
        table.add_row(*row, style=style)
    console.print(table)
    for note in notes_list(results, validation_notes=False):
        console.print(f"  • {note}", highlight=False, markup=False)
    console.print("what to ship:", style="bold")
    for entry in results.get("ship", []):
        console.print(f"  {ship_line(entry, results['run']['device'])}", highlight=False, markup=False)
    files = outcome.files
    console.print(f"report: {files.get('report.html')}  (also report.md, results.json, results.csv "
                  f"in {outcome.out_dir})", highlight=False, markup=False)
    if outcome.run_id is not None:
        console.print(f"recorded as run {outcome.run_id} in {outcome.db_path} "
                      f"(`lkca-edge runs`, `lkca-edge compare previous latest`)",
                      highlight=False, markup=False)
    elif outcome.db_error:
        console.print(f"warning: not recorded in the run history: {outcome.db_error}",
                      style="yellow", highlight=False, markup=False)
