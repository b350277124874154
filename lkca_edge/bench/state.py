"""A bench run directory's state: ``run.json`` (options and header, what ``--resume`` reads), one
record per finished cell in ``cells/``, and clearing what an earlier run or a SIGKILL left."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from lkca_edge.bench.config import BenchConfig
from lkca_edge.bench.lock import read_json
from lkca_edge.errors import UserError
from lkca_edge.results.schema import SCHEMA as RESULTS_SCHEMA
from lkca_edge.results.schema import check_results

RUN_SCHEMA = "lkca-edge-bench-run/1"
CELL_SCHEMA = "lkca-edge-bench-cell/1"
RUN_FILE = "run.json"      # the run's options and header, written at start (what --resume reads)
CELLS_DIR = "cells"        # one <model>_<backend>_<precision>.json per finished cell
LOCK_FILE = ".lock"        # PID, host and start time of the bench using the directory
FINAL_OUTPUTS = ("results.json", "results.csv", "report.md", "report.html", "plots")
OPTIONS = ("models", "backends", "precisions", "device", "runs", "warmup", "op_runs", "threads",
            "db", "record", "checkpoint", "dataset", "validation_limit", "profiles_dir", "argv",
           "wide", "remote", "remote_command", "ssh_options", "per_layer")


def cell_file(out_dir: Path, model: str, backend: str, precision: str) -> Path:
    name = "_".join(re.sub(r"[^A-Za-z0-9.@+-]", "-", part) for part in (model, backend, precision))
    return out_dir / CELLS_DIR / f"{name}.json"


def _is_temp(path: Path) -> bool:
    return path.name.startswith(".") or ".partial" in path.name


def read_run_state(out_dir: Path) -> dict | None:
    """``run.json`` of a bench run directory, None when there is none; UserError when unusable
    (not a regular file, too large or deep, not JSON, or fields of the wrong type)."""
    from lkca_edge.safeio import read_json as read_bounded
    from lkca_edge.schemas import check_fields, check_value

    path = out_dir / RUN_FILE
    if not path.exists() and not path.is_symlink():
        return None
    try:
        doc = read_bounded(path, "bench run record")
    except UserError as exc:
        why = str(exc).replace(f"bench run record {path} ", "")
        raise UserError(f"{path} is not a bench run record this lkca-edge can read: {why}") from None
    if not isinstance(doc, dict) or doc.get("schema") != RUN_SCHEMA \
            or not isinstance(doc.get("options"), dict) or not isinstance(doc.get("run"), dict):
        raise UserError(f"{path} is not a bench run record this lkca-edge can read")
    check_fields(BenchConfig, doc["options"], path, prefix="options.", required=False)
    for key, hint in (("id", str), ("out_dir", str | None), ("resumed", list[str] | None)):
        if key in doc["run"]:
            check_value(doc["run"][key], hint, path, f"run.{key}")
    for key, hint in (("elapsed_s", float | None), ("complete", bool | None),
                      ("recorded", dict | None)):
        if key in doc:
            check_value(doc[key], hint, path, key)
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
        doc = read_json(path)
        cell = doc.get("cell") if isinstance(doc, dict) else None
        if not isinstance(cell, dict) or doc.get("schema") != CELL_SCHEMA \
                or not all(isinstance(cell.get(k), str) for k in ("model", "backend", "precision", "status")):
            warn(f"ignoring {path}: not a finished-cell record (the cell runs again)")
            continue
        if doc.get("run_id") != run_id:
            warn(f"ignoring {path}: it belongs to another run")
            continue
        try:  # the report reads every field of it: the same types a results file must have
            check_results({"schema": RESULTS_SCHEMA, "run": {}, "cells": [cell]}, str(path))
        except UserError as exc:
            warn(f"ignoring {path}: {exc} (the cell runs again)")
            continue
        key = (cell["model"], cell["backend"], cell["precision"])
        if key in grid:
            found[key] = cell
    return found


def remove_temp_files(out_dir: Path) -> None:
    """Leftovers of atomic writes cut short by SIGKILL (``.name.XXXX.partial.ext``)."""
    for folder in (out_dir, out_dir / CELLS_DIR, out_dir / "artifacts", out_dir / "plots"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and ".partial" in p.name:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)


def clear_previous_run(out_dir: Path) -> None:
    """A fresh bench into the directory of a finished one: drop its outputs and cell records
    first, so an interrupted new run never leaves the old, complete-looking report behind."""
    for name in (*FINAL_OUTPUTS, CELLS_DIR, RUN_FILE):
        p = out_dir / name
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        except OSError as exc:
            raise UserError(f"cannot clear the previous run's {p}: {exc.strerror or exc}") from None



def recorded_options(cfg: BenchConfig) -> dict:
    """What a resumed run needs to repeat this one (paths made absolute)."""
    opts = {k: getattr(cfg, k) for k in OPTIONS}
    if cfg.checkpoint:
        opts["checkpoint"] = str(Path(cfg.checkpoint).resolve())
    if cfg.profiles_dir:
        opts["profiles_dir"] = [str(Path(d).resolve()) for d in cfg.profiles_dir]
    if cfg.record:
        from lkca_edge.results.history import resolve_db_path

        opts["db"] = str(resolve_db_path(cfg.db).resolve())
    return opts


def grid(cfg: BenchConfig) -> list[tuple[str, str, str]]:
    """Every (model, backend, precision) cell of a run, in report order (a variant such as
    int8-mixed only for the backends that have its recipe)."""
    from lkca_edge.bench.config import has_cell

    return [(m, b, p) for m in cfg.models for b in cfg.backends for p in cfg.precisions
            if has_cell(b, p)]




def ours(path: Path) -> bool:
    """True when ``path`` is a results.json this lkca-edge wrote."""
    from lkca_edge.results.schema import SCHEMA as RESULTS_SCHEMA

    doc = read_json(path)
    return isinstance(doc, dict) and doc.get("schema") == RESULTS_SCHEMA


def config_from(state: dict, out_dir: Path, progress: bool = True) -> BenchConfig:
    """The BenchConfig a run directory recorded (what ``--resume`` repeats)."""
    opts = dict(state["options"])
    try:
        cfg = BenchConfig(**{k: opts[k] for k in OPTIONS if k in opts})
    except TypeError as exc:
        raise UserError(f"{out_dir / RUN_FILE}: unreadable options ({exc})") from None
    cfg.out, cfg.progress = str(out_dir), progress
    return cfg
