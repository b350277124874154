"""Training is seeded and repeatable, and `lkca-edge train` writes a usable checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lkca_edge import create_model
from lkca_edge.data import load_dataset
from lkca_edge.train import TrainConfig, train


def _small_digits(model):
    data = load_dataset("digits", model.preprocessing)
    data.train_x, data.train_y = data.train_x[:256], data.train_y[:256]
    return data


@pytest.mark.slow
def test_training_is_seeded_and_learns():
    results = []
    for _ in range(2):
        model = create_model("lkca-0.5m")
        data = _small_digits(model)
        results.append(train(model, data, TrainConfig(epochs=3, warmup_epochs=1), show_progress=False))
    a, b = results
    assert [e["loss"] for e in a.epochs] == [e["loss"] for e in b.epochs]
    assert a.epochs[-1]["loss"] < a.epochs[0]["loss"]
    assert a.test_accuracy > 0.2  # well above chance (0.1) after 3 short epochs
    assert a.wall_seconds > 0


@pytest.mark.slow
def test_training_keeps_the_requested_form():
    model = create_model("lkca-0.5m", form="frozen-linear")
    data = _small_digits(model)
    train(model, data, TrainConfig(epochs=1), show_progress=False)
    assert model.form == "frozen-linear"
    # The frozen matrix was recomputed from the trained kernels.
    x = data.test_x[:4]
    import torch

    with torch.no_grad():
        frozen = model(torch.from_numpy(x)).numpy()
        conv = model.set_form("conv")(torch.from_numpy(x)).numpy()
    assert np.abs(frozen - conv).max() < 1e-4


@pytest.mark.slow
def test_train_command_writes_checkpoint_and_metrics(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lkca_edge", "train", "lkca-0.5m", "--epochs", "1",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 1 and 0 <= metrics["test_accuracy"] <= 1
    assert {"loss", "val_accuracy"} <= set(metrics["epochs"][0])
    ckpt = tmp_path / "lkca-0.5m-digits.pt"
    model = create_model("lkca-0.5m", checkpoint=ckpt)
    assert model.preprocessing.labels == tuple(str(i) for i in range(10))
    assert not list(tmp_path.glob("*.partial*"))
