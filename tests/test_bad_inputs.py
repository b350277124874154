"""benchmarks/bad_inputs.py on a representative subset: every CLI command fed a bad input exits
non-zero with exactly one line on stderr, no traceback, the expected words, and no partial output.

The whole matrix (about 190 cases, the hostile ones of issue 12 included; several minutes) is
`.venv/bin/python benchmarks/bad_inputs.py`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "bad_inputs.py"

SUBSET = [
    # unknown names and usage errors
    "export/unknown-model", "bench/unknown-backend", "export/unknown-recipe",
    "bench/unknown-precision", "profile/unknown-device", "zoo/unknown-option", "bench/not-a-number",
    # checkpoints: truncated, random bytes, another config (bench refuses before any cell)
    "export/checkpoint-1", "export/checkpoint-2", "bench/checkpoint-4",
    # images and image folders
    "classify/image-not-an-image", "classify/image-unreadable", "validate/empty-folder",
    # artifacts: random, truncated, the wrong format for the extension, no manifest
    "classify/artifact-onnx-random-bytes", "profile/artifact-onnx-truncated",
    "classify/artifact-tflite-an-onnx-file-renamed", "classify/artifact-pte-an-onnx-file-renamed",
    "profile/artifact-mlpackage-an-onnx-file-renamed", "validate/artifact-mlpackage-random-bytes",
    "validate/artifact-onnx-no-manifest",
    # a modified artifact: refused, and accepted with --no-verify
    "classify/sha256-mismatch", "classify/sha256-no-verify",
    # device profiles, output places, a full disk, run history
    "devices/profile-0", "bench/profile-1", "export/unwritable-0", "bench/unwritable-0",
    "bench/full-disk", "runs/not-a-database", "compare/broken-results", "bench/resume-not-a-run",
    # hostile input (issue 12), one case per class that needs no conversion of its own (the
    # rest run in benchmarks/bad_inputs.py; the mechanisms are unit-tested in test_hostile.py)
    "classify/onnx-external-data-changed", "classify/image-fifo", "validate/manifest-fifo",
    "devices/yaml-alias-bomb", "compare/results-deep-nesting", "classify/image-pixel-bomb",
    "export/checkpoint-depth-100000", "profile/inputs-string", "devices/profile-budget-nan",
    "train/seed-negative", "classify/control-char-file-name", "classify/image-16-bit",
    "runs/history-read-only", "runs/history-corrupt-row", "devices/minimal-profile",
]


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("bad_inputs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bad_inputs"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fixtures(harness, tmp_path_factory):
    fx = harness.make_fixtures(tmp_path_factory.mktemp("bad-inputs"), backends=[], log=lambda s: None)
    fx["cases"] = {c.id: c for c in harness.cases(fx)}
    return fx


def test_subset_names_real_cases(harness, fixtures):
    assert set(SUBSET) <= set(fixtures["cases"]), set(SUBSET) - set(fixtures["cases"])
    # the full matrix covers every command the CLI has
    from lkca_edge.cli import command_names

    assert {c.command for c in fixtures["cases"].values()} == set(command_names())


def _coreml_converter() -> bool:
    from lkca_edge.converters import get_backend

    return get_backend("coreml").available() is None


@pytest.mark.parametrize("case_id", SUBSET)
def test_bad_input_is_one_clean_line(harness, fixtures, case_id):
    if "mlpackage-random" in case_id and not _coreml_converter():
        pytest.skip("without coremltools a Core ML package cannot be read on Linux at all")
    outcome = harness.run_case(fixtures["cases"][case_id], fixtures)
    assert outcome.ok, (outcome.problems, outcome.code, outcome.stderr[-2000:])
    if not outcome.case.control and not outcome.case.kill:
        assert outcome.code == 2
        assert outcome.stderr.startswith(f"lkca-edge {outcome.case.command}: error: ") or \
            outcome.stderr.startswith("lkca-edge: error: ")


def test_markdown_table(harness, fixtures):
    case = fixtures["cases"]["zoo/unknown-option"]
    table = harness.markdown([harness.run_case(case, fixtures)], fixtures["tmp"])
    header, rule, row = table.splitlines()
    assert header.startswith("| bad input | command | exit |") and rule.startswith("|---")
    assert row.startswith("| unknown option | zoo | 2 | lkca-edge: error: unrecognized arguments")
