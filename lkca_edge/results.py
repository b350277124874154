"""Bench results: the ``results.json`` schema, what the figures mean (best cells, Pareto front,
what to ship per device profile, run-to-run comparison) and the SQLite run history.

Standard library only (no torch, no numpy): ``lkca-edge runs`` and ``lkca-edge compare`` stay
instant, and a results file can be re-read anywhere.

The history database lives in the user's data directory (``$XDG_DATA_HOME/lkca-edge/runs.sqlite``,
else ``~/.local/share/lkca-edge/runs.sqlite``); ``--db PATH`` or ``LKCA_EDGE_DB`` overrides it.
It runs in WAL mode and every write is one transaction, so a run is recorded whole or not at all,
and several processes may read and write it at once.

``results.json`` (schema ``lkca-edge-results/1``)::

    {"schema": "lkca-edge-results/1",
     "run":   {id, time, finished, duration_s, complete, host {name, cpu, cores, usable_cores, os,
               loadavg, ...}, versions {package: version}, command_line, argv, device,
               device_profile {...}, device_profiles {name: budgets, backends, precisions},
               models, backends, precisions, runs, warmup, op_runs, threads, calibration,
               weights {model: where from}, out_dir, [db_id, db]},
     "cells": [{model, backend, precision, recipe, form, status "ok" | "failed",
                failed_step null | "setup" | "convert" | "profile", error (one line) | null,
                mode "measured" | "static", note, artifact (relative path),
                metrics {conversion_s, export_s, profile_s, size_bytes, params, macs, load_ms,
                         first_inference_ms, latency_{median,p90,p99,mean,min}_ms, throughput_ips,
                         peak_rss_mb, rss_growth_mb, planned_memory_bytes, accuracy,
                         reference_accuracy, top1_agreement, accuracy_drop_pts, max_abs_err,
                         accuracy_estimate (true: an off-device estimate, not a run),
                         gate_passed, delegation_coverage},   (null where not measured)
                validation {the manifest's validation}, profile {ProfileResult.to_dict()},
                delegation {delegated_ops, not_delegated_ops, coverage, ...} | null,
                manifest {the artifact's manifest, without validation}}],
     "ship":  [{device, cell [model, backend, precision] | null, reason, ...}]}

A ``static`` cell (the backend cannot run here, e.g. Core ML on Linux) is ``ok`` with its size
and static checks, null latency/memory/accuracy, and ``note`` saying why.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from lkca_edge.errors import UserError

SCHEMA = "lkca-edge-results/1"
DB_ENV = "LKCA_EDGE_DB"
DB_SCHEMA_VERSION = 1

# The figures every cell carries under "metrics" (None where not measured), with how to read them.
METRICS = {
    "latency_median_ms": ("latency median", "ms", "min"),
    "latency_p90_ms": ("latency p90", "ms", "min"),
    "load_ms": ("load", "ms", "min"),
    "peak_rss_mb": ("peak memory", "MB", "min"),
    "size_bytes": ("size", "bytes", "min"),
    "accuracy": ("accuracy", "", "max"),
    "top1_agreement": ("top-1 agreement", "", "max"),
    "conversion_s": ("conversion", "s", "min"),
}
CSV_COLUMNS = (
    "model", "backend", "precision", "recipe", "form", "status", "mode", "failed_step", "error",
    "conversion_s", "export_s", "profile_s", "size_bytes", "params", "macs", "load_ms",
    "first_inference_ms", "latency_median_ms", "latency_p90_ms", "latency_p99_ms",
    "latency_mean_ms", "throughput_ips", "peak_rss_mb", "rss_growth_mb", "planned_memory_bytes",
    "accuracy", "reference_accuracy", "top1_agreement", "accuracy_drop_pts", "max_abs_err",
    "accuracy_estimate", "gate_passed", "memory_ok", "latency_ok", "accuracy_ok", "delegation_coverage", "threads",
    "note", "artifact",
)


# -- cells ------------------------------------------------------------------------------------------
def cell_key(cell: dict) -> tuple[str, str, str]:
    return (cell["model"], cell["backend"], cell["precision"])


def cell_name(cell: dict) -> str:
    return f"{cell['model']} {cell['backend']} {cell['precision']}"


def metric(cell: dict, name: str):
    """A cell's figure, or None (failed cells and unmeasured figures)."""
    value = (cell.get("metrics") or {}).get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def ok_cells(results: dict) -> list[dict]:
    return [c for c in results.get("cells", []) if c.get("status") == "ok"]


ESTIMABLE = ("accuracy", "top1_agreement", "accuracy_drop_pts", "max_abs_err")


def is_estimate(cell: dict, name: str) -> bool:
    """True when ``name`` is an off-device estimate (e.g. Core ML on Linux), not a measurement."""
    return name in ESTIMABLE and bool((cell.get("metrics") or {}).get("accuracy_estimate"))


def best_cells(results: dict) -> dict[str, set[tuple[str, str, str]]]:
    """metric -> keys of the best ok cells for it (lowest latency/memory/size, highest accuracy;
    every cell tied for best). Estimates never win, and a metric on which all cells tie marks
    none."""
    best = {}
    for name, (_, _, sense) in METRICS.items():
        have = [(metric(c, name), c) for c in ok_cells(results)
                if metric(c, name) is not None and not is_estimate(c, name)]
        if not have:
            continue
        target = min(v for v, _ in have) if sense == "min" else max(v for v, _ in have)
        keys = {cell_key(c) for v, c in have if math.isclose(v, target, rel_tol=1e-9, abs_tol=1e-12)}
        if len(keys) < len(have) or len(have) == 1:
            best[name] = keys
    return best


def pareto_front(results: dict, x: str = "latency_median_ms", y: str = "accuracy") -> list[tuple]:
    """Keys of the ok cells no other cell beats on both lower ``x`` and higher ``y``."""
    pts = [(metric(c, x), metric(c, y), cell_key(c)) for c in ok_cells(results)]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    front = []
    for px, py, key in pts:
        dominated = any((qx <= px and qy >= py) and (qx < px or qy > py) for qx, qy, _ in pts)
        if not dominated:
            front.append(key)
    return sorted(front, key=lambda k: next(p[0] for p in pts if p[2] == k))


def what_to_ship(results: dict) -> list[dict]:
    """Per device profile: the fastest ok cell (lowest median) that meets its budgets (p90, peak
    memory) and accuracy gate and whose backend and precision it supports; else why nothing
    qualifies."""
    run = results.get("run", {})
    measured_device = run.get("device")
    out = []
    for name, prof in (run.get("device_profiles") or {}).items():
        reasons: dict[str, int] = {}

        def no(why: str) -> None:
            reasons[why] = reasons.get(why, 0) + 1

        fits = []
        for c in results.get("cells", []):
            if c.get("status") != "ok":
                no("failed")
                continue
            if c["backend"] not in prof["backends"]:
                no(f"backend not on {name}")
                continue
            if c["precision"] not in prof["precisions"]:
                no(f"precision not on {name}")
                continue
            lat, mem = metric(c, "latency_p90_ms"), metric(c, "peak_rss_mb")
            drop = metric(c, "accuracy_drop_pts")
            if lat is None:
                no("no latency measured here")
                continue
            if (c.get("validation") or {}).get("passed") is False:
                no("validation gate failed")
                continue
            if drop is None or is_estimate(c, "accuracy_drop_pts"):
                no("no accuracy measured")
                continue
            if drop > prof["accuracy_gate"] + 1e-9:
                no(f"accuracy drop > {prof['accuracy_gate']:g} pt")
                continue
            if lat > prof["latency_budget_ms"]:
                no(f"p90 > {prof['latency_budget_ms']:g} ms")
                continue
            if mem is not None and mem > prof["ram_budget_mb"]:
                no(f"peak memory > {prof['ram_budget_mb']:g} MB")
                continue
            fits.append(c)
        entry = {"device": name, "cell": None, "reason": "", "measured_on_this_device": name == measured_device}
        if fits:
            best = min(fits, key=lambda c: (metric(c, "latency_median_ms") or metric(c, "latency_p90_ms"),
                                            metric(c, "latency_p90_ms")))
            entry["cell"] = list(cell_key(best))
            entry["latency_median_ms"] = metric(best, "latency_median_ms")
            entry["latency_p90_ms"] = metric(best, "latency_p90_ms")
            entry["accuracy"] = metric(best, "accuracy")
            entry["peak_rss_mb"] = metric(best, "peak_rss_mb")
        else:
            entry["reason"] = "; ".join(f"{why} ({n})" for why, n in
                                        sorted(reasons.items(), key=lambda kv: -kv[1])) or "no cells"
        out.append(entry)
    return out


def ship_line(entry: dict, measured_device: str | None = None) -> str:
    """One line per device profile: 'pixel-8: ship lkca-1m onnx int8 (p90 0.41 ms, ...)'."""
    name = entry["device"]
    if entry.get("cell"):
        model, backend, precision = entry["cell"]
        figures = [f"median {entry['latency_median_ms']:.3g} ms" if entry.get("latency_median_ms") else "",
                   f"p90 {entry['latency_p90_ms']:.3g} ms"]
        figures = [f for f in figures if f]
        if entry.get("accuracy") is not None:
            figures.append(f"accuracy {entry['accuracy']:.2%}")
        if entry.get("peak_rss_mb") is not None:
            figures.append(f"peak {entry['peak_rss_mb']:.0f} MB")
        where = "" if entry.get("measured_on_this_device") else \
            f" (from this host's measurements under the {measured_device} profile; not measured on {name})"
        return f"{name}: ship {model} {backend} {precision} — {', '.join(figures)}{where}"
    return f"{name}: nothing qualifies — {entry.get('reason')}"


# -- results files ---------------------------------------------------------------------------------
def check_results(results, source: str = "results") -> dict:
    """Refuse anything that is not a results object of a known schema version."""
    if not isinstance(results, dict):
        raise UserError(f"{source}: not a JSON object")
    if results.get("schema") != SCHEMA:
        raise UserError(f"{source}: unsupported results schema {results.get('schema')!r} "
                        f"(expected {SCHEMA})")
    if not isinstance(results.get("run"), dict) or not isinstance(results.get("cells"), list):
        raise UserError(f"{source}: a results object needs 'run' (object) and 'cells' (list)")
    for i, c in enumerate(results["cells"]):
        if not isinstance(c, dict) or not all(isinstance(c.get(k), str) for k in
                                              ("model", "backend", "precision", "status")):
            raise UserError(f"{source}: cell {i} needs model, backend, precision and status")
    return results


def read_results(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no results file at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    return check_results(data, str(path))


def csv_rows(results: dict) -> list[dict]:
    rows = []
    for c in results.get("cells", []):
        m = c.get("metrics") or {}
        v = (c.get("profile") or {}).get("verdict") or {}
        row = {k: c.get(k) for k in ("model", "backend", "precision", "recipe", "form", "status",
                                     "mode", "failed_step", "error", "note", "artifact")}
        row.update({k: m.get(k) for k in CSV_COLUMNS if k in m})
        row.update(memory_ok=v.get("memory_ok"), latency_ok=v.get("latency_ok"),
                   accuracy_ok=v.get("accuracy_ok"), threads=(c.get("profile") or {}).get("threads"))
        rows.append({k: row.get(k) for k in CSV_COLUMNS})
    return rows


def to_csv(results: dict) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in csv_rows(results):
        w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


# -- comparison -------------------------------------------------------------------------------------
@dataclass
class Thresholds:
    latency_pct: float = 10.0     # median latency slower by more than this -> regression
    accuracy_pts: float = 0.5     # accuracy lower by more than this many points -> regression
    memory_pct: float = 10.0      # peak memory higher by more than this -> regression
    size_pct: float = 10.0        # artifact larger by more than this -> regression


@dataclass
class CellChange:
    key: tuple[str, str, str]
    status_a: str | None
    status_b: str | None
    a: dict = field(default_factory=dict)        # metric -> value in run A
    b: dict = field(default_factory=dict)
    regressions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


COMPARED = ("latency_median_ms", "latency_p90_ms", "peak_rss_mb", "size_bytes", "accuracy")


def _pct(a, b):
    if a is None or b is None or a == 0:
        return None
    return (b - a) / a * 100.0


def compare_results(a: dict, b: dict, thresholds: Thresholds | None = None) -> list[CellChange]:
    """Per-cell changes from run ``a`` to run ``b``, with regressions beyond ``thresholds``."""
    t = thresholds or Thresholds()
    cells_a = {cell_key(c): c for c in a.get("cells", [])}
    cells_b = {cell_key(c): c for c in b.get("cells", [])}
    keys = list(cells_a) + [k for k in cells_b if k not in cells_a]
    changes = []
    for key in keys:
        ca, cb = cells_a.get(key), cells_b.get(key)
        ch = CellChange(key, ca and ca.get("status"), cb and cb.get("status"))
        for name in COMPARED:
            ch.a[name] = metric(ca, name) if ca and ca.get("status") == "ok" else None
            ch.b[name] = metric(cb, name) if cb and cb.get("status") == "ok" else None
        if ca is None:
            ch.notes.append("new in B")
        elif cb is None:
            ch.notes.append("not in B")
        elif ch.status_a == "ok" and ch.status_b != "ok":
            ch.regressions.append(f"now fails: {cb.get('error') or 'failed'}")
        elif ch.status_a != "ok" and ch.status_b == "ok":
            ch.notes.append("fixed (failed in A)")
        elif ch.status_a == "ok" and ch.status_b == "ok":
            lat = _pct(ch.a["latency_median_ms"], ch.b["latency_median_ms"])
            if lat is not None and lat > t.latency_pct:
                ch.regressions.append(f"latency +{lat:.0f}% (> {t.latency_pct:g}%)")
            mem = _pct(ch.a["peak_rss_mb"], ch.b["peak_rss_mb"])
            if mem is not None and mem > t.memory_pct:
                ch.regressions.append(f"peak memory +{mem:.0f}% (> {t.memory_pct:g}%)")
            size = _pct(ch.a["size_bytes"], ch.b["size_bytes"])
            if size is not None and size > t.size_pct:
                ch.regressions.append(f"size +{size:.0f}% (> {t.size_pct:g}%)")
            if ch.a["accuracy"] is not None and ch.b["accuracy"] is not None:
                drop = (ch.a["accuracy"] - ch.b["accuracy"]) * 100.0
                if drop > t.accuracy_pts + 1e-9:
                    ch.regressions.append(f"accuracy -{drop:.2f} pt (> {t.accuracy_pts:g} pt)")
            if ch.a["latency_median_ms"] is None and ch.b["latency_median_ms"] is None:
                ch.notes.append("not measured (static)")
        changes.append(ch)
    return changes


# -- the history database ---------------------------------------------------------------------------
def default_db_path() -> Path:
    env = os.environ.get(DB_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME", "").strip()
    root = Path(base).expanduser() if base else Path.home() / ".local" / "share"
    return root / "lkca-edge" / "runs.sqlite"


def resolve_db_path(db: str | Path | None) -> Path:
    return Path(db).expanduser() if db else default_db_path()


_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uid         TEXT NOT NULL UNIQUE,
    created     TEXT NOT NULL,
    host        TEXT,
    device      TEXT,
    models      TEXT,
    command     TEXT,
    out_dir     TEXT,
    n_ok        INTEGER NOT NULL,
    n_failed    INTEGER NOT NULL,
    label       TEXT,
    results     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    run_id            INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    model             TEXT NOT NULL,
    backend           TEXT NOT NULL,
    precision         TEXT NOT NULL,
    recipe            TEXT,
    status            TEXT NOT NULL,
    error             TEXT,
    latency_median_ms REAL,
    latency_p90_ms    REAL,
    load_ms           REAL,
    peak_rss_mb       REAL,
    size_bytes        INTEGER,
    accuracy          REAL,
    top1_agreement    REAL,
    conversion_s      REAL
);
CREATE INDEX IF NOT EXISTS cells_run ON cells(run_id);
CREATE INDEX IF NOT EXISTS cells_key ON cells(model, backend, precision);
"""


@dataclass
class RunRow:
    id: int
    uid: str
    created: str
    host: str
    device: str
    models: list[str]
    command: str
    out_dir: str
    n_ok: int
    n_failed: int
    label: str | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class ResultsStore:
    """The SQLite run history: ``record_run(results)``, ``list_runs()``, ``get_run(ref)``."""

    def __init__(self, path: str | Path | None = None):
        self.path = resolve_db_path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the run history directory {self.path.parent}: "
                            f"{exc.strerror or exc} (choose another with --db or {DB_ENV})") from None
        try:
            self._con = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
            self._con.row_factory = sqlite3.Row
            self._con.execute("PRAGMA busy_timeout = 30000")
            self._con.execute("PRAGMA journal_mode = WAL")
            self._con.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path} is not a usable lkca-edge run history ({exc}); "
                            f"pass another with --db or {DB_ENV}") from None

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self):
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def _migrate(self) -> None:
        version = self._con.execute("PRAGMA user_version").fetchone()[0]
        if version > DB_SCHEMA_VERSION:
            raise UserError(f"{self.path} was written by a newer lkca-edge (history schema "
                            f"{version} > {DB_SCHEMA_VERSION}); upgrade lkca-edge or use another --db")
        if version < DB_SCHEMA_VERSION:
            with self._transaction() as con:
                for statement in _DDL.split(";"):
                    if statement.strip():
                        con.execute(statement)
                con.execute(f"PRAGMA user_version = {DB_SCHEMA_VERSION}")

    # -- writing ------------------------------------------------------------------------------------
    def record_run(self, results: dict, label: str | None = None) -> int:
        """Store one bench run (its whole results object and one row per cell); returns its id."""
        check_results(results)
        run = results["run"]
        uid = str(run.get("id") or uuid.uuid4().hex)
        cells = results["cells"]
        n_ok = sum(c.get("status") == "ok" for c in cells)
        models = sorted({c["model"] for c in cells}) or list(run.get("models") or [])
        host = run.get("host") or {}
        if isinstance(host, dict):
            host_text = host.get("name") or host.get("cpu") or ""
        else:
            host_text = str(host)
        command = run.get("command_line") or " ".join(run.get("argv") or [])
        try:
            with self._transaction() as con:
                cur = con.execute(
                    "INSERT INTO runs (uid, created, host, device, models, command, out_dir, n_ok, "
                    "n_failed, label, results) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (uid, run.get("time") or "", host_text, run.get("device") or "",
                     json.dumps(models), command, run.get("out_dir") or "", n_ok, len(cells) - n_ok,
                     label, json.dumps(results)))
                run_id = cur.lastrowid
                con.executemany(
                    "INSERT INTO cells (run_id, model, backend, precision, recipe, status, error, "
                    "latency_median_ms, latency_p90_ms, load_ms, peak_rss_mb, size_bytes, accuracy, "
                    "top1_agreement, conversion_s) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [(run_id, c["model"], c["backend"], c["precision"], c.get("recipe"), c["status"],
                      c.get("error"), metric(c, "latency_median_ms"), metric(c, "latency_p90_ms"),
                      metric(c, "load_ms"), metric(c, "peak_rss_mb"), metric(c, "size_bytes"),
                      metric(c, "accuracy"), metric(c, "top1_agreement"), metric(c, "conversion_s"))
                     for c in cells])
        except sqlite3.IntegrityError:
            raise UserError(f"run {uid} is already recorded in {self.path}") from None
        except sqlite3.OperationalError as exc:  # disk full, locked past the timeout, read-only
            raise UserError(f"cannot record the run in {self.path}: {exc}") from None
        return int(run_id)

    def find_uid(self, uid: str) -> int | None:
        """The id of the run recorded under ``uid`` (results ``run.id``), or None."""
        row = self._con.execute("SELECT id FROM runs WHERE uid = ?", (str(uid),)).fetchone()
        return None if row is None else int(row[0])

    def delete_run(self, ref) -> None:
        run_id = self._resolve(ref)
        with self._transaction() as con:
            con.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    # -- reading ------------------------------------------------------------------------------------
    def list_runs(self, limit: int | None = None) -> list[RunRow]:
        sql = ("SELECT id, uid, created, host, device, models, command, out_dir, n_ok, n_failed, "
               "label FROM runs ORDER BY id DESC")
        rows = self._con.execute(sql + (" LIMIT ?" if limit else ""),
                                 (limit,) if limit else ()).fetchall()
        return [RunRow(id=r["id"], uid=r["uid"], created=r["created"], host=r["host"] or "",
                       device=r["device"] or "", models=json.loads(r["models"] or "[]"),
                       command=r["command"] or "", out_dir=r["out_dir"] or "", n_ok=r["n_ok"],
                       n_failed=r["n_failed"], label=r["label"]) for r in rows]

    def _resolve(self, ref) -> int:
        """A run id, 'latest' / 'last', 'previous', or -N (N-th latest)."""
        text = str(ref).strip().lower()
        if text in ("latest", "last", "previous", "prev") or (text.startswith("-") and text[1:].isdigit()):
            back = {"latest": 0, "last": 0, "previous": 1, "prev": 1}.get(text)
            back = int(text[1:]) - 1 if back is None else back
            row = self._con.execute("SELECT id FROM runs ORDER BY id DESC LIMIT 1 OFFSET ?",
                                    (max(back, 0),)).fetchone()
            if row is None:
                raise UserError(f"the run history {self.path} has no run {ref!r} "
                                f"(see `lkca-edge runs`)")
            return int(row[0])
        if not text.isdigit():
            raise UserError(f"bad run reference {ref!r}: give a run id from `lkca-edge runs`, "
                            f"'latest', 'previous', or a results.json / run directory")
        row = self._con.execute("SELECT id FROM runs WHERE id = ?", (int(text),)).fetchone()
        if row is None:
            raise UserError(f"no run {text} in {self.path} (see `lkca-edge runs`)")
        return int(row[0])

    def get_run(self, ref) -> dict:
        """The results object of a recorded run (``run.db_id`` says which)."""
        run_id = self._resolve(ref)
        text = self._con.execute("SELECT results FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
        results = check_results(json.loads(text), f"run {run_id}")
        results["run"]["db_id"] = run_id
        return results


def load_run(ref: str, store: ResultsStore | None) -> dict:
    """A run for `compare`: a results.json file or run directory, else a history reference."""
    p = Path(ref)
    if p.exists() and (p.is_dir() or p.suffix == ".json"):
        return read_results(p)
    if store is None:
        raise UserError(f"{ref}: not a results file and there is no run history")
    return store.get_run(ref)


def new_run_id() -> str:
    return uuid.uuid4().hex
