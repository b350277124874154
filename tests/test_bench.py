"""`lkca-edge bench`, its report, the run history, `lkca-edge runs` and `lkca-edge compare`.

One small real bench: lkca-1m (shipped digits weights) converted to ONNX and to every other
backend whose converter is installed here, fp32 and int8, validated on the real digits test
split and profiled with few runs. Nothing is faked: the only doctored figures are a copy of a
recorded run, inserted through the results-store API to simulate a slowdown for `compare`.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import csv
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lkca_edge.results import SCHEMA, ResultsStore, new_run_id, pareto_front

REPO = Path(__file__).resolve().parent.parent
RUNS, WARMUP, OP_RUNS = 10, 2, 2
LIMIT = 100  # held-out digits each cell validates on (and its per-layer table reads)
PRECISIONS = ["fp32", "int8"]


def _installed(name: str) -> bool:
    from lkca_edge.converters import get_backend

    try:
        return get_backend(name).available() is None
    except ModuleNotFoundError:  # the backend's converter module is not there at all
        return False


BACKENDS = ["onnx"] + [b for b in ("executorch", "tflite", "coreml") if _installed(b)]


def cli(argv: list[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from lkca_edge.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    return tmp_path_factory.mktemp("history") / "runs.sqlite"


@pytest.fixture(scope="module")
def bench(tmp_path_factory, history):
    """The real bench, run once for this module: (run dir, exit code, stdout, stderr)."""
    out = tmp_path_factory.mktemp("bench") / "run1"
    code, stdout, stderr = cli(["bench", "--models", "lkca-1m", "--backends", *BACKENDS,
                                "--precisions", *PRECISIONS, "--runs", str(RUNS),
                                "--warmup", str(WARMUP), "--op-runs", str(OP_RUNS),
                                "--limit", str(LIMIT), "--out", str(out), "--db", str(history)])
    return out, code, stdout, stderr


@pytest.fixture(scope="module")
def results(bench):
    return json.loads((bench[0] / "results.json").read_text())


def _runnable(backend: str) -> bool:
    from lkca_edge.converters import get_backend

    return get_backend(backend).runnable() is None


# -- the run and results.json ------------------------------------------------------------------------
@pytest.mark.slow
def test_bench_runs_and_prints_summary(bench, results):
    out, code, stdout, stderr = bench
    assert code == 0, stderr
    for name in ("results.json", "results.csv", "report.md", "report.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    # the terminal summary: a table with every cell and the best-per-metric marks
    assert "lkca-edge bench" in stdout and "★" in stdout
    for backend in BACKENDS:
        assert backend in stdout
    assert "what to ship" in stdout and "report:" in stdout
    assert re.search(r"recorded as run \d+ in ", stdout)
    # the table fits a 100-column terminal; --wide (and the report) have every column
    from tests.conftest import summary_table_lines

    table = summary_table_lines(stdout)
    assert len(table) >= 2 and max(len(line) for line in table) <= 100, table
    assert not any("…" in line for line in table), table  # no column cut short
    assert "conv s" not in stdout and "--wide" in stdout
    # no temporary files left behind by the atomic writes
    assert not [p for p in out.rglob("*") if ".partial" in p.name]


@pytest.mark.slow
def test_results_schema_and_cells(results):
    assert results["schema"] == SCHEMA
    run = results["run"]
    for key in ("time", "host", "versions", "command_line", "device", "id"):
        assert run.get(key), key
    assert run["device"] == "host" and run["complete"] is True
    assert run["host"]["cpu"] and run["versions"]["onnxruntime"]
    assert run["command_line"].startswith("lkca-edge bench")
    assert "shipped weights" in run["weights"]["lkca-1m"]
    cells = results["cells"]
    assert [(c["backend"], c["precision"]) for c in cells] == \
        [(b, p) for b in BACKENDS for p in PRECISIONS]
    for c in cells:
        name = f"{c['backend']} {c['precision']}"
        assert c["status"] == "ok", (name, c["error"])
        assert c["error"] is None and c["model"] == "lkca-1m" and c["recipe"]
        m = c["metrics"]
        assert m["conversion_s"] > 0 and m["size_bytes"] > 10_000, name
        v = c["validation"]
        assert v["n_images"] == LIMIT and v["reference_accuracy"] > 0.9, name
        assert c["profile"]["device"] == "host" and c["profile"]["size_bytes"] == m["size_bytes"]
        if _runnable(c["backend"]):
            assert c["mode"] == "measured", name
            assert 0 < m["latency_median_ms"] <= m["latency_p90_ms"], name
            assert m["load_ms"] > 0 and m["peak_rss_mb"] > 1, name
            assert m["accuracy"] > 0.9 and m["top1_agreement"] >= 0.98, name
            assert m["accuracy_drop_pts"] == pytest.approx((v["reference_accuracy"] - v["accuracy"]) * 100, abs=1e-3)
            assert v["passed"] is True
            verdict = c["profile"]["verdict"]
            assert {"memory_ok", "latency_ok", "accuracy_ok"} <= set(verdict)
        else:  # Core ML on Linux: static figures, and the reason for what is missing
            assert c["mode"] == "static", name
            assert m["latency_median_ms"] is None and m["peak_rss_mb"] is None
            assert m["accuracy"] is None or m["accuracy_estimate"] is True  # never a measurement
            assert "macOS" in c["note"], c["note"]
        if c["backend"] == "executorch":
            d = c["delegation"]
            assert d["delegated_ops"] > 0 and 0 < d["coverage"] <= 1
    fp32 = {c["backend"]: c for c in cells if c["precision"] == "fp32"}
    assert fp32["onnx"]["validation"]["max_abs_err"] <= 1e-4
    # the int8 artifacts are smaller than the fp32 ones of the same backend
    for c in cells:
        if c["precision"] == "int8":
            assert c["metrics"]["size_bytes"] < fp32[c["backend"]]["metrics"]["size_bytes"]


@pytest.mark.slow
def test_pareto_and_ship(results):
    front = pareto_front(results)
    assert front
    ok = [c for c in results["cells"] if c["metrics"].get("latency_median_ms") is not None]
    keyed = {(c["model"], c["backend"], c["precision"]): c for c in ok}
    for key in front:  # nothing on the front is beaten on both axes
        a = keyed[key]["metrics"]
        assert not any(b["metrics"]["latency_median_ms"] < a["latency_median_ms"]
                       and b["metrics"]["accuracy"] > a["accuracy"] for b in ok)
    ship = {e["device"]: e for e in results["ship"]}
    assert {"host", "pixel-8", "iphone-15", "raspberry-pi-5"} <= set(ship)
    for name, e in ship.items():
        prof = results["run"]["device_profiles"][name]
        if e["cell"]:
            model, backend, precision = e["cell"]
            assert backend in prof["backends"] and precision in prof["precisions"]
            assert e["latency_p90_ms"] <= prof["latency_budget_ms"]
        else:
            assert e["reason"]


@pytest.mark.slow
def test_csv(bench, results):
    rows = list(csv.DictReader(io.StringIO((bench[0] / "results.csv").read_text())))
    assert len(rows) == len(results["cells"])
    for row, cell in zip(rows, results["cells"]):
        assert (row["backend"], row["precision"], row["status"]) == \
            (cell["backend"], cell["precision"], cell["status"])
        assert float(row["size_bytes"]) == cell["metrics"]["size_bytes"]
        if cell["metrics"].get("latency_median_ms") is not None:
            assert float(row["latency_median_ms"]) == pytest.approx(cell["metrics"]["latency_median_ms"])


@pytest.mark.slow
def test_report_markdown(bench, results):
    md = (bench[0] / "report.md").read_text()
    assert md.startswith("# lkca-edge bench")
    for section in ("## What to ship", "## Results", "## Plots", "## Run"):
        assert section in md
    assert "| model | backend | precision | status |" in md
    for c in results["cells"]:
        assert f"| {c['model']} | {c['backend']} | {c['precision']} |" in md
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (bench[0] / rel).is_file(), rel
    assert "plots/latency.png" in md and "plots/accuracy_vs_latency.png" in md
    if "executorch" in BACKENDS:
        assert "## Delegation coverage" in md
    for c in results["cells"]:  # off-device estimates are labelled as such
        if c["metrics"].get("accuracy_estimate"):
            assert re.search(rf"\| {c['backend']} \| {c['precision']} \| ok \(static\) \|[^\n]* est\. ", md)


@pytest.mark.slow
def test_int8_cells_carry_layers_and_every_runnable_cell_operator_times(bench, results):
    """Issue 14: the per-layer table of every int8 cell (in results and in the report, with its
    plot) and per-operator time of every cell whose backend runs here, charged to layers where
    the backend allows."""
    md = (bench[0] / "report.md").read_text()
    assert "## Per-layer numerics" in md and "## Operator time per cell" in md
    for c in results["cells"]:
        name = f"{c['backend']} {c['precision']}"
        if c["precision"] == "int8":
            layers = c["per_layer"]["layers"]
            assert [x["name"] for x in layers][:2] == ["patch_embed", "blocks.0.mixer"], name
            assert all(15 < x["sqnr_db"] < 80 for x in layers), name
            assert f"### lkca-1m {name}" in md
            assert (bench[0] / "plots" / f"layers_lkca-1m_{c['backend']}_int8.png").is_file()
        else:
            assert c["per_layer"] is None, name
        ops = c["profile"]["ops"]
        if _runnable(c["backend"]):
            timed = [o for o in ops if o.get("ms") is not None]
            assert timed, name
            for o in timed:
                assert {"name", "type", "count", "total_ms", "mean_ms", "share"} <= set(o), name
            assert c["profile"]["details"]["ops_method"], name
            if c["backend"] in ("executorch", "onnx"):  # charged to the source layers
                assert {o["module"] for o in timed} >= {"patch_embed", "blocks.0.mlp", "head"}, name
        if c["backend"] == "tflite":
            d = c["delegation"]
            assert d["delegated_ops"] > 0 and d["subgraphs"]["XNNPACK partitions"] >= 1, name
            if c["precision"] == "int8":
                assert d["not_delegated"] == {"GELU": 9}  # the int8 GELU splits the graph


@pytest.mark.slow
def test_report_html_is_self_contained(bench, results):
    from PIL import Image

    text = (bench[0] / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>")
    # nothing loaded from anywhere: no external src/href, no scripts, no stylesheets by URL
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", text, re.I)
    assert "<script" not in text.lower() and "<link" not in text.lower()
    images = re.findall(r'<img[^>]*src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == text.count("<img") >= 4
    for data in images:
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(io.BytesIO(png)) as im:
            assert im.width > 200 and im.height > 200
    assert text.count("<table") >= 2
    for c in results["cells"]:
        assert f"<td>{c['backend']}</td><td>{c['precision']}</td>" in text


@pytest.mark.slow
def test_failed_cell_is_recorded_and_the_rest_goes_on(tmp_path):
    """An impossible cell (onnx has no fp16 recipe) fails with one line; onnx fp32 still runs."""
    code, stdout, stderr = cli(["bench", "--backends", "onnx", "--precisions", "fp16,fp32",
                                "--runs", "3", "--warmup", "0", "--op-runs", "0", "--limit", "60",
                                "--out", str(tmp_path / "run"), "--no-history", "--no-progress"])
    assert code == 0, stderr
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    bad, good = res["cells"]
    assert bad["status"] == "failed" and bad["failed_step"] == "convert"
    assert "fp16" in bad["error"] and "\n" not in bad["error"]
    assert good["status"] == "ok" and good["metrics"]["latency_median_ms"] > 0
    # the table marks the cell FAILED; the note under it names the step and the error
    from tests.conftest import summary_table_lines

    assert any("fp16" in line and "FAILED" in line for line in summary_table_lines(stdout))
    assert "lkca-1m onnx fp16 — convert failed: " in stdout
    html = (tmp_path / "run" / "report.html").read_text()
    assert 'class="failed"' in html and "fp16" in html


@pytest.mark.parametrize("argv, needle", [
    (["--backends", "onnxx"], "unknown backend 'onnxx'"),
    (["--precisions", "int4"], "unknown precision 'int4'"),
    (["--models", "lkca-3m"], "lkca-3m"),
    (["--runs", "0"], "--runs must be at least 1"),
    (["--device", "pixel-9"], "pixel-9"),
    (["--models", "lkca-1m", "vit-1m", "--checkpoint", "x.pt"], "--checkpoint applies to one model"),
    (["--backends", "coreml", "--precisions", "int8-mixed"],
     "no cell to bench: int8-mixed exists for executorch, tflite, onnx, not for coreml"),
])
def test_bad_arguments_are_one_line(tmp_path, argv, needle):
    code, stdout, stderr = cli(["bench", *argv, "--out", str(tmp_path / "r"), "--no-history"])
    assert code == 2
    assert needle in stderr and len(stderr.strip().splitlines()) == 1, stderr


# -- history: runs and compare --------------------------------------------------------------------------
@pytest.mark.slow
def test_history_runs_and_compare(bench, results, history, tmp_path):
    assert bench[1] == 0
    # a second real run, smaller, into the same history
    code, stdout, stderr = cli(["bench", "--backends", "onnx", "--precisions", "fp32", "--runs", "5",
                                "--warmup", "1", "--op-runs", "0", "--out", str(tmp_path / "run2"),
                                "--db", str(history), "--no-progress"])
    assert code == 0, stderr

    code, stdout, _ = cli(["runs", "--db", str(history), "--json"])
    assert code == 0
    runs = json.loads(stdout)
    assert len(runs) == 2 and runs[0]["id"] > runs[1]["id"]
    first, second = runs[1], runs[0]
    assert first["n_ok"] == len(results["cells"]) and first["n_failed"] == 0
    assert second["n_ok"] == 1 and first["models"] == ["lkca-1m"] and first["host"]
    code, stdout, _ = cli(["runs", "--db", str(history)])
    assert code == 0 and str(first["id"]) in stdout and "lkca-1m" in stdout

    # two real runs: the shared cell compares; timing noise between two runs on a busy machine
    # is no regression under thresholds that generous (the artifacts are the same recipe)
    code, stdout, stderr = cli(["compare", str(first["id"]), str(second["id"]), "--db", str(history),
                                "--latency-threshold", "1000", "--memory-threshold", "1000"])
    assert code == 0, stdout + stderr
    assert "lkca-1m onnx fp32" in stdout and "not in B" in stdout

    # a copy of run 1 recorded as is: no regression
    with ResultsStore(history) as store:
        base = store.get_run(first["id"])
        assert base["cells"] == results["cells"]
        same = copy.deepcopy(base)
        same["run"]["id"] = new_run_id()
        same_id = store.record_run(same, label="copy of run %d" % first["id"])
        slow = copy.deepcopy(base)
        slow["run"]["id"] = new_run_id()
        for c in slow["cells"]:
            for k in ("latency_median_ms", "latency_p90_ms", "latency_p99_ms", "latency_mean_ms"):
                if c["metrics"].get(k) is not None:
                    c["metrics"][k] *= 1.5
            lat = (c.get("profile") or {}).get("latency_ms")
            for k, v in (lat or {}).items():
                if v is not None:
                    lat[k] = v * 1.5
        slow_id = store.record_run(slow, label="simulated 50% slowdown")
    code, stdout, stderr = cli(["compare", str(first["id"]), str(same_id), "--db", str(history)])
    assert code == 0, stdout + stderr
    assert "no regression" in stdout

    code, stdout, stderr = cli(["compare", str(first["id"]), str(slow_id), "--db", str(history)])
    assert code == 1, stdout + stderr
    assert "latency +50%" in stdout and "regressed cell" in stdout

    # a looser threshold accepts the slowdown; JSON output says the same
    code, stdout, _ = cli(["compare", str(first["id"]), str(slow_id), "--db", str(history),
                           "--latency-threshold", "60", "--json"])
    assert code == 0 and json.loads(stdout)["regressions"] == 0
    # run directories work as references too
    code, _, _ = cli(["compare", str(bench[0]), str(same_id), "--db", str(history)])
    assert code == 0
    code, _, stderr = cli(["compare", "999", "latest", "--db", str(history)])
    assert code == 2 and "no run 999" in stderr


@pytest.mark.slow
def test_history_database_is_wal(history, bench):
    con = sqlite3.connect(history)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("SELECT COUNT(*) FROM cells").fetchone()[0] >= len(BACKENDS) * 2
    finally:
        con.close()


def test_default_db_path(monkeypatch, tmp_path):
    from lkca_edge.results import default_db_path, resolve_db_path

    monkeypatch.delenv("LKCA_EDGE_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_db_path() == tmp_path / "data" / "lkca-edge" / "runs.sqlite"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_db_path() == Path.home() / ".local" / "share" / "lkca-edge" / "runs.sqlite"
    monkeypatch.setenv("LKCA_EDGE_DB", str(tmp_path / "env.sqlite"))
    assert default_db_path() == tmp_path / "env.sqlite"
    assert resolve_db_path(str(tmp_path / "x.sqlite")) == tmp_path / "x.sqlite"


def test_runs_without_history(tmp_path):
    code, stdout, _ = cli(["runs", "--db", str(tmp_path / "none.sqlite")])
    assert code == 0 and "no runs recorded yet" in stdout


def test_corrupt_history_is_one_line(tmp_path):
    bad = tmp_path / "runs.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    code, _, stderr = cli(["runs", "--db", str(bad)])
    assert code == 2 and "not a usable lkca-edge run history" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_commands_import_no_torch():
    """`lkca-edge --help` (which imports every command module) stays torch-free."""
    code = ("import sys; from lkca_edge.cli import build_parser; build_parser(); "
            "import lkca_edge.results; "
            "heavy = [m for m in ('torch', 'matplotlib', 'onnxruntime') if m in sys.modules]; "
            "assert not heavy, heavy")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
