"""Faults around `lkca-edge bench`: a real bench stopped by SIGINT or SIGTERM and resumed with
--resume (finished cells kept byte for byte, only the missing ones run), one bench per run
directory (DIR/.lock, stale locks taken over), and the SQLite run history surviving a process
SIGKILLed in the middle of its writes.

Everything here is real: real benches (lkca-1m, ONNX and LiteRT, fp32 and int8, few runs), real
signals, a real SQLite file. Kept small for a shared 2-core machine.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# --limit: validation (and the int8 cells' per-layer tables) on 60 images keeps each cell short.
# A signal test benches one precision on both runtimes: two cells, the signal lands while the
# second (LiteRT) runs, and --resume runs only that one.
def bench_args(*precisions: str) -> list[str]:
    return ["bench", "--backends", "onnx", "tflite", "--precisions", *precisions, "--runs", "5",
            "--warmup", "1", "--op-runs", "0", "--limit", "60"]


def grid(precision: str) -> list[tuple[str, str, str]]:
    return [("lkca-1m", b, precision) for b in ("onnx", "tflite")]


BENCH = bench_args("fp32", "int8")  # only for benches refused before any cell runs
FINAL = ("results.json", "results.csv", "report.md", "report.html")


def _installed(name: str) -> bool:
    from lkca_edge.converters import get_backend

    try:
        b = get_backend(name)
        return b.available() is None and b.runnable() is None
    except ModuleNotFoundError:
        return False


needs_tflite = pytest.mark.skipif(not _installed("tflite"), reason="LiteRT is not installed here")


def cli(argv: list[str]) -> tuple[int, str, str]:
    from lkca_edge.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))  # OMP_NUM_THREADS as conftest set it
    env.pop("LKCA_EDGE_DEBUG", None)
    return env


def _start_bench(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lkca_edge", *args], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cell_files(run_dir: Path) -> list[Path]:
    cells = run_dir / "cells"
    if not cells.is_dir():
        return []
    return sorted(p for p in cells.glob("*.json") if not p.name.startswith("."))


def _wait_for_a_cell(proc: subprocess.Popen, run_dir: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not _cell_files(run_dir):
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the bench ended ({proc.returncode}) before finishing a cell: {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no cell finished in time")
        time.sleep(0.2)


def _snapshot(run_dir: Path) -> dict[str, tuple[bytes, int, dict]]:
    """name -> (bytes, mtime_ns, the artifact's mtime_ns) of every finished cell file."""
    snap = {}
    for p in _cell_files(run_dir):
        doc = json.loads(p.read_bytes())
        art = doc["cell"].get("artifact")
        art_mtime = (run_dir / art).stat().st_mtime_ns if art else None
        snap[p.name] = (p.read_bytes(), p.stat().st_mtime_ns, art_mtime)
    return snap


def _interrupt_and_resume(tmp_path: Path, sig: signal.Signals, precision: str, extra: list[str]):
    run_dir, db = tmp_path / "run", tmp_path / "history.sqlite"
    proc = _start_bench([*bench_args(precision), "--out", str(run_dir), "--db", str(db), *extra])
    try:
        _wait_for_a_cell(proc, run_dir)
        yield "running", run_dir, db, proc
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    yield "stopped", run_dir, db, (proc.returncode, out, err)


def _check_stopped(run_dir: Path, code: int, err: str, sig: signal.Signals, cells: list) -> dict:
    assert code == 128 + int(sig), err
    last = err.strip().splitlines()[-1]
    assert last.startswith("lkca-edge bench: interrupted by " + sig.name), err
    assert f"resume with: lkca-edge bench --resume {run_dir}" in last
    assert "Traceback" not in err
    # nothing that looks like a complete run, no lock, no half-written file
    for name in FINAL:
        assert not (run_dir / name).exists(), name
    assert not (run_dir / "plots").exists()
    assert not (run_dir / ".lock").exists()
    assert not [p for p in run_dir.rglob("*") if ".partial" in p.name]
    state = json.loads((run_dir / "run.json").read_text())
    assert state["complete"] is False and state["options"]["backends"] == ["onnx", "tflite"]
    snap = _snapshot(run_dir)
    assert 1 <= len(snap) < len(cells), snap.keys()
    n = int(last.split(" with ")[1].split(" of ")[0])
    assert n == len(snap)
    return snap


def _check_resumed(run_dir: Path, db: Path, before: dict, code: int, out: str, err: str,
                   cells: list) -> dict:
    assert code == 0, err
    assert "Traceback" not in err
    # the cells finished before the signal were not run again: same bytes, same file times,
    # same artifacts
    after = _snapshot(run_dir)
    for name, (data, mtime, art_mtime) in before.items():
        assert after[name][0] == data, name
        assert after[name][1] == mtime, name
        assert after[name][2] == art_mtime, name
    assert len(after) == len(cells)
    results = json.loads((run_dir / "results.json").read_text())
    assert [(c["model"], c["backend"], c["precision"]) for c in results["cells"]] == cells
    assert all(c["status"] == "ok" for c in results["cells"]), [c["error"] for c in results["cells"]]
    stored = {tuple(json.loads(p.read_bytes())["cell"][k] for k in ("model", "backend", "precision")):
              json.loads(p.read_bytes())["cell"] for p in _cell_files(run_dir)}
    for c in results["cells"]:
        assert c == stored[(c["model"], c["backend"], c["precision"])]
    run = results["run"]
    state = json.loads((run_dir / "run.json").read_text())
    assert run["id"] == state["run"]["id"] and run["complete"] is True and len(run["resumed"]) == 1
    assert state["complete"] is True
    for name in FINAL:
        assert (run_dir / name).is_file(), name
    assert not (run_dir / ".lock").exists()
    # recorded once, whole
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT id, uid, n_ok FROM runs").fetchall()
        assert len(rows) == 1 and rows[0][1] == run["id"] and rows[0][2] == len(cells)
        assert con.execute("SELECT COUNT(*) FROM cells WHERE run_id = ?", (rows[0][0],)).fetchone()[0] == len(cells)
    finally:
        con.close()
    return results


@needs_tflite
@pytest.mark.slow
def test_sigint_then_resume(tmp_path):
    cells = grid("fp32")
    steps = _interrupt_and_resume(tmp_path, signal.SIGINT, "fp32", [])
    _, run_dir, db, proc = next(steps)
    # while it runs, a second bench on the same directory is refused, naming the lock
    code, _, err = cli([*bench_args("fp32"), "--out", str(run_dir), "--no-history"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"lock {run_dir / '.lock'}: PID {proc.pid} on {socket.gethostname()}" in err
    _, run_dir, db, (code, out, err) = next(steps)
    before = _check_stopped(run_dir, code, err, signal.SIGINT, cells)

    # a fresh bench into the interrupted run's directory is refused with the way to resume it
    code2, _, err2 = cli([*bench_args("fp32"), "--out", str(run_dir), "--no-history"])
    assert code2 == 2 and f"lkca-edge bench --resume {run_dir}" in err2, err2
    assert len(err2.strip().splitlines()) == 1
    # --resume takes the recorded options only
    code2, _, err2 = cli(["bench", "--resume", str(run_dir), "--runs", "3"])
    assert code2 == 2 and "drop --runs" in err2
    assert _snapshot(run_dir) == before

    proc = subprocess.run([sys.executable, "-m", "lkca_edge", "bench", "--resume", str(run_dir)],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert f"{len(before)} of {len(cells)} cells already finished" in proc.stderr
    _check_resumed(run_dir, db, before, proc.returncode, proc.stdout, proc.stderr, cells)


@needs_tflite
@pytest.mark.slow
def test_sigterm_then_resume_then_resume_again(tmp_path):
    cells = grid("int8")  # int8 cells carry per-layer tables: kept byte for byte too
    steps = _interrupt_and_resume(tmp_path, signal.SIGTERM, "int8", ["--no-progress"])
    next(steps)
    _, run_dir, db, (code, out, err) = next(steps)
    before = _check_stopped(run_dir, code, err, signal.SIGTERM, cells)
    assert len(err.strip().splitlines()) == 1, err  # --no-progress: only the resume line

    proc = subprocess.run([sys.executable, "-m", "lkca_edge", "bench", "--resume", str(run_dir),
                           "--no-progress"], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=900)
    results = _check_resumed(run_dir, db, before, proc.returncode, proc.stdout, proc.stderr, cells)

    # resuming a complete run rewrites its reports and nothing else: same cells, same run,
    # not recorded twice
    cells_before = _snapshot(run_dir)
    code, stdout, err = cli(["bench", "--resume", str(run_dir), "--no-progress"])
    assert code == 0, err
    again = json.loads((run_dir / "results.json").read_text())
    assert again["cells"] == results["cells"]
    assert again["run"]["finished"] == results["run"]["finished"]
    assert _snapshot(run_dir) == cells_before
    assert f"recorded as run {results['run']['db_id']}" in stdout
    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    finally:
        con.close()


@pytest.mark.slow
def test_sigkill_then_resume_takes_over_the_lock(tmp_path):
    """SIGKILL: no handler runs, so the lock stays behind; every finished cell is still there,
    and --resume takes the dead process's lock over and finishes the run."""
    run_dir = tmp_path / "run"
    args = ["bench", "--backends", "onnx", "--precisions", "fp32", "int8", "--runs", "5",
            "--warmup", "1", "--op-runs", "0", "--limit", "60", "--out", str(run_dir), "--no-history", "--no-progress"]
    proc = _start_bench(args)
    try:
        _wait_for_a_cell(proc, run_dir)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((run_dir / ".lock").read_text())["pid"] == proc.pid
    assert not (run_dir / "results.json").exists()
    before = _snapshot(run_dir)
    assert 1 <= len(before) <= 2

    done = subprocess.run([sys.executable, "-m", "lkca_edge", "bench", "--resume", str(run_dir),
                           "--no-progress"], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    assert (f"lkca-edge bench: taking over the stale lock {run_dir / '.lock'} "
            f"(PID {proc.pid} is not running)") in done.stderr
    after = _snapshot(run_dir)
    for name, snap in before.items():
        assert after[name] == snap, name
    results = json.loads((run_dir / "results.json").read_text())
    assert [(c["backend"], c["precision"]) for c in results["cells"]] == [("onnx", "fp32"), ("onnx", "int8")]
    assert not (run_dir / ".lock").exists()
    assert not [p for p in run_dir.rglob("*") if ".partial" in p.name]


def test_resume_of_something_else_is_one_line(tmp_path):
    for target, needle in ((tmp_path / "missing", "no such run directory"),
                           (tmp_path, "not a bench run directory")):
        code, _, err = cli(["bench", "--resume", str(target)])
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "run.json").write_text("{not json")
    code, _, err = cli(["bench", "--resume", str(tmp_path)])
    assert code == 2 and "not a bench run record" in err and len(err.strip().splitlines()) == 1


# -- the lock -----------------------------------------------------------------------------------------
def _write_lock(run_dir: Path, **info) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / ".lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "started": "2026-01-01T00:00:00+0000",
                                **info}))
    return lock


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.slow
def test_live_lock_refuses_a_second_bench(tmp_path):
    run_dir = tmp_path / "run"
    lock = _write_lock(run_dir, pid=os.getpid())
    text = lock.read_text()
    code, stdout, err = cli([*BENCH, "--out", str(run_dir), "--no-history"])
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert f"another lkca-edge bench is using {run_dir}" in lines[0]
    assert f"lock {lock}: PID {os.getpid()} on {socket.gethostname()}" in lines[0]
    assert lock.read_text() == text  # left alone
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]
    # a lock from another host is never taken over automatically
    _write_lock(run_dir, pid=_dead_pid(), host="some-other-host")
    code, _, err = cli([*BENCH, "--out", str(run_dir), "--no-history"])
    assert code == 2 and "some-other-host" in err


@pytest.mark.slow
def test_stale_lock_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    pid = _dead_pid()
    lock = _write_lock(run_dir, pid=pid)
    code, stdout, err = cli(["bench", "--backends", "onnx", "--precisions", "fp32", "--runs", "3",
                             "--warmup", "0", "--op-runs", "0", "--limit", "50", "--no-history",
                             "--no-progress", "--out", str(run_dir)])
    assert code == 0, err
    # (in-process, the converters' Python log lines land in the captured stderr too)
    assert err.strip().splitlines()[0] == \
        f"lkca-edge bench: taking over the stale lock {lock} (PID {pid} is not running)"
    assert not lock.exists()  # released at the end
    assert json.loads((run_dir / "results.json").read_text())["run"]["complete"] is True


def test_lock_staleness_rules(tmp_path):
    from lkca_edge.bench.lock import PidLock, proc_start
    from lkca_edge.errors import UserError

    notes: list[str] = []
    # a reused PID: alive, but not the process that wrote the lock
    _write_lock(tmp_path, pid=os.getppid(), proc_start="1")
    with PidLock(tmp_path / '.lock').acquire(notes.append) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert "now belongs to another process" in notes[-1] and not (tmp_path / ".lock").exists()
    # a lock written before the last reboot
    _write_lock(tmp_path, pid=os.getppid(), boot_id="not-this-boot")
    PidLock(tmp_path / '.lock').acquire(notes.append).release()
    assert "before this host last rebooted" in notes[-1]
    # garbage: refused while fresh (someone is writing it), taken over once old
    (tmp_path / ".lock").write_text("")
    with pytest.raises(UserError, match="being created"):
        PidLock(tmp_path / '.lock').acquire(notes.append)
    old = time.time() - 60
    os.utime(tmp_path / ".lock", (old, old))
    PidLock(tmp_path / '.lock').acquire(notes.append).release()
    assert "unreadable" in notes[-1]
    # the same process and start time: live
    _write_lock(tmp_path, pid=os.getpid(), proc_start=proc_start(os.getpid()))
    with pytest.raises(UserError, match="another lkca-edge process"):
        PidLock(tmp_path / '.lock').acquire(notes.append)
    # release() never removes somebody else's lock
    (tmp_path / ".lock").unlink()
    mine = PidLock(tmp_path / '.lock').acquire()
    theirs = _write_lock(tmp_path, pid=os.getppid())
    mine.release()
    assert theirs.exists()


def _race(path: str, barrier, results) -> None:
    from lkca_edge.bench.lock import PidLock
    from lkca_edge.errors import UserError

    barrier.wait()
    try:
        lock = PidLock(Path(path) / '.lock').acquire()
    except UserError:
        results.put("refused")
        return
    results.put("won")
    time.sleep(2.0)
    lock.release()


def test_lock_race_has_one_winner(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, results)) for _ in range(6)]
    for p in procs:
        p.start()
    outcome = sorted(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    assert outcome == ["refused"] * 5 + ["won"]
    assert not (tmp_path / ".lock").exists()


# -- the run history under SIGKILL ----------------------------------------------------------------------
_WRITER = textwrap.dedent("""
    import json, sys, time, uuid
    from lkca_edge.results import SCHEMA, ResultsStore

    db, n_cells, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    class PauseBeforeCells:  # stops inside the transaction: the run row written, its cells not
        def __init__(self, con):
            self._con = con
        def __getattr__(self, name):
            return getattr(self._con, name)
        def execute(self, *a):
            return self._con.execute(*a)
        def executemany(self, *a):
            print("MID", flush=True)
            time.sleep(600)

    def results():
        cells = [{"model": "m", "backend": "onnx", "precision": f"p{i}", "recipe": "r",
                  "status": "ok" if i % 3 else "failed", "error": None if i % 3 else "boom",
                  "metrics": {"latency_median_ms": 1.0 + i, "size_bytes": 1000 + i},
                  "profile": {"padding": "x" * 2000}} for i in range(n_cells)]
        return {"schema": SCHEMA, "run": {"id": uuid.uuid4().hex, "time": "t", "host": {"name": "h"},
                                         "device": "host", "argv": ["lkca-edge", "bench"]},
                "cells": cells}

    with ResultsStore(db) as store:
        if mode == "pause":
            store._con = PauseBeforeCells(store._con)
        while True:
            rid = store.record_run(results())
            print(f"recorded {rid}", flush=True)
""")


def _kill_writer(db: Path, mode: str, rng: random.Random, n_cells: int) -> int:
    """Start a writer, SIGKILL it mid-stream; returns how many runs it said it recorded."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(db), str(n_cells), mode],
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, text=True)
    seen = 0
    try:
        line = proc.stdout.readline()  # the first run committed (or, in pause mode, MID)
        assert line.startswith("recorded" if mode == "loop" else "MID"), line
        seen += line.startswith("recorded")
        if mode == "loop":
            time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        seen += sum(ln.startswith("recorded") for ln in proc.stdout.read().splitlines())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return seen


def test_history_survives_sigkill_mid_write(tmp_path):
    from lkca_edge.results import ResultsStore

    db = tmp_path / "runs.sqlite"
    rng = random.Random(1234)
    reported, n_cells = 0, 150
    for i in range(8):
        reported += _kill_writer(db, "loop", rng, n_cells)
    # one kill guaranteed to land inside a transaction (the run row inserted, its cells not yet)
    _kill_writer(db, "pause", rng, n_cells)
    wal = Path(str(db) + "-wal")
    assert wal.exists() and wal.stat().st_size > 0  # killed writers left their WAL behind

    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        runs = con.execute("SELECT id, n_ok, n_failed, results FROM runs").fetchall()
        # every run a writer reported is there; at most one per kill more (committed, unreported)
        assert reported <= len(runs) <= reported + 8
        for run_id, n_ok, n_failed, text in runs:
            n = con.execute("SELECT COUNT(*) FROM cells WHERE run_id = ?", (run_id,)).fetchone()[0]
            assert n == n_ok + n_failed == len(json.loads(text)["cells"]) == n_cells, run_id
        orphans = con.execute("SELECT COUNT(*) FROM cells WHERE run_id NOT IN (SELECT id FROM runs)")
        assert orphans.fetchone()[0] == 0
    finally:
        con.close()
    # and the store opens and keeps working
    with ResultsStore(db) as store:
        assert len(store.list_runs()) == len(runs)
        latest = store.get_run("latest")
        assert len(latest["cells"]) == n_cells
