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

import contextlib
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
        from lkca_edge.commands.common import build_model_from

        build_model_from(cfg.models[0], cfg.checkpoint, {})  # a bad checkpoint: one line, now


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
        _raise_if_disk_full(exc)
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
        _raise_if_disk_full(exc)
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


def _raise_if_disk_full(exc: BaseException) -> None:
    """A full disk is no cell's fault and would fail every cell after it: stop the bench."""
    import errno

    from lkca_edge.errors import DiskFull

    if isinstance(exc, DiskFull):
        raise exc
    seen = set()
    while exc is not None and id(exc) not in seen:  # converters wrap the OSError
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG):
            raise DiskFull(f"no space left while converting ({exc.strerror}); free some space") from None
        exc = exc.__cause__ or exc.__context__


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


# -- the run directory: options, finished cells, lock ------------------------------------------------
RUN_SCHEMA = "lkca-edge-bench-run/1"
CELL_SCHEMA = "lkca-edge-bench-cell/1"
RUN_FILE = "run.json"      # the run's options and header, written at start (what --resume reads)
CELLS_DIR = "cells"        # one <model>_<backend>_<precision>.json per finished cell
LOCK_FILE = ".lock"        # PID, host and start time of the bench using the directory
FINAL_OUTPUTS = ("results.json", "results.csv", "report.md", "report.html", "plots")
_OPTIONS = ("models", "backends", "precisions", "device", "runs", "warmup", "op_runs", "threads",
            "db", "record", "checkpoint", "calibration", "validation_limit", "profiles_dir", "argv")


def cell_file(out_dir: Path, model: str, backend: str, precision: str) -> Path:
    import re

    name = "_".join(re.sub(r"[^A-Za-z0-9.@+-]", "-", part) for part in (model, backend, precision))
    return out_dir / CELLS_DIR / f"{name}.json"


def _is_temp(path: Path) -> bool:
    return path.name.startswith(".") or ".partial" in path.name


def _read_json(path: Path):
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError):
        return ValueError


def read_run_state(out_dir: Path) -> dict | None:
    """``run.json`` of a bench run directory, None when there is none; UserError when unusable."""
    doc = _read_json(out_dir / RUN_FILE)
    if doc is None:
        return None
    if doc is ValueError or not isinstance(doc, dict) or doc.get("schema") != RUN_SCHEMA \
            or not isinstance(doc.get("options"), dict) or not isinstance(doc.get("run"), dict):
        raise UserError(f"{out_dir / RUN_FILE} is not a bench run record this lkca-edge can read")
    return doc


def load_finished_cells(out_dir: Path, run_id: str, grid: list[tuple[str, str, str]],
                        warn=lambda text: None) -> dict[tuple[str, str, str], dict]:
    """The finished cells recorded in ``cells/`` for this run, by key (files of other runs or
    for cells outside the grid are ignored with a warning)."""
    found: dict[tuple[str, str, str], dict] = {}
    cells_dir = out_dir / CELLS_DIR
    if not cells_dir.is_dir():
        return found
    for path in sorted(cells_dir.glob("*.json")):
        if _is_temp(path):
            continue
        doc = _read_json(path)
        cell = doc.get("cell") if isinstance(doc, dict) else None
        if not isinstance(cell, dict) or doc.get("schema") != CELL_SCHEMA \
                or not all(isinstance(cell.get(k), str) for k in ("model", "backend", "precision", "status")):
            warn(f"ignoring {path}: not a finished-cell record (the cell runs again)")
            continue
        if doc.get("run_id") != run_id:
            warn(f"ignoring {path}: it belongs to another run")
            continue
        key = (cell["model"], cell["backend"], cell["precision"])
        if key in grid:
            found[key] = cell
    return found


def _remove_temp_files(out_dir: Path) -> None:
    """Leftovers of atomic writes cut short by SIGKILL (``.name.XXXX.partial.ext``)."""
    import shutil

    for folder in (out_dir, out_dir / CELLS_DIR, out_dir / "artifacts", out_dir / "plots"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and ".partial" in p.name:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)


def _clear_previous_run(out_dir: Path) -> None:
    """A fresh bench into the directory of a finished one: drop its outputs and cell records
    first, so an interrupted new run never leaves the old, complete-looking report behind."""
    import shutil

    for name in (*FINAL_OUTPUTS, CELLS_DIR, RUN_FILE):
        p = out_dir / name
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        except OSError as exc:
            raise UserError(f"cannot clear the previous run's {p}: {exc.strerror or exc}") from None


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of a process (clock ticks since boot), to tell a reused PID."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _pid_state(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[0] if fields else None


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


class RunLock:
    """``DIR/.lock``: one bench per run directory at a time.

    Created atomically with ``O_CREAT | O_EXCL``; holds the PID, host, start time and command of
    its bench. A lock whose process is gone (same host, PID not running, or running but started
    at another time, i.e. a reused PID, or written before the last reboot) is stale: it is taken
    over with a one-line notice. A lock from another host is never taken over automatically."""

    def __init__(self, out_dir: Path, command: str = ""):
        self.path = Path(out_dir) / LOCK_FILE
        self.command = command
        self.info: dict | None = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _stale_reason(self, holder) -> str | None:
        """Why the lock ``holder`` is stale, or None when it may be live."""
        if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
            try:
                age = time.time() - self.path.stat().st_mtime
            except OSError:
                return "it is gone"
            # a lock being written right now looks empty for a moment
            return f"it is unreadable and {age:.0f} s old" if age > 10 else None
        pid, host = holder["pid"], holder.get("host")
        if host and host != socket.gethostname():
            return None
        if holder.get("boot_id") and _boot_id() and holder["boot_id"] != _boot_id():
            return f"PID {pid} ran before this host last rebooted"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return f"PID {pid} is not running"
        except PermissionError:
            pass  # alive, another user's
        except OSError:
            return None
        if _pid_state(pid) == "Z":
            return f"PID {pid} has exited"
        start = _proc_start(pid)
        if holder.get("proc_start") and start and holder["proc_start"] != start:
            return f"PID {pid} now belongs to another process"
        return None

    def acquire(self, notice=lambda text: None) -> "RunLock":
        import json

        from lkca_edge.manifest import now_iso

        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": now_iso(),
                "proc_start": _proc_start(os.getpid()), "boot_id": _boot_id(),
                "command": self.command}
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_json(self.path)
                reason = self._stale_reason(holder)
                if reason is None:
                    h = holder if isinstance(holder, dict) else {}
                    who = (f"PID {h.get('pid')} on {h.get('host') or 'an unknown host'}, started "
                           f"{h.get('started') or 'at an unknown time'}") if h else "being created"
                    raise UserError(f"another lkca-edge bench is using {self.path.parent} (lock "
                                    f"{self.path}: {who}); wait for it to finish or use another "
                                    f"--out, and delete the lock only if no bench is running")
                notice(f"taking over the stale lock {self.path} ({reason})")
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            except OSError as exc:
                from lkca_edge.fileio import _describe_os_error

                raise _describe_os_error(exc, self.path) from None
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(json.dumps(info) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                self.path.unlink(missing_ok=True)
                from lkca_edge.fileio import _describe_os_error

                raise _describe_os_error(exc, self.path) from None
            self.info = info
            return self
        raise UserError(f"cannot take the lock {self.path}: other processes keep replacing it")

    def release(self) -> None:
        """Remove the lock if it is still this process's."""
        if self.info is None:
            return
        holder = _read_json(self.path)
        if isinstance(holder, dict) and holder.get("pid") == self.info["pid"] \
                and holder.get("started") == self.info["started"]:
            try:
                self.path.unlink()
            except OSError:
                pass
        self.info = None


class _Signals:
    """SIGINT and SIGTERM raise ``Interrupted`` in the main thread (130 / 143), except inside
    ``held()``, which finishes first (so a finished cell is always recorded before stopping)."""

    def __init__(self):
        self.saved: dict = {}
        self.depth = 0
        self.pending: int | None = None

    def __enter__(self) -> "_Signals":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous = signal.getsignal(sig)
                if previous is signal.SIG_IGN or previous is None:
                    continue  # e.g. started with nohup or as a background job: keep ignoring it
                self.saved[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        self.saved.clear()

    def _handler(self, signum, frame) -> None:
        from lkca_edge.errors import Interrupted

        if self.depth:
            self.pending = self.pending or signum
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def held(self):
        from lkca_edge.errors import Interrupted

        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if not self.depth and self.pending:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)


def _notice(text: str) -> None:
    print(f"lkca-edge bench: {text}", file=sys.stderr, flush=True)


def _options(cfg: BenchConfig) -> dict:
    """What a resumed run needs to repeat this one (paths made absolute)."""
    opts = {k: getattr(cfg, k) for k in _OPTIONS}
    if cfg.checkpoint:
        opts["checkpoint"] = str(Path(cfg.checkpoint).resolve())
    if cfg.profiles_dir:
        opts["profiles_dir"] = [str(Path(d).resolve()) for d in cfg.profiles_dir]
    if cfg.record:
        from lkca_edge.results import resolve_db_path

        opts["db"] = str(resolve_db_path(cfg.db).resolve())
    return opts


def _grid(cfg: BenchConfig) -> list[tuple[str, str, str]]:
    return [(m, b, p) for m in cfg.models for b in cfg.backends for p in cfg.precisions]


# -- the run --------------------------------------------------------------------------------------------
def run_bench(cfg: BenchConfig) -> BenchOutcome:
    """A new bench run in ``cfg.out`` (default ``runs/<timestamp>/``)."""
    from lkca_edge.manifest import now_iso

    check_config(cfg)
    device_profiles, device = _device_profiles(cfg)
    out_dir = ensure_dir(Path(cfg.out) if cfg.out else default_run_dir())
    argv = cfg.argv or canonical_argv(cfg)
    with RunLock(out_dir, shlex.join(argv)) as lock:
        lock.acquire(_notice)
        previous = read_run_state(out_dir) if (out_dir / RUN_FILE).exists() else None
        if previous is not None and not previous.get("complete"):
            n_done = len(load_finished_cells(out_dir, previous["run"].get("id"),
                                             [tuple(k) for k in _grid(_config_from(previous, out_dir))]))
            raise UserError(f"{out_dir} holds an interrupted bench run ({n_done} cells finished); "
                            f"continue it with `lkca-edge bench --resume {shlex.quote(str(out_dir))}`, "
                            f"or choose another --out")
        if previous is not None or _ours(out_dir / "results.json"):
            _clear_previous_run(out_dir)
        run = {
            "id": new_run_id(), "time": now_iso(), "finished": None, "duration_s": None,
            "complete": False, "host": host_facts(), "versions": versions(),
            "command_line": shlex.join(argv), "argv": list(argv), "device": cfg.device,
            "device_profile": device, "device_profiles": device_profiles,
            "models": list(cfg.models), "backends": list(cfg.backends),
            "precisions": list(cfg.precisions), "runs": cfg.runs, "warmup": cfg.warmup,
            "op_runs": cfg.op_runs, "threads": cfg.threads, "calibration": cfg.calibration,
            "validation_limit": cfg.validation_limit, "weights": {}, "out_dir": str(out_dir.resolve()),
        }
        cfg.argv = list(argv)
        state = {"schema": RUN_SCHEMA, "options": _options(cfg), "run": run, "elapsed_s": 0.0,
                 "complete": False, "recorded": None}
        write_json(out_dir / RUN_FILE, state)
        return _execute(cfg, out_dir, state, {})


def _ours(path: Path) -> bool:
    from lkca_edge.results import SCHEMA as RESULTS_SCHEMA

    doc = _read_json(path)
    return isinstance(doc, dict) and doc.get("schema") == RESULTS_SCHEMA


def _config_from(state: dict, out_dir: Path, progress: bool = True) -> BenchConfig:
    opts = dict(state["options"])
    try:
        cfg = BenchConfig(**{k: opts[k] for k in _OPTIONS if k in opts})
    except TypeError as exc:
        raise UserError(f"{out_dir / RUN_FILE}: unreadable options ({exc})") from None
    cfg.out, cfg.progress = str(out_dir), progress
    return cfg


def resume_bench(out_dir: str | Path, progress: bool = True) -> BenchOutcome:
    """Finish an interrupted run: its recorded options, only the cells not yet finished, then
    the full outputs. A complete run only gets its reports rewritten."""
    from lkca_edge.manifest import now_iso

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UserError(f"--resume {out_dir}: no such run directory")
    if not (out_dir / RUN_FILE).is_file():
        raise UserError(f"--resume {out_dir}: not a bench run directory (no {RUN_FILE}; "
                        f"`lkca-edge bench --out DIR` makes one)")
    state = read_run_state(out_dir)
    cfg = _config_from(state, out_dir, progress)
    check_config(cfg)
    with RunLock(out_dir, f"lkca-edge bench --resume {shlex.quote(str(out_dir))}") as lock:
        lock.acquire(_notice)
        state = read_run_state(out_dir)  # re-read under the lock
        _remove_temp_files(out_dir)
        finished = load_finished_cells(out_dir, state["run"].get("id"), _grid(cfg), _notice)
        missing = [k for k in _grid(cfg) if k not in finished]
        if missing:
            run = state["run"]
            run["out_dir"] = str(out_dir.resolve())
            run.setdefault("resumed", []).append(now_iso())
            now = versions()
            changed = sorted(k for k in set(now) | set(run.get("versions") or {})
                             if now.get(k) != (run.get("versions") or {}).get(k))
            if changed:
                _notice("tool versions changed since this run started ("
                        + ", ".join(f"{k} {(run.get('versions') or {}).get(k)} -> {now.get(k)}"
                                    for k in changed) + "); the remaining cells use the new ones")
            state["complete"] = False
            write_json(out_dir / RUN_FILE, state)
        return _execute(cfg, out_dir, state, finished)


def _execute(cfg: BenchConfig, out_dir: Path, state: dict, finished: dict) -> BenchOutcome:
    """Run the grid's missing cells (each persisted as it finishes), then write the outputs."""
    from lkca_edge.manifest import now_iso

    run = state["run"]
    results = {"schema": SCHEMA, "run": run, "cells": []}
    grid = _grid(cfg)
    done: dict[tuple[str, str, str], dict] = dict(finished)
    todo = [k for k in grid if k not in done]
    n_total = len(grid)
    elapsed_before = float(state.get("elapsed_s") or 0.0)
    t_start = time.perf_counter()
    with _Signals() as signals:
        try:
            with _Progress(n_total, cfg.progress) as bar:
                if done:
                    bar.log(f"bench --resume: {len(done)} of {n_total} cells already finished in "
                            f"{out_dir}; " + (f"running the other {len(todo)}" if todo
                                              else "nothing left to run, rewriting the reports"))
                else:
                    bar.log(f"bench: {n_total} cells ({', '.join(cfg.models)} x "
                            f"{', '.join(cfg.backends)} x {', '.join(cfg.precisions)}), device "
                            f"profile {cfg.device}, {cfg.runs} runs after {cfg.warmup} warm-up "
                            f"-> {out_dir}")
                for _ in done:
                    bar.advance()
                for model_name in cfg.models:
                    keys = [k for k in todo if k[0] == model_name]
                    if not keys:
                        continue
                    bar.describe(f"{model_name}: building the model and loading {cfg.calibration}")
                    model = data = None
                    try:
                        from lkca_edge.commands.common import build_model_from
                        from lkca_edge.data import load_dataset

                        model = build_model_from(model_name, cfg.checkpoint, {})
                        model.eval()
                        data = load_dataset(cfg.calibration, model.preprocessing)
                        run.setdefault("weights", {})[model_name] = _weights_note(model, cfg.checkpoint)
                        setup_error = None
                    except (Exception, SystemExit) as exc:  # noqa: BLE001
                        setup_error = _one_line(exc)
                        _debug_trace()
                    for key in keys:
                        _, backend_name, precision = key
                        name = " ".join(key)
                        if setup_error:
                            cell = _new_cell(*key)
                            cell.update(failed_step="setup", error=setup_error)
                        else:
                            cell = run_cell(cfg, model_name, backend_name, precision, model, data,
                                            out_dir, step=lambda s, n=name: bar.describe(f"{n}: {s}"))
                        with signals.held():  # a finished cell is recorded before any stop
                            write_json(cell_file(out_dir, *key),
                                       {"schema": CELL_SCHEMA, "run_id": run["id"],
                                        "finished": now_iso(), "cell": cell})
                            done[key] = cell
                            state["elapsed_s"] = round(elapsed_before + time.perf_counter() - t_start, 2)
                            write_json(out_dir / RUN_FILE, state)
                        bar.log(cell_line(cell))
                        bar.advance()
                results["cells"] = [done[k] for k in grid]
                if not todo and state.get("complete") and run.get("finished"):
                    pass  # a complete run: keep its times, rewrite the reports
                else:
                    run.update(finished=now_iso(), complete=True,
                               duration_s=round(elapsed_before + time.perf_counter() - t_start, 1))
                results["ship"] = what_to_ship(results)
                run_id, db_path, db_error = _record(cfg, state, results, signals)
                files = write_outputs(results, out_dir)
                with signals.held():
                    state["complete"] = True
                    write_json(out_dir / RUN_FILE, state)
        except UserError as exc:
            from lkca_edge.errors import DiskFull

            if not isinstance(exc, DiskFull):
                raise
            n_done = sum(k in done for k in grid)
            raise DiskFull(f"{exc}; {n_done} of {n_total} cells finished are kept in "
                           f"{out_dir / CELLS_DIR}: resume with: lkca-edge bench --resume "
                           f"{shlex.quote(str(out_dir))}") from None
        except KeyboardInterrupt as exc:
            import signal

            from lkca_edge.errors import Interrupted

            signum = getattr(exc, "signum", signal.SIGINT)
            n_done = sum(k in done for k in grid)
            raise Interrupted(signum, (
                f"interrupted by {signal.Signals(signum).name} with {n_done} of {n_total} cells "
                f"finished (kept in {out_dir / CELLS_DIR}); resume with: lkca-edge bench --resume "
                f"{shlex.quote(str(out_dir))}")) from None
    return BenchOutcome(results, out_dir, files, run_id, db_path, db_error)


def _record(cfg: BenchConfig, state: dict, results: dict, signals: _Signals):
    """Record the run in the history once (a resumed run that was recorded is not recorded again)."""
    if not cfg.record:
        return None, None, None
    from lkca_edge.results import ResultsStore, resolve_db_path

    run = results["run"]
    db_path = resolve_db_path(cfg.db)
    rec = state.get("recorded") or {}
    if rec.get("db_id") is not None and rec.get("db") == str(db_path):
        run["db_id"], run["db"] = rec["db_id"], rec["db"]
        return rec["db_id"], db_path, None
    try:
        with ResultsStore(db_path) as store:
            run_id = store.find_uid(run["id"])  # recorded by a session killed just after
            if run_id is None:
                run_id = store.record_run(results)
    except UserError as exc:
        return None, db_path, str(exc)
    run["db_id"], run["db"] = run_id, str(db_path)
    with signals.held():
        state["recorded"] = {"db_id": run_id, "db": str(db_path)}
        write_json(Path(run["out_dir"]) / RUN_FILE, state)
    return run_id, db_path, None


def write_outputs(results: dict, out_dir: Path) -> dict[str, Path]:
    """results.csv, report.md, report.html, plots/*.png and, last, results.json, each atomically
    (results.json, the file that says the run is complete, only once everything else is there)."""
    from apps.report import write_report

    files = {"results.csv": write_text(out_dir / "results.csv", to_csv(results))}
    files.update(write_report(results, out_dir))
    files["results.json"] = write_json(out_dir / "results.json", results)
    return files
