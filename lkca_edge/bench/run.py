"""``lkca-edge bench``: every (model x backend x precision) cell converted, validated on real
images, profiled for a device profile, and reported.

Per model the torch model is built and the data set loaded once; every export works on its own
copy of the model (a converter can never leak state into the next cell). A cell that fails is
recorded with its one-line error and the bench goes on; a backend that cannot run on this machine
(Core ML prediction on Linux) keeps its static figures and says why the rest is missing.

Outputs, all written atomically into the run directory: ``results.json`` (schema
``lkca-edge-results/1``), ``results.csv``, ``report.md``, ``report.html`` (self-contained) and
``plots/*.png``; the artifacts land in ``artifacts/``. The run is recorded in the SQLite history
(``lkca_edge.results.history``).
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lkca_edge.bench.cell import debug_trace, new_cell, run_cell
from lkca_edge.bench.config import BenchConfig, canonical_argv, check_config, default_run_dir
from lkca_edge.bench.lock import PidLock
from lkca_edge.bench.progress import Progress, cell_line
from lkca_edge.bench.signals import Signals
from lkca_edge.bench.state import (CELL_SCHEMA, CELLS_DIR, LOCK_FILE, RUN_FILE, RUN_SCHEMA,
                                   cell_file, clear_previous_run, config_from, grid,
                                   load_finished_cells, ours, read_run_state, recorded_options,
                                   remove_temp_files)
from lkca_edge.errors import DiskFull, Interrupted, UserError, describe_exception
from lkca_edge.fileio import ensure_dir, write_json, write_text
from lkca_edge.hostinfo import host_info
from lkca_edge.manifest import now_iso
from lkca_edge.results.analysis import what_to_ship
from lkca_edge.results.history import new_run_id
from lkca_edge.results.schema import SCHEMA, to_csv
from lkca_edge.versions import CORE_PACKAGES, tool_versions


@dataclass
class BenchOutcome:
    results: dict
    out_dir: Path
    files: dict[str, Path]
    run_id: int | None        # id in the history database (None when not recorded)
    db_path: Path | None
    db_error: str | None = None


def versions() -> dict:
    """Versions of every tool a bench run uses: the core, every backend's, matplotlib, python."""
    from lkca_edge.converters import backend_names, get_backend

    packages = list(CORE_PACKAGES)
    for name in backend_names():
        packages += get_backend(name).tool_packages
    return tool_versions(packages + ["matplotlib"], python=True)


def _notice(text: str) -> None:
    print(f"lkca-edge bench: {text}", file=sys.stderr, flush=True)


def _lock(out_dir: Path, command: str) -> PidLock:
    return PidLock(out_dir / LOCK_FILE, command, holder="lkca-edge bench",
                   advice="wait for it to finish or use another --out")


def _device_profiles(cfg: BenchConfig) -> tuple[dict, dict]:
    from lkca_edge.errors import unknown_name
    from lkca_edge.profiles.devices import load_profiles

    profiles = load_profiles(cfg.profiles_dir)
    if cfg.device not in profiles:
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


# -- starting and resuming ---------------------------------------------------------------------------
def run_bench(cfg: BenchConfig) -> BenchOutcome:
    """A new bench run in ``cfg.out`` (default ``runs/<timestamp>/``)."""
    check_config(cfg)
    device_profiles, device = _device_profiles(cfg)
    out_dir = ensure_dir(Path(cfg.out) if cfg.out else default_run_dir())
    argv = cfg.argv or canonical_argv(cfg)
    with _lock(out_dir, shlex.join(argv)) as lock:
        lock.acquire(_notice)
        previous = read_run_state(out_dir) if (out_dir / RUN_FILE).exists() else None
        if previous is not None and not previous.get("complete"):
            n_done = len(load_finished_cells(out_dir, previous["run"].get("id"),
                                             [tuple(k) for k in grid(config_from(previous, out_dir))]))
            raise UserError(f"{out_dir} holds an interrupted bench run ({n_done} cells finished); "
                            f"continue it with `lkca-edge bench --resume {shlex.quote(str(out_dir))}`, "
                            f"or choose another --out")
        if previous is not None or ours(out_dir / "results.json"):
            clear_previous_run(out_dir)
        run = {
            "id": new_run_id(), "time": now_iso(), "finished": None, "duration_s": None,
            "complete": False, "host": host_info(), "versions": versions(),
            "command_line": shlex.join(argv), "argv": list(argv), "device": cfg.device,
            "device_profile": device, "device_profiles": device_profiles,
            "remote": cfg.remote or device.get("remote"),
            "models": list(cfg.models), "backends": list(cfg.backends),
            "precisions": list(cfg.precisions), "runs": cfg.runs, "warmup": cfg.warmup,
            "op_runs": cfg.op_runs, "threads": cfg.threads, "dataset": cfg.dataset, "data": {},
            "validation_limit": cfg.validation_limit, "weights": {}, "out_dir": str(out_dir.resolve()),
        }
        cfg.argv = list(argv)
        state = {"schema": RUN_SCHEMA, "options": recorded_options(cfg), "run": run,
                 "elapsed_s": 0.0, "complete": False, "recorded": None}
        write_json(out_dir / RUN_FILE, state)
        return _execute(cfg, out_dir, state, {})


def resume_bench(out_dir: str | Path, progress: bool = True) -> BenchOutcome:
    """Finish an interrupted run: its recorded options, only the cells not yet finished, then
    the full outputs. A complete run only gets its reports rewritten."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UserError(f"--resume {out_dir}: no such run directory")
    if not (out_dir / RUN_FILE).is_file():
        raise UserError(f"--resume {out_dir}: not a bench run directory (no {RUN_FILE}; "
                        f"`lkca-edge bench --out DIR` makes one)")
    state = read_run_state(out_dir)
    cfg = config_from(state, out_dir, progress)
    check_config(cfg)
    with _lock(out_dir, f"lkca-edge bench --resume {shlex.quote(str(out_dir))}") as lock:
        lock.acquire(_notice)
        state = read_run_state(out_dir)  # re-read under the lock
        remove_temp_files(out_dir)
        finished = load_finished_cells(out_dir, state["run"].get("id"), grid(cfg), _notice)
        if any(k not in finished for k in grid(cfg)):
            _mark_resumed(state, out_dir)
            write_json(out_dir / RUN_FILE, state)
        return _execute(cfg, out_dir, state, finished)


def _mark_resumed(state: dict, out_dir: Path) -> None:
    run = state["run"]
    run["out_dir"] = str(out_dir.resolve())
    run.setdefault("resumed", []).append(now_iso())
    before, now = run.get("versions") or {}, versions()
    changed = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
    if changed:
        _notice("tool versions changed since this run started ("
                + ", ".join(f"{k} {before.get(k)} -> {now.get(k)}" for k in changed)
                + "); the remaining cells use the new ones")
    state["complete"] = False


# -- running the cells -------------------------------------------------------------------------------
class _Run:
    """One invocation's work on a run directory: the cells still to do, and the bookkeeping that
    makes every finished cell survive a stop."""

    def __init__(self, cfg: BenchConfig, out_dir: Path, state: dict, finished: dict):
        self.cfg, self.out_dir, self.state = cfg, out_dir, state
        self.run = state["run"]
        self.grid = grid(cfg)
        self.done: dict[tuple[str, str, str], dict] = dict(finished)
        self.todo = [k for k in self.grid if k not in self.done]
        self.elapsed_before = float(state.get("elapsed_s") or 0.0)
        self.t_start = time.perf_counter()

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_start

    def announce(self, bar: Progress) -> None:
        cfg, n_total = self.cfg, len(self.grid)
        if self.done:
            bar.log(f"bench --resume: {len(self.done)} of {n_total} cells already finished in "
                    f"{self.out_dir}; " + (f"running the other {len(self.todo)}" if self.todo
                                           else "nothing left to run, rewriting the reports"))
        else:
            bar.log(f"bench: {n_total} cells ({', '.join(cfg.models)} x {', '.join(cfg.backends)} "
                    f"x {', '.join(cfg.precisions)}), device profile {cfg.device}, {cfg.runs} runs "
                    f"after {cfg.warmup} warm-up -> {self.out_dir}")
        for _ in self.done:
            bar.advance()

    def model_cells(self, model_name: str, bar: Progress, signals: Signals) -> None:
        """Build ``model_name`` and load its data once, then run its cells still to do."""
        keys = [k for k in self.todo if k[0] == model_name]
        if not keys:
            return
        bar.describe(f"{model_name}: building the model and loading "
                     f"{self.cfg.dataset or 'the data it records'}")
        model, data, setup_error = self._setup(model_name)
        for key in keys:
            if setup_error:
                cell = new_cell(*key)
                cell.update(failed_step="setup", error=setup_error)
            else:
                name = " ".join(key)
                cell = run_cell(self.cfg, *key, model, data, self.out_dir,
                                step=lambda s, n=name: bar.describe(f"{n}: {s}"))
            with signals.held():  # a finished cell is recorded before any stop
                self._record_cell(key, cell)
            bar.log(cell_line(cell))
            bar.advance()

    def _setup(self, model_name: str):
        from lkca_edge.bench.config import zoo_name_or_none
        from lkca_edge.builder import build_model_from
        from lkca_edge.pipelines.export import export_data

        try:
            name = zoo_name_or_none(model_name) if self.cfg.checkpoint else model_name
            model = build_model_from(name, self.cfg.checkpoint, {})
            model.eval()
            data = export_data(model, self.cfg.dataset)
            self.run.setdefault("weights", {})[model_name] = _weights_note(model, self.cfg.checkpoint)
            self.run.setdefault("data", {})[model_name] = {
                "spec": data.record.spec if data.record else data.name,
                "labels": list(data.labels), "labels_note": data.note,
                "trained": bool(getattr(model, "trained", True))}
            return model, data, None
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - recorded in every cell of the model
            debug_trace()
            return None, None, describe_exception(exc)

    def _record_cell(self, key: tuple[str, str, str], cell: dict) -> None:
        write_json(cell_file(self.out_dir, *key), {"schema": CELL_SCHEMA, "run_id": self.run["id"],
                                                   "finished": now_iso(), "cell": cell})
        self.done[key] = cell
        self.state["elapsed_s"] = round(self.elapsed(), 2)
        write_json(self.out_dir / RUN_FILE, self.state)

    def finish(self, signals: Signals) -> BenchOutcome:
        """Results, history record and reports, once every cell is done."""
        results = {"schema": SCHEMA, "run": self.run, "cells": [self.done[k] for k in self.grid]}
        if self.todo or not (self.state.get("complete") and self.run.get("finished")):
            self.run.update(finished=now_iso(), complete=True, duration_s=round(self.elapsed(), 1))
        # else: a complete run whose reports are rewritten keeps its times
        results["ship"] = what_to_ship(results)
        run_id, db_path, db_error = _record(self.cfg, self.state, results, signals)
        files = write_outputs(results, self.out_dir)
        with signals.held():
            self.state["complete"] = True
            write_json(self.out_dir / RUN_FILE, self.state)
        return BenchOutcome(results, self.out_dir, files, run_id, db_path, db_error)

    def stopped_message(self, what: str) -> str:
        n_done = sum(k in self.done for k in self.grid)
        return (f"{what} with {n_done} of {len(self.grid)} cells finished (kept in "
                f"{self.out_dir / CELLS_DIR}); resume with: lkca-edge bench --resume "
                f"{shlex.quote(str(self.out_dir))}")


def _execute(cfg: BenchConfig, out_dir: Path, state: dict, finished: dict) -> BenchOutcome:
    """Run the grid's missing cells (each persisted as it finishes), then write the outputs."""
    import signal

    work = _Run(cfg, out_dir, state, finished)
    with Signals() as signals:
        try:
            with Progress(len(work.grid), cfg.progress) as bar:
                work.announce(bar)
                for model_name in cfg.models:
                    work.model_cells(model_name, bar, signals)
                return work.finish(signals)
        except DiskFull as exc:
            raise DiskFull(work.stopped_message(f"{exc}; stopped")) from None
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            raise Interrupted(signum, work.stopped_message(
                f"interrupted by {signal.Signals(signum).name}")) from None


def _record(cfg: BenchConfig, state: dict, results: dict, signals: Signals):
    """Record the run in the history once (a resumed run that was recorded is not recorded again)."""
    if not cfg.record:
        return None, None, None
    from lkca_edge.results.history import ResultsStore, resolve_db_path

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
    from lkca_edge.apps.report import write_report

    files = {"results.csv": write_text(out_dir / "results.csv", to_csv(results))}
    files.update(write_report(results, out_dir))
    files["results.json"] = write_json(out_dir / "results.json", results)
    return files
