"""What the bench's figures mean, on hand-made results objects: best cells, what to ship per
device profile (the one budget rule of lkca_edge.budgets), run-to-run comparison."""

from __future__ import annotations

import copy

import pytest

from lkca_edge.results import SCHEMA, Thresholds, best_cells, compare_results, what_to_ship
from lkca_edge.results.analysis import run_differences

PROFILES = {
    "phone": {"backends": ["tflite", "onnx"], "precisions": ["fp32", "int8"],
              "latency_budget_ms": 10.0, "ram_budget_mb": 100.0, "accuracy_gate": 1.0},
    "apple": {"backends": ["coreml"], "precisions": ["fp32", "fp16", "int8"],
              "latency_budget_ms": 10.0, "ram_budget_mb": 200.0, "accuracy_gate": 1.0},
}


def cell(backend, precision, median=None, p90=None, p95=None, mean=None, peak=50.0, acc=0.97,
         ref=0.97, passed=True, status="ok", estimate=False, runnable=True, trained=True,
         size=1000, note="", on_device=True):
    latency = None
    if any(v is not None for v in (median, p90, p95, mean)):
        latency = {"median": median, "p90": p90, "p95": p95, "mean": mean}
    return {
        "model": "lkca-1m", "backend": backend, "precision": precision, "status": status,
        "failed_step": None if status == "ok" else "convert", "error": None if status == "ok" else "boom",
        "mode": "measured" if latency else "static", "note": note,
        "metrics": {"latency_median_ms": median, "latency_p90_ms": p90, "peak_rss_mb": peak,
                    "accuracy": acc, "size_bytes": size, "accuracy_estimate": estimate,
                    "accuracy_drop_pts": None if acc is None else (ref - acc) * 100},
        "validation": {"passed": passed, "runnable": runnable, "estimate": estimate,
                       "accuracy": acc, "reference_accuracy": ref, "trained": trained,
                       "failures": [] if passed is not False else ["max_abs_err 1 > 0.0001"]},
        # measured on the device itself (a phone over adb), unless on_device=False: then on
        # this host under the device's profile, which gives no latency/memory verdict
        "profile": ({"latency_ms": latency, "mode": "adb" if on_device else "measured",
                     "host": {"machine": "x86_64"},
                     "verdict": {"on_device": on_device,
                                 "not_on_device": None if on_device else
                                 "measured on host x86_64, not on phone"}}
                    if latency else None),
    }


def results(*cells, device="phone"):
    return {"schema": SCHEMA, "run": {"device": device, "device_profiles": PROFILES},
            "cells": list(cells)}


def ship(res, device):
    return next(e for e in what_to_ship(res) if e["device"] == device)


def test_the_fastest_cell_within_every_budget_ships():
    res = results(cell("tflite", "int8", median=1.0, p90=1.2),
                  cell("onnx", "int8", median=0.8, p90=0.9),
                  cell("onnx", "fp32", median=0.5, p90=20.0))  # fastest median, p90 over budget
    e = ship(res, "phone")
    assert e["cell"] == ["lkca-1m", "onnx", "int8"]
    assert e["measured_on_this_device"] is True


def test_cells_measured_anywhere_but_on_the_device_never_ship():
    """A host run under the phone's profile is no measurement of the phone."""
    res = results(cell("onnx", "int8", median=0.8, p90=0.9, on_device=False),
                  cell("tflite", "int8", median=1.0, p90=1.2))
    e = ship(res, "phone")
    assert e["cell"] == ["lkca-1m", "tflite", "int8"]
    why = {tuple(r["cell"][1:]): r["why"] for r in e["rejected"]}
    assert why[("onnx", "int8")] == ("not measured on the device (measured on host x86_64, "
                                     "not on phone)")
    # a profile written for another device is not a measurement of this one either
    other = cell("onnx", "int8", median=0.8, p90=0.9)
    other["profile"]["device"] = "host"
    assert ship(results(other), "phone")["rejected"][0]["why"].startswith("not measured on the device")
    # results from before the rule: a host-measured cell counts for host only
    old = cell("onnx", "int8", median=0.8, p90=0.9)
    old["profile"] = {"latency_ms": old["profile"]["latency_ms"], "device": "phone", "mode": "measured"}
    assert "not measured on the device" in ship(results(old), "phone")["rejected"][0]["why"]


def test_the_memory_verdict_holds_what_the_device_would_hold():
    """ExecuTorch through its Python bindings: libtorch in the peak RSS, not on the device."""
    c = cell("onnx", "int8", median=1.0, p90=1.0, peak=450.0)
    assert "peak memory of 450 MB" in ship(results(c), "phone")["rejected"][0]["why"]
    c["metrics"]["device_memory_mb"] = 12.0
    assert ship(results(c), "phone")["cell"] == ["lkca-1m", "onnx", "int8"]


def test_p95_then_mean_stand_in_where_no_p90_is_reported():
    """The same budget rule as a profile's verdict: adb runners print no p90."""
    assert ship(results(cell("tflite", "int8", median=1.0, p95=12.0)), "phone")["cell"] is None
    assert ship(results(cell("tflite", "int8", median=1.0, mean=5.0)), "phone")["cell"] is not None
    why = ship(results(cell("tflite", "int8", median=1.0, p95=12.0)), "phone")["rejected"][0]["why"]
    assert why == "its p95 latency of 12 ms exceeds the 10 ms budget"


def test_every_cell_says_in_words_why_it_does_not_ship():
    res = results(cell("executorch", "fp32", median=1.0, p90=1.0),
                  cell("tflite", "fp16", median=1.0, p90=1.0),
                  cell("onnx", "int8", median=1.0, p90=1.0, passed=False),
                  cell("onnx", "fp32", median=1.0, p90=1.0, acc=0.90, ref=0.97, passed=None),
                  cell("tflite", "int8", median=1.0, p90=1.0, peak=300.0),
                  cell("tflite", "fp32", status="failed"),
                  cell("coreml", "fp32", note="latency needs macOS: Core ML predicts only on macOS"))
    e = ship(res, "phone")
    assert e["cell"] is None
    why = {tuple(r["cell"][1:]): r["why"] for r in e["rejected"]}
    assert why[("executorch", "fp32")] == "phone does not run executorch (it runs tflite, onnx)"
    assert why[("tflite", "fp16")].startswith("phone does not run fp16 models")
    assert why[("onnx", "int8")] == "it failed its validation gate (max_abs_err 1 > 0.0001)"
    assert why[("onnx", "fp32")] == "its accuracy drop of 7.00 pt exceeds the 1 pt gate"
    assert why[("tflite", "int8")] == "its peak memory of 300 MB exceeds the 100 MB budget"
    assert why[("tflite", "fp32")].startswith("its convert failed")
    assert "onnx int8: it failed its validation gate" in e["reason"]
    apple = ship(res, "apple")
    assert any(r["why"].startswith("no latency was measured (latency needs macOS")
               for r in apple["rejected"])


def test_estimates_and_untrained_models_never_ship():
    est = cell("onnx", "int8", median=1.0, p90=1.0, estimate=True, runnable=False)
    assert "only an off-device estimate" in ship(results(est), "phone")["rejected"][0]["why"]
    untrained = cell("onnx", "int8", median=1.0, p90=1.0, trained=False)
    assert "untrained" in ship(results(untrained), "phone")["rejected"][0]["why"]


def test_best_cells_marks_ties_and_ignores_estimates():
    res = results(cell("tflite", "int8", median=1.0, size=500),
                  cell("onnx", "int8", median=1.0, size=800),
                  cell("onnx", "fp32", median=2.0, acc=0.99, estimate=True, size=800))
    best = best_cells(res)
    assert best["latency_median_ms"] == {("lkca-1m", "tflite", "int8"), ("lkca-1m", "onnx", "int8")}
    assert best["size_bytes"] == {("lkca-1m", "tflite", "int8")}
    assert ("lkca-1m", "onnx", "fp32") not in best.get("accuracy", set())  # an estimate never wins
    # a metric on which every cell ties marks none
    assert "peak_rss_mb" not in best


def test_compare_flags_regressions_beyond_thresholds_only():
    a = results(cell("onnx", "int8", median=1.0, p90=1.0, peak=50, size=1000, acc=0.97),
                cell("tflite", "int8", median=1.0, p90=1.0))
    b = copy.deepcopy(a)
    b["cells"][0]["metrics"].update(latency_median_ms=1.05, peak_rss_mb=70.0, size_bytes=1200,
                                    accuracy=0.95)
    b["cells"][1]["status"], b["cells"][1]["error"] = "failed", "converter crashed"
    b["cells"].append(cell("onnx", "fp32", median=2.0))
    changes = {c.key[1:]: c for c in compare_results(a, b)}
    onnx = changes[("onnx", "int8")]
    assert not any(r.startswith("latency") for r in onnx.regressions)  # +5 % < 10 %
    assert "peak memory +40% (> 10%)" in onnx.regressions and "size +20% (> 10%)" in onnx.regressions
    assert "accuracy -2.00 pt (> 0.5 pt)" in onnx.regressions
    assert changes[("tflite", "int8")].regressions == ["now fails: converter crashed"]
    assert changes[("onnx", "fp32")].notes == ["new in B"]
    loose = compare_results(a, b, Thresholds(memory_pct=100, size_pct=100, accuracy_pts=5))
    assert not {c.key[1:]: c for c in loose}[("onnx", "int8")].regressions


def test_compare_warns_when_the_runs_differ_in_their_conditions():
    a = results(cell("onnx", "int8", median=1.0))
    a["run"].update(host={"name": "box", "cpu": "EPYC"}, threads=1,
                    data={"lkca-1m": {"spec": "digits"}}, weights={"lkca-1m": "shipped weights"},
                    versions={"onnxruntime": "1.31.1"})
    b = copy.deepcopy(a)
    assert run_differences(a, b) == []
    b["run"].update(host={"name": "pi", "cpu": "Cortex-A76"}, device="apple", threads=4,
                    data={"lkca-1m": {"spec": "folder:/photos"}},
                    weights={"lkca-1m": "checkpoint mine.pt"}, versions={"onnxruntime": "1.32.0"})
    text = " | ".join(run_differences(a, b))
    for needle in ("host: box / EPYC vs pi / Cortex-A76", "device profile: phone vs apple",
                   "threads: 1 vs 4", "data of lkca-1m: digits vs folder:/photos",
                   "weights of lkca-1m", "onnxruntime 1.31.1 vs 1.32.0"):
        assert needle in text, text


@pytest.mark.parametrize("bad", [{"p90": float("nan")}, {}])
def test_a_missing_or_nan_latency_never_fits(bad):
    c = cell("onnx", "int8", median=1.0)
    c["profile"] = {"latency_ms": bad}
    c["metrics"]["latency_p90_ms"] = None
    assert ship(results(c), "phone")["cell"] is None


def test_terminal_table_fits_100_columns_unless_wide(capsys):
    from types import SimpleNamespace

    from lkca_edge.apps.console import print_bench_summary

    res = results(*(cell(b, p, median=1.23, p90=1.5) for b in ("executorch", "tflite", "onnx")
                    for p in ("fp32", "int8")), cell("coreml", "int8", note="latency needs macOS"))
    res["run"].update(models=["lkca-1m"], device="phone")
    res["ship"] = what_to_ship(res)
    outcome = SimpleNamespace(results=res, files={"report.html": "r.html"}, out_dir="run",
                              run_id=None, db_path=None, db_error=None)
    print_bench_summary(outcome)
    narrow = capsys.readouterr().out
    table = [line for line in narrow.splitlines() if line[:1] in "┏┃┡│└"]
    assert len(table) >= 8 and max(len(line) for line in table) <= 100
    print_bench_summary(outcome, wide=True)
    assert "conv s" in capsys.readouterr().out and "conv s" not in narrow
