"""Shared fixtures: the shipped lkca-1m trained on digits, the real digits data, and one
session-wide cache of its exported artifacts.

Tiers: ``pytest -m "not slow"`` (``make test-fast``) runs the tests that need no conversion of
their own, no training and no bench run; ``pytest`` runs everything (CI).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def pytest_configure(config):
    """Torch sizes its thread pool from OMP_NUM_THREADS. Under xdist the workers already fill
    the cores, so each gets its share (one thread each for `make test` on 2 cores): pools that
    oversubscribe the cores spin against each other and made the suite slower. Set in the
    controller (or a serial run), before any worker starts; an OMP_NUM_THREADS given is kept."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # a worker inherits the controller's setting
    workers = getattr(config.option, "numprocesses", None) or 1
    if not isinstance(workers, int):  # -n auto and the like: a worker per core
        workers = os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


@pytest.fixture(scope="session")
def lkca1m():
    """lkca-1m with the shipped weights trained on scikit-learn digits (conv form). Never
    changed by exports (they work on copies); tests that change it must copy it."""
    from lkca_edge import create_model

    return create_model("lkca-1m", pretrained=True)


@pytest.fixture(scope="session")
def digits(lkca1m):
    """Digits preprocessed for lkca-1m: seeded train/val/test split of the 1,797 real scans."""
    from lkca_edge.data import load_dataset

    return load_dataset("digits", lkca1m.preprocessing)


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def exported(lkca1m, digits, tmp_path_factory):
    """``exported(backend, precision=None, recipe=None, **request_fields) -> ExportResult``:
    lkca-1m (shipped digits weights) exported, validated on every digits test image, once per
    test run per distinct request, shared by the xdist workers (the first to ask converts, under
    a file lock; the others read its files). Treat the files as read-only and ``copy_artifact``
    them before changing anything."""
    import fcntl
    import hashlib

    from lkca_edge.manifest import Manifest, read_manifest
    from lkca_edge.pipelines.export import ExportRequest, ExportResult, export_model

    base = tmp_path_factory.getbasetemp()
    # under xdist each worker's base is <run>/popen-gwN: the run's directory is shared
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "exported-shared"
    root.mkdir(exist_ok=True)
    cache: dict = {}

    def get(backend: str, precision: str | None = None, recipe: str | None = None, **fields):
        # one key per distinct export: the resolved recipe, and no field left at its default
        from lkca_edge.converters import get_backend

        plugin = get_backend(backend)
        chosen = plugin.recipe(precision, recipe)
        if fields.get("input") == plugin.input_kind(None):
            fields.pop("input")
        key = (plugin.name, chosen.name, tuple(sorted(fields.items())))
        if key not in cache:
            digest = hashlib.sha256(repr(key).encode()).hexdigest()[:12]
            out, done = root / f"{plugin.name}-{digest}", root / f"{plugin.name}-{digest}.done"
            with open(root / f".{digest}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if done.exists():
                    artifact = out / done.read_text().strip()
                    cache[key] = ExportResult(artifact, read_manifest(artifact),
                                              Manifest.path_for(artifact))
                else:
                    shutil.rmtree(out, ignore_errors=True)
                    req = ExportRequest(model="lkca-1m", backend=plugin.name, recipe=chosen.name,
                                        out=str(out), **fields)
                    cache[key] = export_model(req, model=lkca1m, dataset=digits)
                    done.write_text(cache[key].artifact.name)
        return cache[key]

    return get


def copy_artifact(artifact: str | Path, dst_dir: str | Path) -> Path:
    """Copy an artifact (file or .mlpackage directory) and the files that travel with it
    (``<artifact>.manifest.json`` and any other ``<artifact>.*``) into ``dst_dir``."""
    artifact, dst_dir = Path(artifact), Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    for path in [artifact, *sorted(artifact.parent.glob(artifact.name + ".*"))]:
        target = dst_dir / path.name
        if path.is_dir():
            shutil.copytree(path, target)
        else:
            shutil.copy2(path, target)
    return dst_dir / artifact.name


def summary_table_lines(stdout: str) -> list[str]:
    """The lines of bench's terminal table: from its title to its caption (the legend line)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("lkca-edge bench:"))
    end = next(i for i, line in enumerate(lines) if line.startswith("★ best per metric"))
    return lines[start:end]
