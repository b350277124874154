"""The main job: convert every model to every backend at every precision (validated on real
images), profile each artifact for a device profile, and write results.json, results.csv,
report.md and a self-contained report.html (with plots) into a new run directory. Every run is
recorded in the SQLite history (see `lkca-edge runs` and `lkca-edge compare`).

With no arguments: lkca-1m with its shipped digits weights; executorch, coreml, tflite and onnx;
fp32 and int8; the `host` device profile; output in runs/<timestamp>/. With --device NAME
--remote ssh://USER@HOST every cell is exported and validated here and profiled on the board
(its own lkca-edge); latency and memory verdicts for a device come only from the device itself. Each model is calibrated
and validated on the data it records (--dataset SPEC for other data, labels matched by name);
--checkpoint takes your own weights (the model name comes from the checkpoint).

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
                   help="your weights for the (single) model; --models may be left out")
    p.add_argument("--dataset", metavar="SPEC",
                   help="calibrate and validate on this data: digits, cifar10:DIR, cifar100:DIR or "
                        "folder:DIR (default: the data each model records)")
    p.add_argument("--wide", action="store_true",
                   help="print the full results table (default: one that fits 100 columns)")
    p.add_argument("--limit", type=int, metavar="N", help="validate on at most N test images")
    p.add_argument("--profiles-dir", metavar="DIR", action="append",
                   help="also read *.yaml device profiles from DIR (repeatable)")
    from lkca_edge.commands.common import add_remote_arguments

    add_remote_arguments(p, "profile every cell")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or per-cell lines")
    p.add_argument("--strict", action="store_true", help="exit 1 when any cell failed")


# options a resumed run takes from its record, never from the command line
RECORDED = ("models", "backends", "precisions", "device", "runs", "warmup", "op_runs", "threads",
            "out", "db", "no_history", "checkpoint", "limit", "profiles_dir", "dataset", "remote",
            "remote_command", "ssh_option")


def run(args) -> int:
    import sys

    from lkca_edge.bench import BenchConfig, resume_bench, run_bench, split_names
    from lkca_edge.bench.config import DEFAULT_MODELS, DEFAULT_PRECISIONS, default_backends
    from lkca_edge.errors import UserError

    if args.resume is not None:
        given = [name for name in RECORDED if getattr(args, name) not in (None, False, [])]
        if given:
            flags = ", ".join("--" + n.replace("_", "-") for n in given)
            raise UserError(f"--resume runs with the options recorded in the run directory; "
                            f"drop {flags}")
        outcome = resume_bench(args.resume, progress=not args.no_progress)
    else:
        defaults = {"models": list(DEFAULT_MODELS), "precisions": list(DEFAULT_PRECISIONS),
                    **{n: getattr(BenchConfig, n) for n in ("device", "runs", "warmup", "op_runs")}}
        for name, value in defaults.items():
            if getattr(args, name) is None and not (name == "models" and args.checkpoint):
                setattr(args, name, value)
        cfg = BenchConfig(
            models=split_names(args.models),
            backends=split_names(args.backends) if args.backends else default_backends(),
            precisions=split_names(args.precisions), device=args.device, runs=args.runs,
            warmup=args.warmup, op_runs=args.op_runs, threads=args.threads, out=args.out,
            db=args.db, record=not args.no_history, checkpoint=args.checkpoint,
            validation_limit=args.limit, profiles_dir=args.profiles_dir, dataset=args.dataset,
            remote=args.remote, remote_command=args.remote_command, ssh_options=args.ssh_option,
            wide=args.wide, progress=not args.no_progress,
            argv=(["lkca-edge", *sys.argv[1:]]
                  if sys.argv and "lkca" in sys.argv[0].replace("_", "-") else None))
        outcome = run_bench(cfg)
    from lkca_edge.apps.console import print_bench_summary

    print_bench_summary(outcome, wide=args.wide)
    cells = outcome.results["cells"]
    n_ok = sum(c["status"] == "ok" for c in cells)
    if n_ok == 0:
        return 1
    return 1 if args.strict and n_ok < len(cells) else 0

