"""The bench's report.html in a real browser: headless Debian Chromium (`apt-get install chromium`).

A copy of the report gets a small script at the top of <head> that records errors (uncaught
exceptions, failed resource loads, console.error/warn) and, on the load event, writes what it
sees into the DOM: every table's size and rows, every image's natural and shown size. Chromium
renders it with --dump-dom; the test reads that result back, and also checks that Chromium logged
no console message at all (the report itself has no scripts). A screenshot of the untouched
report is saved in the test's tmp dir, and copied to $LKCA_EDGE_RUNS_DIR/report-screenshot.png
when that variable names a directory (e.g. LKCA_EDGE_RUNS_DIR=runs).

The report comes from a small real bench (ONNX fp32 and int8, plus an impossible onnx fp16 cell
so the failed-cell rendering is covered), or from an existing run when LKCA_EDGE_REPORT names a
run directory or report.html.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                 "(apt-get install -y chromium)")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

PROBE = """<script>(function () {
  var errors = [];
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window && t.tagName) {
      errors.push('failed to load ' + t.tagName.toLowerCase() + ' ' + String(t.currentSrc || t.src || t.href || '').slice(0, 60));
    } else {
      errors.push('uncaught: ' + e.message);
    }
  }, true);
  window.addEventListener('unhandledrejection', function (e) { errors.push('unhandled rejection: ' + e.reason); });
  ['error', 'warn'].forEach(function (level) {
    var original = console[level];
    console[level] = function () {
      errors.push('console.' + level + ': ' + Array.prototype.join.call(arguments, ' '));
      return original.apply(console, arguments);
    };
  });
  window.addEventListener('load', function () {
    var box = function (el) { var r = el.getBoundingClientRect(); return [r.width, r.height]; };
    var result = {
      title: document.title,
      errors: errors,
      headings: Array.prototype.map.call(document.querySelectorAll('h2'), function (h) { return h.textContent; }),
      images: Array.prototype.map.call(document.images, function (im) {
        return {alt: im.alt, complete: im.complete, naturalWidth: im.naturalWidth,
                naturalHeight: im.naturalHeight, shown: box(im)};
      }),
      tables: Array.prototype.map.call(document.querySelectorAll('table'), function (t) {
        return {cls: t.className, rows: t.tBodies.length ? t.tBodies[0].rows.length : 0,
                cols: t.tHead ? t.tHead.rows[0].cells.length : 0, shown: box(t)};
      })
    };
    var pre = document.createElement('pre');
    pre.id = 'lkca-probe';
    pre.textContent = JSON.stringify(result);
    document.body.appendChild(pre);
  });
})();</script>"""


def chromium(args: list[str], profile_dir: Path, timeout: float = 120) -> tuple[int, str, str]:
    """Run headless Chromium with a fresh profile; kill its whole process group on timeout."""
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"chromium did not finish within {timeout} s: {err[-2000:]}")
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    given = os.environ.get("LKCA_EDGE_REPORT")
    if given:
        path = Path(given)
        return (path / "report.html" if path.is_dir() else path).resolve()
    from lkca_edge.cli import main

    out = tmp_path_factory.mktemp("browser-bench") / "run"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        code = main(["bench", "--backends", "onnx", "--precisions", "fp32", "int8", "fp16",
                     "--runs", "10", "--warmup", "2", "--op-runs", "2", "--limit", "120",
                     "--out", str(out), "--no-history", "--no-progress"])
    assert code == 0, buf.getvalue()
    return out / "report.html"


@pytest.fixture(scope="module")
def results(report) -> dict:
    return json.loads((report.parent / "results.json").read_text())


@pytest.fixture(scope="module")
def probe(report, tmp_path_factory):
    """The probe's findings after Chromium loaded a copy of the report, and Chromium's log."""
    work = tmp_path_factory.mktemp("browser")
    text = report.read_text(encoding="utf-8")
    assert "<head>" in text
    page = work / "report-probe.html"
    page.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    code, dom, log = chromium(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                               "--dump-dom", page.as_uri()], work / "profile")
    assert code == 0, log[-2000:]
    m = re.search(r'<pre id="lkca-probe">(.*?)</pre>', dom, re.S)
    assert m, f"the probe wrote nothing (did the page load?): {dom[:500]}"
    return json.loads(html.unescape(m.group(1))), log


def test_no_errors_and_no_console_messages(probe):
    found, log = probe
    assert found["errors"] == []
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert console == [], console


def test_every_plot_rendered(probe, report):
    found, _ = probe
    n_img = report.read_text().count("<img")
    assert n_img >= 4 and len(found["images"]) == n_img
    for im in found["images"]:
        assert im["complete"] and im["naturalWidth"] > 0 and im["naturalHeight"] > 0, im
        assert im["shown"][0] > 100 and im["shown"][1] > 100, im
    alts = {im["alt"] for im in found["images"]}
    assert {"Latency by backend and precision", "Accuracy vs latency",
            "Artifact size by backend and precision"} <= alts


def test_every_table_rendered(probe, results):
    found, _ = probe
    tables = found["tables"]
    assert len(tables) >= 2
    for t in tables:
        assert t["rows"] > 0 and t["cols"] > 0, t
        assert t["shown"][0] > 0 and t["shown"][1] > 0, t
    main = [t for t in tables if t["cls"] == "results"]
    assert len(main) == 1 and main[0]["rows"] == len(results["cells"])
    assert {"What to ship", "Results", "Plots", "Run"} <= set(found["headings"])
    assert found["title"].startswith("lkca-edge bench")


def test_screenshot(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "report-screenshot.png"
    code, _, log = chromium(["--hide-scrollbars", "--window-size=1400,3000",
                             "--run-all-compositor-stages-before-draw", "--virtual-time-budget=5000",
                             f"--screenshot={shot}", report.as_uri()], tmp_path / "profile")
    assert code == 0 and shot.is_file(), log[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1400, 3000)
        colors = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colors is None or len(colors) > 50  # a rendered page, not a blank one
    runs_dir = os.environ.get("LKCA_EDGE_RUNS_DIR")
    if runs_dir:
        Path(runs_dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(runs_dir) / "report-screenshot.png")
