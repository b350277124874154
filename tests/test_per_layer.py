"""Per-layer numerics: metrics, the structural layer location, and every runnable backend's
per-layer table on real artifacts, including one altered after export."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest

from lkca_edge.converters._graph import GraphOp, TensorGraph, locate_layers
from lkca_edge.errors import UserError
from lkca_edge.gates import ErrorStats, tensor_metrics
from tests.conftest import copy_artifact


def test_error_stats_over_batches_equal_one_pass():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((10, 64))
    act = ref + 0.01 * rng.standard_normal((10, 64))
    stats = ErrorStats()
    for i in range(0, 10, 3):
        stats.update(ref[i:i + 3], act[i:i + 3])
    whole = tensor_metrics(ref, act)
    for key, value in stats.metrics().items():
        assert value == pytest.approx(whole[key], rel=1e-9)
    assert whole["sqnr_db"] == pytest.approx(40, abs=0.5)  # noise 1 % of the signal's amplitude
    assert tensor_metrics(ref, ref)["sqnr_db"] == 200.0  # identical: the finite cap


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_output_is_the_worst_layer_not_a_perfect_one(bad):
    """One NaN or infinity in a layer's output: the lowest SQNR, cosine 0, an infinite noise
    ratio (so it is named among the worst layers), and figures that stay valid JSON."""
    import json

    ref = np.linspace(-1, 1, 64).reshape(4, 16)
    act = ref.copy()
    act[2, 5] = bad
    stats = ErrorStats().update(ref[:2], act[:2]).update(ref[2:], act[2:])
    m = stats.metrics()
    assert m["sqnr_db"] == -200.0 and m["cosine"] == 0.0, m
    assert stats.noise_ratio() == float("inf")
    assert m["max_abs_err"] == 0.0  # over the finite values, which are exact here
    json.loads(json.dumps(m, allow_nan=False))


def _toy_graph(depth: int, extra_residual: bool = False) -> TensorGraph:
    """A transformer-shaped graph: embed + positions, per block norm -> branch -> residual add
    twice (with a constant shift add and an eps add inside), pool, head."""
    ops = [GraphOp("FC", ("x",), ("e",)), GraphOp("ADD", ("e", "pos"), ("s0",), is_add=True)]
    s = "s0"
    for b in range(depth):
        for part in ("mix", "mlp"):
            p = f"{part}{b}"
            ops += [GraphOp("MEAN", (s,), (f"{p}_m",)),
                    GraphOp("ADD", (f"{p}_m", "eps"), (f"{p}_v",), is_add=True),
                    GraphOp("MUL", (s, f"{p}_v"), (f"{p}_n",)),
                    GraphOp("ADD", (f"{p}_n", "shift"), (f"{p}_h",), is_add=True),
                    GraphOp("FC", (f"{p}_h",), (f"{p}_out",)),
                    GraphOp("ADD", (s, f"{p}_out"), (f"{p}_sum",), is_add=True)]
            s = f"{p}_sum"
    if extra_residual:
        ops.append(GraphOp("ADD", (s, "mlp0_out"), ("late",), is_add=True))
        s = "late"
    ops += [GraphOp("MEAN", (s,), ("pooled",)), GraphOp("FC", ("pooled",), ("logits",))]
    numel = {v: 12 for op in ops for v in op.outputs}
    numel.update({"x": 48, "pooled": 3, "logits": 10, "mix0_m": 4})
    return TensorGraph(ops=ops, inputs=("x",), outputs=("logits",), numel=numel)


def test_layers_are_found_by_structure_not_names():
    where = locate_layers(_toy_graph(2), depth=2, tokens=4, dim=3)
    assert where.values == {"patch_embed": "s0", "blocks.0.mixer": "mix0_out",
                            "blocks.0.mlp": "mlp0_out", "blocks.0": "mlp0_sum",
                            "blocks.1.mixer": "mix1_out", "blocks.1.mlp": "mlp1_out",
                            "blocks.1": "mlp1_sum", "head": "logits"}
    assert where.stream == ["s0", "mix0_sum", "mlp0_sum", "mix1_sum", "mlp1_sum"]
    # every op is charged to a layer: embed + positions, then each branch with its norm and add
    assert where.op_layers[:2] == ["patch_embed", "patch_embed"]
    assert where.op_layers[2:8] == ["blocks.0.mixer"] * 6
    assert where.op_layers[-2:] == ["head", "head"]


def test_a_graph_without_the_expected_blocks_is_refused():
    with pytest.raises(UserError, match="expected 6"):
        locate_layers(_toy_graph(2), depth=3, tokens=4, dim=3)
    with pytest.raises(UserError, match="5 residual additions"):
        locate_layers(_toy_graph(2, extra_residual=True), depth=2, tokens=4, dim=3)


# -- real artifacts ---------------------------------------------------------------------------------
PLANTED_BLOCK = 4


def _plant(path, weight: np.ndarray, scale: float = 1.5) -> None:
    """Scale one weight tensor inside an artifact's file, found by its bytes (as stored, or
    transposed as ONNX stores MatMul weights)."""
    data = bytearray(path.read_bytes())
    for layout in (weight, weight.T):
        raw = np.ascontiguousarray(layout, np.float32).tobytes()
        at = bytes(data).find(raw)
        if at >= 0:
            data[at:at + len(raw)] = np.ascontiguousarray(layout * scale, np.float32).tobytes()
            path.write_bytes(bytes(data))
            return
    raise AssertionError(f"the weight's bytes are not in {path.name}")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["executorch", "tflite", "onnx"])
def test_a_block_altered_after_export_is_localized(backend, exported, lkca1m, tmp_path):
    """Done-when of issue 14: one block of an exported fp32 artifact is altered in the file; the
    per-layer table is exact before it, drops at it, and names it first."""
    from lkca_edge.pipelines.validate import validate_per_layer

    artifact = copy_artifact(exported(backend, "fp32").artifact, tmp_path)
    fused = copy.deepcopy(lkca1m).set_form("fused").export_module()
    _plant(artifact, fused.blocks[PLANTED_BLOCK].mlp.fc2.weight.detach().numpy())
    validation, layers = validate_per_layer(artifact, limit=24, verify=False)
    assert validation.passed is False  # the logits moved
    table = {layer.name: layer.sqnr_db for layer in layers.layers}
    planted = f"blocks.{PLANTED_BLOCK}.mlp"
    names = list(table)
    before = names[:names.index(planted)]
    assert before and all(table[n] > 100 for n in before), table  # fp32: exact up to rounding
    assert table[planted] < 20 and table[f"blocks.{PLANTED_BLOCK}"] < 40, table
    assert layers.worst[0] == planted
    assert layers.tap_logit_shift == 0.0  # exposing the layers does not change the program


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["executorch", "tflite", "onnx"])
def test_per_layer_json_for_the_int8_default(backend, exported):
    """`validate --per-layer --json` of each backend's int8 default: one JSON object, every layer
    of the source model in execution order with SQNR, max abs error and cosine."""
    artifact = exported(backend, "int8").artifact
    out = subprocess.run([sys.executable, "-m", "lkca_edge", "validate", str(artifact),
                          "--per-layer", "--json", "--limit", "16"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    names = [layer["name"] for layer in report["layers"]]
    depth = 9
    assert names == ["patch_embed"] + [f"blocks.{b}{part}" for b in range(depth)
                                       for part in (".mixer", ".mlp", "")] + ["head"]
    for layer in report["layers"]:
        assert set(layer) >= {"name", "sqnr_db", "max_abs_err", "cosine"}
        assert 15 < layer["sqnr_db"] < 80 and 0.99 < layer["cosine"] <= 1.0  # int8: real error
    assert report["mode"] == "measured" and len(report["worst"]) == 3
    assert report["validation"]["passed"] is True
    assert report["tap_logit_shift"] == 0.0


@pytest.mark.slow
def test_core_ml_per_layer_is_static_and_says_so(exported):
    from lkca_edge.pipelines.validate import validate_per_layer

    _, layers = validate_per_layer(exported("coreml", "int8").artifact, limit=8)
    assert layers.mode == "static" and "STATIC" in layers.note
    assert len(layers.layers) == 29 and all(30 < x.sqnr_db < 80 for x in layers.layers)


@pytest.mark.slow
def test_a_failing_int8_export_names_its_worst_layers_and_fallback_floats_them(tmp_path):
    """vit-0.5m (an untrained config: gated on numerics) in ONNX static int8 misses the cosine
    gate. Without --fallback the export names its three worst layers and writes nothing; with it,
    those layers go float one by one, in the measured order, until the gate passes, and the
    manifest lists them."""
    from lkca_edge.errors import GateFailed
    from lkca_edge.pipelines.export import ExportRequest, export_model

    req = dict(model="vit-0.5m", backend="onnx", recipe="int8", validation_limit=160)
    with pytest.raises(GateFailed, match=r"layers adding the most error: \S+ \(SQNR [\d.]+ dB\), "
                                         r"\S+ \(SQNR [\d.]+ dB\), \S+ \(SQNR [\d.]+ dB\)"):
        export_model(ExportRequest(**req, out=str(tmp_path / "plain")))
    assert not list((tmp_path / "plain").glob("*.onnx"))
    result = export_model(ExportRequest(**req, out=str(tmp_path / "fallback"), fallback=True))
    m = result.manifest
    mixed = m.details["mixed_precision"]
    floated = m.details["float_layers"]
    assert m.validation["passed"] is True and mixed["target_met"] is True
    assert floated and floated == [r["name"] for r in mixed["ranking"]][:len(floated)]
    assert list(m.recipe["options"]["float_layers"]) == floated
    assert [s["float_layers"] for s in mixed["steps"]] == [floated[:k] for k in range(len(floated) + 1)]
    assert mixed["steps"][0]["gate_passed"] is False and mixed["steps"][-1]["gate_passed"] is True


@pytest.mark.slow
def test_executorch_lists_what_it_did_not_delegate_and_why(exported):
    """fp32-aten-norms leaves LayerNorm to the portable kernels: the manifest says which ops and
    the partitioner's reason."""
    # the same cached export as test_executorch's norm-rewrite test
    details = exported("executorch", recipe="fp32-aten-norms").manifest.details
    reasons = {r["op"]: r for r in details["not_delegated_reasons"]}
    assert set(reasons) == set(details["not_delegated"])
    assert "aten.native_layer_norm" in reasons
    assert all(r["reason"] and r["count"] == details["not_delegated"][op] for op, r in reasons.items())


def _cell(backend: str, precision: str, latency: float, per_layer=None, ops=(), details=None):
    return {"model": "lkca-1m", "backend": backend, "precision": precision,
            "recipe": precision if precision != "fp32" else "fp32", "form": "fused",
            "status": "ok", "failed_step": None, "error": None, "mode": "measured", "note": "",
            "artifact": f"artifacts/x.{backend}",
            "metrics": {"latency_median_ms": latency, "latency_p90_ms": latency * 1.1,
                        "accuracy": 0.97, "top1_agreement": 0.99, "size_bytes": 1_000_000},
            "validation": {"passed": True, "runnable": True}, "delegation": None,
            "profile": {"ops": list(ops), "details": details or {}, "verdict": {}},
            "manifest": {"precision": "int8" if precision.startswith("int8") else precision,
                         "details": {"mixed_precision": {"float_layers": ["blocks.0.mixer"],
                                                         "target_met": True}}
                         if precision == "int8-mixed" else {}},
            "per_layer": per_layer}


def test_compact_table_fits_100_columns_with_int8_mixed_and_a_failed_cell(capsys):
    """The default precisions include int8-mixed (the widest label) and a failed cell is common
    (a backend not installed): the terminal table still fits 100 columns, nothing cut short."""
    from types import SimpleNamespace

    from lkca_edge.apps.console import print_bench_summary
    from lkca_edge.results import SCHEMA
    from tests.conftest import summary_table_lines

    failed = {**_cell("executorch", "int8-mixed", 1.0), "status": "failed", "failed_step": "convert",
              "error": "executorch is not installed (pip install 'lkca-edge[executorch]')",
              "metrics": {}, "validation": None}
    cells = [_cell(b, p, 1.23456) for b in ("executorch", "tflite", "onnx") for p in ("fp32", "int8")]
    cells += [_cell("tflite", "int8-mixed", 0.98765), failed]
    for c in cells:
        c["metrics"].update(peak_rss_mb=361.4, accuracy_drop_pts=-0.28, size_bytes=3_657_123)
        c["profile"]["verdict"] = {"memory_ok": True, "latency_ok": True, "accuracy_ok": False}
    results = {"schema": SCHEMA, "cells": cells, "ship": [],
               "run": {"models": ["lkca-1m"], "device": "raspberry-pi-5"}}
    print_bench_summary(SimpleNamespace(results=results, files={}, out_dir="runs/x", run_id=None,
                                        db_error=None))
    out = capsys.readouterr().out
    table = summary_table_lines(out)
    assert max(len(line) for line in table) <= 100, "\n".join(table)
    assert not any("…" in line for line in table), "\n".join(table)
    assert any("int8-mixed" in line and "FAILED" in line for line in table)
    assert "executorch is not installed" in out  # the failure's reason, under the table


def test_report_shows_layers_ops_and_mixed_precision(tmp_path):
    """The bench report's issue-14 sections from a results object: the per-layer table and plot
    of every int8 cell, the operator time of every timed cell (by type and by layer) and the
    mixed recipe beside the int8 default."""
    from lkca_edge.apps.report import render_html, render_markdown, write_report
    from lkca_edge.results import SCHEMA

    layers = {"layers": [{"name": n, "sqnr_db": 30.0 + i, "max_abs_err": 0.1, "cosine": 0.999,
                          "mean_abs_err": 0.01} for i, n in enumerate(["patch_embed", "blocks.0.mixer",
                                                                        "blocks.0.mlp", "blocks.0", "head"])],
              "worst": ["blocks.0.mixer"], "mode": "measured", "n_images": 8, "method": "taps",
              "missing": {}}
    ops = [{"name": "blocks.0.mlp/FC", "type": "FC", "module": "blocks.0.mlp", "count": 2,
            "total_ms": 0.3, "mean_ms": 0.15, "share": 0.75, "delegated": True, "op": "blocks.0.mlp/FC",
            "ms": 0.3},
           {"name": "head/ADD", "type": "ADD", "module": "head", "count": 1, "total_ms": 0.1,
            "mean_ms": 0.1, "share": 0.25, "delegated": True, "op": "head/ADD", "ms": 0.1}]
    results = {"schema": SCHEMA, "run": {"models": ["lkca-1m"], "device": "host"},
               "cells": [_cell("executorch", "int8", 1.0, layers, ops, {"ops_method": "ETDump"}),
                         _cell("executorch", "int8-mixed", 1.2, layers, ops)]}
    md = render_markdown(results)
    assert "## Per-layer numerics" in md and "| blocks.0.mixer | 31.0 | 0.1 | 0.999000 | #1 |" in md
    assert "## Operator time per cell" in md and "| blocks.0.mlp | 0.3000 | 75% |" in md
    assert "## Mixed precision" in md and "| +0.200 ms (+20%) |" in md
    assert "| blocks.0.mixer | met |" in md  # the mixed row: its float layers, its target met
    files = write_report(results, tmp_path)
    assert (tmp_path / "plots" / "layers_lkca-1m_executorch_int8.png").is_file()
    html = (tmp_path / "report.html").read_text()
    assert html.count('id="plot-layers_') == 2 and "Per-layer numerics" in html
    assert files["report.md"].is_file() and render_html(results, []).count("<table") >= 5


def test_fallback_without_validation_is_refused_before_converting(tmp_path):
    """--fallback acts on a failed validation: with --no-validate it could never act, so the pair
    is refused in one line and nothing is written."""
    from lkca_edge.pipelines.export import ExportRequest, export_model

    out = tmp_path / "out"
    with pytest.raises(UserError, match="--fallback chooses float layers when validation fails: "
                                        "drop --no-validate"):
        export_model(ExportRequest(model="lkca-1m", backend="onnx", precision="int8", fallback=True,
                                   validate=False, out=str(out)))
    assert not out.exists() or not list(out.iterdir())
