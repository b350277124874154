"""ONNX backend: real exports of the digits-trained lkca-1m, validated in ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lkca_edge.converters import get_backend
from lkca_edge import create_model
from lkca_edge.errors import UserError


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["fp32", "int8", "int8-qdq", "int8-dynamic"])
def test_lkca1m_exports_pass_their_gates(lkca1m, digits, exported, recipe):
    res = exported("onnx", recipe=recipe)
    v = res.manifest.validation
    assert v["runnable"] and v["passed"], v
    assert v["n_images"] == len(digits.test_x)
    if recipe == "fp32":
        assert v["max_abs_err"] <= 1e-4
    else:
        assert v["reference_accuracy"] - v["accuracy"] <= 0.01 and v["top1_agreement"] >= 0.98
        assert res.manifest.size_bytes < 0.4 * (4 * lkca1m.num_params())  # int8 weights
    m = json.loads(res.manifest_path.read_text())
    assert m["form"] == "fused" and m["backend"] == "onnx"
    assert m["details"]["opset"] == 20 and m["inputs"][0]["shape"] == [1, 3, 32, 32]
    assert m["tool_versions"]["onnxruntime"] and m["sha256"]
    if recipe == "int8":
        assert m["calibration"] == {"dataset": "digits", "split": "train", "size": 128}
        assert "QLinearMatMul" in m["details"]["op_counts"] or "MatMulInteger" in m["details"]["op_counts"]


@pytest.mark.slow
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


@pytest.mark.parametrize("content", [b"", b"\x08\x01garbage" * 50])
def test_bad_onnx_files(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(UserError):
        get_backend("onnx").load(path)


@pytest.mark.slow
def test_truncated_onnx_file(tmp_path, exported):
    path = tmp_path / "bad.onnx"
    path.write_bytes(exported("onnx", "fp32").artifact.read_bytes()[:5000])
    with pytest.raises(UserError):
        get_backend("onnx").load(path)


@pytest.mark.slow
def test_official_format_checkpoint_exports_like_ours(tmp_path, lkca1m, digits):
    """The digits weights written in the paper's trainer layout export and validate the same."""
    import subprocess
    import sys

    from lkca_edge.checkpoints import _map_official
    from tests.official_reference import OfficialViT

    official = OfficialViT("lkca", dim=136, depth=9, cls_slot=True)
    ours = lkca1m.state_dict()
    renamed = _map_official({k: v for k, v in official.state_dict().items() if k != "cls_token"}, "x")
    state = {}
    for (official_key, tensor), our_key in zip(
            ((k, v) for k, v in official.state_dict().items() if k != "cls_token"), renamed):
        src = ours[our_key]
        if our_key == "pos_embedding":  # the official layout keeps a class-token slot
            src = torch.cat([src, torch.zeros(1, 1, src.shape[-1])], dim=1)
        state[official_key] = src.clone()
    state["cls_token"] = official.cls_token.detach()
    ckpt = tmp_path / "lkca_official.pth"
    torch.save({"model": state, "epoch": 20}, ckpt)

    proc = subprocess.run([sys.executable, "-m", "lkca_edge", "export", "lkca-1m", "--backend", "onnx",
                           "--precision", "int8", "--checkpoint", str(ckpt), "--calibration", "digits",
                           "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    # an official checkpoint records no data: without --calibration it is refused, not digits
    refused = subprocess.run([sys.executable, "-m", "lkca_edge", "export", "lkca-1m", "--backend",
                              "onnx", "--checkpoint", str(ckpt), "--out", str(tmp_path / "no")],
                             capture_output=True, text=True, timeout=900)
    assert refused.returncode == 2 and "records no data set" in refused.stderr
    manifest = json.loads(next((tmp_path / "out").glob("*.manifest.json")).read_text())
    v = manifest["validation"]
    assert v["passed"] and manifest["source"]["format"] == "official"
    # An official checkpoint carries no preprocessing: the paper's CIFAR normalisation is assumed
    # (and recorded), so the same weights see the digits normalised that way.
    from lkca_edge.checkpoints import OFFICIAL_PREPROCESSING
    from lkca_edge.data import load_dataset
    from lkca_edge.evaluation import evaluate

    assert manifest["preprocessing"]["mean"] == list(OFFICIAL_PREPROCESSING.mean)
    data = load_dataset("digits", OFFICIAL_PREPROCESSING)
    assert v["reference_accuracy"] == pytest.approx(evaluate(lkca1m, data.test_x, data.test_y))
