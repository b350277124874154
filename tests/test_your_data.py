"""Your data, your labels, your model: every verdict is about the user's own data.

A folder of real photographs (scikit-image's sample photos: four subjects), lkca-1m fine-tuned on
it from the shipped digits weights, then exported with no --calibration, validated from another
directory, on a CIFAR-format directory whose label names come in another order, refused on data
whose labels do not match; NaN weights, NaN training, a model at chance, an untrained config;
checkpoints of configs not in the zoo; the Python API from a script without a main guard.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.photos import PHOTOS, make_photo_folder, photo_cifar, photo_crops

REPO = Path(__file__).resolve().parents[1]
LABELS = sorted(PHOTOS)  # a folder data set's classes: its sub-folders, sorted


def cli(*argv: str) -> tuple[int, str, str]:
    from lkca_edge.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def run_cli(*argv: str, cwd=None, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lkca_edge", *argv], capture_output=True,
                          text=True, cwd=cwd or REPO, timeout=timeout)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photo_folder(tmp_path_factory.mktemp("photos") / "my-photos", per_class=40)


@pytest.fixture(scope="module")
def photo_model(tmp_path_factory, photos):
    """lkca-1m fine-tuned on the photo folder from the shipped digits weights (the CLI)."""
    out = tmp_path_factory.mktemp("photo-model")
    code, stdout, stderr = cli("train", "lkca-1m", "--pretrained", "--dataset", f"folder:{photos}",
                               "--epochs", "8", "--out", str(out))
    assert code == 0, stderr
    checkpoint = next(out.glob("*.pt"))
    return checkpoint, stdout, json.loads((out / "metrics.json").read_text())


# -- data follows the model ----------------------------------------------------------------------
@pytest.mark.slow
def test_fine_tune_takes_classes_and_labels_from_the_data(photo_model, photos):
    from lkca_edge.checkpoints import read_checkpoint

    checkpoint, stdout, metrics = photo_model
    assert "head re-initialised for the data's 4 classes" in stdout and "10 classes" in stdout
    assert metrics["test_accuracy"] >= 0.9, metrics
    ckpt = read_checkpoint(checkpoint)
    assert ckpt["config"].num_classes == 4 and ckpt["preprocessing"].labels == tuple(LABELS)
    record = ckpt["data"]
    assert record.kind == "folder" and record.path == str(photos.resolve())
    assert record.labels == tuple(LABELS) and record.split_seed == 0


@pytest.mark.slow
def test_export_defaults_to_the_recorded_data_and_validates_anywhere(photo_model, photos, tmp_path):
    checkpoint = photo_model[0]
    out = tmp_path / "art"
    code, stdout, stderr = cli("export", "--checkpoint", str(checkpoint), "--backend", "onnx",
                               "--recipe", "int8", "--out", str(out))  # static int8: calibrated
    assert code == 0, stderr
    assert f"of folder:{photos.resolve()}" in stdout and "PASS" in stdout
    artifact = next(out.glob("*.onnx"))
    manifest = json.loads(Path(f"{artifact}.manifest.json").read_text())
    assert manifest["model"] == "lkca-1m" and manifest["trained"] is True
    assert manifest["calibration"]["dataset"] == f"folder:{photos.resolve()}"
    assert manifest["data"]["labels"] == LABELS and manifest["preprocessing"]["labels"] == LABELS
    v = manifest["validation"]
    assert v["data"] == f"folder:{photos.resolve()}" and v["reference_accuracy"] >= 0.9
    pack = manifest["validation_pack"]
    assert pack["n_images"] == v["n_images"] and Path(out / pack["file"]).stat().st_size < 4 << 20

    # validate from another directory, in a process that must not import torch
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = textwrap.dedent(f"""
        import sys
        from lkca_edge.pipelines.validate import validate_artifact
        r = validate_artifact({str(artifact)!r})
        assert 'torch' not in sys.modules, 'validate imported torch'
        print(r.passed, r.accuracy, r.data)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=elsewhere, timeout=600)
    assert proc.returncode == 0, proc.stderr
    passed, accuracy, data = proc.stdout.split()
    assert passed == "True" and float(accuracy) == pytest.approx(v["accuracy"])
    assert data == f"folder:{photos.resolve()}"


@pytest.mark.slow
def test_labels_in_another_order_are_remapped_and_mismatches_refused(photo_model, photos, tmp_path):
    checkpoint = photo_model[0]
    out = tmp_path / "art"
    assert cli("export", "--checkpoint", str(checkpoint), "--backend", "onnx", "--out", str(out))[0] == 0
    artifact = next(out.glob("*.onnx"))

    # the same subjects as a CIFAR-10 directory, label names in reverse order
    reverse = LABELS[::-1]
    cifar = photo_cifar(tmp_path / "cifar", reverse)
    code, stdout, stderr = cli("validate", str(artifact), "--dataset", f"cifar10:{cifar}", "--json")
    assert code == 0, stderr
    r = json.loads(stdout)
    assert "another order: remapped" in r["labels_note"] and r["passed"] is True
    assert r["reference_accuracy"] >= 0.8  # right only if the remap is right (chance is 25 %)

    # digits against a 4-class photo model: refused, with both label lists
    code, _, stderr = cli("validate", str(artifact), "--dataset", "digits")
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "do not match" in stderr and "0, 1, 2" in stderr and "astronaut, cat, coffee" in stderr


@pytest.mark.slow
def test_recorded_data_that_is_gone_is_one_line_naming_the_option(photo_model, photos, tmp_path):
    import shutil

    from lkca_edge.checkpoints import read_checkpoint, save_checkpoint
    from lkca_edge import create_model

    moved = tmp_path / "moved-photos"
    shutil.copytree(photos, moved)
    model = create_model(None, checkpoint=photo_model[0])
    record = read_checkpoint(photo_model[0])["data"]
    gone = tmp_path / "gone.pt"
    save_checkpoint(model, gone, data=record.__class__("folder", str(tmp_path / "nowhere"),
                                                       record.labels))
    code, _, stderr = cli("export", "--checkpoint", str(gone), "--backend", "onnx",
                          "--out", str(tmp_path / "x"))
    assert code == 2 and "is not found" in stderr and "--calibration" in stderr
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
    code, stdout, stderr = cli("export", "--checkpoint", str(gone), "--backend", "onnx",
                               "--calibration", f"folder:{moved}", "--out", str(tmp_path / "y"))
    assert code == 0, stderr


def test_label_matching_rules():
    from lkca_edge.errors import UserError
    from lkca_edge.labels import match_labels

    assert match_labels(["a", "b"], ["a", "b"], 2).remap is None
    m = match_labels(["a", "b", "c"], ["c", "a"], 3)
    assert list(m.remap) == [2, 0] and "2 of its 3 classes" in m.note
    m = match_labels([str(i) for i in range(12)], sorted(str(i) for i in range(12)), 12)
    assert m.remap is None or list(m.remap) == [0, 1, 10, 11, 2, 3, 4, 5, 6, 7, 8, 9]
    m = match_labels(["0", "1", "2"], ["00", "02"], 3)
    assert list(m.remap) == [0, 2] and "numerically" in m.note
    with pytest.raises(UserError, match="do not match"):
        match_labels([str(i) for i in range(10)],
                     ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"], 10)
    assert "by position" in match_labels([], ["x", "y"], 2).note


@pytest.mark.slow
def test_folder_named_in_words_is_refused_for_the_digits_model(exported, tmp_path):
    """Class folders zero..nine against the digits model: refused, not scored 15 %."""
    from PIL import Image
    from sklearn.datasets import load_digits

    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    d = load_digits()
    for i, (img, y) in enumerate(zip(d.images[:200], d.target[:200])):
        folder = tmp_path / "words" / words[y]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.uint8(img * 255 / 16)).save(folder / f"{i}.png")
    artifact = exported("onnx", "fp32").artifact
    code, _, stderr = cli("validate", str(artifact), "--dataset", f"folder:{tmp_path / 'words'}")
    assert code == 2 and "do not match" in stderr and "eight, five, four" in stderr


# -- no gate passes nonsense ------------------------------------------------------------------------
@pytest.mark.slow
def test_nan_weights_fail_before_anything_is_written(lkca1m, tmp_path):
    import copy

    import torch

    from lkca_edge.checkpoints import save_checkpoint

    broken = copy.deepcopy(lkca1m)
    with torch.no_grad():
        broken.blocks[2].mlp.fc1.weight[0, 0] = float("nan")
    path = save_checkpoint(broken, tmp_path / "nan.pt", data=lkca1m.data_record)
    code, _, stderr = cli("export", "--checkpoint", str(path), "--backend", "onnx",
                          "--out", str(tmp_path / "out"))
    assert code == 3 and "blocks.2.mlp.fc1.weight holds NaN" in stderr, stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_non_finite_logits_fail_the_gate():
    from lkca_edge.gates import validate_logits

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((50, 10)).astype(np.float32) * 4
    y = ref.argmax(1)
    bad = ref.copy()
    bad[7, 3] = np.inf
    r = validate_logits(bad, ref, y, "onnx", "fp32")
    assert r.passed is False and r.failures == ["the artifact's logits hold Inf (first at image 7, class 3)"]
    r = validate_logits(ref, np.full_like(ref, np.nan), y, "onnx", "int8")
    assert r.passed is False and "source model's logits hold NaN (first at image 0, class 0)" in r.failures[0]
    all_nan = np.full_like(ref, np.nan)
    assert validate_logits(all_nan, all_nan, y, "onnx", "fp32").passed is False


def test_a_model_at_chance_fails_and_an_untrained_one_is_gated_on_numerics():
    from lkca_edge.errors import UserError
    from lkca_edge.gates import validate_logits

    rng = np.random.default_rng(1)
    ref = rng.standard_normal((200, 4)).astype(np.float32)
    y = rng.integers(0, 4, 200)  # labels unrelated to the logits: ~25 % = chance
    r = validate_logits(ref, ref, y, "onnx", "fp32")
    assert r.passed is False and "not trained for this data" in r.failures[0]
    r = validate_logits(ref + 1e-3, ref, y, "onnx", "int8", trained=False)
    assert r.passed is True and r.note.startswith("untrained: accuracy not meaningful")
    r = validate_logits(ref * -1, ref, y, "onnx", "int8", trained=False)
    assert r.passed is False  # numerics still gate an untrained model
    with pytest.raises(UserError, match="unknown precision"):
        validate_logits(ref, ref, y, "onnx", "int4")


@pytest.mark.slow
def test_digits_model_on_photos_labelled_0_to_9_is_not_trained_for_them(exported, tmp_path):
    """Labels match (0..9), the pictures are photos: the source is at chance and nothing passes."""
    names = {cls: str(i) for i, cls in enumerate(LABELS)}
    folder = make_photo_folder(tmp_path / "numbered", per_class=15, names=names)
    from PIL import Image

    for i in range(4, 10):  # the other six digit classes, with photos too
        (folder / str(i)).mkdir()
        for j, crop in enumerate(photo_crops("coffee", 5, 50 + i)):
            Image.fromarray(crop).save(folder / str(i) / f"{j}.jpg")
    artifact = exported("onnx", "fp32").artifact
    code, stdout, stderr = cli("validate", str(artifact), "--dataset", f"folder:{folder}")
    assert code == 3, stdout + stderr
    assert "not trained for this data" in stdout


@pytest.mark.slow
def test_untrained_config_exports_for_latency_and_says_so(tmp_path):
    code, stdout, stderr = cli("export", "lkca-0.5m", "--backend", "onnx", "--precision", "int8",
                               "--out", str(tmp_path), "--limit", "120")
    assert code == 0, stderr
    assert "accuracy not meaningful (untrained)" in stdout and "PASS" in stdout
    manifest = json.loads(next(tmp_path.glob("*.manifest.json")).read_text())
    assert manifest["trained"] is False
    assert manifest["validation"]["note"].startswith("untrained: accuracy not meaningful")


@pytest.mark.slow
def test_training_stops_at_the_first_non_finite_loss(tmp_path):
    code, _, stderr = cli("train", "lkca-0.5m", "--epochs", "1", "--lr", "inf", "--out", str(tmp_path))
    assert code == 2 and "--lr must be a finite number above 0" in stderr
    code, _, stderr = cli("train", "lkca-0.5m", "--epochs", "1", "--lr", "1e30", "--out", str(tmp_path))
    assert code == 2 and "training stopped at epoch 1" in stderr and "no checkpoint written" in stderr
    assert not list(tmp_path.glob("*.pt"))


# -- your own configuration -----------------------------------------------------------------------
@pytest.mark.slow
def test_num_classes_equal_to_the_models_own_keeps_its_weights(tmp_path):
    code, stdout, stderr = cli("export", "lkca-1m", "--num-classes", "10", "--backend", "onnx",
                               "--out", str(tmp_path), "--limit", "100")
    assert code == 0, stderr
    manifest = json.loads(next(tmp_path.glob("*.manifest.json")).read_text())
    assert manifest["source"]["pretrained"] == "digits" and manifest["validation"]["accuracy"] > 0.9


@pytest.mark.slow
def test_checkpoint_of_a_config_not_in_the_zoo(tmp_path, digits, lkca1m):
    from lkca_edge.checkpoints import save_checkpoint
    from lkca_edge.models import build_model
    from lkca_edge.models_config import ModelConfig

    custom = build_model("mine", ModelConfig("lkca", dim=64, depth=3), lkca1m.preprocessing)
    # a custom config, trained a little so it is not at chance
    from lkca_edge.train import TrainConfig, train

    train(custom, digits, TrainConfig(epochs=2, batch_size=64), show_progress=False)
    path = save_checkpoint(custom, tmp_path / "mine.pt", data=lkca1m.data_record)
    code, stdout, stderr = cli("export", "--checkpoint", str(path), "--backend", "onnx",
                               "--out", str(tmp_path / "out"))
    assert code == 0, stderr
    manifest = json.loads(next((tmp_path / "out").glob("*.manifest.json")).read_text())
    assert manifest["config"]["dim"] == 64 and manifest["config"]["depth"] == 3
    assert manifest["model"] == "mine"

    # a name that is not the checkpoint's architecture is refused, nothing written
    ckpt_1m = tmp_path / "1m.pt"
    save_checkpoint(lkca1m, ckpt_1m, data=lkca1m.data_record)
    code, _, stderr = cli("export", "lkca-2m", "--checkpoint", str(ckpt_1m), "--backend", "onnx",
                          "--out", str(tmp_path / "refused"))
    assert code == 2 and "not lkca-2m" in stderr and "(lkca-1m)" in stderr
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())


# -- the Python API, from a script without a main guard ------------------------------------------
@pytest.mark.slow
def test_api_script_without_main_guard(tmp_path):
    script = tmp_path / "my_script.py"
    script.write_text(textwrap.dedent(f"""
        import lkca_edge

        result = lkca_edge.export("lkca-1m", "onnx", "int8", out={str(tmp_path / 'out')!r},
                                  validation_limit=60)
        print("exported", result.artifact.name, result.validation["passed"])
        check = lkca_edge.validate(result.artifact)
        print("validated", check.passed, check.n_images)
        prof = lkca_edge.profile(result.artifact, threads=1, runs=5, warmup=1, op_runs=0)
        print("median", prof.latency_ms["median"] > 0, prof.peak_rss_mb > 0)
        try:
            lkca_edge.validate({str(tmp_path / 'missing.onnx')!r})
        except lkca_edge.UserError as exc:
            print("error", exc)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "exported lkca-1m_onnx_int8-dynamic.onnx True" in out
    assert "validated True 60" in out and "median True True" in out
    assert "error artifact not found" in out


@pytest.mark.slow
def test_api_exports_a_users_own_torch_module(tmp_path, lkca1m):
    """A non-zoo nn.Module goes through the same convert -> validate pipeline."""
    import torch
    from torch import nn

    import lkca_edge
    from lkca_edge.preprocessing import Preprocessing

    class Wrapped(nn.Module):  # the user's own module around a trained network
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) * 1.0

    prep = Preprocessing(image_size=32, labels=tuple(str(i) for i in range(10)))
    result = lkca_edge.export(Wrapped(lkca1m), "onnx", "fp32", out=tmp_path, calibration="digits",
                              example_input=torch.zeros(1, 3, 32, 32), preprocessing=prep,
                              name="wrapped", validation_limit=60)
    assert result.validation["passed"] and result.manifest.model == "wrapped"
    assert result.manifest.source.get("module").endswith(".Wrapped")
    assert lkca_edge.validate(result.artifact).passed
    with pytest.raises(lkca_edge.UserError, match="validation pack"):
        lkca_edge.validate(result.artifact, dataset="digits")


# -- what the user reads --------------------------------------------------------------------------
def test_list_recipes_exists():
    code, stdout, _ = cli("export", "--list-recipes")
    assert code == 0
    assert "onnx (.onnx" in stdout and "int8-dynamic" in stdout and "[default int8]" in stdout
    assert "--list-recipes" in run_cli("export", "--help").stdout
