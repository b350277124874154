"""benchmarks/README.md's figures are what benchmarks/render_readme.py renders from the committed
result files under benchmarks/results/, and no measured figure lives outside the generated regions.

Standard library only (no torch, no conversions): part of the fast tier.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"


@pytest.fixture(scope="module")
def renderer():
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("render_readme")


def _regions(text: str) -> dict[str, str]:
    found = re.findall(r"<!-- BEGIN GENERATED: ([a-z0-9_]+)\b[^\n]*-->\n(.*?)\n<!-- END GENERATED: \1 -->",
                       text, flags=re.S)
    return dict(found)


def test_readme_matches_the_committed_result_files(renderer):
    text = renderer.README.read_text(encoding="utf-8")
    fresh = renderer.render(text)
    if fresh != text:
        stale = [n for n, body in _regions(fresh).items() if _regions(text).get(n) != body]
        pytest.fail(f"benchmarks/README.md regions {stale} differ from the result files: "
                    "run python benchmarks/render_readme.py")


def test_every_region_is_in_the_readme_once_and_every_result_file_is_committed(renderer):
    text = renderer.README.read_text(encoding="utf-8")
    for name, region in renderer.REGIONS.items():
        assert text.count(f"<!-- BEGIN GENERATED: {name} ") == 1, name
        assert text.count(f"<!-- END GENERATED: {name} -->") == 1, name
        if region.result is None:
            continue
        path = renderer.RESULTS / region.result
        assert path.is_file(), f"{path} is not committed"
        result = json.loads(path.read_text())
        assert result["schema"].startswith("lkca-edge-") and result.get("command"), path
        assert "No result file" not in _regions(text)[name]


def test_a_changed_result_changes_the_readme(renderer, tmp_path):
    """The sync check has teeth: one changed median in a result file changes the rendering."""
    results = tmp_path / "results"
    shutil.copytree(renderer.RESULTS, results)
    path = results / renderer.REGIONS["operator_forms"].result
    res = json.loads(path.read_text())
    row = next(r for r in res["rows"] if r["kind"] == "artifact" and r["threads"])
    n = next(iter(row["threads"]))
    before = renderer.render_region("operator_forms", results)
    row["threads"][n]["median_ms"] = 12345.678
    path.write_text(json.dumps(res))
    after = renderer.render_region("operator_forms", results)
    assert after != before and "12345.678" in after

    split = results / renderer.REGIONS["int8_time_split"].result
    res = json.loads(split.read_text())
    res["variants"][0]["median_ms"] = 9.876
    split.write_text(json.dumps(res))
    assert "9.876" in renderer.render_region("int8_time_split", results)


def test_a_missing_result_file_is_said_not_invented(renderer, tmp_path):
    out = renderer.render_region("paper_claim", tmp_path)
    assert out.startswith("*No result file `benchmarks/results/paper_claim.json` is committed")


def test_broken_markers_are_refused(renderer):
    with pytest.raises(SystemExit, match="has no"):
        renderer.render("<!-- BEGIN GENERATED: bad_inputs (x) -->\ntext\n")
    with pytest.raises(SystemExit, match="unknown generated region"):
        renderer.render("<!-- BEGIN GENERATED: nope -->\n<!-- END GENERATED: nope -->\n")


# a measured figure: a decimal or a number with a unit of time, speed or share
FIGURE = re.compile(r"\b\d+(?:[.,]\d+)?\s?(?:ms|s\b|×|x\b|%|GMAC/s|KB|MB)")


def test_no_measured_figure_outside_the_generated_regions(renderer):
    text = renderer.README.read_text(encoding="utf-8")
    prose = re.sub(r"<!-- BEGIN GENERATED: ([a-z0-9_]+)\b.*?<!-- END GENERATED: \1 -->", "",
                   text, flags=re.S)
    prose = re.sub(r"```.*?```", "", prose, flags=re.S)  # commands
    assert FIGURE.findall(prose) == []
