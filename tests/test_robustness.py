"""Hunting for failures: property-based tests of the parsers, a full disk, mutated artifacts fed
to every runtime loader (in a child process), and a soak of consecutive inferences."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lkca_edge.errors import UserError
from lkca_edge.preprocessing import Preprocessing

# Mutated files per backend (every 4th of each kind); each runs in its own child, and an
# ExecuTorch child spends most of its time importing the runtime: fewer of those.
FUZZ_CASES = {name: int(os.environ.get("LKCA_EDGE_FUZZ_CASES", n))
              for name, n in (("onnx", 12), ("tflite", 12), ("executorch", 8))}
# Fixed seeds, so a failing mutation replays: LKCA_EDGE_FUZZ_SEED overrides all three.
FUZZ_SEEDS = {name: int(os.environ.get("LKCA_EDGE_FUZZ_SEED", seed))
              for name, seed in (("onnx", 11), ("tflite", 12), ("executorch", 13))}
SOAK_INFERENCES = int(os.environ.get("LKCA_EDGE_SOAK", "10000"))


# -- property-based ------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=st.integers(1, 90), h=st.integers(1, 90),
       mode=st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "I;16", "1", "CMYK"]),
       size=st.sampled_from([16, 32, 64]), seed=st.integers(0, 2**16))
def test_any_image_becomes_a_valid_input(tmp_path_factory, w, h, mode, size, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path_factory.mktemp("img") / "x.png"
    img.save(path) if mode != "CMYK" else img.save(path.with_suffix(".jpg"))
    path = path if mode != "CMYK" else path.with_suffix(".jpg")
    prep = Preprocessing(image_size=size)
    x = prep.load_image(path)
    assert x.shape == (1, 3, size, size) and x.dtype == np.float32
    assert np.isfinite(x).all() and x.min() >= -1.0 - 1e-6 and x.max() <= 1.0 + 1e-6


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.sampled_from(["image_size", "mean", "std", "channel_order", "layout",
                                        "resize", "scale", "labels", "bogus"]),
                       st.one_of(st.integers(-5, 300), st.floats(allow_nan=True), st.text(max_size=5),
                                 st.lists(st.floats(-2, 2), max_size=4), st.none())))
def test_preprocessing_parser_accepts_or_refuses_cleanly(d):
    try:
        prep = Preprocessing.from_dict(d)
    except UserError:
        return
    prep.check()
    assert prep.image_size >= 1 and len(prep.mean) == 3


@settings(max_examples=80, deadline=None)
@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=12))
def test_manifest_parser_never_crashes(data):
    from lkca_edge.manifest import Manifest

    try:
        Manifest.from_dict(data)
    except UserError:
        pass


_GOOD_PROFILE = yaml.safe_load((Path(__file__).parents[1] / "profiles/devices/raspberry-pi-4.yaml").read_text())


@settings(max_examples=80, deadline=None)
@given(key=st.sampled_from(sorted(_GOOD_PROFILE) + ["extra_field"]),
       value=st.one_of(st.none(), st.integers(-3, 10**6), st.floats(allow_nan=True), st.text(max_size=6),
                       st.lists(st.text(max_size=6), max_size=3), st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2)))
def test_profile_parser_names_file_and_field(key, value):
    from lkca_edge.profiles.devices import parse_profile

    data = dict(_GOOD_PROFILE, **{key: value})
    try:
        parse_profile(data, "raspberry-pi-4.yaml")
    except UserError as exc:
        assert "raspberry-pi-4.yaml" in str(exc)


# -- a full disk ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_full_disk_is_one_line_and_leaves_no_file(tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: writes past 200 KB fail with EFBIG."""
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
        "from lkca_edge.cli import main\n"
        f"sys.exit(main(['export', 'lkca-1m', '--backend', 'onnx', '--out', {str(tmp_path)!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "File too large" in proc.stderr or "space" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that ignores directory permissions")
        proc = subprocess.run([sys.executable, "-m", "lkca_edge", "export", "lkca-1m", "--backend",
                               "onnx", "--out", str(ro / "sub")], capture_output=True, text=True)
        assert proc.returncode == 2 and "cannot write" in proc.stderr
    finally:
        ro.chmod(0o700)


def test_out_path_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "lkca_edge", "export", "lkca-1m", "--backend", "onnx",
                           "--out", str(f)], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


# -- fuzzing the runtime loaders -----------------------------------------------------------------

@pytest.fixture
def real_artifacts(exported):
    """One real fp32 artifact per runnable backend (the session cache; read-only)."""
    from lkca_edge.converters import get_backend

    return {name: exported(name, "fp32").artifact for name in ("onnx", "tflite", "executorch")
            if not (get_backend(name).available() or get_backend(name).runnable())}


def _mutations(data: bytes, n: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = i % 4
        b = bytearray(data)
        if kind == 0:  # bit flips
            for pos in rng.integers(0, len(b), 8):
                b[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # truncation
            b = b[: int(rng.integers(0, len(b)))]
        elif kind == 2:  # appended garbage
            b += rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
        else:  # a header-region scramble
            end = min(len(b), 512)
            b[:end] = rng.permutation(np.frombuffer(bytes(b[:end]), np.uint8)).tobytes()
        yield kind, bytes(b)


@pytest.mark.parametrize("backend", ["onnx", "tflite", "executorch"])
@pytest.mark.slow
def test_mutated_artifacts_never_kill_the_cli(real_artifacts, digits, tmp_path, backend):
    from lkca_edge.isolation import run_isolated
    from lkca_edge.pipelines.artifacts import run_artifact

    if backend not in real_artifacts:
        pytest.skip(f"{backend} is not available here")
    good = real_artifacts[backend].read_bytes()
    x = digits.test_x[:2]
    outcomes = {"clean_error": 0, "ran": 0}
    for i, (kind, data) in enumerate(_mutations(good, FUZZ_CASES[backend], seed=FUZZ_SEEDS[backend])):
        path = tmp_path / f"m{i}{real_artifacts[backend].suffix}"
        path.write_bytes(data)
        try:
            logits = run_isolated(run_artifact, backend, str(path), x, 1, what=f"{backend} loader",
                                  timeout=300)
            assert logits.shape == (2, 10)
            outcomes["ran"] += 1
        except UserError as exc:
            assert "\n" not in str(exc).strip()
            outcomes["clean_error"] += 1
    print(f"fuzz {backend}: {FUZZ_CASES[backend]} cases, seed {FUZZ_SEEDS[backend]}: {outcomes}")
    # truncations and header scrambles are among the cases: some must have been refused
    assert outcomes["clean_error"] >= 1, outcomes


# -- soak ------------------------------------------------------------------------------------------

def _soak(backend: str, path: str, images: np.ndarray, n: int) -> list[tuple[int, float]]:
    from lkca_edge.converters import get_backend
    from lkca_edge.profiles.measure import current_rss_mb

    runner = get_backend(backend).load(path, threads=1)
    samples = []
    for i in range(n):
        runner(images[i % len(images)][None])
        if i % 500 == 0 or i == n - 1:
            samples.append((i, current_rss_mb()))
    return samples


@pytest.mark.parametrize("backend", ["onnx", "tflite", "executorch"])
@pytest.mark.slow
def test_soak_rss_does_not_grow(real_artifacts, digits, backend):
    from lkca_edge.isolation import run_isolated

    if backend not in real_artifacts:
        pytest.skip(f"{backend} is not available here")
    samples = run_isolated(_soak, backend, str(real_artifacts[backend]), digits.test_x[:64],
                           SOAK_INFERENCES, what=f"{backend} soak", timeout=1200)
    steps = np.array([s[0] for s in samples], float)
    rss = np.array([s[1] for s in samples], float)
    settled = steps >= 1000  # after warm-up allocations
    slope_mb_per_10k = float(np.polyfit(steps[settled], rss[settled], 1)[0] * 10_000)
    print(f"soak {backend}: {SOAK_INFERENCES} inferences, RSS {rss[0]:.1f} -> {rss[-1]:.1f} MB, "
          f"slope {slope_mb_per_10k:+.2f} MB per 10k")
    assert len(samples) >= SOAK_INFERENCES // 500
    assert slope_mb_per_10k < 2.0 and rss[-1] - rss[settled][0] < 4.0
