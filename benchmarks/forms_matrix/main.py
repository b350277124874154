"""The run: plan, convert (phase 1), time in a fresh process (phase 2), analyse and report (3)."""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .analysis import analyse
from .convert import run_conversions
from .plan import build_model, build_variants, plan_cells, plan_subjects
from .report import to_markdown
from .settings import IMAGES_CYCLED, TARGET_SUBJECT, Settings, parse_args
from .timing import time_plan


def _busy(loadavg: list | None, cores: int) -> bool:
    """The 1-minute load is above the core count (the harness itself counts ~1)."""
    return bool(loadavg) and loadavg[0] > cores + 0.5


def _images_without_cells(subjects, images: dict) -> None:
    """Subjects with no conversion cell (e.g. ``--backends coreml``) still get their figures and
    test images, for their torch baselines."""
    from lkca_edge.data import load_dataset

    for s in subjects:
        if s.key not in images:
            m = build_model(s)
            s.measure(m)
            data = load_dataset("digits", m.preprocessing)
            images[s.key] = np.ascontiguousarray(data.test_x[:IMAGES_CYCLED], np.float32)


def _timing_plan(settings: Settings, subjects, variants, images) -> dict:
    from lkca_edge.forms import EXPORT_DEFAULT_FORM

    vit_of_target = next((s.key for s in subjects if s.family == "vit"
                          and s.pair == TARGET_SUBJECT), None)
    return {"threads": settings.threads, "rounds": settings.rounds,
            "runs_per_round": settings.runs_per_round, "warmup": settings.warmup,
            "gemm_sizes": settings.gemm_sizes, "gemm_runs": settings.gemm_runs,
            "slice_budget": settings.slice_budget,
            "subjects": [asdict(s) for s in subjects], "images": images,
            "variants": variants, "profile": settings.profile,
            "profile_subject": TARGET_SUBJECT, "profile_vit": vit_of_target,
            "profile_form": EXPORT_DEFAULT_FORM}


def run(settings: Settings) -> tuple[dict, Path]:
    """The whole run; returns the result dict and the output directory it was written to."""
    from lkca_edge.bench import versions
    from lkca_edge.converters import get_backend
    from lkca_edge.fileio import ensure_dir, write_json, write_text
    from lkca_edge.hostinfo import host_info, load_average
    from lkca_edge.isolation import run_isolated

    out = ensure_dir(settings.out)
    host = {**host_info(), "versions": versions()}
    host["load_before"] = host.get("loadavg")
    cores = host.get("cores") or 1
    subjects = plan_subjects(settings)
    cells = plan_cells(subjects, settings)
    print(f"{len(subjects)} models ({', '.join(s.key for s in subjects)}), {len(cells)} "
          f"conversion cells, backends {', '.join(settings.backends)}; load {host['loadavg']}",
          flush=True)
    for b in settings.backends:
        reason = get_backend(b).runnable()
        if reason:
            print(f"  {b}: conversion only ({reason})", flush=True)
    with tempfile.TemporaryDirectory(prefix="lkca-forms-") as work:
        facts, images = run_conversions(cells, subjects, settings, Path(work))
        _images_without_cells(subjects, images)
        variants = build_variants(subjects, cells, settings.forms)
        print(f"timing in a fresh process: {len(variants)} variants x threads "
              f"{settings.threads} + peak GEMMs", flush=True)
        timed = run_isolated(time_plan, _timing_plan(settings, subjects, variants, images),
                             what="the timing process", timeout=None)
    host["load_after"] = load_average()
    res = analyse(settings, subjects, cells, variants, timed, facts, host)
    res["command"] = " ".join(shlex.quote(a) for a in [".venv/bin/python",
                                                        "benchmarks/operator_forms.py",
                                                        *settings.argv[1:]])
    res["finished"] = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    res["under_load"] = _busy(host["load_before"], cores) or any(
        _busy(l, cores) for l in timed["loadavg_per_round"])
    res["cells"] = [asdict(c) for c in cells]
    write_json(out / "operator_forms.json", res)
    write_text(out / "operator_forms.md", to_markdown(res))
    return res, out


def main(argv: list[str] | None = None) -> int:
    from lkca_edge.errors import UserError

    settings = parse_args(argv)
    try:
        res, out = run(settings)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(to_markdown(res))
    print(f"\nwrote {out / 'operator_forms.json'} and {out / 'operator_forms.md'}")
    return 0
