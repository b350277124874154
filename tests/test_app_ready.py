"""App-ready artifacts: labels, preprocessing and the input kind read back from every file by
readers this project does not write (tflite-support in its own numpy<2 venv, with its Task
Library classifier; coremltools' spec; onnx's protobuf and ONNX Runtime; the ExecuTorch
runtime), and ``--input image`` artifacts through their gates on every backend that runs here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lkca_edge.converters import get_backend
from lkca_edge.manifest import Manifest
from lkca_edge.pipelines.validate import validate_artifact

pytestmark = pytest.mark.slow
LABELS = [str(i) for i in range(10)]


def _labels_file(res) -> list[str]:
    """The labels file beside the artifact, as the manifest names it."""
    path = Manifest.companion_path(res.artifact, "labels.txt")
    assert res.manifest.files["labels"] == path.name
    return path.read_text(encoding="utf-8").splitlines()


def _passed_all_images(res, digits, batch_sizes=(1,)) -> None:
    v = res.manifest.validation
    assert v["runnable"] and v["passed"], v
    assert v["n_images"] == len(digits.test_x) and v["batch_sizes"] == list(batch_sizes)


# -- TFLite: the standard metadata, read by tflite-support -----------------------------------------
READ_METADATA = """
import json, sys
from tflite_support import metadata
d = metadata.MetadataDisplayer.with_model_file(sys.argv[1])
print(json.dumps({"metadata": json.loads(d.get_metadata_json()),
                  "packed": d.get_packed_associated_file_list(),
                  "labels": d.get_associated_file_buffer("labels.txt").decode()}))
"""

# The TFLite Task Library's ImageClassifier: labels and preprocessing from the metadata alone.
CLASSIFY = """
import json, sys
import numpy as np
from tflite_support.task import core, processor, vision
options = vision.ImageClassifierOptions(base_options=core.BaseOptions(file_name=sys.argv[1]),
                                        classification_options=processor.ClassificationOptions(max_results=1))
classifier = vision.ImageClassifier.create_from_options(options)
out = []
for image in np.load(sys.argv[2]):
    top = classifier.classify(vision.TensorImage.create_from_array(image)).classifications[0].categories[0]
    out.append([top.category_name, top.index])
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def tflite_support():
    from tests.support_venvs import TFLITE_SUPPORT, TFLITE_SUPPORT_LIBS, support_venv

    return support_venv("tflite-support", TFLITE_SUPPORT, TFLITE_SUPPORT_LIBS)


@pytest.mark.parametrize("input_kind", ["tensor", "image"])
def test_tflite_metadata_reads_back_in_tflite_support(exported, digits, tflite_support, input_kind):
    from tests.support_venvs import run_python

    res = exported("tflite", "fp32", input=input_kind)
    _passed_all_images(res, digits)
    assert res.manifest.input_kind == input_kind and _labels_file(res) == LABELS
    want_dtype, want_shape = (("uint8", [1, 32, 32, 3]) if input_kind == "image"
                              else ("float32", [1, 3, 32, 32]))
    assert (res.manifest.inputs[0]["dtype"], res.manifest.inputs[0]["shape"]) == (want_dtype, want_shape)

    out = json.loads(run_python(tflite_support, READ_METADATA, str(res.artifact)))
    md = out["metadata"]
    assert md["name"] == "lkca-1m" and "10 classes" in md["description"]
    assert md["version"].startswith("lkca-1m fp32, lkca-edge ")
    graph = md["subgraph_metadata"][0]
    (inp,), (outp,) = graph["input_tensor_metadata"], graph["output_tensor_metadata"]
    assert inp["content"]["content_properties_type"] == "ImageProperties"
    assert inp["content"]["content_properties"]["color_space"] == "RGB"
    (unit,) = inp["process_units"]
    assert unit["options_type"] == "NormalizationOptions"
    # pixel units: the model's (x / 255 - 0.5) / 0.5 is (pixel - 127.5) / 127.5
    assert unit["options"]["mean"] == pytest.approx([127.5] * 3)
    assert unit["options"]["std"] == pytest.approx([127.5] * 3)
    if input_kind == "image":
        assert inp["stats"] == {"max": [255.0], "min": [0.0]}
    else:
        assert inp["stats"]["min"] == pytest.approx([-1.0] * 3) and inp["stats"]["max"] == pytest.approx([1.0] * 3)
    (labels_file,) = outp["associated_files"]
    assert labels_file["name"] == "labels.txt" and labels_file["type"] == "TENSOR_AXIS_LABELS"
    assert out["packed"] == ["labels.txt"] and out["labels"].splitlines() == LABELS


def test_tflite_image_artifact_runs_in_the_task_library(exported, digits, tflite_support, tmp_path):
    """An app's whole glue: hand the resized RGB bitmap to the Task Library's ImageClassifier,
    which reads the labels from the file; its answers are this project's runner's."""
    from tests.support_venvs import run_python

    from lkca_edge.preprocessing import Preprocessing

    res = exported("tflite", "fp32", input="image")
    pixels = Preprocessing.from_dict(res.manifest.preprocessing).to_pixels(digits.test_x[:20])
    np.save(tmp_path / "pixels.npy", pixels)
    answers = json.loads(run_python(tflite_support, CLASSIFY, str(res.artifact), str(tmp_path / "pixels.npy")))
    ours = get_backend("tflite").load(res.artifact).run_many(pixels).argmax(1)
    assert [index for _, index in answers] == ours.tolist()
    assert [name for name, _ in answers] == [LABELS[i] for i in ours]
    assert (ours == digits.test_y[:20]).mean() >= 0.9


def test_tflite_int8_image_input_passes_its_gate(exported, digits):
    res = exported("tflite", "int8", input="image")
    _passed_all_images(res, digits)
    v = res.manifest.validation
    assert v["reference_accuracy"] - v["accuracy"] <= 0.01 and v["top1_agreement"] >= 0.98
    assert res.manifest.inputs[0]["dtype"] == "uint8" and "scale" not in res.manifest.inputs[0]
    assert res.manifest.details["metadata"]["files"] == ["labels.txt"]  # inspect's own read


# -- ONNX: metadata_props, dynamic batch, ORT Mobile --------------------------------------------------
def test_onnx_image_input_dynamic_batch_and_metadata_props(exported, digits):
    import onnx

    res = exported("onnx", "fp32", input="image", dynamic_batch=True)
    _passed_all_images(res, digits, batch_sizes=(1, 4))
    assert res.manifest.validation["max_abs_err"] <= 1e-4 and _labels_file(res) == LABELS
    m = onnx.load(str(res.artifact))
    props = {p.key: p.value for p in m.metadata_props}
    assert json.loads(props["labels"]) == LABELS
    assert json.loads(props["preprocessing"]) == res.manifest.preprocessing
    assert props["input_kind"] == "image"
    (inp,) = m.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 32, 32, 3]
    assert res.manifest.inputs[0]["shape"] == ["batch", 32, 32, 3]
    # `lkca-edge validate` re-runs both batch sizes from the manifest alone
    again = validate_artifact(res.artifact, limit=40)
    assert again.passed and again.batch_sizes == [1, 4]


def test_onnx_int8_ort_mobile_artifact(exported, digits):
    import onnxruntime as ort

    res = exported("onnx", "int8", ort=True)
    assert res.artifact.suffix == ".ort" and res.artifact.read_bytes()[4:8] == b"ORTM"
    _passed_all_images(res, digits)
    v = res.manifest.validation
    assert v["reference_accuracy"] - v["accuracy"] <= 0.01 and v["top1_agreement"] >= 0.98
    assert _labels_file(res) == LABELS and res.manifest.details["format"] == "ort"
    config = Manifest.companion_path(res.artifact, "required_operators.config")
    assert res.manifest.files["required_operators"] == config.name
    lines = config.read_text().splitlines()
    assert f"# - {res.artifact.name}" in lines
    ops = {ln.split("{")[0] for ln in lines if ln and not ln.startswith("#")}
    assert "com.microsoft;1;DynamicQuantizeMatMul" in ops  # the int8 default's kernel
    # the .ort keeps the labels and preprocessing, as ONNX Runtime reads them
    sess = ort.InferenceSession(str(res.artifact), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["labels"]) == LABELS
    assert json.loads(meta["preprocessing"]) == res.manifest.preprocessing
    assert validate_artifact(res.artifact, limit=40).passed


# -- ExecuTorch: constant methods read by the runtime -------------------------------------------------
# int8/tensor is test_executorch's cached export; the image input costs one fp32 conversion
@pytest.mark.parametrize("precision, input_kind", [("int8", "tensor"), ("fp32", "image")])
def test_executorch_constant_methods_and_image_input(exported, digits, precision, input_kind):
    from executorch.runtime import Runtime

    res = exported("executorch", precision, **({"input": input_kind} if input_kind == "image" else {}))
    _passed_all_images(res, digits)
    v = res.manifest.validation
    assert v["reference_accuracy"] - v["accuracy"] <= 0.01 and v["top1_agreement"] >= 0.98
    assert _labels_file(res) == LABELS and res.manifest.input_kind == input_kind
    program = Runtime.get().load_program(res.artifact)
    assert {"forward", "labels", "preprocessing", "input_kind"} <= set(program.method_names)
    (labels,) = program.load_method("labels").execute([])
    (prep,) = program.load_method("preprocessing").execute([])
    (kind,) = program.load_method("input_kind").execute([])
    assert json.loads(labels) == LABELS and json.loads(prep) == res.manifest.preprocessing
    assert kind == input_kind
    want = [1, 32, 32, 3] if input_kind == "image" else [1, 3, 32, 32]
    assert res.manifest.inputs[0]["shape"] == want
    # everything but the image's uint8 -> float cast runs inside XNNPACK
    want_portable = {"dim_order_ops._to_dim_order_copy": 1} if input_kind == "image" else {}
    assert res.manifest.details["not_delegated"] == want_portable


# -- Core ML: ImageType, classifier, user-defined metadata, in the spec --------------------------------
def test_coreml_image_classifier_spec(exported, digits):
    from coremltools.models import MLModel
    from coremltools.proto import FeatureTypes_pb2

    res = exported("coreml", "fp16")  # the Core ML default: an image input
    assert res.manifest.input_kind == "image" and _labels_file(res) == LABELS
    v = res.manifest.validation
    assert v["passed"] and "static checks passed" in v["note"] and v["estimate"] in (True, False)
    spec = MLModel(str(res.artifact), skip_model_load=True).get_spec()
    (inp,) = spec.description.input
    assert inp.type.WhichOneof("Type") == "imageType"
    assert (inp.type.imageType.width, inp.type.imageType.height) == (32, 32)
    assert inp.type.imageType.colorSpace == FeatureTypes_pb2.ImageFeatureType.RGB
    assert spec.description.predictedFeatureName == "classLabel"
    assert spec.description.predictedProbabilitiesName == "classLabel_probs"
    meta = dict(spec.description.metadata.userDefined)
    assert json.loads(meta["labels"]) == LABELS
    assert json.loads(meta["preprocessing"]) == res.manifest.preprocessing
    assert meta["com.apple.coreml.model.preview.type"] == "imageClassifier"
    details = res.manifest.details
    assert details["classifier"]["labels"] == LABELS  # the classify op's classes, from the spec
    # ImageType scale and bias: (pixel / 255 - 0.5) / 0.5 = pixel / 127.5 - 1
    assert details["image_preprocessing"]["scale"] == pytest.approx(1 / 127.5, rel=1e-3)
    assert details["image_preprocessing"]["bias"] == pytest.approx([-1.0] * 3, rel=1e-3)


def test_coreml_folds_a_per_channel_std_into_the_first_layer(lkca1m, tmp_path):
    """ImageType has one scale: a per-channel std goes into patch_embed. The package stores the
    folded weights (the static check matches them), its scale and bias are the affine's, and
    the folded network on what Core ML feeds it computes the source's logits."""
    import copy
    from dataclasses import replace

    import torch

    from lkca_edge.converters.coreml import ImageAffine
    from lkca_edge.data import load_dataset
    from lkca_edge.image_input import fold_channel_multipliers
    from lkca_edge.pipelines.export import ExportRequest, export_model

    model = copy.deepcopy(lkca1m)
    model.preprocessing = replace(model.preprocessing, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.45))
    data = load_dataset("digits", model.preprocessing)
    affine = ImageAffine.of(model.preprocessing)
    assert affine.scale == pytest.approx(1 / 255) and affine.bias == pytest.approx((-0.4, -0.5, -0.6))
    assert affine.multipliers == pytest.approx((1 / 0.2, 1 / 0.3, 1 / 0.45))

    x = data.test_x[:32]
    pixels = model.preprocessing.to_pixels(x)
    net = copy.deepcopy(model).set_form("fused").export_module()
    folded = fold_channel_multipliers(net, affine.multipliers)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
        got = folded(torch.from_numpy(affine.network_input(pixels))).numpy()
    assert np.abs(got - want).max() <= 1e-4

    res = export_model(ExportRequest(model="lkca-1m", backend="coreml", precision="fp32",
                                     out=str(tmp_path), validation_limit=48, calibration_size=8),
                       model=model, dataset=data)
    v = res.manifest.validation
    assert v["passed"] and "static checks passed" in v["note"], v
    img = res.manifest.details["image_preprocessing"]
    assert img["scale"] == pytest.approx(1 / 255, rel=1e-6)
    assert img["bias"] == pytest.approx([-0.4, -0.5, -0.6], rel=1e-6)
    assert res.manifest.details["image_input"]["folded_channel_multipliers"] == pytest.approx(
        list(affine.multipliers))


def test_coreml_tensor_input_keeps_the_multiarray(exported):
    res = exported("coreml", "fp32", input="tensor", validation_limit=48)
    assert res.manifest.input_kind == "tensor"
    assert res.manifest.details["inputs"] == [{"name": "images", "shape": [1, 3, 32, 32],
                                               "dtype": "float32"}]
    assert res.manifest.details["classifier"]["labels"] == LABELS
    assert res.manifest.validation["passed"] and _labels_file(res) == LABELS


def test_readme_raspberry_pi_snippet_runs(exported, digits, tmp_path):
    """The README's Raspberry Pi code, as written, on a real image-input artifact."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    from lkca_edge.preprocessing import Preprocessing

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("**Raspberry Pi, Python**"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    res = exported("tflite", "fp32", input="image")
    (tmp_path / "lkca-1m_tflite_fp32.tflite").write_bytes(res.artifact.read_bytes())
    pixels = Preprocessing.from_dict(res.manifest.preprocessing).to_pixels(digits.test_x[:1])[0]
    Image.fromarray(pixels).resize((64, 64)).save(tmp_path / "digit.png")  # any size: it resizes
    out = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    assert out[-1] == LABELS[int(digits.test_y[0])]
