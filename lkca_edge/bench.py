"""``lkca-edge bench``: every (model x backend x precision) cell converted, validated on real
images, profiled for a device profile, and reported.

Per model the torch model is built and the data set loaded once; each cell gets its own copy of
the model (a converter can never leak state into the next cell). A cell that fails is recorded
with its one-line error and the bench goes on; a backend that cannot run on this machine (Core ML
prediction on Linux) keeps its static figures and says why the rest is missing.

Outputs, all written atomically into the run directory: ``results.json`` (schema
``lkca-edge-results/1``), ``results.csv``, ``report.md``, ``report.html`` (self-contained) and
``plots/*.png``; the artifacts land in ``artifacts/``. The run is recorded in the SQLite history
(``lkca_edge.results``).
"""

from __future__ import annotations

import copy
import os
import platform
import shlex
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from lkca_edge.errors import UserError
from lkca_edge.fileio import ensure_dir, write_json, write_text
from lkca_edge.results import SCHEMA, new_run_id, to_csv, what_to_ship

DEFAULT_MODELS = ("lkca-1m",)
DEFAULT_BACKENDS = ("executorch", "coreml", "tflite", "onnx")
DEFAULT_PRECISIONS = ("fp32", "int8")


@dataclass
class BenchConfig:
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    backends: list[str] = field(default_factory=lambda: list(DEFAULT_BACKENDS))
    precisions: list[str] = field(default_factory=lambda: list(DEFAULT_PRECISIONS))
    device: str = "host"
    runs: int = 100
    warmup: int = 10
    op_runs: int = 10
    threads: int | None = None
    out: str | None = None            # default runs/<timestamp>/
    db: str | None = None             # default: the user's data dir (or LKCA_EDGE_DB)
    record: bool = True               # write the run into the history database
    checkpoint: str | None = None
    calibration: str = "digits"
    validation_limit: int | None = None
    profiles_dir: list[str] | None = None
    progress: bool = True
    argv: list[str] | None = None     # the command line, for the record


@dataclass
class BenchOutcome:
    results: dict
    out_dir: Path
    files: dict[str, Path]
    run_id: int | None        # id in the history database (None when not recorded)
    db_path: Path | None
    db_error: str | None = None


# -- argument checks ---------------------------------------------------------------------------------
def split_names(values) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]`` (repeats dropped, order kept)."""
    out: list[str] = []
    for v in values or []:
        for name in str(v).split(","):
            name = name.strip()
            if name and name not in out:
                out.append(name)
    return out


def check_config(cfg: BenchConfig) -> None:
    from converters.base import PRECISIONS, _ALIASES, backend_names
    from lkca_edge.errors import unknown_name
    from lkca_edge.zoo import get_spec

    if not cfg.models:
        raise UserError("--models needs at least one model")
    for m in cfg.models:
        get_spec(m)  # unknown model -> one line with suggestions
    if not cfg.backends:
        raise UserError("--backends needs at least one backend")
    canon = []
    for b in cfg.backends:
        key = _ALIASES.get(b.lower(), b.lower())
        if key not in backend_names():
            raise unknown_name("backend", b, backend_names())
        if key not in canon:
            canon.append(key)
    cfg.backends = canon
    if not cfg.precisions:
        raise UserError("--precisions needs at least one precision")
    for p in cfg.precisions:
        if p not in PRECISIONS:
            raise unknown_name("precision", p, PRECISIONS)
    if cfg.runs < 1:
        raise UserError(f"--runs must be at least 1, got {cfg.runs}")
    if cfg.warmup < 0:
        raise UserError(f"--warmup must be 0 or more, got {cfg.warmup}")
    if cfg.op_runs < 0:
        raise UserError(f"--op-runs must be 0 or more, got {cfg.op_runs}")
    if cfg.threads is not None and cfg.threads < 1:
        raise UserError(f"--threads must be at least 1, got {cfg.threads}")
    if cfg.checkpoint is not None:
        if len(cfg.models) != 1:
            raise UserError("--checkpoint applies to one model; pass a single --models NAME with it")
        if not Path(cfg.checkpoint).is_file():
            raise UserError(f"checkpoint not found: {cfg.checkpoint}")


def default_run_dir(root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / stamp
    n = 2
    while path.exists():
        path = Path(root) / f"{stamp}-{n}"
        n += 1
    return path


def canonical_argv(cfg: BenchConfig) -> list[str]:
    """The command line that repeats this bench (when the real one is unknown, e.g. in tests)."""
    argv = ["lkca-edge", "bench", "--models", *cfg.models, "--backends", *cfg.backends,
            "--precisions", *cfg.precisions, "--device", cfg.device, "--runs", str(cfg.runs),
            "--warmup", str(cfg.warmup), "--op-runs", str(cfg.op_runs)]
    for flag, value in (("--threads", cfg.threads), ("--checkpoint", cfg.checkpoint),
                        ("--limit", cfg.validation_limit), ("--out", cfg.out), ("--db", cfg.db)):
        if value is not None:
            argv += [flag, str(value)]
    if not cfg.record:
        argv.append("--no-history")
    return argv


# -- facts about this run ----------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.split(":")[0].strip() in ("model name", "Model", "Hardware") and ":" in line:
                    value = line.split(":", 1)[1].strip()
                    if value:
                        return value
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def host_facts() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        load = None
    return {"name": socket.gethostname(), "cpu": _cpu_model(), "cores": os.cpu_count(),
            "usable_cores": usable, "os": f"{platform.system()} {platform.release()}",
            "machine": platform.machine(), "python": platform.python_version(), "loadavg": load}


def versions() -> dict:
    from lkca_edge.manifest import tool_versions

    v = tool_versions(("lkca-edge", "torch", "executorch", "coremltools", "litert-torch",
                       "ai-edge-litert", "ai-edge-quantizer", "onnx", "onnxruntime", "torchao",
                       "numpy", "matplotlib"))
    v["python"] = platform.python_version()
    return v


def _one_line(exc: BaseException) -> str:
    """One printable line for a cell's error (parsers quote the random bytes they choked on)."""
    from lkca_edge.errors import UserError as UE

    text = str(exc).strip()
    first = "".join(ch if ch.isprintable() else "?" for ch in (text.splitlines()[0] if text else ""))
    if isinstance(exc, UE):
        return first[:500] or type(exc).__name__
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("converters."):
        return f"the {exc.name.split('.', 1)[1]} backend is not part of this install ({exc.name} is missing)"
    return f"{type(exc).__name__}: {first}"[:500]


def delegation_summary(details: dict | None) -> dict | None:
    """Delegation coverage from an ExecuTorch manifest's details (None for other backends)."""
    details = details or {}
    delegated, rest = details.get("delegated"), details.get("not_delegated")
    if not isinstance(delegated, dict) and not isinstance(rest, dict):
        return None

    def total(d):
        return sum(int(v) for v in (d or {}).values() if isinstance(v, (int, float)))

    d, n = total(delegated), total(rest)
    return {"delegated_ops": d, "not_delegated_ops": n,
            "coverage": (d / (d + n)) if d + n else None,
            "subgraphs": details.get("delegate_subgraphs") or {},
            "not_delegated": rest or {}}


# -- one cell ------------------------------------------------------------------------------------------
def _new_cell(model: str, backend: str, precision: str) -> dict:
    return {"model": model, "backend": backend, "precision": precision, "recipe": None,
            "form": None, "status": "failed", "failed_step": None, "error": None, "mode": None,
            "note": "", "artifact": None, "metrics": {}, "validation": None, "profile": None,
            "delegation": None, "manifest": None}


def run_cell(cfg: BenchConfig, model_name: str, backend_name: str, precision: str, model, data,
             out_dir: Path, step=lambda text: None) -> dict:
    """Convert (export_model validates), then profile; never raises for a cell's own failure."""
    from lkca_edge.export import ExportRequest, export_model

    cell = _new_cell(model_name, backend_name, precision)
    t_cell = time.perf_counter()
    # -- convert + validate --
    step("converting")
    try:
        from converters import get_backend

        backend = get_backend(backend_name)
        cell["recipe"] = backend.recipe(precision).name
        reason = backend.available()
        if reason:
            raise UserError(reason)
        req = ExportRequest(model=model_name, backend=backend_name, precision=precision,
                            checkpoint=cfg.checkpoint, calibration=cfg.calibration,
                            out=str(out_dir / "artifacts"), validation_limit=cfg.validation_limit,
                            threads=1)
        from converters.base import quiet

        t0 = time.perf_counter()
        with quiet():  # runtimes log to fd 2 while validating; the progress bar writes elsewhere
            result = export_model(req, model=copy.deepcopy(model), dataset=data, log=lambda *a: None)
        export_s = time.perf_counter() - t0
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - one cell's failure never stops the bench
        cell.update(failed_step="convert", error=_one_line(exc))
        cell["metrics"]["export_s"] = round(time.perf_counter() - t_cell, 2)
        _debug_trace()
        return cell

    m = result.manifest
    v = m.validation or {}
    cell.update(recipe=(m.recipe or {}).get("name"), form=m.form, validation=v or None,
                artifact=os.path.relpath(result.artifact, out_dir), manifest=m.to_dict(),
                delegation=delegation_summary(m.details))
    cell["manifest"].pop("validation", None)  # kept once, under "validation"
    acc, ref = v.get("accuracy"), v.get("reference_accuracy")
    cell["metrics"].update(
        conversion_s=m.conversion_seconds, export_s=round(export_s, 2), size_bytes=m.size_bytes,
        params=m.params or None, macs=m.macs or None, accuracy=acc, reference_accuracy=ref,
        top1_agreement=v.get("top1_agreement"), max_abs_err=v.get("max_abs_err"),
        accuracy_estimate=bool(v.get("estimate")) if acc is not None else None,
        accuracy_drop_pts=(None if acc is None or ref is None else round((ref - acc) * 100.0, 4)),
        gate_passed=v.get("passed"),
        delegation_coverage=(cell["delegation"] or {}).get("coverage"))
    notes: list[str] = []

    # -- profile --
    step("profiling")
    try:
        import profiles

        t0 = time.perf_counter()
        prof = profiles.profile_artifact(result.artifact, device=cfg.device, threads=cfg.threads,
                                         runs=cfg.runs, warmup=cfg.warmup, verify=True,
                                         profiles_dir=cfg.profiles_dir, op_runs=cfg.op_runs)
        profile_s = time.perf_counter() - t0
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        cell.update(failed_step="profile", error=_one_line(exc), note="; ".join(notes))
        _debug_trace()
        return cell

    p = prof.to_dict()
    lat = p.get("latency_ms") or {}
    cell["profile"] = p
    cell["mode"] = p.get("mode") or ("measured" if lat else "static")
    if p.get("note"):
        notes.append(p["note"])
    cell["metrics"].update(
        profile_s=round(profile_s, 2), load_ms=p.get("load_ms"),
        first_inference_ms=p.get("first_inference_ms"), latency_median_ms=lat.get("median"),
        latency_p90_ms=lat.get("p90"), latency_p99_ms=lat.get("p99"), latency_mean_ms=lat.get("mean"),
        latency_min_ms=lat.get("min"), throughput_ips=p.get("throughput_ips"),
        peak_rss_mb=p.get("peak_rss_mb"), rss_growth_mb=p.get("rss_growth_mb"),
        planned_memory_bytes=p.get("planned_memory_bytes"))
    cell["status"] = "ok"
    cell["note"] = "; ".join(dict.fromkeys(n for n in notes if n))
    return cell


def _debug_trace() -> None:
    if os.environ.get("LKCA_EDGE_DEBUG") == "1":
        traceback.print_exc()


# -- progress ------------------------------------------------------------------------------------------
class _Progress:
    """A rich bar over the cells on stderr (a terminal), else plain log lines."""

    def __init__(self, total: int, enabled: bool):
        from rich.console import Console

        # A private copy of stderr: converters.base.quiet() points fd 2 at a sink while native
        # runtimes log, and the bar must keep drawing meanwhile.
        self._stream = None
        try:
            self._stream = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1,
                                     encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                                     errors="replace")
        except (AttributeError, OSError, ValueError):  # no real fd (e.g. captured output)
            self._stream = None
        self.out = self._stream or sys.stderr
        self.console = Console(file=self.out)
        self.live = enabled and self.console.is_terminal
        self.enabled = enabled
        self._p = None
        if self.live:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                       TextColumn, TimeElapsedColumn)

            self._p = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                               MofNCompleteColumn(), TimeElapsedColumn(), console=self.console)
            self._task = self._p.add_task("bench", total=total)

    def __enter__(self):
        if self._p is not None:
            self._p.start()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.stop()
        if self._stream is not None:
            self._stream.close()

    def describe(self, text: str) -> None:
        if self._p is not None:
            self._p.update(self._task, description=text)

    def advance(self) -> None:
        if self._p is not None:
            self._p.advance(self._task)

    def log(self, text: str) -> None:
        if not self.enabled:
            return
        if self._p is not None:
            self._p.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=self.out, flush=True)


def cell_line(cell: dict) -> str:
    name = f"{cell['model']} {cell['backend']} {cell['precision']}"
    if cell["status"] != "ok":
        return f"✗ {name}: {cell['failed_step']} failed: {cell['error']}"
    m = cell["metrics"]
    parts = [f"converted in {m.get('conversion_s', 0):.1f} s", f"{(m.get('size_bytes') or 0) / 1024:.0f} KB"]
    if m.get("latency_median_ms") is not None:
        parts.append(f"median {m['latency_median_ms']:.3g} ms")
    if m.get("accuracy") is not None:
        parts.append(f"accuracy {m['accuracy']:.2%}")
    if cell["mode"] == "static":
        parts.append("static only: " + (cell.get("note") or "not runnable here"))
    return f"✓ {name}: {', '.join(parts)}"


# -- the run --------------------------------------------------------------------------------------------
def _device_profiles(cfg: BenchConfig) -> tuple[dict, dict]:
    from profiles.devices import load_profiles

    profiles = load_profiles(cfg.profiles_dir)
    if cfg.device not in profiles:
        from lkca_edge.errors import unknown_name

        raise unknown_name("device profile", cfg.device, sorted(profiles))
    summary = {name: {"os": p.os, "threads": p.threads, "ram_budget_mb": p.ram_budget_mb,
                      "latency_budget_ms": p.latency_budget_ms, "accuracy_gate": p.accuracy_gate,
                      "backends": list(p.backends), "precisions": list(p.precisions),
                      "description": p.description}
               for name, p in profiles.items()}
    return summary, profiles[cfg.device].to_dict()


def _weights_note(model, checkpoint: str | None) -> str:
    info = getattr(model, "checkpoint_info", None) or {}
    if checkpoint:
        return f"checkpoint {checkpoint}"
    if info.get("path"):
        return f"shipped weights {Path(info['path']).name}"
    return "random initialisation (no trained weights: accuracy is chance level)"


def run_bench(cfg: BenchConfig) -> BenchOutcome:
    from lkca_edge.manifest import now_iso

    check_config(cfg)
    device_profiles, device = _device_profiles(cfg)
    out_dir = ensure_dir(Path(cfg.out) if cfg.out else default_run_dir())
    started, t_start = now_iso(), time.perf_counter()
    argv = cfg.argv or canonical_argv(cfg)
    results = {
        "schema": SCHEMA,
        "run": {
            "id": new_run_id(), "time": started, "finished": None, "duration_s": None,
            "complete": False, "host": host_facts(), "versions": versions(),
            "command_line": shlex.join(argv), "argv": list(argv), "device": cfg.device,
            "device_profile": device, "device_profiles": device_profiles,
            "models": list(cfg.models), "backends": list(cfg.backends),
            "precisions": list(cfg.precisions), "runs": cfg.runs, "warmup": cfg.warmup,
            "op_runs": cfg.op_runs, "threads": cfg.threads, "calibration": cfg.calibration,
            "validation_limit": cfg.validation_limit, "weights": {}, "out_dir": str(out_dir.resolve()),
        },
        "cells": [],
    }
    cells = results["cells"]
    n_total = len(cfg.models) * len(cfg.backends) * len(cfg.precisions)
    with _Progress(n_total, cfg.progress) as bar:
        bar.log(f"bench: {n_total} cells ({', '.join(cfg.models)} x {', '.join(cfg.backends)} x "
                f"{', '.join(cfg.precisions)}), device profile {cfg.device}, {cfg.runs} runs "
                f"after {cfg.warmup} warm-up -> {out_dir}")
        try:
            for model_name in cfg.models:
                bar.describe(f"{model_name}: building the model and loading {cfg.calibration}")
                model = data = None
                try:
                    from lkca_edge.commands.common import build_model_from
                    from lkca_edge.data import load_dataset

                    model = build_model_from(model_name, cfg.checkpoint, {})
                    model.eval()
                    data = load_dataset(cfg.calibration, model.preprocessing)
                    results["run"]["weights"][model_name] = _weights_note(model, cfg.checkpoint)
                    setup_error = None
                except (Exception, SystemExit) as exc:  # noqa: BLE001
                    setup_error = _one_line(exc)
                    _debug_trace()
                for backend_name in cfg.backends:
                    for precision in cfg.precisions:
                        name = f"{model_name} {backend_name} {precision}"
                        if setup_error:
                            cell = _new_cell(model_name, backend_name, precision)
                            cell.update(failed_step="setup", error=setup_error)
                        else:
                            cell = run_cell(cfg, model_name, backend_name, precision, model, data,
                                            out_dir, step=lambda s, n=name: bar.describe(f"{n}: {s}"))
                        cells.append(cell)
                        bar.log(cell_line(cell))
                        bar.advance()
                        write_json(out_dir / "results.json", results)  # partial results survive a crash
        except KeyboardInterrupt:
            results["run"]["interrupted"] = True
            write_json(out_dir / "results.json", results)
            raise
    results["run"].update(finished=now_iso(), duration_s=round(time.perf_counter() - t_start, 1),
                          complete=True)
    results["ship"] = what_to_ship(results)

    run_id, db_path, db_error = None, None, None
    if cfg.record:
        from lkca_edge.results import ResultsStore, resolve_db_path

        db_path = resolve_db_path(cfg.db)
        try:
            with ResultsStore(db_path) as store:
                run_id = store.record_run(results)
            results["run"]["db_id"], results["run"]["db"] = run_id, str(db_path)
        except UserError as exc:
            db_error = str(exc)
    files = write_outputs(results, out_dir)
    return BenchOutcome(results, out_dir, files, run_id, db_path, db_error)


def write_outputs(results: dict, out_dir: Path) -> dict[str, Path]:
    """results.json, results.csv, report.md, report.html and plots/*.png, each atomically."""
    from apps.report import write_report

    files = {"results.json": write_json(out_dir / "results.json", results),
             "results.csv": write_text(out_dir / "results.csv", to_csv(results))}
    files.update(write_report(results, out_dir))
    return files
