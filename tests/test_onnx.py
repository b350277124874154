"""ONNX backend: real exports of the digits-trained lkca-1m, validated in ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from converters import get_backend
from lkca_edge import create_model
from lkca_edge.errors import UserError
from lkca_edge.export import ExportRequest, export_model


def _export(lkca1m, digits, out, **kw):
    req = ExportRequest(model="lkca-1m", backend="onnx", out=str(out), **kw)
    return export_model(req, model=lkca1m, dataset=digits)


@pytest.mark.parametrize("recipe", ["fp32", "int8", "int8-qdq", "int8-dynamic"])
def test_lkca1m_exports_pass_their_gates(lkca1m, digits, export_dir, recipe):
    res = _export(lkca1m, digits, export_dir / "onnx", recipe=recipe)
    v = res.manifest.validation
    assert v["runnable"] and v["passed"], v
    assert v["n_images"] == len(digits.test_x)
    if recipe == "fp32":
        assert v["max_abs_err"] <= 1e-4
    else:
        assert v["reference_accuracy"] - v["accuracy"] <= 0.01 and v["top1_agreement"] >= 0.98
        assert res.manifest.size_bytes < 0.4 * (4 * lkca1m.num_params())  # int8 weights
    m = json.loads(res.manifest_path.read_text())
    assert m["form"] == "frozen-linear" and m["backend"] == "onnx"
    assert m["details"]["opset"] == 20 and m["inputs"][0]["shape"] == [1, 3, 32, 32]
    assert m["tool_versions"]["onnxruntime"] and m["sha256"]
    if recipe == "int8":
        assert m["calibration"] == {"dataset": "digits", "split": "train", "size": 128}
        assert "QLinearMatMul" in m["details"]["op_counts"] or "MatMulInteger" in m["details"]["op_counts"]


def test_64px_config_and_vit_baseline(tmp_path, digits):
    for name, kw in (("lkca-0.5m", {"image_size": 64}), ("vit-0.5m", {})):
        model = create_model(name, **kw)
        x = np.random.default_rng(0).standard_normal((1, 3, model.config.image_size,
                                                      model.config.image_size)).astype(np.float32)
        backend = get_backend("onnx")
        path = tmp_path / f"{name}.onnx"
        if model.config.family == "lkca":
            model.set_form("frozen-linear")
        backend.convert(model, x, backend.recipe("fp32"), x, path)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        assert np.abs(backend.load(path)(x) - expected).max() < 1e-4


@pytest.mark.parametrize("content", [b"", b"\x08\x01garbage" * 50, None])
def test_bad_onnx_files(tmp_path, export_dir, content):
    path = tmp_path / "bad.onnx"
    if content is None:
        good = next((export_dir / "onnx").glob("*fp32.onnx"), None)
        if good is None:
            pytest.skip("needs the fp32 export from the test above")
        path.write_bytes(good.read_bytes()[:5000])
    else:
        path.write_bytes(content)
    with pytest.raises(UserError):
        get_backend("onnx").load(path)
