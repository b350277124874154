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

The fixtures are made in a temporary directory: a real lkca-1m ONNX fp32 artifact (`lkca-edge
export lkca-1m --backend onnx`), one real artifact per other installed backend (exported without
validation, for the truncated cases), bad checkpoints, images, device profiles and so on.

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

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # lkca_edge from this checkout
    sys.path.insert(0, str(REPO))
SCHEMA = "lkca-edge-bad-inputs/1"
FULL_DISK_BYTES = 200_000  # RLIMIT_FSIZE: any write past 200 KB fails (EFBIG), like a full disk


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

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def message(self) -> str:
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
    return fx


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
             str(fx["bad_results"]), "--db", str(tmp / "none.sqlite")], "cannot read"),
        Case("bench/resume-not-a-run", "--resume: not a bench run directory",
             ["bench", "--resume", str(fx["empty_dir"])], "not a bench run directory"),
    ]
    return cs


# -- running and checking -------------------------------------------------------------------------------
def _limit_fsize(n: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
    return apply


def _files_under(path: Path) -> list[Path]:
    if not path.exists():
        return []
    if path.is_file():
        return [path]
    return [p for p in path.rglob("*") if not p.is_dir()]


def _partials(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if ".partial" in p.name}


def run_case(case: Case, fx: dict) -> Outcome:
    before = _partials(fx["tmp"])
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "lkca_edge", *case.argv], capture_output=True,
                              text=True, cwd=fx["tmp"], env=child_env(), timeout=case.timeout,
                              preexec_fn=_limit_fsize(case.fsize) if case.fsize else None)
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, stdout, stderr = None, exc.stdout or "", exc.stderr or ""
        stdout, stderr = (s.decode(errors="replace") if isinstance(s, bytes) else s for s in (stdout, stderr))
    o = Outcome(case, code, stdout, stderr, time.perf_counter() - t0)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if code is None:
        o.problems.append(f"no exit within {case.timeout:g} s")
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
    if case.out is not None and not case.control:
        left = [p for p in _files_under(case.out)
                if not any(part in case.allow for part in p.relative_to(case.out).parts[:1])] \
            if case.out.is_dir() else _files_under(case.out)
        if left:
            o.problems.append(f"left {len(left)} file(s) behind: {left[0].name}")
    new_partials = _partials(fx["tmp"]) - before
    if new_partials:
        o.problems.append(f"left a temporary file: {sorted(new_partials)[0].name}")
    return o


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
