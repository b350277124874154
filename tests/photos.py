"""Real-photo data sets for tests, built from scikit-image's sample photographs (installed with
scikit-image, no download): a ``folder:`` data set of a user's photos, and the same images as a
CIFAR-10 directory in the official python-batch format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

# class name -> the skimage.data photograph its images are taken from
PHOTOS = {"astronaut": "astronaut", "cat": "chelsea", "coffee": "coffee", "rocket": "rocket"}


def photo_crops(photo: str, n: int, seed: int, size: int = 48) -> list[np.ndarray]:
    """``n`` random crops (30-80 % of the short side, random flips) of one real photograph,
    resized to ``size`` px: many pictures of one subject, as a user's photo folder has."""
    import skimage.data
    from PIL import Image

    image = getattr(skimage.data, photo)()
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    out = []
    for _ in range(n):
        side = int(min(h, w) * rng.uniform(0.3, 0.8))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = image[y:y + side, x:x + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out.append(np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size))))
    return out


def make_photo_folder(root: Path, per_class: int = 40, seed: int = 0,
                      names: dict[str, str] | None = None) -> Path:
    """``root/<class>/<i>.jpg`` for the PHOTOS classes (``names`` renames folders)."""
    from PIL import Image

    root = Path(root)
    for i, (cls, photo) in enumerate(PHOTOS.items()):
        folder = root / (names or {}).get(cls, cls)
        folder.mkdir(parents=True, exist_ok=True)
        for j, crop in enumerate(photo_crops(photo, per_class, seed + i)):
            Image.fromarray(crop).save(folder / f"{j:03d}.jpg", quality=92)
    return root


def write_cifar10(root: Path, images: np.ndarray, labels: np.ndarray, label_names: list[str],
                  test_images: np.ndarray, test_labels: np.ndarray) -> Path:
    """A CIFAR-10 directory in the official format: ``data_batch_1..5``, ``test_batch`` and
    ``batches.meta``, pickled dicts with bytes keys, images as (N, 3072) uint8 rows (R, G, B
    planes of 32x32)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)

    def rows(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), -1), np.uint8)

    def batch(x, y, name):
        return {b"batch_label": name.encode(), b"labels": [int(v) for v in y],
                b"data": rows(x), b"filenames": [f"{i}.png".encode() for i in range(len(x))]}

    parts = np.array_split(np.arange(len(images)), 5)
    for k, idx in enumerate(parts, 1):
        with open(root / f"data_batch_{k}", "wb") as fh:
            pickle.dump(batch(images[idx], labels[idx], f"training batch {k} of 5"), fh, protocol=2)
    with open(root / "test_batch", "wb") as fh:
        pickle.dump(batch(test_images, test_labels, "testing batch 1 of 1"), fh, protocol=2)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [n.encode() for n in label_names],
                     b"num_cases_per_batch": int(len(parts[0])), b"num_vis": 3072}, fh, protocol=2)
    return root


def photo_cifar(root: Path, label_names: list[str], per_class: int = 30, seed: int = 100) -> Path:
    """The PHOTOS classes at 32 px as a CIFAR-10 directory whose ``label_names`` come in the
    order given (the label indices follow that order)."""
    xs, ys, tx, ty = [], [], [], []
    for cls, photo in PHOTOS.items():
        crops = np.stack(photo_crops(photo, per_class + 10, seed + len(xs), size=32))
        xs.append(crops[:per_class])
        tx.append(crops[per_class:])
        index = label_names.index(cls)
        ys += [index] * per_class
        ty += [index] * 10
    return write_cifar10(root, np.concatenate(xs), np.array(ys), label_names, np.concatenate(tx),
                         np.array(ty))
