"""Fast checks of the app-facing pieces that need no conversion: pixels <-> normalised arrays,
the shared in-graph normalization, the TFLite metadata flatbuffer, and the export options each
backend refuses before any work."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from lkca_edge.errors import UserError
from lkca_edge.image_input import ImageInput, fold_channel_multipliers
from lkca_edge.manifest import Manifest
from lkca_edge.pipelines.export import ExportRequest, export_model
from lkca_edge.preprocessing import Preprocessing


def test_to_pixels_inverts_normalize_exactly(digits, lkca1m):
    prep = lkca1m.preprocessing
    pixels = prep.to_pixels(digits.test_x)
    assert pixels.dtype == np.uint8 and pixels.shape == (len(digits.test_x), 32, 32, 3)
    np.testing.assert_array_equal(prep.normalize(pixels), digits.test_x)
    bgr = replace(prep, channel_order="BGR", mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1))
    raw = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(bgr.to_pixels(bgr.normalize(raw)), raw)
    assert prep.pixel_mean_std() == ((127.5,) * 3, (127.5,) * 3)
    with pytest.raises(UserError, match="input kind"):
        prep.as_input(digits.test_x, "video")


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_image_input_is_normalize_then_the_network(lkca1m, order):
    model = copy.deepcopy(lkca1m)
    prep = replace(model.preprocessing, channel_order=order, mean=(0.2, 0.4, 0.6), std=(0.5, 0.25, 0.2))
    raw = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    wrapped = ImageInput(model, prep).eval()
    with torch.no_grad():
        got = wrapped(torch.from_numpy(raw)).numpy()
        want = model(torch.from_numpy(prep.normalize(raw))).numpy()
    assert np.abs(got - want).max() <= 1e-4
    assert wrapped.config is model.config


def test_fold_of_ones_is_a_copy_and_refuses_what_it_cannot_fold(lkca1m):
    folded = fold_channel_multipliers(lkca1m, (1.0, 1.0, 1.0))
    assert folded is not lkca1m
    assert torch.equal(folded.patch_embed.weight, lkca1m.patch_embed.weight)
    with pytest.raises(UserError, match="patch-embedding"):
        fold_channel_multipliers(torch.nn.Linear(3, 3), (2.0, 1.0, 1.0))


def test_tflite_metadata_flatbuffer_is_well_formed():
    from lkca_edge.converters import _tflite_metadata as tm

    md = tm.ModelMetadata(
        name="m", description="d", version="v", author="a", license="",
        inputs=(tm.ImageTensor("images", "in", (127.5,) * 3, (127.5,) * 3, stats_min=(0.0,), stats_max=(255.0,)),),
        outputs=(tm.FeatureTensor("logits", "out", (tm.AssociatedFile("labels.txt", "labels"),)),))
    buf = tm.metadata_buffer(md)
    assert buf[4:8] == b"M001"
    assert b"labels.txt" in buf and b"images" in buf and b"1.0.0" in buf
    with pytest.raises(UserError, match="TFL3"):
        tm.with_metadata(b"\0" * 64, md)


@pytest.mark.parametrize("backend, fields, message", [
    ("tflite", {"ort": True}, "applies only to onnx"),
    ("executorch", {"dynamic_batch": True}, "not available for executorch"),
    ("tflite", {"input": "video"}, "take --input"),
])
def test_export_refuses_options_a_backend_lacks(tmp_path, backend, fields, message):
    with pytest.raises(UserError, match=message):
        export_model(ExportRequest(model="lkca-1m", backend=backend, out=str(tmp_path), **fields))
    assert list(tmp_path.iterdir()) == []


def test_manifests_without_input_kind_still_read_and_bad_ones_do_not():
    from lkca_edge.manifest import SCHEMA

    base = {"schema": SCHEMA, "artifact": "a.onnx", "sha256": "0" * 64, "size_bytes": 1,
            "backend": "onnx", "recipe": {}, "precision": "fp32", "model": "lkca-1m", "config": {},
            "form": None, "source": {}, "preprocessing": {}, "calibration": None, "inputs": [],
            "outputs": [], "details": {}, "tool_versions": {}, "created": "", "conversion_seconds": 0}
    m = Manifest.from_dict(base)
    assert m.input_kind == "tensor" and m.files == {}
    with pytest.raises(UserError, match="input_kind"):
        Manifest.from_dict({**base, "input_kind": "video"})
    with pytest.raises(UserError, match="files"):
        Manifest.from_dict({**base, "files": {"labels": "../../etc/passwd"}})
    assert Manifest.companion_path("out/a.tflite", "labels.txt").name == "a.tflite.labels.txt"


def test_labels_fall_back_to_class_numbers(lkca1m):
    from lkca_edge.pipelines.export import app_info

    model = copy.deepcopy(lkca1m)
    model.preprocessing = replace(model.preprocessing, labels=())
    recipe = type("R", (), {"name": "fp32", "precision": "fp32"})()
    assert app_info(model, recipe, "image", False).labels == tuple(str(i) for i in range(10))
    names = tuple("zero one two three four five six seven eight nine".split())
    assert app_info(model, recipe, "tensor", False, names).labels == names
    assert app_info(lkca1m, recipe, "tensor", False).labels == tuple(str(i) for i in range(10))
    assert app_info(lkca1m, recipe, "image", False).labels_text().splitlines()[0] == "0"
    assert Preprocessing.from_dict(app_info(lkca1m, recipe, "image", False).preprocessing) == lkca1m.preprocessing


def test_scale_channels_folds_or_multiplies_in_front(lkca1m):
    from lkca_edge.image_input import ChannelScale, scale_channels

    x = torch.from_numpy(np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32))
    m = torch.tensor([2.0, 0.5, 4.0]).view(1, 3, 1, 1)
    folded = scale_channels(lkca1m, (2.0, 0.5, 4.0))
    assert not isinstance(folded, ChannelScale)  # LKCA: into patch_embed, no extra op
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).eval()
    scaled = scale_channels(conv, (2.0, 0.5, 4.0))
    assert isinstance(scaled, ChannelScale)
    with torch.no_grad():
        assert torch.allclose(folded(x), lkca1m(x * m), atol=1e-4)
        assert torch.allclose(scaled(x), conv(x * m), atol=1e-5)
