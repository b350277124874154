"""Real image data: scikit-learn's digits (embedded), CIFAR-10/100 and image folders from disk.

Every command names data the same way: ``digits``, ``cifar10:DIR``, ``cifar100:DIR`` or
``folder:DIR``. Images come out preprocessed by the model's ``Preprocessing`` as float32
(N, 3, H, W) arrays with a fixed, seeded train/val/test split. numpy + Pillow only (no torch).

A ``DataRecord`` says which data a model was trained on, or an artifact calibrated and validated
on (kind, absolute path, label names in order, split seed); checkpoints and manifests carry it,
and every command defaults to the data its model records.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from lkca_edge.datarecord import DIGIT_LABELS, KINDS, SPLIT_SEED, DataRecord, parse_spec
from lkca_edge.errors import UserError
from lkca_edge.preprocessing import IMAGE_SUFFIXES, Preprocessing


@dataclass
class Dataset:
    name: str
    labels: tuple[str, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    test_pixels: np.ndarray | None = None   # (N, H, W, 3) uint8 RGB behind test_x
    record: DataRecord | None = None
    note: str = ""                           # how its labels were matched to a model's

    def calibration(self, size: int) -> np.ndarray:
        """The first ``size`` training images (calibration never sees the test split)."""
        return self.train_x[: max(1, size)]

    def relabelled(self, match, model_labels) -> "Dataset":
        """The same images with labels mapped onto a model's classes (``labels.LabelMatch``)."""
        if match.remap is None and not match.note:
            return self
        return replace(self, labels=tuple(model_labels) or self.labels,
                       train_y=match.apply(self.train_y), val_y=match.apply(self.val_y),
                       test_y=match.apply(self.test_y), note=match.note)


def _to_uint8_rgb(images: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """(N, h, w[, c]) uint8 -> (N, H, W, 3) uint8 resized with the model's preprocessing."""
    from PIL import Image

    out = np.empty((len(images), prep.image_size, prep.image_size, 3), np.uint8)
    for i, img in enumerate(images):
        out[i] = prep.resize_rgb(Image.fromarray(img))
    return out


def _seeded_split(n: int, test: float, val: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test, n_val = int(round(n * test)), int(round(n * val))
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


def _from_split(name, labels, pixels, y, prep, train, val, test, path=None) -> Dataset:
    rgb = _to_uint8_rgb(pixels, prep)
    return _dataset(name, labels, rgb, y, prep, train, val, test, path)


def _dataset(name, labels, rgb, y, prep, train, val, test, path=None) -> Dataset:
    """A Dataset from (N, H, W, 3) uint8 RGB images at the model's size and their labels."""
    x = prep.normalize(rgb)
    y = np.asarray(y, np.int64)
    kind = name.split(":")[0]
    record = DataRecord(kind, path, tuple(labels))
    return Dataset(name, tuple(labels), x[train], y[train], x[val], y[val], x[test], y[test],
                   test_pixels=np.ascontiguousarray(rgb[test]), record=record)


def load_digits(prep: Preprocessing, _arg: str | None = None) -> Dataset:
    """scikit-learn's 1,797 real 8x8 scans of handwritten digits (ships with scikit-learn)."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise UserError("the digits data set ships inside scikit-learn, which is not installed "
                        "(pip install 'lkca-edge[data]')") from None

    d = sk_digits()
    pixels = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 ink levels -> 0..255
    train, val, test = _seeded_split(len(pixels), test=0.2, val=0.1)
    return _from_split("digits", DIGIT_LABELS, pixels, d.target, prep, train, val, test)


class RestrictedUnpickler(pickle.Unpickler):
    """Admits builtin containers, bytes, str, numbers and numpy arrays; nothing that runs code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("builtins", "bytes"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name} (only data types are allowed)")


def restricted_load(data: bytes):
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def _read_cifar_batch(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"CIFAR batch not found: {path} (expected the official python-batch files)")
    try:
        batch = restricted_load(path.read_bytes())
    except pickle.UnpicklingError as exc:
        raise UserError(f"{path} was refused: {exc}") from None
    except Exception as exc:
        raise UserError(f"{path} is not a CIFAR python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise UserError(f"{path} is not a CIFAR python batch (no dict inside)")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}


def _cifar(prep: Preprocessing, directory: str | None, coarse: bool) -> Dataset:
    kind = "cifar100" if coarse else "cifar10"
    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"{kind} directory not found: {root}")
    if coarse:
        train_files, test_files, meta_file, label_key, names_key = (
            ["train"], ["test"], "meta", "fine_labels", "fine_label_names")
    else:
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_files, meta_file, label_key, names_key = (
            ["test_batch"], "batches.meta", "labels", "label_names")
    meta = _read_cifar_batch(root / meta_file)
    labels = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key]]

    def read(files):
        xs, ys = [], []
        for f in files:
            b = _read_cifar_batch(root / f)
            try:
                xs.append(np.asarray(b["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                ys.append(np.asarray(b[label_key], np.int64))
            except (KeyError, ValueError) as exc:
                raise UserError(f"{root / f} is not a CIFAR python batch ({exc})") from None
        return np.concatenate(xs), np.concatenate(ys)

    train_pixels, train_y = read(train_files)
    test_pixels, test_y = read(test_files)
    pixels = np.concatenate([train_pixels, test_pixels])
    y = np.concatenate([train_y, test_y])
    n_train = len(train_pixels)
    order = np.random.default_rng(SPLIT_SEED).permutation(n_train)
    n_val = n_train // 10
    test = np.arange(n_train, len(pixels))
    return _from_split(kind, labels, pixels, y, prep, order[n_val:], order[:n_val], test,
                       path=str(root.resolve()))


def load_cifar10(prep: Preprocessing, directory: str | None) -> Dataset:
    return _cifar(prep, directory, coarse=False)


def load_cifar100(prep: Preprocessing, directory: str | None) -> Dataset:
    return _cifar(prep, directory, coarse=True)


def load_folder(prep: Preprocessing, directory: str | None) -> Dataset:
    """One subfolder per class of PNG/JPEG images; seeded 70/10/20 split."""
    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"image folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files, y = [], []
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                y.append(label)
    if not files:
        raise UserError(f"no images found in {root} (expected one subfolder per class with "
                        f"{', '.join(IMAGE_SUFFIXES)} files)")
    rgb = np.stack([prep.load_rgb(f) for f in files])
    train, val, test = _seeded_split(len(files), test=0.2, val=0.1)
    path = str(root.resolve())
    return _dataset(f"folder:{path}", classes, rgb, y, prep, train, val, test, path=path)


DATASETS: dict[str, Callable[[Preprocessing, str | None], Dataset]] = {
    "digits": load_digits,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "folder": load_folder,
}
assert tuple(DATASETS) == KINDS


def load_dataset(spec: str, prep: Preprocessing) -> Dataset:
    """``digits`` | ``cifar10:DIR`` | ``cifar100:DIR`` | ``folder:DIR`` -> preprocessed Dataset."""
    kind, path = parse_spec(spec)
    return DATASETS[kind](prep, path)


def recorded_spec(given: str | None, recorded, option: str, what: str) -> str:
    """The data set to use: ``given`` (the user's option) wins; else the ``recorded`` one
    (a DataRecord, its dict or a spec string), which must still exist. Never a silent default."""
    if given:
        return given
    if recorded is None:
        raise UserError(f"{what} records no data set; name one with {option} SPEC "
                        f"(digits, cifar10:DIR, cifar100:DIR or folder:DIR)")
    record = recorded if isinstance(recorded, DataRecord) else DataRecord.from_dict(recorded, what)
    why = record.missing()
    if why:
        raise UserError(f"{what} was made with the data set {record.spec}, but {why}; pass "
                        f"{option} SPEC to use other data (its labels are matched by name)")
    return record.spec


def load_for_model(spec: str, prep: Preprocessing, model_labels, num_classes: int,
                   model_name: str) -> Dataset:
    """Load ``spec`` and map its labels onto the model's classes by name (``labels``);
    ``Dataset.note`` says what was done."""
    from lkca_edge.labels import match_labels

    data = load_dataset(spec, prep)
    match = match_labels(model_labels, data.labels, num_classes, data_name=data.name,
                         model_name=model_name)
    return data.relabelled(match, model_labels)
