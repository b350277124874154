"""Real data loaders: digits split, CIFAR python batches (with a hostile pickle), image folders."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from lkca_edge.data import load_dataset, restricted_load
from lkca_edge.errors import UserError
from lkca_edge.preprocessing import Preprocessing

PREP = Preprocessing(image_size=32)


def test_digits_split_is_fixed_and_disjoint():
    a = load_dataset("digits", PREP)
    b = load_dataset("digits", PREP)
    assert len(a.train_x) + len(a.val_x) + len(a.test_x) == 1797
    assert a.test_x.shape == (359, 3, 32, 32) and a.test_x.dtype == np.float32
    assert np.array_equal(a.test_x, b.test_x) and np.array_equal(a.test_y, b.test_y)
    # The three channels are the grey scan replicated; values span the normalised range.
    assert np.array_equal(a.test_x[:, 0], a.test_x[:, 2])
    assert a.test_x.min() == pytest.approx(-1.0) and a.test_x.max() == pytest.approx(1.0)
    # No image is in two splits.
    train = {x.tobytes() for x in a.train_x}
    assert sum(x.tobytes() in train for x in a.test_x) < 5  # only duplicate scans could collide
    assert set(np.unique(a.test_y)) == set(range(10))


def test_digits_at_64px():
    d = load_dataset("digits", Preprocessing(image_size=64))
    assert d.train_x.shape[1:] == (3, 64, 64)


def _write_cifar10(root, n_per_batch=20):
    rng = np.random.default_rng(0)
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, n_per_batch)), b"batch_label": name.encode()}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer",
                                                   "dog", "frog", "horse", "ship", "truck")]}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def test_cifar10_python_batches(tmp_path):
    _write_cifar10(tmp_path / "cifar")
    d = load_dataset(f"cifar10:{tmp_path / 'cifar'}", PREP)
    assert len(d.test_x) == 20 and len(d.train_x) + len(d.val_x) == 100
    assert d.labels[0] == "airplane"
    raw = pickle.loads((tmp_path / "cifar" / "test_batch").read_bytes())
    first = raw[b"data"][0].reshape(3, 32, 32).astype(np.float32) / 255
    assert np.allclose(d.test_x[0], (first - 0.5) / 0.5, atol=1e-6)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/lkca_edge_pwned_by_cifar",))


def test_hostile_cifar_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = "/tmp/lkca_edge_pwned_by_cifar"
    if os.path.exists(marker):
        os.remove(marker)
    _write_cifar10(tmp_path / "cifar")
    (tmp_path / "cifar" / "test_batch").write_bytes(pickle.dumps({b"data": _RunsCode()}))
    with pytest.raises(UserError, match="refused to load posix.system|refused to load os.system"):
        load_dataset(f"cifar10:{tmp_path / 'cifar'}", PREP)
    assert not os.path.exists(marker)
    with pytest.raises(pickle.UnpicklingError):
        restricted_load(pickle.dumps(_RunsCode()))


def test_image_folder(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(40):
        cls = tmp_path / "digits" / f"class_{digits.target[i]}"
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 15).astype(np.uint8)).save(cls / f"{i}.png")
    d = load_dataset(f"folder:{tmp_path / 'digits'}", PREP)
    assert len(d.train_x) + len(d.val_x) + len(d.test_x) == 40
    assert d.labels == tuple(sorted({f"class_{t}" for t in digits.target[:40]}))


@pytest.mark.parametrize("spec,msg", [
    ("mnist", "unknown dataset 'mnist'"),
    ("cifar10", "needs a directory"),
    ("cifar10:/nonexistent", "not found"),
    ("folder:/nonexistent", "not found"),
])
def test_bad_dataset_specs(spec, msg):
    with pytest.raises(UserError, match=msg):
        load_dataset(spec, PREP)


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(UserError, match="no images found"):
        load_dataset(f"folder:{tmp_path}", PREP)
