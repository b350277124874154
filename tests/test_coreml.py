"""Core ML backend: real conversions of the digits-trained lkca-1m.

Core ML predicts only on macOS. Elsewhere each package is checked statically: its interface, the
op counts of its MIL program, and every stored weight, dequantized, against the torch source;
plus an off-device estimate (the torch source run with the package's weights). On macOS the
prediction test runs the packages for real.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from lkca_edge.converters import get_backend
from lkca_edge.errors import BackendUnavailable, UserError
from lkca_edge.builder import rebuild_source_model
from lkca_edge.pipelines.export import ExportRequest, export_model

BACKEND = get_backend("coreml")
REASON = BACKEND.runnable()  # None on macOS
# form "fused": patch embed; per block T, the merged projection, fc1, fc2; head
LKCA1M_LINEAR = 1 + 9 * 4 + 1


def _export(out, dataset=None, **kw):
    return export_model(ExportRequest(backend="coreml", out=str(out), **kw), dataset=dataset)


pytestmark = pytest.mark.slow


@pytest.fixture
def exports(exported):
    return {p: exported("coreml", p) for p in ("fp32", "fp16", "int8")}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_lkca1m_exports_check_statically(exports, digits, precision):
    res = exports[precision]
    m = json.loads(res.manifest_path.read_text())
    v = m["validation"]
    if REASON is not None:
        # No device run here: the figures are the labelled off-device estimate, gated as such.
        assert v["runnable"] is False and v["estimate"] is True and v["passed"] is True, v
        assert v["n_images"] == len(digits.test_x)
        assert v["reference_accuracy"] - v["accuracy"] <= 0.01 and v["top1_agreement"] >= 0.98
        assert v["note"].startswith(REASON)
        assert "static checks passed" in v["note"] and "ESTIMATE, not a device run" in v["note"]
    else:
        assert v["runnable"] and v["passed"], v
    assert res.artifact.is_dir() and res.artifact.name == f"lkca-1m_coreml_{precision}.mlpackage"
    assert m["form"] == "fused" and m["recipe"]["name"] == precision
    d = m["details"]
    # As iOS Vision expects (the default): an RGB image input, a classifier over the logits.
    assert m["input_kind"] == "image"
    assert d["inputs"] == [{"name": "images", "type": "image", "width": 32, "height": 32,
                            "color": "RGB"}]
    assert [o["name"] for o in d["outputs"]] == ["classLabel", "classLabel_probs", "logits"]
    assert d["outputs"][2] == {"name": "logits", "shape": [1, 10], "dtype": "float32"}
    assert d["op_counts"]["linear"] == LKCA1M_LINEAR and d["op_counts"]["layer_norm"] == 19
    assert d["compute_precision"] == ("fp32" if precision == "fp32" else "fp16")

    # The same checks called directly, with labelled test images for an accuracy estimate.
    model = rebuild_source_model(res.manifest)
    pixels = model.preprocessing.to_pixels(digits.test_x)  # what the ImageType input takes
    static = BACKEND.validate_static(res.artifact, model, images=pixels, labels=digits.test_y)
    assert static["passed"], static["failures"]
    w = static["weights"]
    assert w["required"] == LKCA1M_LINEAR and w["checked"] >= LKCA1M_LINEAR
    if precision == "fp32":
        assert set(w["storage"]) == {"fp32"} and w["worst"]["fp32_relative_error"] <= 1e-6
    elif precision == "fp16":
        assert set(w["storage"]) == {"fp16"} and w["worst"]["fp16_relative_error"] <= 1e-3
    else:
        # int8: 46 Linear weights and the (1, 64, 136) positions; the 10x136 head (under 2,048
        # elements) stays fp16, as do biases and norms.
        assert w["storage"]["int8"] == LKCA1M_LINEAR and w["storage"]["fp16"] > 0
        assert 0.3 < w["worst"]["int8_steps"] <= 1.0
    e = static["estimate"]
    assert e["estimate"] is True and e["images"].startswith(f"{len(digits.test_x)} given labelled")
    assert e["reference_accuracy"] - e["accuracy"] <= 0.01 and e["top1_agreement"] >= 0.98


def test_sizes_and_stored_precision(exports):
    size = {p: r.manifest.size_bytes for p, r in exports.items()}
    assert size["fp16"] < 0.55 * size["fp32"] and size["int8"] < 0.3 * size["fp32"]
    stored = {p: BACKEND.inspect(r.artifact)["stored_weights"] for p, r in exports.items()}
    assert set(stored["fp32"]) == {"fp32"} and set(stored["fp16"]) == {"fp16"}
    assert stored["int8"]["int8"]["elements"] > 0.98 * stored["fp32"]["fp32"]["elements"]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_static_check_catches_wrong_weights(exports, precision):
    model = rebuild_source_model(exports[precision].manifest)
    with torch.no_grad():
        model.blocks[3].mlp.fc1.weight[5].mul_(1.05)
    model.set_form(model.form)  # the fused form is a snapshot: rebuild it from the change
    static = BACKEND.validate_static(exports[precision].artifact, model)
    assert static["passed"] is False
    # named as in the traced (fused) network, where fc1 carries the folded LayerNorm: the
    # changed row moves fc1's weight and its bias (W beta + b)
    assert static["failures"] and all("blocks.3.mlp.fc1." in f for f in static["failures"])
    assert any("blocks.3.mlp.fc1.weight" in f for f in static["failures"])
    assert "static checks FAILED" in static["note"]


def test_w8a8_converts(digits, export_dir):
    res = _export(export_dir / "coreml", digits, model="lkca-1m", precision="int8", recipe="w8a8",
                  calibration_size=32, validation_limit=64)
    m = res.manifest
    assert m.calibration == {"dataset": "digits", "split": "train", "size": 32}
    assert m.recipe["quantization"] == "pt2e-w8a8" and m.details["minimum_deployment_target"] == "iOS17"
    ops = m.details["op_counts"]
    assert ops["quantize"] > 0 and ops["dequantize"] > 0 and ops["linear"] == LKCA1M_LINEAR
    assert m.details["stored_weights"]["int8"]["tensors"] >= LKCA1M_LINEAR  # PT2E: the head too
    if REASON is not None:
        assert "static checks passed" in m.validation["note"]
        assert "activation quantization not modelled" in m.validation["note"]


@pytest.mark.parametrize("name, overrides, size", [("lkca-0.5m", {"image_size": 64}, 64),
                                                   ("vit-0.5m", {}, 32)])
def test_64px_config_and_vit_baseline_convert(export_dir, name, overrides, size):
    res = _export(export_dir / "coreml-small", model=name, precision="fp32", overrides=overrides,
                  calibration_size=8, validation_limit=32)
    d = res.manifest.details
    assert d["inputs"][0]["width"] == d["inputs"][0]["height"] == size
    assert res.manifest.outputs[0]["shape"] == [1, 10]
    assert d["op_counts"]["linear"] > 0
    if name.startswith("vit"):
        assert d["op_counts"]["softmax"] == 4 + 1  # 4 attention layers + the classifier's
    if REASON is not None:
        assert "static checks passed" in res.manifest.validation["note"]


def test_prediction_matches_source(exports, digits):
    if REASON is not None:
        pytest.skip(REASON)
    from lkca_edge.evaluation import reference_logits
    from lkca_edge.gates import validate_logits

    x, y = digits.test_x[:100], digits.test_y[:100]
    for precision, res in exports.items():
        runner = BACKEND.load(res.artifact, compute_units="CPU_ONLY")
        model = rebuild_source_model(res.manifest)
        ref = reference_logits(model, x)
        inputs = model.preprocessing.as_input(x, res.manifest.input_kind)
        v = validate_logits(runner.run_many(inputs), ref, y, "coreml", precision)
        assert v.passed, (precision, v.failures)


def test_load_off_macos_says_why(exports):
    if REASON is None:
        pytest.skip("this is macOS: Core ML can predict")
    with pytest.raises(BackendUnavailable, match="needs macOS"):
        BACKEND.load(exports["fp32"].artifact)


@pytest.mark.parametrize("kind", ["missing", "random-file", "random-dir", "random-model"])
def test_bad_packages_are_one_line_errors(tmp_path, exports, kind):
    path = tmp_path / "bad.mlpackage"
    rng = np.random.default_rng(0)
    if kind == "random-file":
        path.write_bytes(rng.bytes(4096))
    elif kind == "random-dir":
        path.mkdir()
        (path / "Manifest.json").write_bytes(rng.bytes(4096))
    elif kind == "random-model":  # a real package whose model spec is random bytes
        import shutil

        shutil.copytree(exports["fp32"].artifact, path)
        spec = next(p for p in path.rglob("model.mlmodel"))
        spec.write_bytes(rng.bytes(4096))
    for call in (lambda: BACKEND.inspect(path),
                 lambda: BACKEND.validate_static(path, rebuild_source_model(exports["fp32"].manifest))):
        with pytest.raises(UserError) as err:
            call()
        text = str(err.value)
        assert "\n" not in text and str(path) in text and text.isprintable()
    if kind == "missing":
        assert not os.path.exists(path)
