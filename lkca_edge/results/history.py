"""The SQLite run history of bench runs.

The database lives in the user's data directory (``$XDG_DATA_HOME/lkca-edge/runs.sqlite``, else
``~/.local/share/lkca-edge/runs.sqlite``); ``--db PATH`` or ``LKCA_EDGE_DB`` overrides it. It runs
in WAL mode and every write is one transaction, so a run is recorded whole or not at all, and
several processes may read and write it at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

from lkca_edge.errors import UserError, printable
from lkca_edge.results.schema import check_results, metric, read_results

DB_ENV = "LKCA_EDGE_DB"
DB_SCHEMA_VERSION = 1


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


MAX_RUN_ID = 2**63 - 1  # SQLite's INTEGER


def _run_row(r) -> RunRow:
    """A ``runs`` row as a RunRow; ValueError naming the field that does not parse."""
    def text(key: str, optional: bool = True) -> str:
        v = r[key]
        if v is None and optional:
            return ""
        if not isinstance(v, str):
            raise ValueError(f"field {key!r} is not text")
        return v

    for key in ("id", "n_ok", "n_failed"):
        if not isinstance(r[key], int):
            raise ValueError(f"field {key!r} is not an integer")
    try:
        models = json.loads(r["models"] or "[]")
    except (TypeError, ValueError, RecursionError):
        raise ValueError("field 'models' is not a JSON list") from None
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ValueError("field 'models' is not a list of names")
    label = r["label"]
    if label is not None and not isinstance(label, str):
        raise ValueError("field 'label' is not text")
    return RunRow(id=r["id"], uid=text("uid", False), created=text("created", False),
                  host=text("host"), device=text("device"), models=models,
                  command=text("command"), out_dir=text("out_dir"), n_ok=r["n_ok"],
                  n_failed=r["n_failed"], label=label)


class ResultsStore:
    """The SQLite run history: ``record_run(results)``, ``list_runs()``, ``get_run(ref)``.

    ``read_only=True`` (``runs``, ``compare``) opens the database without writing to it, so a
    history on a read-only file or directory can still be listed; rows that do not parse are
    skipped with a notice (``warn``), never a traceback."""

    def __init__(self, path: str | Path | None = None, read_only: bool = False, warn=None):
        import stat

        self.path = resolve_db_path(path)
        self.read_only = read_only
        self.warn = warn or (lambda text: None)
        try:
            st = os.stat(self.path)
        except OSError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            from lkca_edge.safeio import not_regular

            raise not_regular("run history", self.path, st.st_mode)
        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot create the run history directory {self.path.parent}: "
                                f"{exc.strerror or exc} (choose another with --db or {DB_ENV})") from None
        try:
            self._con = self._connect()
            self._con.row_factory = sqlite3.Row
            self._con.execute("PRAGMA busy_timeout = 30000")
            if read_only:
                self._check_readable()
            else:
                self._con.execute("PRAGMA journal_mode = WAL")
                self._con.execute("PRAGMA foreign_keys = ON")
                self._migrate()
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path} is not a usable lkca-edge run history ({exc}); "
                            f"pass another with --db or {DB_ENV}") from None

    def _connect(self):
        if not self.read_only:
            return sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        from urllib.parse import quote

        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        con = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return con
        except sqlite3.OperationalError:
            # A WAL database in a directory we cannot write (no -shm file can be made): read it
            # as an unchanging file.
            con.close()
            return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=30.0,
                                   isolation_level=None)

    def _check_readable(self) -> None:
        version = self._con.execute("PRAGMA user_version").fetchone()[0]
        if version > DB_SCHEMA_VERSION:
            raise UserError(f"{self.path} was written by a newer lkca-edge (history schema "
                            f"{version} > {DB_SCHEMA_VERSION}); upgrade lkca-edge or use another --db")
        tables = {r[0] for r in self._con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version < DB_SCHEMA_VERSION or "runs" not in tables:
            raise UserError(f"{self.path} is not a usable lkca-edge run history (no runs table); "
                            f"pass another with --db or {DB_ENV}")

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

    # -- reading ------------------------------------------------------------------------------------
    def list_runs(self, limit: int | None = None) -> list[RunRow]:
        """The newest runs first; a row that does not parse is skipped with a notice."""
        sql = ("SELECT id, uid, created, host, device, models, command, out_dir, n_ok, n_failed, "
               "label FROM runs ORDER BY id DESC")
        rows = self._con.execute(sql + (" LIMIT ?" if limit else ""),
                                 (limit,) if limit else ()).fetchall()
        out = []
        for r in rows:
            try:
                out.append(_run_row(r))
            except ValueError as exc:
                self.warn(f"skipping run {r['id']!r} in {self.path}: {exc}")
        return out

    def _resolve(self, ref) -> int:
        """A run id, 'latest' / 'last', 'previous', or -N (N-th latest)."""
        text = str(ref).strip().lower()
        if text in ("latest", "last", "previous", "prev") or re.fullmatch(r"-[0-9]{1,18}", text):
            back = {"latest": 0, "last": 0, "previous": 1, "prev": 1}.get(text)
            back = int(text[1:]) - 1 if back is None else back
            if back < 0:
                raise UserError(f"bad run reference {ref!r}: -N counts from -1 (the latest run)")
            row = self._con.execute("SELECT id FROM runs ORDER BY id DESC LIMIT 1 OFFSET ?",
                                    (back,)).fetchone()
            if row is None:
                raise UserError(f"the run history {self.path} has no run {ref!r} "
                                f"(see `lkca-edge runs`)")
            return int(row[0])
        if not re.fullmatch(r"[0-9]{1,19}", text) or not 1 <= int(text) <= MAX_RUN_ID:
            raise UserError(f"bad run reference {printable(str(ref), 40)!r}: give a run id from "
                            f"`lkca-edge runs` (1 to {MAX_RUN_ID}), 'latest', 'previous', -N, or "
                            f"a results.json / run directory")
        row = self._con.execute("SELECT id FROM runs WHERE id = ?", (int(text),)).fetchone()
        if row is None:
            raise UserError(f"no run {text} in {self.path} (see `lkca-edge runs`)")
        return int(row[0])

    def get_run(self, ref) -> dict:
        """The results object of a recorded run (``run.db_id`` says which)."""
        from lkca_edge.safeio import parse_json

        run_id = self._resolve(ref)
        text = self._con.execute("SELECT results FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
        where = f"run {run_id} in {self.path}"
        if not isinstance(text, (str, bytes)):
            raise UserError(f"{where}: its results are not stored as text (the row is corrupt)")
        results = check_results(parse_json(text, "results of", where), where)
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
