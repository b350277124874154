"""The command line: instant --help, zoo listing, one-line errors with non-zero exits."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest


def cli(*args, check=False, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "lkca_edge", *args], capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode:
        raise AssertionError(proc.stderr)
    return proc


def test_help_imports_no_torch_or_backend():
    code = ("import sys; from lkca_edge.cli import build_parser; build_parser().format_help(); "
            "heavy = [m for m in ('torch', 'executorch', 'coremltools', 'onnx', 'onnxruntime', "
            "'ai_edge_litert', 'litert_torch', 'tensorflow', 'matplotlib') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    t0 = time.perf_counter()
    proc = cli("--help")
    assert proc.returncode == 0 and "export" in proc.stdout and "zoo" in proc.stdout
    assert time.perf_counter() - t0 < 5  # generous for a loaded CI box; ~0.2 s idle


def test_version():
    from lkca_edge import __version__

    assert cli("--version").stdout.strip() == f"lkca-edge {__version__}"


def test_zoo_json():
    rows = json.loads(cli("zoo", "--json", check=True).stdout)
    by_name = {r["name"]: r for r in rows}
    assert {"lkca-0.5m", "lkca-1m", "lkca-2m", "lkca-4m", "lkca-8m", "lkca-12m", "lkca-base",
            "vit-0.5m", "vit-1m", "vit-2m", "vit-4m", "vit-8m"} <= set(by_name)
    one = by_name["lkca-1m"]
    for key in ("name", "aliases", "family", "params", "macs", "image_size", "patch_size", "num_classes"):
        assert key in one
    assert one["aliases"] == ["lkca-t"] and one["family"] == "lkca"
    assert one["image_size"] == 32 and one["patch_size"] == 4 and one["num_classes"] == 10
    # MACs of one image: 9 blocks x (2 N D^2 + N^2 D + 2 N D 2D) + embed + head, N=64, D=136
    n, d = 64, 136
    assert one["macs"] == 9 * (2 * n * d * d + n * n * d + 4 * n * d * d) + n * 48 * d + d * 10
    assert by_name["vit-1m"]["family"] == "vit"


@pytest.mark.parametrize("args,expected", [
    (["export", "lkca-1n", "--backend", "onnx", "--out", "/tmp/x"], "did you mean: lkca-1m"),
    (["export", "lkca-1m", "--backend", "onxx", "--out", "/tmp/x"], "did you mean: onnx"),
    (["export", "lkca-1m", "--backend", "onnx", "--precision", "int4", "--out", "/tmp/x"], "unknown onnx precision 'int4'"),
    (["export", "lkca-1m", "--backend", "onnx", "--recipe", "int9", "--out", "/tmp/x"], "unknown onnx recipe 'int9'"),
    (["export", "lkca-1m", "--backend", "onnx", "--form", "froze", "--out", "/tmp/x"], "did you mean: frozen"),
    (["train", "lkca-1m", "--dataset", "mnist", "--epochs", "1", "--out", "/tmp/x"], "unknown dataset 'mnist'"),
    (["validate", "/nonexistent.onnx"], "artifact not found"),
])
def test_bad_names_are_one_line_errors(args, expected):
    proc = cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_checkpoint_cli(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 100)
    proc = cli("export", "lkca-1m", "--backend", "onnx", "--checkpoint", str(bad), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "not a readable checkpoint" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_debug_shows_traceback(tmp_path):
    proc = cli("--debug", "validate", str(tmp_path / "missing.onnx"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr
