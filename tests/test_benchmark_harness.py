"""Smoke test of benchmarks/operator_forms.py: --quick on ONNX only, one round, a few runs; its
result file renders into the README's figures; bad options are refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "operator_forms.py"



@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path_factory.mktemp("operator_forms")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--backends", "onnx", "--rounds", "1",
         "--runs-per-round", "3", "--warmup", "1", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "operator_forms.json").read_text()), out, proc.stdout


@pytest.mark.slow
def test_json_has_baseline_peak_and_a_ratio_per_variant(quick_run):
    res, out, _ = quick_run
    assert res["schema"] == "lkca-edge-operator-forms/1"
    rows = {r["id"]: r for r in res["rows"]}
    threads = [str(n) for n in res["settings"]["threads"]]
    assert threads == ["1", "2"]

    base = rows["lkca-1m@32/torch/conv/fp32"]
    for n in threads:
        assert base["threads"][n]["median_ms"] > 0
        assert base["threads"][n]["speedup"] == pytest.approx(1.0)

    for precision in ("fp32", "int8"):
        for n in threads:
            assert res["peak"]["best"][precision][n]["gmacs"] > 0

    timed = [r for r in res["rows"] if r["threads"]]
    artifacts = [r for r in timed if r["kind"] == "artifact"]
    assert {r["form"] for r in artifacts if r["family"] == "lkca"} == {"conv", "fused"}
    assert {r["precision"] for r in artifacts} == {"fp32", "int8"}
    assert any(r["family"] == "vit" for r in artifacts), "the matched ViT goes through the pipeline"
    for r in timed:
        for n in threads:
            t = r["threads"][n]
            assert t["median_ms"] > 0 and t["speedup"] > 0 and t["gmacs"] > 0, (r["id"], t)
            assert t["peak_fraction"] is not None
    # every converted cell is accounted for: timed, or recorded with its reason
    for r in res["rows"]:
        assert r["threads"] or r["reason"], r["id"]


@pytest.mark.slow
def test_targets_rules_and_markdown(quick_run):
    res, out, stdout = quick_run
    names = [c["target"] for c in res["targets"]["checks"]]
    assert any("int8 artifact >= 12x" in n for n in names)
    assert any(n.startswith("onnx: default int8") for n in names)
    assert any("default matrix" in n for n in names)
    # the matrix needs all four backends: with ONNX alone it is reported incomplete, not met
    matrix = next(c for c in res["targets"]["checks"] if "default matrix" in c["target"])
    assert matrix["met"] is None and "INCOMPLETE" in matrix["detail"]
    assert "onnx/fp32" in res["form_rules"]["proposed"] and "onnx/int8" in res["form_rules"]["proposed"]
    md = (out / "operator_forms.md").read_text()
    assert "## Targets" in md and "EXPORT_FORM_RULES" in md and "## Measured peak" in md
    assert "Proposed `EXPORT_FORM_RULES`" in stdout


@pytest.mark.slow
def test_the_result_renders_into_the_readme_figures(quick_run):
    """What the harness writes is what benchmarks/render_readme.py reads."""
    res, _, _ = quick_run
    sys.path.insert(0, str(REPO / "benchmarks"))
    import render_readme

    text = render_readme.render_operator_forms(res, "benchmarks/results/operator_forms/operator_forms.json")
    assert text.startswith("**Reduced configuration, not the full matrix**: `--quick`")
    assert "`rounds` 1 (full: 10)" in text
    assert "#### Targets (lkca-1m@32, batch 1, 1 thread)" in text and "#### Measured peak" in text
    for r in res["rows"]:  # every timed variant's median is in its model's table
        for n, t in r["threads"].items():
            if "median_ms" in t:
                assert f"| {t['median_ms']:.3f} |" in text, (r["id"], n)


@pytest.mark.parametrize("argv, words", [
    (["--backends", "onxx"], "unknown backend 'onxx'; did you mean: onnx?"),
    (["--rounds", "0"], "--rounds must be at least 1"),
    (["--threads", "0"], "--threads takes positive thread counts"),
])
def test_bad_options_are_one_line(argv, words, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(SCRIPT), *argv, "--out", str(tmp_path / "out")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("operator_forms.py: error: ")
    assert not (tmp_path / "out").exists()
