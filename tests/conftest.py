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

os.environ.setdefault("OMP_NUM_THREADS", "2")


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
    session per distinct request. The files are shared: treat them as read-only and
    ``copy_artifact`` them before changing anything."""
    from lkca_edge.pipelines.export import ExportRequest, export_model

    root = tmp_path_factory.mktemp("exported")
    cache: dict = {}

    def get(backend: str, precision: str | None = None, recipe: str | None = None, **fields):
        key = (backend, precision, recipe, tuple(sorted(fields.items())))
        if key not in cache:
            out = root / f"{backend}-{len(cache)}"
            req = ExportRequest(model="lkca-1m", backend=backend, precision=precision,
                                recipe=recipe, out=str(out), **fields)
            cache[key] = export_model(req, model=lkca1m, dataset=digits)
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
