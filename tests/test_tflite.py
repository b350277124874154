"""LiteRT (.tflite) backend: real exports of the digits-trained lkca-1m, run in the LiteRT
interpreter and gated against the torch fp32 source; the T @ V layout trap; bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lkca_edge.converters import get_backend
from lkca_edge.errors import GateFailed, UserError
from lkca_edge.pipelines.export import ExportRequest, export_model

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _export(out, model=None, dataset=None, **kw):
    kw.setdefault("model", "lkca-1m")
    return export_model(ExportRequest(backend="tflite", out=str(out), **kw),
                        model=model, dataset=dataset)


@pytest.fixture
def fp32_export(exported):
    return exported("tflite", "fp32")


@pytest.fixture
def int8_export(exported):
    return exported("tflite", "int8")


def test_fp32_export_passes_its_gate(fp32_export, digits):
    m = json.loads(fp32_export.manifest_path.read_text())
    v = m["validation"]
    assert v["runnable"] and v["passed"] and v["n_images"] == len(digits.test_x), v
    assert v["max_abs_err"] <= 1e-4
    assert m["backend"] == "tflite" and m["recipe"]["name"] == "fp32"
    assert m["form"] == "fused"
    assert [(t["shape"], t["dtype"]) for t in m["inputs"]] == [([1, 3, 32, 32], "float32")]
    assert [(t["shape"], t["dtype"]) for t in m["outputs"]] == [([1, 10], "float32")]
    assert "scale" not in m["inputs"][0]
    assert m["details"]["op_counts"]["FULLY_CONNECTED"] > 0
    assert "BATCH_MATMUL" not in m["details"]["op_counts"]  # Linear layout: T is a weight


def test_int8_export_passes_its_gate_with_int8_io(int8_export, lkca1m):
    m = json.loads(int8_export.manifest_path.read_text())
    v = m["validation"]
    assert v["runnable"] and v["passed"], v
    assert v["reference_accuracy"] - v["accuracy"] <= 0.01
    assert v["top1_agreement"] >= 0.98
    assert m["recipe"]["name"] == "int8" and m["recipe"]["calibrated"]
    assert m["calibration"] == {"dataset": "digits", "split": "train", "size": 128}
    # LayerNorms written as 7 float ops (not litert's 12-op lowering with SQUARED_DIFFERENCE and
    # rank-1 reshapes), kept float: one QUANTIZE/DEQUANTIZE pair per residual half-block only.
    ops, depth = m["details"]["op_counts"], lkca1m.config.depth
    assert "SQUARED_DIFFERENCE" not in ops and ops["RSQRT"] == 2 * depth + 1
    assert ops["QUANTIZE"] == ops["DEQUANTIZE"] == 2 * depth + 1
    assert ops["FULLY_CONNECTED"] == 1 + 4 * depth + 1  # fused form: T, one projection, fc1, fc2
    assert int8_export.manifest.size_bytes < 0.4 * 4 * lkca1m.num_params()
    # Static int8 takes and returns int8 tensors; the manifest says so, with their scale and
    # zero point, and agrees with what the interpreter reads from the file.
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(int8_export.artifact))
    for spec, detail in ((m["inputs"][0], interp.get_input_details()[0]),
                         (m["outputs"][0], interp.get_output_details()[0])):
        assert spec["dtype"] == "int8" == np.dtype(detail["dtype"]).name
        assert spec["scale"] > 0 and -128 <= spec["zero_point"] <= 127
        assert (spec["scale"], spec["zero_point"]) == pytest.approx(detail["quantization"])
    assert m["inputs"][0]["shape"] == [1, 3, 32, 32] and m["outputs"][0]["shape"] == [1, 10]
    assert {"QUANTIZE", "DEQUANTIZE"} & set(m["details"]["op_counts"])


def test_runner_maps_float_images_to_float_logits(int8_export, fp32_export, digits):
    x = digits.test_x[:8]
    int8 = get_backend("tflite").load(int8_export.artifact)
    fp32 = get_backend("tflite").load(fp32_export.artifact)
    a, b = int8.run_many(x), fp32.run_many(x)
    assert a.dtype == np.float32 and a.shape == (8, 10)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.875
    assert int8.planned_memory_bytes() is None
    # per op class, by making each class trivial in a copy of the graph (no op profiler here)
    ops = {o["type"]: o for o in int8.operator_profile(x[:1], runs=5)}
    assert {"FULLY_CONNECTED", "ADD", "MEAN", "GELU"} <= set(ops)
    assert ops["GELU"]["delegated"] is False and ops["FULLY_CONNECTED"]["delegated"] is True
    assert all(o["total_ms"] >= 0 and o["count"] > 0 for o in ops.values())
    assert ops["FULLY_CONNECTED"]["total_ms"] > 0  # the matrix products take measurable time
    assert "builtin kernels: GELU x9" in int8.ops_note and "not isolated: RESHAPE" in int8.ops_note
    with pytest.raises(UserError, match="shape"):
        fp32(x[:1, :, :16])


def test_load_and_run_do_not_import_torch(fp32_export):
    """Boards may have only the LiteRT runtime: load, run and inspect stay torch-free."""
    path = str(fp32_export.artifact)
    code = ("import sys, numpy as np; from lkca_edge.converters import get_backend; "
            f"b = get_backend('tflite'); r = b.load({path!r}); "
            "r(np.zeros((1, 3, 32, 32), np.float32)); "
            f"b.inspect({path!r}); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_64px_config(tmp_path):
    res = export_model(ExportRequest(model="lkca-0.5m", backend="tflite", precision="fp32",
                                     out=str(tmp_path), overrides={"image_size": 64},
                                     validation_limit=100))
    v = res.manifest.validation
    assert v["passed"] and v["max_abs_err"] <= 1e-4, v
    assert res.manifest.inputs[0]["shape"] == [1, 3, 64, 64]


def test_vit_baseline(tmp_path):
    res = export_model(ExportRequest(model="vit-0.5m", backend="tflite", precision="fp32",
                                     out=str(tmp_path), validation_limit=100))
    v = res.manifest.validation
    assert v["passed"] and v["max_abs_err"] <= 1e-4, v
    assert res.manifest.form is None and res.manifest.inputs[0]["shape"] == [1, 3, 32, 32]


def test_gate_refuses_silently_wrong_aeq_static_in_t_at_v_layout(tmp_path):
    """ai-edge-quantizer static_wi8_ai8 on the ``T @ V`` layout converts and runs but is wrong
    (~10-13 % on digits); the export gate must refuse it and leave no .tflite behind."""
    with pytest.raises(GateFailed, match="failed its int8 gate"):
        export_model(ExportRequest(model="lkca-1m", backend="tflite", recipe="aeq-static",
                                   precision=None, form="frozen", out=str(tmp_path),
                                   calibration_size=32))
    assert list(tmp_path.iterdir()) == []  # no artifact, no partial file, no manifest


def test_random_bytes_and_truncated_files_are_user_errors(tmp_path, fp32_export):
    backend = get_backend("tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(fp32_export.artifact.read_bytes()[:20000])
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    for path in (junk, truncated, empty, tmp_path / "missing.tflite"):
        with pytest.raises(UserError) as info:
            backend.load(path)
        assert "\n" not in str(info.value)
        with pytest.raises(UserError):
            backend.inspect(path)


def test_xnnpack_takes_every_op_but_the_int8_gelu(int8_export, fp32_export):
    """The manifest counts what the XNNPACK delegate took and what runs as builtin kernels."""
    x8, x32 = int8_export.manifest.details["xnnpack"], fp32_export.manifest.details["xnnpack"]
    assert x8["builtin"] == {"GELU": 9} and x8["xnnpack_partitions"] == 10  # GELU splits the graph
    assert x8["delegated"]["FULLY_CONNECTED"] == 1 + 4 * 9 + 1
    assert x32["builtin"] == {} and x32["xnnpack_partitions"] == 1
