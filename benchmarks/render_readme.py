"""The figures in benchmarks/README.md, rendered from the result files under benchmarks/results/.

    python benchmarks/render_readme.py           # rewrite the generated regions of the README
    python benchmarks/render_readme.py --check   # exit 1 if the README differs from the results

Every table and figure of the README sits between ``<!-- BEGIN GENERATED: NAME ... -->`` and
``<!-- END GENERATED: NAME -->``; this script replaces what is between them with what it renders
from NAME's result file, which the harness wrote (see ``REGIONS``). Text outside the markers is
left alone. A region whose result file is not committed says so and how to make it.

Standard library only (plus the harnesses' own torch-free table functions), so it runs without
the project's virtual environment; ``tests/test_benchmark_readme.py`` checks the README is in sync.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

README = HERE / "README.md"
RESULTS = HERE / "results"

BEGIN = re.compile(r"^<!-- BEGIN GENERATED: ([a-z0-9_]+)\b.*-->$")
END = "<!-- END GENERATED: {name} -->"


def _host(result: dict) -> str:
    h = result.get("host") or {}
    return f"{h.get('cpu', 'unknown CPU')}, {h.get('cores', '?')} cores, {h.get('os', '?')}"


def _versions(result: dict, names: tuple[str, ...]) -> str:
    v = result.get("versions") or (result.get("host") or {}).get("versions") or {}
    return ", ".join(f"{n} {v[n]}" for n in names if v.get(n))


def _missing(path: str, command: str) -> str:
    return f"*No result file `{path}` is committed yet; `{command}` writes it.*"


# -- operator_forms.py -----------------------------------------------------------------------------
FULL_COMMAND = ".venv/bin/python benchmarks/operator_forms.py --out benchmarks/results/operator_forms"


def _reduced(settings: dict) -> list[str]:
    """How a run's settings differ from the full matrix (``make bench-perf``), in words."""
    from forms_matrix.settings import FULL_DEFAULTS

    def show(value):
        if isinstance(value, list):
            return " ".join(str(x) for x in value)
        return "none" if value is None else str(value)

    out = []
    for name, full in FULL_DEFAULTS.items():
        if full is None and name in ("backends", "forms"):
            continue  # "all the library has": the run's own list is shown beside
        if settings.get(name) != full:
            out.append(f"`{name}` {show(settings.get(name))} (full: {show(full)})")
    if settings.get("quick"):
        out.insert(0, "`--quick`")
    return out


def render_targets_checked(result: None, path: None) -> str:
    """The issue's targets as the harness checks them (its ``TARGETS``, not a measurement)."""
    from forms_matrix.settings import TARGET_SUBJECT, TARGET_THREADS, TARGETS

    t = TARGETS
    return "\n".join([
        f"Subject `{TARGET_SUBJECT}`, {TARGET_THREADS} thread; the thresholds are `TARGETS` in "
        "`forms_matrix/settings.py`.", "",
        "| target | how it is judged |", "|---|---|",
        f"| best int8 artifact >= {t['int8_speedup']:g}x faster than the baseline | fastest "
        "gate-passing int8 cell, any backend / form / recipe |",
        f"| best fp32 artifact >= {t['fp32_speedup']:g}x faster | fastest gate-passing fp32 cell |",
        f"| best int8 artifact >= {t['int8_peak_fraction']:.0%} of the int8 GEMM peak | its "
        "GMAC/s / the best int8 GEMM rate at the same thread count |",
        f"| per runnable backend: default int8 >= {t['int8_over_fp32']:g}x faster than default "
        "fp32 | default recipe, form from `EXPORT_FORM_RULES` |",
        f"| per runnable backend: default fp32 >= {t['fp32_over_conv']:g}x faster than its fp32 "
        "`conv`-form export | same backend and recipe, form `conv` |",
        f"| default matrix converts in <= {t['default_matrix_seconds']:g} s | lkca-1m x every "
        "backend x {fp32, int8} defaults: sum of `export_model` wall times (validation time shown "
        "beside it) |"])


def render_operator_forms(result: dict | None, path: str) -> str:
    from forms_matrix import report

    if result is None:
        return _missing(path, FULL_COMMAND)
    s = result["settings"]
    reduced = _reduced(s)
    L = []
    if reduced:
        L.append(f"**Reduced configuration, not the full matrix**: {'; '.join(reduced)}. The "
                 f"full matrix's command is below this section.  ")
    L.append(f"Run finished {result.get('finished', '?')}; backends "
             f"{', '.join(s['backends'])}; forms {', '.join(s['forms'])}; "
             f"{_versions(result, ('torch', 'executorch', 'litert-torch', 'ai-edge-litert', 'onnxruntime', 'coremltools'))}.  ")
    L += report.header(result)
    for section in (report.targets_section, report.peak_section, report.subject_sections,
                    report.vit_section, report.rules_section, report.conversion_section,
                    report.profiles_section):
        L += section(result, level="####")
    L += report.budget_note(result)
    L += report.failures_section(result, level="####")
    return "\n".join(L).rstrip()


# -- int8_time_split.py ----------------------------------------------------------------------------
def render_int8_time_split(result: dict | None, path: str) -> str:
    import int8_time_split

    if result is None:
        return _missing(path, ".venv/bin/python benchmarks/int8_time_split.py --json "
                              "benchmarks/results/int8_time_split.json")
    s = result["settings"]
    loads = [x for x in result.get("loadavg_per_round", []) if x is not None]
    load = f"{min(loads):.2f}–{max(loads):.2f}" if loads else "unknown"
    return "\n".join([
        f"Command: `{result['command']}`  ",
        f"Run finished {result.get('finished', '?')} on {_host(result)}; "
        f"{_versions(result, ('litert-torch', 'ai-edge-litert', 'torch'))}. {s['model']} form "
        f"`{s['form']}`, {s['backend']} recipe `{s['recipe']}` ({s['calibration_images']} "
        f"calibration images), {s['threads']} thread(s), {s['rounds']} rounds x {s['runs']} "
        f"`invoke()` per variant, alternated; 1-minute load {load}. Median of the round means.",
        "", int8_time_split.table(result)])


# -- bad_inputs.py ---------------------------------------------------------------------------------
def render_bad_inputs(result: dict | None, path: str) -> str:
    import bad_inputs

    if result is None:
        return _missing(path, ".venv/bin/python benchmarks/bad_inputs.py --json "
                              "benchmarks/results/bad_inputs.json")
    cases = result["cases"]
    root = (" Run as root, so the read-only-directory cases are not part of it (root writes "
            "anywhere)." if result.get("as_root") else "")
    return "\n".join([
        f"Command: `{result['command']}`  ",
        f"Run finished {result.get('finished', '?')} on {_host(result)}; real artifacts for the "
        f"truncated cases: {', '.join(result.get('real_artifacts', [])) or 'none'}.{root} "
        f"**{result['passed']} of {len(cases)} cases pass.**", "",
        bad_inputs.summary(cases), "",
        "<details><summary>Every case: the bad input, the command, its exit code and the one "
        "line it printed</summary>", "",
        bad_inputs.table(cases), "", "</details>"])


# -- paper_claim.py --------------------------------------------------------------------------------
def render_paper_claim(result: dict | None, path: str) -> str:
    import paper_claim

    if result is None:
        return _missing(path, ".venv/bin/python benchmarks/paper_claim.py --json "
                              "benchmarks/results/paper_claim.json")
    recipe = ", ".join(f"{k} {v}" for k, v in result["recipe"].items() if v is not None)
    epochs = result["recipe"].get("epochs")
    reduced = ([f"**Reduced configuration**: {epochs} epochs (full: {paper_claim.DEFAULT_EPOCHS}); "
                f"`.venv/bin/python benchmarks/paper_claim.py --json {path}` is the full run.  "]
               if epochs != paper_claim.DEFAULT_EPOCHS else [])
    return "\n".join(reduced + [
        f"Command: `{result['command']}`  ",
        f"Run finished {result.get('finished', '?')} on {_host(result)}; {result['dataset']}, "
        f"the same recipe for every model ({recipe}).", "", paper_claim.table(result)])


@dataclass(frozen=True)
class Region:
    name: str
    result: str | None                           # path under benchmarks/results/ (None: code)
    render: Callable[[dict | None, str | None], str]


REGIONS = {r.name: r for r in (
    Region("targets_checked", None, render_targets_checked),
    Region("operator_forms", "operator_forms/operator_forms.json", render_operator_forms),
    Region("int8_time_split", "int8_time_split.json", render_int8_time_split),
    Region("bad_inputs", "bad_inputs.json", render_bad_inputs),
    Region("paper_claim", "paper_claim.json", render_paper_claim),
)}


def render_region(name: str, results: Path = RESULTS) -> str:
    region = REGIONS[name]
    if region.result is None:
        return region.render(None, None)
    path = results / region.result
    result = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    return region.render(result, f"benchmarks/results/{region.result}")


def render(text: str, results: Path = RESULTS) -> str:
    """``text`` (the README) with every generated region rendered again from ``results``."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    seen = set()
    while i < len(lines):
        line = lines[i]
        out.append(line)
        m = BEGIN.match(line.strip())
        i += 1
        if not m:
            continue
        name = m.group(1)
        if name not in REGIONS:
            raise SystemExit(f"README: unknown generated region {name!r} (known: {', '.join(REGIONS)})")
        if name in seen:
            raise SystemExit(f"README: region {name!r} appears twice")
        seen.add(name)
        end = END.format(name=name)
        try:
            j = next(k for k in range(i, len(lines)) if lines[k].strip() == end)
        except StopIteration:
            raise SystemExit(f"README: region {name!r} has no {end!r} line") from None
        out += ["", render_region(name, results), "", lines[j]]
        i = j + 1
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 if the README is not what the result files give")
    ap.add_argument("--readme", type=Path, default=README)
    args = ap.parse_args(argv)
    current = args.readme.read_text(encoding="utf-8")
    fresh = render(current)
    if args.check:
        if fresh != current:
            print(f"{args.readme} is out of date: run python benchmarks/render_readme.py",
                  file=sys.stderr)
            return 1
        print(f"{args.readme} matches the result files")
        return 0
    if fresh != current:
        args.readme.write_text(fresh, encoding="utf-8")
        print(f"rewrote the generated regions of {args.readme}")
    else:
        print(f"{args.readme} already matches the result files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
