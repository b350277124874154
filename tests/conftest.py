"""Shared fixtures: the shipped lkca-1m trained on digits, and the real digits data."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def lkca1m():
    """lkca-1m with the shipped weights trained on scikit-learn digits (conv form)."""
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
