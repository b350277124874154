"""Bad inputs x CLI commands: does every command refuse bad input cleanly?

    .venv/bin/python benchmarks/bad_inputs.py                  # every case, about 5 minutes
    .venv/bin/python benchmarks/bad_inputs.py --only artifact  # cases whose id contains a word
    .venv/bin/python benchmarks/bad_inputs.py --json out.json --keep /tmp/bad-inputs
    .venv/bin/python benchmarks/bad_inputs.py --json benchmarks/results/bad_inputs.json  # the README's

Each case runs the real CLI (`python -m lkca_edge ...`) in a child process on one bad input and
checks that it exits non-zero (not by a signal) with exactly one line on stderr, no traceback
anywhere, the expected words in that line, and no partial output left behind (no file in the
output directory it was given, no `.partial` temporary file anywhere under the fixtures). A few
control cases (marked "control") must succeed instead, e.g. `--no-verify` on a modified artifact.

Every case, control or not, is also held to bounded resources and to leaving nothing behind: it
runs under a 4 GB address-space limit (RLIMIT_AS) and its own timeout, with its own empty
$TMPDIR, which must be empty again afterwards; no process it started may outlive it (children
carry a marker in their environment that is looked for in /proc); no control character (ESC,
BEL, C1) may reach its stdout or stderr; and a read-only command (validate, profile, classify)
must leave the artifact it read byte for byte unchanged. Cases of the hostile classes (issue 12:
FIFOs and devices, alias bombs, nested brackets, memo-expanding pickles, decompression bombs,
size claims, wrong types, argument ranges, a SIGKILLed parent, a user's directory in the way,
control characters in names, 16-bit and EXIF-rotated images, read-only or corrupt history,
interrupted exports, minimal device profiles) make their hostile files themselves.

The fixtures are made in a temporary directory: a real lkca-1m ONNX fp32 artifact (`lkca-edge
export lkca-1m --backend onnx`), one real artifact per other installed backend (exported without
validation, for the truncated cases and the Core ML package cases), bad checkpoints, images,
device profiles and so on.

Prints a Markdown table (bad input x command, exit code, the one line shown, verdict); exit code
1 when any case fails its check.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # lkca_edge from this checkout
    sys.path.insert(0, str(REPO))
SCHEMA = "lkca-edge-bad-inputs/1"
FULL_DISK_BYTES = 200_000  # RLIMIT_FSIZE: any write past 200 KB fails (EFBIG), like a full disk
MEMORY_LIMIT = 4 << 30     # RLIMIT_AS of every case: a real export fits, a memory bomb does not
HOSTILE_TIMEOUT = 90.0     # seconds: a hang is a failure, not a stuck benchmark
MARKER = "LKCA_BAD_INPUTS_CASE"  # in every case's environment: finds processes it left running
CONTROL_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # tab and newline are fine


@dataclass
class Case:
    id: str                        # stable name, "command/what"
    input: str                     # the bad input, in words
    argv: list[str]                # after `lkca-edge`
    needle: str | None = None      # words the one line must contain (case-insensitive)
    out: Path | None = None        # an output path that must hold no file afterwards
    allow: tuple[str, ...] = ()    # names allowed to stay under ``out`` (resumable bench state)
    fsize: int | None = None       # RLIMIT_FSIZE for the child (a full disk)
    control: bool = False          # must succeed (exit 0) instead
    timeout: float = 600
    check: Callable | None = None  # extra check: (outcome, fx) -> list of problems
    unchanged: tuple = ()          # paths whose bytes must not change (besides the artifact read)
    kill: str | None = None        # "child": kill the CLI once it has a child; "temp": once it
                                   # writes temporary files
    kill_signal: int = signal.SIGKILL
    then: list[str] | None = None  # after a kill: the next start, which must clean up
    read_only_root: bool = False   # drop root's permission override (a read-only file stays so)

    @property
    def command(self) -> str:
        return self.id.split("/", 1)[0]


@dataclass
class Outcome:
    case: Case
    code: int | None
    stdout: str
    stderr: str
    seconds: float
    problems: list[str] = field(default_factory=list)
    tmpdir: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def message(self) -> str:
        if self.case.kill:
            what = f"(killed with {signal.Signals(self.case.kill_signal).name} mid-run"
            if self.case.then:
                return f"{what}; then `lkca-edge {' '.join(self.case.then[:1])} ...` ran)"
            lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
            return f"{what}) " + " / ".join(lines)
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        if self.case.control and not lines:
            return "(stdout) " + " / ".join(ln.strip() for ln in self.stdout.strip().splitlines()[:2])
        return " / ".join(lines)


# -- fixtures ---------------------------------------------------------------------------------------
def _cli(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "lkca_edge", *args], capture_output=True,
                          text=True, cwd=cwd or REPO, env=child_env(), timeout=1800)
    if check and proc.returncode != 0:
        raise SystemExit(f"fixture step failed: lkca-edge {' '.join(args)}\n{proc.stderr[-3000:]}")
    return proc


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "2")
    for var in ("LKCA_EDGE_DEBUG", "LKCA_EDGE_PROFILES", "LKCA_EDGE_SHOW_NATIVE_LOG"):
        env.pop(var, None)
    return env


def _manifest_for(path: Path, backend: str, base: dict) -> Path:
    """A manifest beside ``path`` that matches its bytes and names ``backend``, so the check
    reaches the backend's own loader (not just the manifest's sha256)."""
    from lkca_edge.manifest import sha256_of, size_of

    m = dict(base, artifact=path.name, backend=backend, sha256=sha256_of(path), size_bytes=size_of(path))
    m["recipe"] = dict(base["recipe"], name=f"{backend}-fp32")
    path.with_name(path.name + ".manifest.json").write_text(json.dumps(m, indent=2))
    return path


def _random_bytes(n: int, seed: int) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def backend_extensions() -> dict[str, str]:
    """{backend: its artifact extension}, every backend the library has."""
    from lkca_edge.converters import backend_names, get_backend

    return {name: get_backend(name).extension for name in backend_names()}


def installed_backends() -> list[str]:
    from lkca_edge.converters import get_backend

    out = []
    for name in backend_extensions():
        try:
            if get_backend(name).available() is None:
                out.append(name)
        except ModuleNotFoundError:
            pass
    return out


def make_fixtures(tmp: Path, backends: list[str] | None = None, log=print) -> dict:
    """Everything the cases need, under ``tmp``. ``backends``: which real artifacts to export
    (ONNX always; the others only feed the truncated-artifact cases)."""
    from PIL import Image

    fx: dict = {"tmp": tmp}
    tmp.mkdir(parents=True, exist_ok=True)

    # a real, validated ONNX fp32 artifact
    real = tmp / "real"
    t0 = time.perf_counter()
    _cli("export", "lkca-1m", "--backend", "onnx", "--out", str(real))
    onnx = real / "lkca-1m_onnx_fp32.onnx"
    fx["onnx"] = onnx
    base = json.loads((real / "lkca-1m_onnx_fp32.onnx.manifest.json").read_text())
    fx["manifest"] = base
    log(f"fixtures: exported {onnx.name} ({time.perf_counter() - t0:.0f} s)")
    # one real artifact per other backend (no validation: they are only cut short below)
    fx["real"] = {"onnx": onnx}
    for backend in [b for b in (backends or []) if b != "onnx"]:
        t0 = time.perf_counter()
        proc = _cli("export", "lkca-1m", "--backend", backend, "--out", str(real / backend),
                    "--no-validate", check=False)
        arts = [p for p in (real / backend).glob(f"*{backend_extensions()[backend]}")]
        if proc.returncode == 0 and arts:
            fx["real"][backend] = arts[0]
            log(f"fixtures: exported {arts[0].name} ({time.perf_counter() - t0:.0f} s)")
        else:
            log(f"fixtures: no real {backend} artifact ({proc.stderr.strip()[-200:]})")

    # bad artifacts, each with a manifest that matches its bytes and its extension's backend
    arts = tmp / "artifacts"
    arts.mkdir()
    fx["artifacts"] = {}
    onnx_bytes = onnx.read_bytes()
    for i, (backend, ext) in enumerate(backend_extensions().items()):
        kinds = {}
        if ext == ".mlpackage":  # a package is a directory
            pkg = arts / f"random{ext}"
            (pkg / "Data" / "com.apple.CoreML" / "weights").mkdir(parents=True)
            (pkg / "Manifest.json").write_bytes(_random_bytes(4096, i))
            (pkg / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(_random_bytes(65536, i + 10))
            kinds["random bytes"] = pkg
            if backend in fx["real"]:
                cut = arts / f"truncated{ext}"
                shutil.copytree(fx["real"][backend], cut)
                for f in cut.rglob("*"):
                    if f.is_file() and f.name != "Manifest.json":
                        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
                kinds["truncated"] = cut
            wrong = arts / f"onnx-renamed{ext}"
            wrong.write_bytes(onnx_bytes)
            kinds["an ONNX file renamed"] = wrong
        else:
            rnd = arts / f"random{ext}"
            rnd.write_bytes(_random_bytes(len(onnx_bytes) // 4, i))
            kinds["random bytes"] = rnd
            if backend in fx["real"]:
                cut = arts / f"truncated{ext}"
                data = fx["real"][backend].read_bytes()
                cut.write_bytes(data[: len(data) // 2])
                kinds["truncated"] = cut
            if backend == "onnx":
                src = fx["real"].get("tflite")
                if src is not None:
                    wrong = arts / f"tflite-renamed{ext}"
                    wrong.write_bytes(src.read_bytes())
                    kinds["a TFLite file renamed"] = wrong
                else:  # no LiteRT here: a PNG renamed .onnx is just as wrong
                    wrong = arts / f"png-renamed{ext}"
                    Image.new("RGB", (32, 32)).save(wrong, format="PNG")
                    kinds["a PNG file renamed"] = wrong
            else:
                wrong = arts / f"onnx-renamed{ext}"
                wrong.write_bytes(onnx_bytes)
                kinds["an ONNX file renamed"] = wrong
        for kind, path in kinds.items():
            _manifest_for(path, backend, base)
        fx["artifacts"][backend] = kinds
        orphan = arts / f"orphan{ext}"  # an artifact with no manifest beside it
        shutil.copytree(kinds["random bytes"], orphan) if ext == ".mlpackage" else \
            shutil.copy(kinds["random bytes"], orphan)

    # an artifact changed after export (its manifest's sha256 no longer matches)
    changed = tmp / "changed"
    shutil.copytree(real, changed, ignore=shutil.ignore_patterns("tflite", "executorch", "coreml"))
    data = bytearray((changed / onnx.name).read_bytes())
    data[-1] ^= 0x01
    (changed / onnx.name).write_bytes(bytes(data))
    fx["changed"] = changed / onnx.name

    # images
    img = tmp / "images"
    img.mkdir()
    from sklearn.datasets import load_digits

    digit = (load_digits().images[0] * (255 / 16)).astype("uint8")
    Image.fromarray(digit).resize((32, 32)).convert("RGB").save(img / "digit.png")
    fx["image"] = img / "digit.png"
    (img / "notes.png").write_text("this is a text file, not a PNG\n")
    fx["not_image"] = img / "notes.png"
    (img / "half.png").write_bytes((img / "digit.png").read_bytes()[:60])
    fx["truncated_image"] = img / "half.png"
    unreadable = img / "locked.png"
    shutil.copy(img / "digit.png", unreadable)
    unreadable.chmod(0)
    if os.access(unreadable, os.R_OK):  # root reads anything: a directory named like an image
        unreadable.chmod(0o644)
        unreadable.unlink()
        unreadable.mkdir()
        fx["unreadable_how"] = "a directory named locked.png (root reads any file)"
    else:
        fx["unreadable_how"] = "mode 000"
    fx["unreadable"] = unreadable
    empty = tmp / "empty-dataset"
    empty.mkdir()
    fx["empty_dir"] = empty

    # checkpoints
    ck = tmp / "checkpoints"
    ck.mkdir()
    shipped = REPO / "lkca_edge" / "weights" / "lkca-1m-digits.pt"
    (ck / "truncated.pt").write_bytes(shipped.read_bytes()[: shipped.stat().st_size // 2])
    (ck / "random.pt").write_bytes(_random_bytes(100_000, 7))
    (ck / "notes.pt").write_text("not a checkpoint\n")
    import torch

    from lkca_edge import create_model
    from lkca_edge.checkpoints import save_checkpoint

    torch.save(create_model("lkca-2m").state_dict(), ck / "lkca-2m-state.pt")
    save_checkpoint(create_model("vit-1m"), ck / "vit-1m.pt")
    fx["ckpt"] = {"missing": ck / "missing.pt", "truncated": ck / "truncated.pt",
                  "random bytes": ck / "random.pt", "a text file": ck / "notes.pt",
                  "lkca-2m weights (another config)": ck / "lkca-2m-state.pt",
                  "a vit-1m checkpoint (another family)": ck / "vit-1m.pt"}

    # device profiles
    bad_yaml = tmp / "profiles-bad-yaml"
    bad_yaml.mkdir()
    (bad_yaml / "phone.yaml").write_text("name: phone\nthreads: [4\nram_budget_mb: 512\n")
    bad_field = tmp / "profiles-bad-field"
    bad_field.mkdir()
    good = (REPO / "profiles" / "devices" / "pixel-8.yaml").read_text()
    (bad_field / "pixel-9.yaml").write_text(
        re.sub(r"(?m)^name:.*$", "name: pixel-9", re.sub(r"(?m)^threads:.*$", "threads: many", good)))
    fx["profiles"] = {"malformed YAML": bad_yaml, "threads: many": bad_field}

    # output places that cannot be written: under a regular file (root ignores permissions)
    blocker = tmp / "a-regular-file"
    blocker.write_text("x")
    fx["unwritable"] = blocker / "out"
    if os.geteuid() != 0:
        ro = tmp / "read-only"
        ro.mkdir()
        ro.chmod(0o500)
        fx["read_only"] = ro / "out"

    # not a run history
    (tmp / "notes.sqlite").write_bytes(b"this is not a database\n" * 200)
    fx["bad_db"] = tmp / "notes.sqlite"
    (tmp / "broken-results.json").write_text('{"schema": "lkca-edge-results/1", "run": ')
    fx["bad_results"] = tmp / "broken-results.json"
    make_hostile_fixtures(fx, log)
    return fx


# -- hostile fixtures (issue 12) ----------------------------------------------------------------------
def _digest(path: Path, backend: str) -> str:
    """The sha256 an honest export records for ``path``: the backend's digest of every file its
    runtime opens where this lkca-edge has one, else the artifact's own bytes. An artifact the
    backend refuses to list (a path leaving it, a symlink) gets the latter."""
    from lkca_edge.converters import get_backend

    b = get_backend(backend)
    if hasattr(b, "digest"):
        try:
            return b.digest(path)
        except Exception:  # noqa: BLE001 - refused: the plain sha256 of its own bytes
            pass
    from lkca_edge.manifest import sha256_of

    return sha256_of(path)


def _write_manifest(path: Path, backend: str, base: dict, **changes) -> Path:
    m = json.loads(json.dumps(base))
    m.update(artifact=path.name, backend=backend, sha256=_digest(path, backend), **changes)
    Manifest_path(path).write_text(json.dumps(m, indent=2))
    return path


def Manifest_path(artifact: Path) -> Path:  # noqa: N802 - mirrors Manifest.path_for
    return artifact.with_name(artifact.name + ".manifest.json")


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` grey pixels and holds four rows: what a
    decompression bomb looks like before its pixels are decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = zlib.compress(b"\0" * (width + 1) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


BILLION_LAUGHS = """\
name: bomb
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
threads: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

MINIMAL_PROFILE = """\
name: {name}
threads: 2
ram_budget_mb: 512
latency_budget_ms: 50
backends: [onnx, tflite, executorch]
precisions: [fp32, int8]
"""

FULL_PROFILE = MINIMAL_PROFILE + """\
description: {description}
os: linux
cpu: {cpu}
accuracy_gate: 1.0
sources:
  cpu: test
  threads: test
  ram_budget_mb: test
  latency_budget_ms: test
  accuracy_gate: test
"""


def _history(path: Path, runs: list[dict]) -> Path:
    """A run history holding ``runs`` (results objects), written by this lkca-edge."""
    from lkca_edge.results.history import ResultsStore

    with ResultsStore(path) as store:
        for r in runs:
            store.record_run(r)
    return path


def _results(run_id: str, model: str = "lkca-1m", **run) -> dict:
    return {"schema": "lkca-edge-results/1",
            "run": {"id": run_id, "time": "2026-01-01T00:00:00", "device": "host", **run},
            "cells": [{"model": model, "backend": "onnx", "precision": "fp32", "status": "ok",
                       "metrics": {"latency_median_ms": 1.0, "accuracy": 0.97, "size_bytes": 1000}}]}


def make_hostile_fixtures(fx: dict, log=print) -> None:
    """The hostile files of issue 12's classes, each made here (FIFOs with os.mkfifo, bombs as
    text or bytes, sparse files for size caps), under ``fx['tmp'] / 'hostile'``."""
    import numpy as np
    from PIL import Image

    tmp: Path = fx["tmp"]
    h = tmp / "hostile"
    h.mkdir()
    hx: dict = {}
    fx["hostile"] = hx
    onnx, base = fx["onnx"], fx["manifest"]

    def artifact_copy(name: str, edit=None, text: str | None = None, file_name: str | None = None) -> Path:
        """A copy of the real ONNX artifact with its manifest edited (the sha256 still matches)."""
        d = h / name
        d.mkdir()
        dst = d / (file_name or onnx.name)
        shutil.copy(onnx, dst)
        m = json.loads(json.dumps(base))
        m["artifact"] = dst.name
        if edit:
            edit(m)
        Manifest_path(dst).write_text(text if text is not None else json.dumps(m, indent=2))
        return dst

    # 1. integrity: ONNX external data, Core ML packages reaching outside
    import onnx as onnxlib

    ext = h / "external"
    ext.mkdir()
    onnxlib.save_model(onnxlib.load(str(onnx)), str(ext / onnx.name), save_as_external_data=True,
                       all_tensors_to_one_file=True, location="weights.bin", size_threshold=1024)
    hx["external"] = _write_manifest(ext / onnx.name, "onnx", base)
    changed = h / "external-changed"
    shutil.copytree(ext, changed)
    proto = onnxlib.load(str(changed / onnx.name), load_external_data=False)
    blob = bytearray((changed / "weights.bin").read_bytes())
    rng = np.random.default_rng(12)
    for t in proto.graph.initializer:  # float weights become other finite numbers
        if t.data_type == onnxlib.TensorProto.FLOAT and t.external_data:
            info = {e.key: e.value for e in t.external_data}
            off, n = int(info.get("offset", 0)), int(info["length"])
            blob[off:off + n] = rng.normal(0, 0.5, n // 4).astype(np.float32).tobytes()
    (changed / "weights.bin").write_bytes(bytes(blob))
    hx["external_changed"] = changed / onnx.name
    outside = h / "external-outside"
    outside.mkdir()
    proto = onnxlib.load(str(ext / onnx.name), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../outside-weights.bin"
    onnxlib.save_model(proto, str(outside / onnx.name))
    shutil.copy(ext / "weights.bin", h / "outside-weights.bin")
    hx["external_outside"] = _write_manifest(outside / onnx.name, "onnx", base)

    real_coreml = fx["real"].get("coreml")
    if real_coreml is not None:
        cm_base = json.loads(Manifest_path(real_coreml).read_text())
        pkg = h / "coreml-outside" / real_coreml.name
        shutil.copytree(real_coreml, pkg)
        mj = json.loads((pkg / "Manifest.json").read_text())
        for entry in mj["itemInfoEntries"].values():
            if entry["path"].endswith("model.mlmodel"):
                shutil.move(pkg / "Data" / entry["path"], h / "coreml-outside" / "outside.mlmodel")
                entry["path"] = "../../outside.mlmodel"
        (pkg / "Manifest.json").write_text(json.dumps(mj, indent=4))
        hx["coreml_outside"] = _write_manifest(pkg, "coreml", cm_base)
        pkg = h / "coreml-symlink" / real_coreml.name
        shutil.copytree(real_coreml, pkg)
        weights = pkg / "Data" / "com.apple.CoreML" / "weights"
        shutil.move(weights, h / "coreml-symlink" / "outside-weights")
        os.symlink(h / "coreml-symlink" / "outside-weights", weights)
        hx["coreml_symlink"] = _write_manifest(pkg, "coreml", cm_base)
        # 2. a package whose Manifest.json coremltools would rewrite on load (compact JSON)
        pkg = h / "coreml-compact" / real_coreml.name
        shutil.copytree(real_coreml, pkg)
        (pkg / "Manifest.json").write_text(json.dumps(json.loads((pkg / "Manifest.json").read_text())))
        hx["coreml_compact"] = _write_manifest(pkg, "coreml", cm_base)

    # 3. only regular files: FIFOs, a device, sparse files past the size caps
    fifos = h / "fifos"
    fifos.mkdir()
    for name in ("image.png", "checkpoint.pt", "db.sqlite", "results.json"):
        os.mkfifo(fifos / name)
        hx[f"fifo_{name.split('.')[0]}"] = fifos / name
    hx["device"] = Path("/dev/zero")
    for name, size in (("big.png", 70 << 20), ("big.pt", 1100 << 20)):
        with open(h / name, "wb") as fh:
            fh.truncate(size)  # sparse: no disk used
        hx[name] = h / name
    folder = h / "folder-fifo"
    (folder / "zero").mkdir(parents=True)
    (folder / "one").mkdir()
    shutil.copy(fx["image"], folder / "one" / "a.png")
    os.mkfifo(folder / "zero" / "b.png")
    hx["folder_fifo"] = folder
    d = h / "profiles-fifo"
    d.mkdir()
    os.mkfifo(d / "phone.yaml")
    hx["profiles_fifo"] = d
    d = h / "profiles-big"
    d.mkdir()
    with open(d / "big.yaml", "wb") as fh:
        fh.truncate(2 << 20)
    hx["profiles_big"] = d
    d = h / "manifest-fifo"
    d.mkdir()
    shutil.copy(onnx, d / onnx.name)
    os.mkfifo(Manifest_path(d / onnx.name))
    hx["manifest_fifo"] = d / onnx.name
    hx["source_fifo"] = artifact_copy("source-fifo", lambda m: m["source"].update(
        checkpoint=str(fifos / "checkpoint.pt"), pretrained=None, checkpoint_sha256=None))
    rnd = fx["artifacts"]["coreml"]["random bytes"]
    d = h / "member-fifo"
    d.mkdir()
    shutil.copytree(rnd, d / rnd.name)
    shutil.copy(Manifest_path(rnd), Manifest_path(d / rnd.name))
    os.mkfifo(d / rnd.name / "Data" / "com.apple.CoreML" / "extra.bin")
    hx["member_fifo"] = d / rnd.name
    d = h / "cifar-fifo"
    d.mkdir()
    os.mkfifo(d / "batches.meta")
    hx["cifar_fifo"] = d

    # 4. bounded parsing: alias bomb, deep brackets, a memo-expanding pickle, a pixel bomb
    d = h / "profiles-bomb"
    d.mkdir()
    (d / "bomb.yaml").write_text(BILLION_LAUGHS)
    hx["profiles_bomb"] = d
    hx["deep_manifest"] = artifact_copy("deep-manifest", text="[" * 100_000 + "]" * 100_000)
    (h / "deep-results.json").write_text('{"schema": "lkca-edge-results/1", "run": {}, "cells": '
                                         + "[" * 100_000 + "]" * 100_000 + "}")
    hx["deep_results"] = h / "deep-results.json"
    d = h / "deep-run"
    d.mkdir()
    (d / "run.json").write_text('{"schema": "lkca-edge-bench-run/1", "options": {}, "run": '
                                + "[" * 100_000 + "]" * 100_000 + "}")
    hx["deep_run"] = d
    import pickle

    names: list = [b"cat"]
    for _ in range(40):  # 2**40 names, through memo references to one list
        names = [names, names]
    d = h / "cifar-bomb"
    d.mkdir()
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    hx["cifar_bomb"] = d
    (h / "bomb.png").write_bytes(_png_header(30_000, 30_000))
    hx["pixel_bomb"] = h / "bomb.png"

    # 5. sizes from a checkpoint: a 4 MB checkpoint claiming depth 100,000; a string dim
    import torch

    shipped = REPO / "lkca_edge" / "weights" / "lkca-1m-digits.pt"
    payload = torch.load(shipped, map_location="cpu", weights_only=True)
    for name, change in (("depth.pt", {"depth": 100_000}), ("dim-string.pt", {"dim": "136"})):
        bad = dict(payload, config=dict(payload["config"], **change))
        torch.save(bad, h / name)
        hx[name] = h / name

    # 6. manifests with fields of the wrong type or an unknown precision; profiles, run records
    hx["m_dim_string"] = artifact_copy("m-dim-string", lambda m: m["config"].update(dim="136"))
    hx["m_inputs_string"] = artifact_copy("m-inputs-string", lambda m: m.update(inputs="abc"))
    hx["m_shape_string"] = artifact_copy("m-shape-string", lambda m: m["inputs"][0].update(
        shape=[1, 3, "abc", 32]))
    hx["m_precision"] = artifact_copy("m-precision", lambda m: m.update(precision="int4"))
    hx["m_overrides"] = artifact_copy("m-overrides", lambda m: m["source"]["overrides"].update(
        image_size=100_000))
    for name, line in (("nan", "ram_budget_mb: .nan"), ("negative", "latency_budget_ms: -5")):
        d = h / f"profiles-{name}"
        d.mkdir()
        text = FULL_PROFILE.format(name="board", description="a board", cpu="x")
        key = line.split(":")[0]
        text = re.sub(rf"(?m)^{key}:.*$", line, text)
        (d / "board.yaml").write_text(text)
        hx[f"profiles_{name}"] = d
    d = h / "run-bad-types"
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"schema": "lkca-edge-bench-run/1", "complete": False,
                                            "options": {"models": ["lkca-1m"], "backends": ["onnx"],
                                                        "precisions": ["fp32"], "runs": "abc"},
                                            "run": {"id": "x"}}))
    hx["run_bad_types"] = d
    bad = _results("r1")
    bad["cells"][0]["metrics"] = "abc"
    (h / "results-bad-types.json").write_text(json.dumps(bad))
    hx["results_bad_types"] = h / "results-bad-types.json"
    hx["db"] = _history(h / "runs.sqlite", [_results("r1"), _results("r2")])

    # 9. a user's directory and file where the artifact would go; an earlier export of ours
    for name, make in (("users-dir", lambda p: (p.mkdir(), (p / "thesis.txt").write_text("years of work\n"))),
                       ("users-file", lambda p: p.write_text("my notes\n"))):
        d = h / name
        d.mkdir()
        make(d / onnx.name)
        hx[name] = d
    d = h / "own"
    shutil.copytree(onnx.parent, d, ignore=shutil.ignore_patterns("tflite", "executorch", "coreml"))
    hx["own"] = d

    # 10. control characters and markup in names, labels, device fields, history rows
    evil = "\x1b]0;owned\x07\x1b[2J\nforged"
    img = h / "names" / f"{evil}.png"
    img.parent.mkdir()
    shutil.copy(fx["image"], img)
    hx["evil_image"] = img
    labels = ["\x1b[31mzero\x1b[0m", "one\ntwo", "\x9b2J", "[bold]three[/bold]"] + [str(i) for i in range(4, 10)]
    hx["evil_labels"] = artifact_copy("evil-labels", lambda m: m["preprocessing"].update(labels=labels))
    hx["evil_path"] = artifact_copy("evil-path", lambda m: m.update(sha256="0" * 64),
                                    file_name=f"{evil}.onnx")
    d = h / "profiles-evil"
    d.mkdir()
    (d / "board.yaml").write_text(FULL_PROFILE.format(
        name="board", description='"line\\nforged"', cpu='"\\e]0;owned\\a\\e[2J[bold]cpu[/bold]"'))
    hx["profiles_evil"] = d
    hx["db_evil"] = _history(h / "evil.sqlite", [_results("e1", host={"name": "\x1b]0;owned\x07host"},
                                                          out_dir="[bold red]markup[/bold red]")])
    (h / "evil-results.json").write_text(json.dumps(_results("e2", model="\x1b[31m[bold]m[/bold]")))
    hx["evil_results"] = h / "evil-results.json"
    math_name = "dev$\\frac$<img src=x onerror=alert(1)>"
    d = h / "profiles-math"
    d.mkdir()
    (d / f"{math_name}.yaml").write_text(FULL_PROFILE.format(
        name=f"'{math_name}'", description="'<script>alert(1)</script>'", cpu="'<b>cpu</b>'"))
    hx["profiles_math"], hx["math_name"] = d, math_name

    # 11. a 16-bit digit and an EXIF-rotated 7
    from sklearn.datasets import load_digits

    digits = load_digits()
    g = Image.fromarray((digits.images[0] * (255 / 16)).astype("uint8")).resize((32, 32))
    Image.fromarray(np.asarray(g).astype(np.uint16) * 257).save(h / "digit-16bit.png")
    hx["image16"] = h / "digit-16bit.png"
    seven = int(np.where(digits.target == 7)[0][0])
    g = Image.fromarray((digits.images[seven] * (255 / 16)).astype("uint8")).resize((32, 32)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the viewer turns it 90 degrees clockwise
    g.rotate(90, expand=True).save(h / "seven-exif.png", exif=exif)
    hx["exif_image"] = h / "seven-exif.png"

    # 12. a read-only history and one with a corrupt row
    d = h / "history-ro"
    d.mkdir()
    hx["db_ro"] = _history(d / "runs.sqlite", [_results("ro1")])
    hx["db_ro"].chmod(0o444)
    d.chmod(0o555)
    hx["db_corrupt"] = _history(h / "corrupt.sqlite", [_results("c1"), _results("c2")])
    import sqlite3

    con = sqlite3.connect(hx["db_corrupt"])
    con.execute("UPDATE runs SET models = 'not json{', results = '{not json' WHERE id = 1")
    con.commit()
    con.close()

    # 14. a profile with only what a profiler uses
    d = h / "profiles-minimal"
    d.mkdir()
    (d / "mini.yaml").write_text(MINIMAL_PROFILE.format(name="mini"))
    hx["profiles_minimal"] = d
    log("fixtures: hostile files made")


# -- cases ------------------------------------------------------------------------------------------
def cases(fx: dict) -> list[Case]:
    tmp: Path = fx["tmp"]
    out = lambda name: tmp / "out" / name  # noqa: E731 - each case's own output directory
    small_bench = ["--runs", "3", "--warmup", "0", "--op-runs", "0", "--limit", "50",
                   "--no-history", "--no-progress"]
    cs: list[Case] = []

    # unknown names
    cs += [
        Case("export/unknown-model", "unknown model", ["export", "lkca-3m", "--backend", "onnx",
             "--out", str(out("e1"))], "unknown model 'lkca-3m'", out("e1")),
        Case("train/unknown-model", "unknown model", ["train", "lkca-3m", "--epochs", "1", "--out",
             str(out("t1"))], "unknown model 'lkca-3m'", out("t1")),
        Case("bench/unknown-model", "unknown model", ["bench", "--models", "lkca-3m", "--out",
             str(out("b1")), *small_bench], "unknown model 'lkca-3m'", out("b1")),
        Case("export/unknown-backend", "unknown backend", ["export", "lkca-1m", "--backend", "onxx",
             "--out", str(out("e2"))], "unknown backend 'onxx'", out("e2")),
        Case("bench/unknown-backend", "unknown backend", ["bench", "--backends", "tflte", "--out",
             str(out("b2")), *small_bench], "unknown backend 'tflte'", out("b2")),
        Case("export/unknown-recipe", "unknown recipe", ["export", "lkca-1m", "--backend", "onnx",
             "--recipe", "int9", "--out", str(out("e3"))], "unknown onnx recipe 'int9'", out("e3")),
        Case("export/unknown-precision", "unknown precision", ["export", "lkca-1m", "--backend",
             "onnx", "--precision", "int4", "--out", str(out("e4"))], "precision 'int4'", out("e4")),
        Case("bench/unknown-precision", "unknown precision", ["bench", "--precisions", "int4",
             "--out", str(out("b3")), *small_bench], "unknown precision 'int4'", out("b3")),
        Case("profile/unknown-device", "unknown device profile", ["profile", str(fx["onnx"]),
             "--device", "pixel-99", "--runs", "3"], "unknown device profile 'pixel-99'"),
        Case("bench/unknown-device", "unknown device profile", ["bench", "--device", "pixel-99",
             "--out", str(out("b4")), *small_bench], "unknown device profile 'pixel-99'", out("b4")),
        Case("train/unknown-dataset", "unknown dataset", ["train", "lkca-1m", "--dataset", "mnist",
             "--epochs", "1", "--out", str(out("t2"))], "unknown dataset 'mnist'", out("t2")),
        Case("zoo/unknown-option", "unknown option", ["zoo", "--colour"], "unrecognized arguments"),
        Case("bench/not-a-number", "--runs abc", ["bench", "--runs", "abc"], "invalid int value"),
        Case("runs/not-a-number", "--limit -1", ["runs", "--limit", "-1", "--db",
             str(tmp / "none.sqlite")], "--limit must be 0 or more"),
    ]

    # checkpoints
    for i, (what, path) in enumerate(fx["ckpt"].items()):
        needle = {"missing": "checkpoint not found", "truncated": "not a readable checkpoint",
                  "random bytes": "not a readable checkpoint", "a text file": "not a readable checkpoint",
                  "lkca-2m weights (another config)": "not lkca-1m",
                  "a vit-1m checkpoint (another family)": "holds a vit model"}[what]
        cs.append(Case(f"export/checkpoint-{i}", f"checkpoint: {what}",
                       ["export", "lkca-1m", "--backend", "onnx", "--checkpoint", str(path),
                        "--out", str(out(f"ec{i}"))], needle, out(f"ec{i}")))
        if what in ("truncated", "lkca-2m weights (another config)"):
            cs.append(Case(f"train/checkpoint-{i}", f"checkpoint: {what}",
                           ["train", "lkca-1m", "--epochs", "1", "--checkpoint", str(path),
                            "--out", str(out(f"tc{i}"))], needle, out(f"tc{i}")))
            cs.append(Case(f"bench/checkpoint-{i}", f"checkpoint: {what}",
                           ["bench", "--models", "lkca-1m", "--backends", "onnx", "--precisions",
                            "fp32", "--checkpoint", str(path), "--out", str(out(f"bc{i}")),
                            *small_bench], needle, out(f"bc{i}")))

    # images and image folders
    onnx = str(fx["onnx"])
    cs += [
        Case("classify/image-missing", "image: missing", ["classify", str(tmp / "nope.png"),
             "--artifact", onnx], "image not found"),
        Case("classify/image-not-an-image", "image: a text file named .png",
             ["classify", str(fx["not_image"]), "--artifact", onnx], "not a readable image"),
        Case("classify/image-truncated", "image: truncated PNG",
             ["classify", str(fx["truncated_image"]), "--artifact", onnx], "not a readable image"),
        Case("classify/image-unreadable", f"image: unreadable ({fx['unreadable_how']})",
             ["classify", str(fx["unreadable"]), "--artifact", onnx], str(fx["unreadable"].name)),
        Case("classify/control", "control: a real digit image", ["classify", str(fx["image"]),
             "--artifact", onnx], control=True),
        Case("validate/empty-folder", "dataset: folder:EMPTYDIR",
             ["validate", onnx, "--dataset", f"folder:{fx['empty_dir']}"], "no images found"),
        Case("train/empty-folder", "dataset: folder:EMPTYDIR",
             ["train", "lkca-1m", "--dataset", f"folder:{fx['empty_dir']}", "--epochs", "1",
              "--out", str(out("t3"))], "no images found", out("t3")),
        Case("export/empty-folder", "calibration: folder:EMPTYDIR",
             ["export", "lkca-1m", "--backend", "onnx", "--calibration", f"folder:{fx['empty_dir']}",
              "--out", str(out("e5"))], "no images found", out("e5")),
        Case("validate/missing-folder", "dataset: folder:MISSING",
             ["validate", onnx, "--dataset", f"folder:{tmp / 'nowhere'}"], "image folder not found"),
    ]

    # bad artifacts for every backend's extension, through validate, profile and classify
    for backend, kinds in fx["artifacts"].items():
        ext = backend_extensions()[backend]
        for kind, path in kinds.items():
            for command in ("validate", "profile", "classify"):
                argv = {"validate": ["validate", str(path), "--limit", "20"],
                        "profile": ["profile", str(path), "--runs", "3", "--warmup", "0",
                                    "--op-runs", "0", "--timeout", "300"],
                        "classify": ["classify", str(fx["image"]), "--artifact", str(path)]}[command]
                slug = re.sub(r"[^a-z]+", "-", kind.lower()).strip("-")
                cs.append(Case(f"{command}/artifact-{ext[1:]}-{slug}", f"artifact {ext}: {kind}", argv))
        cs.append(Case(f"validate/artifact-{ext[1:]}-no-manifest", f"artifact {ext}: no manifest",
                       ["validate", str(tmp / "artifacts" / f"orphan{ext}")], "no manifest beside"))

    # an artifact changed since export: refused unless --no-verify
    changed = str(fx["changed"])
    cs += [
        Case("validate/sha256-mismatch", "artifact changed since export (sha256)",
             ["validate", changed, "--limit", "20"], "does not match its manifest"),
        Case("profile/sha256-mismatch", "artifact changed since export (sha256)",
             ["profile", changed, "--runs", "3", "--warmup", "0", "--op-runs", "0"],
             "does not match its manifest"),
        Case("classify/sha256-mismatch", "artifact changed since export (sha256)",
             ["classify", str(fx["image"]), "--artifact", changed], "does not match its manifest"),
        Case("classify/sha256-no-verify", "control: the same with --no-verify",
             ["classify", str(fx["image"]), "--artifact", changed, "--no-verify"], control=True),
    ]

    # malformed device profiles
    for i, (what, d) in enumerate(fx["profiles"].items()):
        needle = "not valid YAML" if "YAML" in what else "threads"
        cs += [
            Case(f"devices/profile-{i}", f"--profiles-dir: {what}", ["devices", "--profiles-dir",
                 str(d)], needle),
            Case(f"profile/profile-{i}", f"--profiles-dir: {what}", ["profile", onnx, "--runs", "3",
                 "--profiles-dir", str(d)], needle),
            Case(f"bench/profile-{i}", f"--profiles-dir: {what}", ["bench", "--profiles-dir", str(d),
                 "--out", str(out(f"bp{i}")), *small_bench], needle, out(f"bp{i}")),
        ]
    cs.append(Case("devices/profile-dir-missing", "--profiles-dir: no such directory",
                   ["devices", "--profiles-dir", str(tmp / "nowhere")], "not found"))

    # output that cannot be written
    places = [("under a regular file", fx["unwritable"])]
    if "read_only" in fx:
        places.append(("in a read-only directory", fx["read_only"]))
    for i, (what, path) in enumerate(places):
        cs += [
            Case(f"export/unwritable-{i}", f"--out {what}", ["export", "lkca-1m", "--backend",
                 "onnx", "--out", str(path)], "cannot write", path),
            Case(f"train/unwritable-{i}", f"--out {what}", ["train", "lkca-1m", "--epochs", "1",
                 "--out", str(path)], "cannot write", path),
            Case(f"bench/unwritable-{i}", f"--out {what}", ["bench", "--backends", "onnx",
                 "--precisions", "fp32", "--out", str(path), *small_bench], "cannot write", path),
        ]

    # a full disk
    cs += [
        Case("export/full-disk", "full disk (RLIMIT_FSIZE 200 KB)", ["export", "lkca-1m", "--backend",
             "onnx", "--out", str(out("e6"))], "no space left", out("e6"), fsize=FULL_DISK_BYTES),
        Case("train/full-disk", "full disk (RLIMIT_FSIZE 200 KB)", ["train", "lkca-1m", "--epochs",
             "1", "--out", str(out("t4"))], "no space left", out("t4"), fsize=FULL_DISK_BYTES),
        Case("bench/full-disk", "full disk (RLIMIT_FSIZE 200 KB)", ["bench", "--backends", "onnx",
             "--precisions", "fp32", "--out", str(out("b5")), *small_bench], "no space left",
             out("b5"), allow=("run.json", "cells"), fsize=FULL_DISK_BYTES),
    ]

    # run history and results files
    cs += [
        Case("runs/not-a-database", "--db: not a database", ["runs", "--db", str(fx["bad_db"])],
             "not a usable lkca-edge run history"),
        Case("compare/not-a-database", "--db: not a database", ["compare", "1", "2", "--db",
             str(fx["bad_db"])], "not a usable lkca-edge run history"),
        Case("compare/broken-results", "a truncated results.json", ["compare", str(fx["bad_results"]),
             str(fx["bad_results"]), "--db", str(tmp / "none.sqlite")], "not valid JSON"),
        Case("bench/resume-not-a-run", "--resume: not a bench run directory",
             ["bench", "--resume", str(fx["empty_dir"])], "not a bench run directory"),
    ]
    return cs + hostile_cases(fx)


def _json_top(o: Outcome) -> tuple[str, float] | None:
    try:
        return tuple(json.loads(o.stdout)[0]["top"][0][k] for k in ("label", "probability"))
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _expect_top(label: str, minimum: float):
    """Check: ``classify --json`` ranks ``label`` first with at least ``minimum``."""
    def check(o: Outcome, fx: dict) -> list[str]:
        top = _json_top(o)
        if top is None:
            return [] if o.code != 0 else ["no JSON prediction"]
        if top[0] != label or top[1] < minimum:
            return [f"top-1 {top[0]!r} p={top[1]:.2f}, a viewer shows a {label} (expected p >= {minimum})"]
        return []
    return check


def _no_line_starting(prefix: str):
    def check(o: Outcome, fx: dict) -> list[str]:
        bad = [ln for ln in (o.stdout + o.stderr).splitlines() if ln.lstrip().startswith(prefix)]
        return [f"a name's newline forged the line {bad[0][:40]!r}"] if bad else []
    return check


def _shows_literally(text: str):
    def check(o: Outcome, fx: dict) -> list[str]:
        if o.code != 0:
            return []  # reported as the exit code
        return [] if text in o.stdout else [f"{text!r} was not shown as text (markup applied?)"]
    return check


def _report_escaped(out: Path):
    def check(o: Outcome, fx: dict) -> list[str]:
        md = out / "report.md"
        if not md.is_file():
            return ["no report.md"]
        text = md.read_text()
        return ["report.md holds raw HTML from a profile"] if "<img" in text or "<script" in text else []
    return check


def _still_there(path: Path, text: str):
    def check(o: Outcome, fx: dict) -> list[str]:
        intact = path.is_file() and path.read_bytes() == text.encode()
        return [] if intact else [f"the user's {path.name} was destroyed"]
    return check


def _notice_skipped(o: Outcome, fx: dict) -> list[str]:
    problems = []
    if "skipping run 1" not in o.stderr:
        problems.append("no notice of the skipped row")
    if "lkca-1m" not in o.stdout:
        problems.append("the good row is not listed")
    return problems


def _clean_after_next_start(o: Outcome, fx: dict) -> list[str]:
    out = o.case.out
    left = sorted(p.name for p in _files_under(out) if ".partial" in p.name) if out else []
    return [f"{left[0]} survived the next start"] if left else []


def hostile_cases(fx: dict) -> list[Case]:
    """Issue 12's classes: every case makes the CLI read one hostile input."""
    tmp: Path = fx["tmp"]
    hx = fx["hostile"]
    out = lambda name: tmp / "out" / name  # noqa: E731
    onnx = str(fx["onnx"])
    small = ["--runs", "3", "--warmup", "0", "--op-runs", "0"]
    bench = ["--runs", "3", "--warmup", "0", "--op-runs", "0", "--limit", "50", "--no-history",
             "--no-progress"]
    T = HOSTILE_TIMEOUT
    cs: list[Case] = []

    def case(id_, what, argv, needle=None, **kw):
        kw.setdefault("timeout", T)
        cs.append(Case(id_, what, [str(a) for a in argv], needle, **kw))

    # 1. integrity covers every byte a runtime reads
    for cmd in ("classify", "validate", "profile"):
        argv = {"classify": ["classify", fx["image"], "--artifact", hx["external_changed"]],
                "validate": ["validate", hx["external_changed"], "--limit", "20"],
                "profile": ["profile", hx["external_changed"], *small]}[cmd]
        case(f"{cmd}/onnx-external-data-changed", "ONNX external data randomised after export",
             argv, "does not match its manifest")
    case("classify/onnx-external-data", "control: intact ONNX external data",
         ["classify", fx["image"], "--artifact", hx["external"]], control=True)
    case("validate/onnx-external-outside", "ONNX external data at ../outside-weights.bin",
         ["validate", hx["external_outside"], "--limit", "20"], "outside its directory")
    if "coreml_outside" in hx:
        for cmd in ("validate", "profile"):
            extra = ["--limit", "20"] if cmd == "validate" else small
            case(f"{cmd}/mlpackage-manifest-outside", ".mlpackage: Manifest.json path leaves the package",
                 [cmd, hx["coreml_outside"], *extra], "outside the package")
            case(f"{cmd}/mlpackage-symlink", ".mlpackage: weights/ is a symlink out of the package",
                 [cmd, hx["coreml_symlink"], *extra], "symlink")
    # 2. read-only commands change nothing
        for cmd in ("validate", "profile"):
            extra = ["--limit", "20"] if cmd == "validate" else small
            case(f"{cmd}/mlpackage-unchanged", "control: a .mlpackage coremltools would rewrite",
                 [cmd, hx["coreml_compact"], *extra], control=True)

    # 3. only regular files are read, each within its size cap
    case("classify/image-fifo", "image: a FIFO", ["classify", hx["fifo_image"], "--artifact", onnx],
         "not a regular file")
    case("classify/image-device", "image: /dev/zero", ["classify", hx["device"], "--artifact", onnx],
         "not a regular file")
    case("classify/image-too-large", "image: 70 MB (sparse)", ["classify", hx["big.png"], "--artifact", onnx],
         "over the")
    case("validate/folder-fifo", "folder: dataset with a FIFO image",
         ["validate", onnx, "--dataset", f"folder:{hx['folder_fifo']}"], "not a regular file")
    case("export/checkpoint-fifo", "checkpoint: a FIFO", ["export", "lkca-1m", "--backend", "onnx",
         "--checkpoint", hx["fifo_checkpoint"], "--out", out("h-ck1")], "not a regular file", out=out("h-ck1"))
    case("export/checkpoint-device", "checkpoint: /dev/zero", ["export", "lkca-1m", "--backend", "onnx",
         "--checkpoint", hx["device"], "--out", out("h-ck2")], "not a regular file", out=out("h-ck2"))
    case("export/checkpoint-too-large", "checkpoint: 1.1 GB (sparse)", ["export", "lkca-1m", "--backend",
         "onnx", "--checkpoint", hx["big.pt"], "--out", out("h-ck3")], "over the", out=out("h-ck3"))
    case("validate/source-checkpoint-fifo", "manifest's source checkpoint: a FIFO",
         # with --dataset the reference logits come from the source model (not the pack)
         ["validate", hx["source_fifo"], "--dataset", "digits", "--limit", "20"], "not a regular file")
    case("validate/manifest-fifo", "manifest: a FIFO", ["validate", hx["manifest_fifo"]], "not a regular file")
    case("validate/package-member-fifo", ".mlpackage member: a FIFO", ["validate", hx["member_fifo"]],
         "not a regular file")
    case("devices/profile-fifo", "device profile: a FIFO", ["devices", "--profiles-dir", hx["profiles_fifo"]],
         "not a regular file")
    case("devices/profile-too-large", "device profile: 2 MB (sparse)",
         ["devices", "--profiles-dir", hx["profiles_big"]], "over the")
    case("train/cifar-fifo", "CIFAR batch: a FIFO", ["train", "lkca-1m", "--dataset",
         f"cifar10:{hx['cifar_fifo']}", "--epochs", "1", "--out", out("h-t1")], "not a regular file",
         out=out("h-t1"))
    case("runs/db-fifo", "--db: a FIFO", ["runs", "--db", hx["fifo_db"]], "not a regular file")
    case("compare/results-fifo", "results.json: a FIFO", ["compare", hx["fifo_results"],
         hx["fifo_results"], "--db", tmp / "none.sqlite"], "not a regular file")

    # 4. bounded parsing
    for cmd, argv in (("devices", ["devices"]), ("profile", ["profile", onnx, *small]),
                      ("bench", ["bench", "--out", out("h-b1"), *bench])):
        case(f"{cmd}/yaml-alias-bomb", "device profile: billion laughs (nested aliases)",
             [*argv, "--profiles-dir", hx["profiles_bomb"]], "aliases",
             out=out("h-b1") if cmd == "bench" else None)
    case("validate/manifest-deep-nesting", "manifest: 100,000 nested brackets",
         ["validate", hx["deep_manifest"]], "nests deeper")
    case("compare/results-deep-nesting", "results.json: 100,000 nested brackets",
         ["compare", hx["deep_results"], hx["deep_results"], "--db", tmp / "none.sqlite"], "nests deeper")
    case("bench/run-json-deep-nesting", "run.json: 100,000 nested brackets",
         ["bench", "--resume", hx["deep_run"]], "nests deeper")
    case("train/cifar-memo-bomb", f"CIFAR batch: {hx['cifar_bomb'].joinpath('batches.meta').stat().st_size}"
         "-byte pickle expanding to 2**40 names", ["train", "lkca-1m", "--dataset",
         f"cifar10:{hx['cifar_bomb']}", "--epochs", "1", "--out", out("h-t2")], "expands",
         out=out("h-t2"))
    case("classify/image-pixel-bomb", "image: a 30000x30000 PNG (decompression bomb)",
         ["classify", hx["pixel_bomb"], "--artifact", onnx], "megapixel")

    # 5. sizes are checked before anything is allocated
    case("export/checkpoint-depth-100000", "checkpoint: 4 MB claiming depth 100,000",
         ["export", "--backend", "onnx", "--checkpoint", hx["depth.pt"], "--out", out("h-e1")],
         "depth", out=out("h-e1"))
    case("export/image-size-1024", "--image-size 1024", ["export", "lkca-1m", "--backend", "onnx",
         "--image-size", "1024", "--out", out("h-e2")], "image_size", out=out("h-e2"))
    case("export/num-classes-huge", "--num-classes 100000000", ["export", "lkca-1m", "--backend", "onnx",
         "--num-classes", "100000000", "--out", out("h-e3")], "num_classes", out=out("h-e3"))
    case("export/tokens-huge", "--image-size 512 --patch-size 1", ["export", "lkca-1m", "--backend",
         "onnx", "--image-size", "512", "--patch-size", "1", "--out", out("h-e4")], "tokens", out=out("h-e4"))
    case("validate/manifest-overrides-huge", "manifest: source overrides image_size 100000",
         ["validate", hx["m_overrides"], "--limit", "20"], "image_size")

    # 6. everything read is validated against a schema
    case("validate/manifest-dim-string", 'manifest: config.dim "136"',
         ["validate", hx["m_dim_string"], "--limit", "20"], "config")
    for cmd in ("profile", "classify"):
        argv = (["profile", None, *small] if cmd == "profile" else ["classify", fx["image"], "--artifact", None])
        for key, what, needle in (("m_inputs_string", 'manifest: inputs "abc"', "inputs"),
                                  ("m_shape_string", 'manifest: shape [1,3,"abc",32]', "shape")):
            a = [hx[key] if x is None else x for x in argv]
            case(f"{cmd}/{key[2:].replace('_', '-')}", what, a, needle)
    case("validate/manifest-precision-unknown", "manifest: precision int4 (no gate)",
         ["validate", hx["m_precision"], "--limit", "20"], "precision")
    case("export/checkpoint-dim-string", 'checkpoint: config dim "136"', ["export", "lkca-1m",
         "--backend", "onnx", "--checkpoint", hx["dim-string.pt"], "--out", out("h-e5")], "dim",
         out=out("h-e5"))
    case("devices/profile-budget-nan", "device profile: ram_budget_mb .nan",
         ["devices", "--profiles-dir", hx["profiles_nan"]], "ram_budget_mb")
    case("devices/profile-budget-negative", "device profile: latency_budget_ms -5",
         ["devices", "--profiles-dir", hx["profiles_negative"]], "latency_budget_ms")
    case("bench/run-json-bad-types", 'run.json: options.runs "abc"', ["bench", "--resume",
         hx["run_bad_types"]], "runs")
    case("compare/results-bad-types", 'results.json: cells[0].metrics "abc"',
         ["compare", hx["results_bad_types"], hx["results_bad_types"], "--db", tmp / "none.sqlite"],
         "metrics")

    # 7. argument ranges
    db = hx["db"]
    for id_, what, argv, needle in (
            ("validate/limit-negative", "--limit -5", ["validate", onnx, "--limit", "-5"], "--limit"),
            ("export/limit-zero", "--limit 0", ["export", "lkca-1m", "--backend", "onnx", "--limit", "0",
                                                "--out", out("h-e6")], "--limit"),
            ("validate/threads-zero", "--threads 0", ["validate", onnx, "--threads", "0"], "--threads"),
            ("profile/timeout-zero", "--timeout 0", ["profile", onnx, *small, "--timeout", "0"], "--timeout"),
            ("profile/timeout-nan", "--timeout nan", ["profile", onnx, *small, "--timeout", "nan"], "--timeout"),
            ("profile/runs-zero", "--runs 0", ["profile", onnx, "--runs", "0"], "--runs"),
            ("train/seed-negative", "--seed -1", ["train", "lkca-1m", "--epochs", "1", "--seed", "-1",
                                                  "--out", out("h-t3")], "--seed"),
            ("train/lr-nan", "--lr nan", ["train", "lkca-1m", "--epochs", "1", "--lr", "nan", "--out",
                                          out("h-t4")], "--lr"),
            ("train/lr-inf", "--lr inf", ["train", "lkca-1m", "--epochs", "1", "--lr", "inf", "--out",
                                          out("h-t5")], "--lr"),
            ("bench/runs-zero", "--runs 0", ["bench", "--runs", "0", "--out", out("h-b2"), "--no-history"],
             "--runs"),
            ("compare/run-id-huge", "run id 99999999999999999999999",
             ["compare", "99999999999999999999999", "1", "--db", db], "bad run reference"),
            ("compare/run-id-minus-zero", "run id -0", ["compare", "-0", "1", "--db", db],
             "bad run reference")):
        o = next((a for a in argv if isinstance(a, Path) and "out" in a.parts), None)
        case(id_, what, argv, needle, out=o)
    case("classify/threads-huge", "control: --threads 100000 (capped to the cores)",
         ["classify", fx["image"], "--artifact", onnx, "--threads", "100000"], control=True)

    # 8. child processes die with their parent, and at their timeout
    case("profile/parent-sigkill", "profile SIGKILLed while its measuring child runs",
         ["profile", onnx, "--runs", "1000000", "--warmup", "0", "--op-runs", "0"],
         kill="child", then=["devices"], timeout=300)
    case("validate/parent-sigkill", "validate SIGKILLed while its runtime child runs",
         ["validate", onnx], kill="child", then=["devices"], timeout=300)
    case("profile/child-timeout", "--timeout 5 with a child running 10**6 runs",
         ["profile", onnx, "--runs", "1000000", "--warmup", "0", "--op-runs", "0", "--timeout", "5"],
         "did not finish within 5 s", timeout=120)

    # 9. a user's file is never destroyed
    name = fx["onnx"].name
    case("export/out-users-directory", "--out: a user's directory where the artifact goes",
         ["export", "lkca-1m", "--backend", "onnx", "--out", hx["users-dir"]], "not an artifact made by",
         check=_still_there(hx["users-dir"] / name / "thesis.txt", "years of work\n"), timeout=300)
    case("export/out-users-file", "--out: a user's file where the artifact goes",
         ["export", "lkca-1m", "--backend", "onnx", "--out", hx["users-file"]], "not an artifact made by",
         check=_still_there(hx["users-file"] / name, "my notes\n"), timeout=300)
    case("export/replace-own", "control: replace our own earlier export",
         ["export", "lkca-1m", "--backend", "onnx", "--out", hx["own"]], control=True, timeout=300)

    # 10. untrusted strings are escaped before any output
    case("classify/control-char-file-name", "control: ESC, OSC and a newline in an image's name",
         ["classify", hx["evil_image"], "--artifact", onnx], control=True,
         check=_no_line_starting("forged"))
    case("classify/control-char-labels", "control: ESC, CSI, newline and markup in manifest labels",
         ["classify", fx["image"], "--artifact", hx["evil_labels"]], control=True,
         check=_no_line_starting("two"))
    case("validate/control-char-path", "ESC, OSC and a newline in an artifact's path (in the error)",
         ["validate", hx["evil_path"]], "does not match its manifest")
    case("devices/control-char-profile", "control: ESC/OSC in a profile's cpu, a newline in its description",
         ["devices", "--profiles-dir", hx["profiles_evil"]], control=True, check=_no_line_starting("forged"))
    case("runs/control-char-history", "control: OSC and rich markup in history rows",
         ["runs", "--db", hx["db_evil"]], control=True, check=_shows_literally("[bold red]markup"))
    case("compare/control-char-results", "control: ESC and rich markup in a results model name",
         ["compare", hx["evil_results"], hx["evil_results"], "--db", tmp / "none.sqlite"], control=True,
         check=_shows_literally("[bold]m[/bold]"))
    case("bench/mathtext-device-name", "control: a device named dev$\\frac$<img ...> (mathtext, HTML)",
         ["bench", "--device", hx["math_name"], "--backends", "onnx", "--precisions", "fp32",
          "--profiles-dir", hx["profiles_math"], "--out", out("h-b3"), *bench], control=True,
         check=_report_escaped(out("h-b3")), timeout=600)

    # 11. images mean what a viewer shows
    case("classify/image-16-bit", "control: a 16-bit grayscale PNG of a 0",
         ["classify", hx["image16"], "--artifact", onnx, "--json"], control=True,
         check=_expect_top("0", 0.85))
    case("classify/image-exif-rotated", "control: a 7 stored rotated, EXIF orientation 6",
         ["classify", hx["exif_image"], "--artifact", onnx, "--json"], control=True,
         check=_expect_top("7", 0.8))

    # 12. history
    case("runs/history-read-only", "control: a read-only history (file 444, directory 555)",
         ["runs", "--db", hx["db_ro"]], control=True, read_only_root=True,
         check=_shows_literally("lkca-1m"))
    case("runs/history-corrupt-row", "control: a history row whose models field is not JSON",
         ["runs", "--db", hx["db_corrupt"]], control=True, check=_notice_skipped)
    case("compare/history-corrupt-row", "a history row whose results are not JSON",
         ["compare", "1", "2", "--db", hx["db_corrupt"]], "run 1")

    # 13. no temp files survive an interrupted export
    case("export/sigkill-mid-export", "export SIGKILLed mid-conversion, then run again",
         ["export", "lkca-1m", "--backend", "onnx", "--out", out("h-e7")], kill="temp",
         then=["export", "lkca-1m", "--backend", "onnx", "--out", str(out("h-e7"))],
         check=_clean_after_next_start, out=out("h-e7"), timeout=600)
    case("export/sigterm-mid-export", "export SIGTERMed mid-conversion",
         ["export", "lkca-1m", "--backend", "onnx", "--out", out("h-e8")], "interrupted",
         kill="temp", kill_signal=signal.SIGTERM, out=out("h-e8"), timeout=600)

    # 14. a user's own device profile needs only what a profiler uses
    case("devices/minimal-profile", "control: a profile with only name, threads, budgets, backends, "
         "precisions", ["devices", "--profiles-dir", hx["profiles_minimal"]], control=True)
    case("profile/minimal-profile", "control: profiling for that profile",
         ["profile", onnx, "--device", "mini", "--profiles-dir", hx["profiles_minimal"], *small],
         control=True)
    return cs


# -- running and checking -------------------------------------------------------------------------------
def _preexec(case: Case):
    """Limits for the case's child: address space always, file size for the full-disk cases,
    and for ``read_only_root`` root's CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH dropped from the
    bounding set (so even root cannot write a read-only file)."""
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
        if case.fsize:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.fsize, case.fsize))
        if case.read_only_root and os.geteuid() == 0:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
                libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP
    return apply


def _files_under(path: Path) -> list[Path]:
    if not path.exists():
        return []
    if path.is_file():
        return [path]
    return [p for p in path.rglob("*") if not p.is_dir()]


def _partials(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if ".partial" in p.name}


def _snapshot(path: Path) -> dict | None:
    """Every regular file under ``path`` (and an artifact's files beside it): name -> (size,
    sha256). FIFOs and devices are listed, never opened."""
    import hashlib
    import stat

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    members = [path, *sorted(path.parent.glob(glob_escape(path.name) + ".*"))]
    out = {}
    for m in members:
        for f in ([m] if not m.is_dir() or m.is_symlink() else [m, *sorted(m.rglob("*"))]):
            st = os.lstat(f)
            if stat.S_ISREG(st.st_mode):
                out[str(f)] = (st.st_size, hashlib.sha256(f.read_bytes()).hexdigest())
            else:
                out[str(f)] = (stat.filemode(st.st_mode), None)
    return out


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def _read_path(case: Case) -> Path | None:
    """The artifact a read-only command reads (it must stay unchanged)."""
    argv = case.argv
    if case.command in ("validate", "profile") and len(argv) > 1:
        return Path(argv[1])
    if case.command == "classify" and "--artifact" in argv:
        return Path(argv[argv.index("--artifact") + 1])
    return None


def _environ_has(pid: str, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return marker.encode() in fh.read()
    except OSError:
        return False


def _marked(marker: str) -> list[int]:
    """PIDs of processes whose environment carries ``marker`` (started by one case)."""
    if not Path("/proc").is_dir():
        return []
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()
            and _environ_has(p, f"{MARKER}={marker}")]


def _wait_gone(marker: str, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while True:
        alive = [pid for pid in _marked(marker) if not _zombie(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _has_temp_files(tmpdir: Path, case: Case) -> bool:
    """The CLI is mid-way: a converter's file (64 KB or more) in its $TMPDIR, or a .partial."""
    if any(p.is_file() and p.stat().st_size > 65536 for p in tmpdir.rglob("*")):
        return True
    return case.out is not None and case.out.exists() and bool(_partials(case.out))


def _run(argv: list[str], case: Case, fx: dict, env: dict):
    """(code, stdout, stderr) of one CLI run; for ``case.kill`` cases the CLI is killed with
    ``case.kill_signal`` once it has a child process ("child") or temporary files ("temp")."""
    cmd = [sys.executable, "-m", "lkca_edge", *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=fx["tmp"], env=env, preexec_fn=_preexec(case))
    if case.kill:
        marker = env[MARKER]
        deadline = time.monotonic() + case.timeout
        while proc.poll() is None and time.monotonic() < deadline:
            ready = (any(pid != proc.pid for pid in _marked(marker)) if case.kill == "child"
                     else _has_temp_files(Path(env["TMPDIR"]), case))
            if ready:
                time.sleep(0.5)
                proc.send_signal(case.kill_signal)
                break
            time.sleep(0.05)
    try:
        stdout, stderr = proc.communicate(timeout=case.timeout)
        return proc.returncode, stdout, stderr
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        return None, stdout or "", stderr or ""


def run_case(case: Case, fx: dict) -> Outcome:
    before = _partials(fx["tmp"])
    index = fx.setdefault("_runs", [0])
    index[0] += 1
    tmpdir = fx["tmp"] / "tmpdirs" / f"{index[0]:03d}"
    tmpdir.mkdir(parents=True, exist_ok=True)
    tmpdir.chmod(0o1777)
    marker = f"{os.getpid()}-{index[0]}"
    env = dict(child_env(), TMPDIR=str(tmpdir), **{MARKER: marker})
    watched = [p for p in (_read_path(case), *case.unchanged) if p is not None]
    snapshots = {p: _snapshot(p) for p in watched}
    t0 = time.perf_counter()
    code, stdout, stderr = _run(case.argv, case, fx, env)
    o = Outcome(case, code, stdout, stderr, time.perf_counter() - t0, tmpdir=tmpdir)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    killed = case.kill is not None and case.kill_signal == signal.SIGKILL
    if case.kill is not None:
        left = _wait_gone(marker, 10)
        if left:
            o.problems.append(f"{len(left)} child process(es) outlived the killed CLI")
    if code is None:
        o.problems.append(f"no exit within {case.timeout:g} s")
    elif killed:
        if code != -signal.SIGKILL:
            o.problems.append(f"exit {code} before it could be killed")
    elif code < 0:
        o.problems.append(f"killed by {signal.Signals(-code).name}")
    elif case.control:
        if code != 0:
            o.problems.append(f"exit {code}, expected 0")
    else:
        if code == 0:
            o.problems.append("exit 0")
        if len(lines) != 1:
            o.problems.append(f"{len(lines)} stderr lines")
        if case.needle and case.needle.lower() not in stderr.lower():
            o.problems.append(f"message lacks {case.needle!r}")
    if "Traceback" in stderr or "Traceback" in stdout:
        o.problems.append("traceback")
    if "internal error" in stderr:  # a bad input is the user's to fix: a UserError line
        o.problems.append("internal error")
    if CONTROL_CHARS.search(stdout) or CONTROL_CHARS.search(stderr):
        o.problems.append("control characters reached the output")
    if killed and case.then is not None:  # the next start must clean up what SIGKILL left
        code2, out2, err2 = _run(case.then, dataclasses_replace(case, kill=None), fx, env)
        o.stdout, o.stderr = out2, err2
        if code2 != 0:
            o.problems.append(f"the next start exited {code2}: {err2.strip()[-200:]}")
    if case.check is not None:
        try:
            o.problems += case.check(o, fx)
        except Exception as exc:  # noqa: BLE001 - a check that cannot even look is a failure
            o.problems.append(f"check failed: {type(exc).__name__}: {exc}")
    # (a case with a next start: that run writes its output there, as it should)
    if case.out is not None and not case.control and case.then is None:
        left = [p for p in _files_under(case.out)
                if not any(part in case.allow for part in p.relative_to(case.out).parts[:1])] \
            if case.out.is_dir() else _files_under(case.out)
        if left:
            o.problems.append(f"left {len(left)} file(s) behind: {left[0].name}")
    new_partials = _partials(fx["tmp"]) - before
    if new_partials:
        o.problems.append(f"left a temporary file: {sorted(new_partials)[0].name}")
    stray = _wait_gone(marker, 5)
    if stray:
        o.problems.append(f"left {len(stray)} process(es) running")
        for pid in stray:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    temps = sorted(tmpdir.rglob("*"))
    if temps:
        o.problems.append(f"left {len(temps)} temporary file(s) in $TMPDIR: "
                          f"{temps[0].relative_to(tmpdir)}")
    for p, snap in snapshots.items():
        if snap is not None and _snapshot(p) != snap:
            o.problems.append(f"changed {Path(p).name}, which it only had to read")
    return o


def dataclasses_replace(case: Case, **changes) -> Case:
    import dataclasses

    return dataclasses.replace(case, **changes)


def _cell(text: str, width: int) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def record(o: Outcome, tmp: Path) -> dict:
    """One outcome as the result file keeps it: the fixture directory shown as $TMP."""
    hide = (lambda text: text.replace(str(tmp), "$TMP"))  # noqa: E731
    return {"id": o.case.id, "input": o.case.input, "command": o.case.command,
            "argv": [hide(a) for a in o.case.argv], "control": o.case.control, "exit": o.code,
            "message": hide(o.message), "stderr": hide(o.stderr), "ok": o.ok,
            "problems": [hide(p) for p in o.problems], "seconds": round(o.seconds, 2)}


def table(records: list[dict], width: int = 200) -> str:
    """Bad input x command: exit code, the one line shown, verdict (a Markdown table)."""
    rows = ["| bad input | command | exit | message shown (stderr) | check |",
            "|---|---|---|---|---|"]
    for r in records:
        verdict = "ok" if r["ok"] else "FAIL: " + "; ".join(r["problems"])
        if r["control"] and r["ok"]:
            verdict = "ok (control: must succeed)"
        rows.append(f"| {_cell(r['input'], 60)} | {r['command']} | "
                    f"{'—' if r['exit'] is None else r['exit']} | {_cell(r['message'], width)} | "
                    f"{_cell(verdict, 80)} |")
    return "\n".join(rows)


def summary(records: list[dict]) -> str:
    """Per CLI command: cases run, passed, failed (a Markdown table)."""
    by: dict[str, list[int]] = {}
    for r in records:
        n = by.setdefault(r["command"], [0, 0])
        n[0] += 1
        n[1] += bool(r["ok"])
    rows = ["| command | cases | pass | fail |", "|---|---|---|---|"]
    for command, (total, ok) in sorted(by.items()):
        rows.append(f"| {command} | {total} | {ok} | {total - ok} |")
    total, ok = len(records), sum(bool(r["ok"]) for r in records)
    rows.append(f"| **all** | **{total}** | **{ok}** | **{total - ok}** |")
    return "\n".join(rows)


def markdown(outcomes: list[Outcome], tmp: Path, width: int = 200) -> str:
    return table([record(o, tmp) for o in outcomes], width)


def result(outcomes: list[Outcome], tmp: Path, fx: dict, argv: list[str]) -> dict:
    """The result file (schema ``lkca-edge-bad-inputs/1``) ``benchmarks/render_readme.py`` reads."""
    import shlex

    from lkca_edge.bench import versions
    from lkca_edge.hostinfo import host_info

    return {"schema": SCHEMA,
            "command": " ".join(shlex.quote(a) for a in [".venv/bin/python",
                                                         "benchmarks/bad_inputs.py", *argv]),
            "finished": time.strftime("%Y-%m-%d %H:%M", time.localtime()),
            "host": host_info(), "versions": versions(), "as_root": os.geteuid() == 0,
            "real_artifacts": sorted(fx["real"]),
            "passed": sum(o.ok for o in outcomes), "cases": [record(o, tmp) for o in outcomes]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", metavar="WORD", help="run the cases whose id contains a word")
    ap.add_argument("--backends", nargs="+", help="real artifacts to export for the truncated cases "
                    "(default: every installed backend)")
    ap.add_argument("--keep", metavar="DIR", help="make the fixtures in DIR and keep them")
    ap.add_argument("--json", metavar="PATH", help="also write the outcomes as JSON (the result "
                    "file benchmarks/render_readme.py reads)")
    ap.add_argument("--width", type=int, default=200, help="cut messages in the table at N characters")
    args = ap.parse_args(argv)

    tmp = Path(args.keep or tempfile.mkdtemp(prefix="lkca-bad-inputs-")).resolve()
    try:
        fx = make_fixtures(tmp, args.backends if args.backends is not None else installed_backends(),
                           log=lambda s: print(s, file=sys.stderr, flush=True))
        selected = [c for c in cases(fx) if not args.only or any(w in c.id for w in args.only)]
        outcomes = []
        for i, case in enumerate(selected, 1):
            o = run_case(case, fx)
            print(f"[{i}/{len(selected)}] {case.id}: {'ok' if o.ok else 'FAIL ' + '; '.join(o.problems)}"
                  f" ({o.seconds:.1f} s)", file=sys.stderr, flush=True)
            outcomes.append(o)
        print(markdown(outcomes, tmp, args.width))
        n_bad = sum(not o.ok for o in outcomes)
        print(f"\n{len(outcomes) - n_bad} of {len(outcomes)} cases pass"
              + (f"; {n_bad} FAIL" if n_bad else ""))
        if args.json:
            from lkca_edge.fileio import write_json

            write_json(args.json, result(outcomes, tmp, fx,
                                         list(sys.argv[1:] if argv is None else argv)))
        return 1 if n_bad else 0
    finally:
        if not args.keep:
            for p in tmp.rglob("*"):  # a mode-000 fixture must not stop the clean-up
                try:
                    if not p.is_symlink():
                        p.chmod(0o755 if p.is_dir() else 0o644)
                except OSError:
                    pass
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
