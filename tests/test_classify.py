"""`lkca-edge classify` on real image files with a real ONNX artifact (lkca-1m, digits weights).

Digits: held-out scans from scikit-learn's digits (the test split the model never trained on),
upscaled and written as RGB, RGBA (ink in the alpha channel), grayscale PNG and JPEG. Photos:
scikit-learn's sample images and scikit-image's astronaut: the digits model has nothing sensible
to say about them, but it must run and print k labels with probabilities.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
PER_MODE = 12


def cli(argv: list[str]) -> tuple[int, str, str]:
    from lkca_edge.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def cli_subprocess(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "lkca_edge", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)


@pytest.fixture
def artifact(exported):
    """lkca-1m exported to ONNX fp32, validated on held-out digits (the session cache)."""
    return exported("onnx", "fp32").artifact


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    """{mode: [(path, true label)]}: held-out digits written as image files in several modes."""
    from sklearn.datasets import load_digits

    from lkca_edge.data import _seeded_split

    d = load_digits()
    test = _seeded_split(len(d.images), test=0.2, val=0.1)[2][:PER_MODE]
    root = tmp_path_factory.mktemp("digits")
    files: dict[str, list[tuple[Path, int]]] = {"rgb": [], "rgba": [], "gray": [], "jpeg": []}
    for n, i in enumerate(test):
        ink = np.round(d.images[i] * (255.0 / 16.0)).astype(np.uint8)
        big = Image.fromarray(ink, "L").resize((56 + 8 * (n % 3), 56 + 8 * (n % 3)),
                                              Image.Resampling.BILINEAR)  # any size
        label = int(d.target[i])
        p = root / f"rgb_{n}.png"
        big.convert("RGB").save(p)
        files["rgb"].append((p, label))
        p = root / f"gray_{n}.png"
        big.save(p)
        files["gray"].append((p, label))
        # RGBA: white ink whose opacity is the ink level, on a transparent background
        rgba = Image.merge("RGBA", [Image.new("L", big.size, 255)] * 3 + [big])
        p = root / f"rgba_{n}.png"
        rgba.save(p)
        files["rgba"].append((p, label))
        p = root / f"digit_{n}.jpg"
        big.convert("RGB").save(p, quality=95)
        files["jpeg"].append((p, label))
    for mode, expected in (("rgb", "RGB"), ("rgba", "RGBA"), ("gray", "L")):
        with Image.open(files[mode][0][0]) as im:
            assert im.mode == expected
    return files


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real photos: scikit-learn's china/flower (JPEG and PNG) and scikit-image's astronaut."""
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    root = tmp_path_factory.mktemp("photos")
    paths = []
    sample = load_sample_images()
    for name, img in zip(sample.filenames, sample.images):
        stem = Path(name).stem
        Image.fromarray(img).save(root / f"{stem}.jpg", quality=90)
        Image.fromarray(img).save(root / f"{stem}.png")
        paths += [root / f"{stem}.jpg", root / f"{stem}.png"]
    Image.fromarray(skdata.astronaut()).save(root / "astronaut.png")
    Image.fromarray(skdata.camera()).save(root / "camera.png")  # a grayscale photo
    paths += [root / "astronaut.png", root / "camera.png"]
    return paths


@pytest.mark.parametrize("mode", ["rgb", "rgba", "gray", "jpeg"])
def test_digits_predict_their_labels(artifact, digit_files, mode):
    files = digit_files[mode]
    code, stdout, stderr = cli(["classify", *[str(p) for p, _ in files], "--artifact", str(artifact),
                                "--top-k", "3", "--json"])
    assert code == 0, stderr
    preds = json.loads(stdout)
    assert [p["image"] for p in preds] == [str(p) for p, _ in files]
    correct = sum(int(p["top"][0]["label"]) == label for p, (_, label) in zip(preds, files))
    assert correct >= 0.8 * len(files), (mode, correct, len(files))
    for p in preds:
        probs = [t["probability"] for t in p["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        assert 0 < sum(probs) <= 1 + 1e-9


def test_photos_run_and_print_k_labels(artifact, photos):
    k = 4
    code, stdout, stderr = cli(["classify", *map(str, photos), "--artifact", str(artifact),
                                "--top-k", str(k)])
    assert code == 0, stderr
    blocks = stdout.strip().split("\n")
    assert len(blocks) == len(photos) * (k + 1)
    for n, path in enumerate(photos):
        head, *lines = blocks[n * (k + 1):(n + 1) * (k + 1)]
        assert head == f"{path}:"
        probs = []
        for rank, line in enumerate(lines, 1):
            num, label, prob = line.split()
            assert num == f"{rank}." and label in [str(i) for i in range(10)]
            probs.append(float(prob))
        assert all(0 <= p <= 1 for p in probs) and probs == sorted(probs, reverse=True)
        assert sum(probs) <= 1 + 1e-4


def test_top_k_is_capped_at_the_number_of_classes(artifact, photos):
    code, stdout, _ = cli(["classify", str(photos[0]), "--artifact", str(artifact), "--top-k", "50",
                           "--json"])
    assert code == 0
    top = json.loads(stdout)[0]["top"]
    assert len(top) == 10 and sum(t["probability"] for t in top) == pytest.approx(1.0)


def test_garbage_image_is_one_line_exit_2(artifact, tmp_path, digit_files):
    bad = tmp_path / "garbage.png"
    bad.write_bytes(os.urandom(2048))
    good = digit_files["rgb"][0][0]
    proc = cli_subprocess("classify", str(good), str(bad), "--artifact", str(artifact))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "garbage.png" in lines[0] and "not a readable image" in lines[0]


@pytest.mark.parametrize("args, needle", [
    (["--top-k", "0"], "--top-k must be at least 1"),
    (["--artifact-missing"], "artifact not found"),
])
def test_bad_arguments(artifact, digit_files, args, needle, tmp_path):
    image = str(digit_files["rgb"][0][0])
    if args == ["--artifact-missing"]:
        argv = ["classify", image, "--artifact", str(tmp_path / "none.onnx")]
    else:
        argv = ["classify", image, "--artifact", str(artifact), *args]
    code, stdout, stderr = cli(argv)
    assert code == 2 and needle in stderr and len(stderr.strip().splitlines()) == 1


def test_missing_image_and_directory(artifact, tmp_path):
    code, _, stderr = cli(["classify", str(tmp_path / "nope.png"), "--artifact", str(artifact)])
    assert code == 2 and "image not found" in stderr
    code, _, stderr = cli(["classify", str(tmp_path), "--artifact", str(artifact)])
    assert code == 2 and "is a directory" in stderr


def test_softmax_is_stable():
    from lkca_edge.apps.classify import softmax

    p = softmax(np.array([[1000.0, 999.0, -1000.0]]))
    assert np.isfinite(p).all() and p.sum() == pytest.approx(1.0) and p[0, 0] > p[0, 1]
