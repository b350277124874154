"""Hostile input, integrity and bounded resources (issue 12), class by class, at the mechanism
that owns each: ``safeio`` (regular files, size caps, bounded JSON/YAML, expansion), the model
size limits, the typed schemas, ``Backend.artifact_files``, the private Core ML copy, children
that die with their parent, owner-tagged temporary files, ``export``'s replacement rule, escaped
output, images as a viewer shows them, the history, minimal device profiles and argument ranges.

Every hostile file is made here (FIFOs with os.mkfifo, bombs as text or bytes, sparse files).
The CLI-level matrix of the same cases is ``benchmarks/bad_inputs.py`` (see test_bad_inputs.py).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lkca_edge.errors import UserError

REPO = Path(__file__).resolve().parent.parent


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "lkca_edge", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


# -- 3. only regular files, each within its cap --------------------------------------------------
def test_fifo_device_and_directory_are_refused_without_blocking(tmp_path):
    from lkca_edge import safeio

    fifo = tmp_path / "x.json"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    for path, what in ((fifo, "a FIFO"), (Path("/dev/zero"), "a character device"),
                       (tmp_path, "a directory")):
        with pytest.raises(UserError, match=f"manifest {path} is not a regular file \\(it is {what}\\)"):
            safeio.read_json(path, "manifest")
        with pytest.raises(UserError, match="not a regular file"):
            safeio.check_regular(path, "manifest")
    assert time.monotonic() - t0 < 5  # nothing blocked on the FIFO


def test_size_caps_name_the_kind_and_the_cap(tmp_path):
    from lkca_edge import safeio

    big = tmp_path / "big.yaml"
    with open(big, "wb") as fh:
        fh.truncate(safeio.SIZE_LIMITS["device profile"] + 1)  # sparse
    with pytest.raises(UserError, match=r"device profile .* over the 1 MB limit for a device profile"):
        safeio.read_text(big, "device profile")
    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * 100)
    assert safeio.read_bytes(small, "image") == b"x" * 100
    with pytest.raises(UserError, match="over the 50 bytes limit"):
        safeio.read_bytes(small, "image", limit=50)


def test_every_reader_refuses_a_fifo(tmp_path):
    """Images, checkpoints, manifests, device profiles, CIFAR batches, results, run history."""
    from lkca_edge.checkpoints import read_checkpoint
    from lkca_edge.data import load_dataset
    from lkca_edge.manifest import read_manifest
    from lkca_edge.preprocessing import Preprocessing
    from lkca_edge.profiles.devices import load_profile_file
    from lkca_edge.results import ResultsStore
    from lkca_edge.results.schema import read_results

    for name in ("img.png", "ck.pt", "a.onnx.manifest.json", "p.yaml", "results.json", "db.sqlite"):
        os.mkfifo(tmp_path / name)
    (tmp_path / "cifar").mkdir()
    os.mkfifo(tmp_path / "cifar" / "batches.meta")
    calls = [lambda: Preprocessing().load_image(tmp_path / "img.png"),
             lambda: read_checkpoint(tmp_path / "ck.pt"),
             lambda: read_manifest(tmp_path / "a.onnx"),
             lambda: load_profile_file(tmp_path / "p.yaml"),
             lambda: read_results(tmp_path / "results.json"),
             lambda: ResultsStore(tmp_path / "db.sqlite", read_only=True),
             lambda: load_dataset(f"cifar10:{tmp_path / 'cifar'}", Preprocessing())]
    for call in calls:
        with pytest.raises(UserError, match="not a regular file"):
            call()


# -- 4. bounded parsing --------------------------------------------------------------------------
BILLION_LAUGHS = textwrap.dedent("""\
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    threads: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
    """)


def test_yaml_aliases_and_deep_json_are_refused(tmp_path):
    from lkca_edge import safeio

    assert len(BILLION_LAUGHS) < 600
    with pytest.raises(UserError, match="anchors and aliases"):
        safeio.parse_yaml(BILLION_LAUGHS, "device profile", "bomb.yaml")
    with pytest.raises(UserError, match="nests deeper than 64 levels"):
        safeio.parse_json("[" * 100_000 + "]" * 100_000, "manifest", "m.json")
    with pytest.raises(UserError, match="nests deeper"):
        safeio.parse_yaml("x: " + "[" * 5000 + "]" * 5000, "device profile", "p.yaml")
    assert safeio.parse_yaml("a: [1, {b: c}]\n", "device profile", "p.yaml") == {"a": [1, {"b": "c"}]}


def test_cifar_batch_that_expands_through_memo_references(tmp_path):
    from lkca_edge.data import load_dataset
    from lkca_edge.preprocessing import Preprocessing

    names: list = [b"cat"]
    for _ in range(30):
        names = [names, names]  # 2**30 names; pickle stores each list once (memo references)
    (tmp_path / "cifar").mkdir()
    blob = pickle.dumps({b"label_names": names}, protocol=2)
    assert len(blob) < 300
    (tmp_path / "cifar" / "batches.meta").write_bytes(blob)
    t0 = time.monotonic()
    with pytest.raises(UserError, match="expands to .* objects through repeated references"):
        load_dataset(f"cifar10:{tmp_path / 'cifar'}", Preprocessing())
    assert time.monotonic() - t0 < 5


def test_expansion_counts_shared_references_and_cycles():
    from lkca_edge.safeio import expansion

    leaf = [1, 2]
    assert expansion([leaf, leaf, {"k": leaf}]) == (1 + 3 + 3 + 1 + 1 + 3, 3)
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError):
        expansion(loop)


def _png_claiming(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    from lkca_edge.preprocessing import Preprocessing

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_claiming(30_000, 30_000))
    with pytest.raises(UserError, match=r"30000x30000 pixels \(900 megapixels\), over the 64-megapixel"):
        Preprocessing().load_image(bomb)


# -- 5. sizes before allocation ------------------------------------------------------------------
def test_model_config_limits_and_types():
    from lkca_edge.models_config import ModelConfig
    from lkca_edge.zoo import get_spec, resolve_config

    base = get_spec("lkca-1m").config
    for change, needle in (({"depth": 100_000}, "depth must be between 1 and 64"),
                           ({"dim": "136"}, "dim must be an integer, got '136'"),
                           ({"num_classes": 10**8}, "num_classes must be between"),
                           ({"image_size": 512, "patch_size": 1}, "262,144 tokens")):
        with pytest.raises(UserError, match=needle):
            ModelConfig(**{**base.__dict__, **change}).validate("ck.pt")
    with pytest.raises(UserError, match="image_size must be between 1 and 512, got 1,024"):
        resolve_config(base, image_size=1024)
    with pytest.raises(UserError, match="unknown model config field"):
        ModelConfig.from_dict({**base.__dict__, "width": 3})


def test_checkpoint_claiming_depth_100000_is_refused_before_building(tmp_path):
    import torch

    from lkca_edge.checkpoints import read_checkpoint

    shipped = REPO / "lkca_edge" / "weights" / "lkca-1m-digits.pt"
    payload = torch.load(shipped, map_location="cpu", weights_only=True)
    bad = dict(payload, config=dict(payload["config"], depth=100_000))
    torch.save(bad, tmp_path / "deep.pt")
    assert (tmp_path / "deep.pt").stat().st_size < 8 << 20
    with pytest.raises(UserError, match=r"deep\.pt: model config depth must be between 1 and 64"):
        read_checkpoint(tmp_path / "deep.pt")


def test_dataset_memory_is_checked_before_preprocessing():
    from lkca_edge.data import load_dataset
    from lkca_edge.preprocessing import Preprocessing

    with pytest.raises(UserError, match=r"1,797 images at 512 px would take 5\.3 GB"):
        load_dataset("digits", Preprocessing(image_size=512))


# -- 6. schemas ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_artifact(exported):
    return exported("onnx", "fp32")  # the session cache other modules share


def _manifest_copy(onnx_artifact, tmp_path, edit):
    from tests.conftest import copy_artifact

    art = copy_artifact(onnx_artifact.artifact, tmp_path)
    m = json.loads((art.parent / (art.name + ".manifest.json")).read_text())
    edit(m)
    (art.parent / (art.name + ".manifest.json")).write_text(json.dumps(m))
    return art


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m["config"].update(dim="136"), "field 'config': model config dim must be an integer"),
    (lambda m: m.update(inputs="abc"), "field 'inputs' must be a list, got 'abc'"),
    (lambda m: m["inputs"][0].update(shape=[1, 3, "abc", 32]), "field 'inputs[0].shape' is not a tensor shape"),
    (lambda m: m.update(precision="int4"), "field 'precision' is 'int4', not a known precision"),
    (lambda m: m.update(size_bytes="big"), "field 'size_bytes' must be an integer"),
    (lambda m: m["source"]["overrides"].update(image_size=100_000), "source.overrides.image_size"),
    (lambda m: m.update(artifact="../x.onnx"), "field 'artifact' must be a plain file name"),
])
def test_manifest_fields_are_typed(onnx_artifact, tmp_path, edit, needle):
    from lkca_edge.manifest import read_manifest

    art = _manifest_copy(onnx_artifact, tmp_path, edit)
    with pytest.raises(UserError) as err:
        read_manifest(art)
    assert needle in str(err.value) and str(art.name) in str(err.value)


def test_results_run_records_and_history_rows_are_typed(tmp_path):
    from lkca_edge.bench.state import read_run_state
    from lkca_edge.results.schema import check_results

    results = {"schema": "lkca-edge-results/1", "run": {"id": "x"},
               "cells": [{"model": "m", "backend": "onnx", "precision": "fp32", "status": "ok",
                          "metrics": "abc"}]}
    with pytest.raises(UserError, match=r"r\.json: field 'cells\[0\]\.metrics' must be a mapping"):
        check_results(results, "r.json")
    (tmp_path / "run.json").write_text(json.dumps({"schema": "lkca-edge-bench-run/1",
                                                   "options": {"runs": "abc"}, "run": {"id": "x"}}))
    with pytest.raises(UserError, match="field 'options.runs' must be an integer, got 'abc'"):
        read_run_state(tmp_path)


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c["per_layer"]["layers"][0].update(sqnr_db=None),
     "field 'cells[0].per_layer.layers[0].sqnr_db' must be a number"),
    (lambda c: c["per_layer"]["layers"][0].pop("cosine"), "cells[0].per_layer.layers[0] has no 'cosine'"),
    (lambda c: c["per_layer"].update(worst="blocks.0.mlp"), "field 'cells[0].per_layer.worst'"),
    (lambda c: c["delegation"]["reasons"][0].pop("count"), "cells[0].delegation.reasons[0] has no 'count'"),
])
def test_a_cell_record_the_report_could_not_render_is_refused(edit, needle):
    """What resume reads back from cells/*.json is checked as far as the report reads it: a
    per-layer row or a delegation reason with a field missing or null is one line, not a crash
    at the end of the run."""
    from lkca_edge.results.schema import SCHEMA, check_results

    layer = {"name": "blocks.0.mlp", "sqnr_db": 31.0, "max_abs_err": 0.1, "cosine": 0.999,
             "mean_abs_err": 0.01}
    cell = {"model": "lkca-1m", "backend": "executorch", "precision": "int8", "status": "ok",
            "per_layer": {"layers": [layer], "worst": ["blocks.0.mlp"], "missing": {}},
            "delegation": {"reasons": [{"op": "aten.mean.dim", "count": 1, "reason": "3-D"}]}}
    results = {"schema": SCHEMA, "run": {"id": "x"}, "cells": [cell]}
    check_results(json.loads(json.dumps(results)), "cells/x.json")  # the record as written: fine
    edit(cell)
    with pytest.raises(UserError) as err:
        check_results(results, "cells/x.json")
    assert needle in str(err.value) and "cells/x.json" in str(err.value)


# -- 1. integrity covers every byte a runtime reads -------------------------------------------------
def test_onnx_external_data_is_hashed_and_may_not_leave_the_directory(onnx_artifact, tmp_path):
    import onnx

    from lkca_edge.converters import get_backend
    from lkca_edge.manifest import sha256_of

    backend = get_backend("onnx")
    src = onnx_artifact.artifact
    assert backend.digest(src) == sha256_of(src)  # a lone file: its bytes alone, as before
    model = tmp_path / "m.onnx"
    onnx.save_model(onnx.load(str(src)), str(model), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=1024)
    assert backend.artifact_files(model) == [model, tmp_path / "weights.bin"]
    before = backend.digest(model)
    data = bytearray((tmp_path / "weights.bin").read_bytes())
    data[100] ^= 1
    (tmp_path / "weights.bin").write_bytes(bytes(data))
    assert backend.digest(model) != before  # one flipped bit of external data changes the digest
    proto = onnx.load(str(model), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../elsewhere.bin"
    onnx.save_model(proto, str(model))
    with pytest.raises(UserError, match="outside its directory"):
        backend.artifact_files(model)


def test_external_data_found_in_any_field_order():
    """The wire-format walk finds a location however the entry's fields are ordered."""
    from lkca_edge.converters.onnx import external_data_locations

    def field(number, payload):
        return bytes([number << 3 | 2, len(payload)]) + payload

    entry = field(2, b"w.bin") + field(1, b"location")  # value before key
    tensor = field(13, entry)
    graph = field(5, tensor)
    assert external_data_locations(field(7, graph)) == {"w.bin"}
    with pytest.raises(UserError, match="malformed protobuf"):
        external_data_locations(b"\x3a\xff\xff")


def test_package_walk_refuses_symlinks_and_non_regular_members(tmp_path):
    from lkca_edge.converters.base import inside, package_files

    pkg = tmp_path / "p.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Manifest.json").write_text("{}")
    assert package_files(pkg, "Core ML package") == [pkg / "Manifest.json"]
    os.symlink(tmp_path, pkg / "Data" / "weights")
    with pytest.raises(UserError, match="holds a symlink"):
        package_files(pkg, "Core ML package")
    (pkg / "Data" / "weights").unlink()
    os.mkfifo(pkg / "Data" / "pipe")
    with pytest.raises(UserError, match="not a regular file .*FIFO"):
        package_files(pkg, "Core ML package")
    assert inside(pkg / "Data", "com.apple.CoreML/model.mlmodel") is not None
    for bad in ("../../x", "/etc/passwd", "", "a/../../b"):
        assert inside(pkg / "Data", bad) is None


@pytest.mark.slow
def test_coreml_packages_reaching_outside_are_refused_and_reads_change_nothing(exported, tmp_path):
    """Class 1 (Manifest.json path and symlinked weights) and class 2 (coremltools rewrites a
    package's Manifest.json on load: validate and profile load a private copy)."""
    import shutil

    from lkca_edge.pipelines.artifacts import open_artifact
    from lkca_edge.pipelines.profile import profile_artifact
    from lkca_edge.pipelines.validate import validate_artifact
    from tests.conftest import copy_artifact

    result = exported("coreml", "fp32")
    art = copy_artifact(result.artifact, tmp_path / "compact")
    manifest_json = art / "Manifest.json"
    manifest_json.write_text(json.dumps(json.loads(manifest_json.read_text())))  # not coremltools' layout
    m = json.loads(art.with_name(art.name + ".manifest.json").read_text())
    from lkca_edge.converters import get_backend

    m["sha256"] = get_backend("coreml").digest(art)
    art.with_name(art.name + ".manifest.json").write_text(json.dumps(m))
    before = {p: p.read_bytes() for p in art.rglob("*") if p.is_file()}
    validate_artifact(art, limit=10)
    profile_artifact(art, runs=1, warmup=0, op_runs=0)
    assert {p: p.read_bytes() for p in art.rglob("*") if p.is_file()} == before

    outside = copy_artifact(result.artifact, tmp_path / "outside")
    doc = json.loads((outside / "Manifest.json").read_text())
    for entry in doc["itemInfoEntries"].values():
        entry["path"] = "../../elsewhere/" + entry["path"]
    (outside / "Manifest.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match="outside the package"):
        open_artifact(outside, verify=False)
    linked = copy_artifact(result.artifact, tmp_path / "linked")
    weights = linked / "Data" / "com.apple.CoreML" / "weights"
    shutil.move(weights, tmp_path / "weights-elsewhere")
    os.symlink(tmp_path / "weights-elsewhere", weights)
    with pytest.raises(UserError, match="holds a symlink"):
        open_artifact(linked, verify=False)


# -- 8. children die with their parent and at their timeout ---------------------------------------
def _sleeper(seconds: float) -> None:
    time.sleep(seconds)


def _pids_with(marker: str) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{p}/environ").read_bytes():
                    state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        out.append(int(p))
            except OSError:
                pass
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_isolated_child_dies_with_a_sigkilled_parent(tmp_path):
    marker = f"LKCA_TEST_MARKER=pdeathsig-{os.getpid()}"
    code = ("import sys; sys.path.insert(0, %r); from lkca_edge.isolation import run_isolated; "
            "from tests.test_hostile import _sleeper; run_isolated(_sleeper, 120, timeout=300)" % str(REPO))
    env = {**os.environ, "LKCA_TEST_MARKER": marker.split("=", 1)[1], "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_pids_with(marker)) < 2:
        time.sleep(0.1)
    assert len(_pids_with(marker)) >= 2, "the isolated child never started"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _pids_with(marker):
        time.sleep(0.1)
    assert not _pids_with(marker), "the child outlived its SIGKILLed parent"


def test_child_stuck_in_native_code_is_killed_at_its_timeout():
    from lkca_edge.isolation import run_isolated

    t0 = time.monotonic()
    with pytest.raises(UserError, match="did not finish within 3 s"):
        run_isolated(_sleeper, 600, timeout=3)  # time.sleep is C code, holding no GIL
    assert time.monotonic() - t0 < 30


# -- 13. temporary files are owned, and swept after a SIGKILL ----------------------------------------
def test_private_tempdir_is_removed_and_stale_ones_swept(tmp_path, monkeypatch):
    import tempfile

    from lkca_edge import fileio

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f"{fileio.TEMP_PREFIX}{fileio.owner_tag(int(dead))}-abcd"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "big.bin").write_bytes(b"x" * 1000)
    live = tmp_path / f"{fileio.TEMP_PREFIX}{fileio.owner_tag()}-live"  # ours: never swept
    live.mkdir()
    with fileio.private_tempdir() as root:
        assert not stale.exists() and live.exists()
        assert tempfile.gettempdir() == str(root) and os.environ["TMPDIR"] == str(root)
        (Path(tempfile.mkdtemp()) / "x").write_text("temp")
    assert not root.exists() and os.environ["TMPDIR"] == str(tmp_path)


def test_partial_of_a_dead_writer_is_removed_at_the_next_write(tmp_path):
    from lkca_edge import fileio

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    left = tmp_path / f".model.{fileio.owner_tag(int(dead))}.abcd1234.partial.onnx"
    left.write_bytes(b"half an artifact")
    fileio.write_text(tmp_path / "other.json", "{}")
    assert not left.exists() and (tmp_path / "other.json").read_text() == "{}"


@pytest.mark.slow
def test_sigterm_mid_export_leaves_no_temp_file(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "lkca_edge", "export", "lkca-1m", "--backend",
                             "onnx", "--out", str(tmp_path / "out")], stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "TMPDIR": str(tmp)})
    deadline = time.monotonic() + 120
    out = tmp_path / "out"

    def mid_conversion() -> bool:  # a converter's temporary file, or the artifact being written
        return any(p.is_file() and p.stat().st_size > 65536 for p in tmp.rglob("*")) or \
            any(".partial" in p.name for p in out.glob(".*"))

    while time.monotonic() < deadline and proc.poll() is None and not mid_conversion():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "interrupted" in err, err
    assert not list(tmp.iterdir())
    assert not [p for p in (tmp_path / "out").glob("*") if ".partial" in p.name]


# -- 9. a user's file is never destroyed ------------------------------------------------------------
def test_export_replaces_only_its_own_artifact(onnx_artifact, tmp_path):
    from lkca_edge.fileio import atomic_path
    from lkca_edge.pipelines.export import replaceable
    from tests.conftest import copy_artifact

    users = tmp_path / "users" / onnx_artifact.artifact.name
    users.mkdir(parents=True)
    (users / "thesis.txt").write_text("years of work")
    with pytest.raises(UserError, match="not an artifact made by `lkca-edge export`"):
        replaceable(users)
    with pytest.raises(UserError, match="exists and is a directory"):
        with atomic_path(users) as tmp:
            tmp.mkdir()
    assert (users / "thesis.txt").read_text() == "years of work"
    own = copy_artifact(onnx_artifact.artifact, tmp_path / "own")
    replaceable(own)  # ours: may be replaced


# -- 10. untrusted strings are escaped ----------------------------------------------------------------
def test_output_escapes_control_characters_markup_html_and_mathtext(tmp_path):
    from lkca_edge.apps.classify import Prediction, format_predictions
    from lkca_edge.apps.report import _md_escape, make_plots

    evil = "\x1b]0;owned\x07\x1b[2J\nforged \x9b31m"
    text = format_predictions([Prediction(f"{evil}.png", [(evil, 0, 0.9)])])
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert len(text.splitlines()) == 2 and not any(ln.startswith("forged") for ln in text.splitlines())
    assert _md_escape("<script>alert(1)</script>|x") == "&lt;script&gt;alert(1)&lt;/script&gt;\\|x"
    pytest.importorskip("matplotlib")
    device = "dev$\\frac$"
    results = {"schema": "lkca-edge-results/1",
               "run": {"device": device, "models": ["lkca-1m"], "device_profiles": {}},
               "cells": [{"model": "lkca-1m", "backend": "onnx", "precision": "fp32", "status": "ok",
                          "metrics": {"latency_median_ms": 1.0, "accuracy": 0.9, "size_bytes": 10,
                                      "peak_rss_mb": 10.0}, "profile": {"ops": []}}]}
    plots = make_plots(results)  # mathtext would raise on "$\frac$"
    assert plots and all(p.png.startswith(b"\x89PNG") for p in plots)


def test_rich_tables_never_read_markup(tmp_path):
    from lkca_edge.results import ResultsStore

    db = tmp_path / "runs.sqlite"
    with ResultsStore(db) as store:
        store.record_run({"schema": "lkca-edge-results/1",
                          "run": {"id": "u1", "host": {"name": "\x1b]0;owned\x07h"},
                                  "out_dir": "[bold red]markup[/bold red]"},
                          "cells": [{"model": "lkca-1m", "backend": "onnx", "precision": "fp32",
                                     "status": "ok"}]})
    r = cli("runs", "--db", db)
    assert r.returncode == 0, r.stderr
    assert "[bold red]markup" in r.stdout and "\x1b" not in r.stdout + r.stderr


# -- 11. images mean what a viewer shows --------------------------------------------------------------
def _digit(target: int) -> np.ndarray:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    i = int(np.where(d.target == target)[0][0])
    return np.asarray(Image.fromarray((d.images[i] * (255 / 16)).astype("uint8")).resize((32, 32)))


def test_sixteen_bit_and_exif_rotated_images(tmp_path):
    from PIL import Image

    from lkca_edge.preprocessing import Preprocessing

    prep = Preprocessing()
    grey = _digit(0)
    Image.fromarray(grey).save(tmp_path / "8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "16.png")
    assert Image.open(tmp_path / "16.png").mode.startswith("I")
    np.testing.assert_allclose(prep.load_image(tmp_path / "16.png"), prep.load_image(tmp_path / "8.png"),
                               atol=1.0 / 255 * 2 + 1e-6)
    seven = Image.fromarray(_digit(7)).convert("RGB")
    seven.save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # a viewer turns it 90 degrees clockwise
    seven.rotate(90, expand=True).save(tmp_path / "stored-rotated.png", exif=exif)
    np.testing.assert_array_equal(prep.load_image(tmp_path / "stored-rotated.png"),
                                  prep.load_image(tmp_path / "upright.png"))


def test_sixteen_bit_digit_keeps_its_confidence(onnx_artifact, tmp_path):
    from PIL import Image

    from lkca_edge.apps.classify import classify

    grey = _digit(0)
    Image.fromarray(grey).convert("RGB").save(tmp_path / "8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "16.png")
    p8, p16 = classify([tmp_path / "8.png", tmp_path / "16.png"], onnx_artifact.artifact, top_k=1)
    assert p16.top[0][0] == p8.top[0][0] == "0"
    assert abs(p16.top[0][2] - p8.top[0][2]) < 0.02


# -- 12. history: read-only, and corrupt rows ----------------------------------------------------------
def test_read_only_history_is_listed_and_corrupt_rows_skipped(tmp_path):
    from lkca_edge.results import ResultsStore

    db = tmp_path / "h" / "runs.sqlite"
    db.parent.mkdir()
    with ResultsStore(db) as store:
        for uid in ("a", "b"):
            store.record_run({"schema": "lkca-edge-results/1", "run": {"id": uid},
                              "cells": [{"model": "lkca-1m", "backend": "onnx", "precision": "fp32",
                                         "status": "ok"}]})
    con = sqlite3.connect(db)
    con.execute("UPDATE runs SET models = 'not json{', results = '{' WHERE id = 1")
    con.commit()
    con.close()
    for f in db.parent.iterdir():
        f.chmod(0o444)
    db.parent.chmod(0o555)
    try:
        notices = []
        with ResultsStore(db, read_only=True, warn=notices.append) as store:
            rows = store.list_runs()
            assert [r.id for r in rows] == [2]
            assert notices and "skipping run 1" in notices[0] and "'models'" in notices[0]
            with pytest.raises(UserError, match="results of run 1 .* not valid JSON"):
                store.get_run(1)
            for ref in ("99999999999999999999", "-0", "1.5", "abc"):
                with pytest.raises(UserError, match="bad run reference"):
                    store.get_run(ref)
    finally:
        db.parent.chmod(0o755)


# -- 14. a user's device profile needs only what a profiler uses ---------------------------------------
def test_minimal_device_profile_and_finite_budgets(tmp_path):
    from lkca_edge.profiles.devices import OPTIONAL_DEFAULTS, load_profile_file

    f = tmp_path / "mini.yaml"
    f.write_text("name: mini\nthreads: 2\nram_budget_mb: 256\nlatency_budget_ms: 20\n"
                 "backends: [onnx]\nprecisions: [fp32, int8]\n")
    p = load_profile_file(f)
    assert (p.description, p.os, p.cpu, p.accuracy_gate, p.sources) == (
        OPTIONAL_DEFAULTS["description"], "unspecified", "unspecified", 1.0, {})
    for line, needle in (("ram_budget_mb: .nan", "ram_budget_mb"), ("latency_budget_ms: -1", "latency_budget_ms"),
                         ("ram_budget_mb: .inf", "ram_budget_mb")):
        key = line.split(":")[0]
        f.write_text("\n".join(line if ln.startswith(key) else ln for ln in f.read_text().splitlines()))
        with pytest.raises(UserError, match=f"mini.yaml: field '{needle}'"):
            load_profile_file(f)
        f.write_text("name: mini\nthreads: 2\nram_budget_mb: 256\nlatency_budget_ms: 20\n"
                     "backends: [onnx]\nprecisions: [fp32, int8]\n")


# -- 7. argument ranges ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, value, needle", [
    ("limit", -5, "--limit must be at least 1, got -5"),
    ("threads", 0, "--threads must be at least 1, got 0"),
    ("timeout", 0.0, "--timeout must be above 0"),
    ("timeout", float("nan"), "--timeout must be a finite number above 0"),
    ("seed", -1, "--seed must be at least 0"),
    ("lr", float("nan"), "--lr must be a finite number above 0"),
    ("lr", float("inf"), "--lr must be a finite number above 0"),
    ("runs", 0, "--runs must be at least 1"),
    ("runs", "3", "--runs must be an integer"),
])
def test_argument_ranges(name, value, needle):
    from lkca_edge.ranges import check_arg

    with pytest.raises(UserError) as err:
        check_arg(name, value)
    assert needle in str(err.value)


def test_threads_are_capped_to_the_usable_cores():
    from lkca_edge.hostinfo import cap_threads, usable_cpus
    from lkca_edge.ranges import check_arg

    assert cap_threads(check_arg("threads", 100_000)) == len(usable_cpus())
