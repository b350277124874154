"""The harness's options (``Settings``), its command line and the issue's fixed targets."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import __doc__ as PACKAGE_DOC

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "lkca-edge-operator-forms/1"
DEFAULT_MODELS = ("lkca-1m", "lkca-base", "lkca-1m@64")
TARGET_SUBJECT = "lkca-1m@32"   # the targets: lkca-1m, 32 px, batch 1, 1 thread
TARGET_THREADS = 1
TARGETS = {"int8_speedup": 12.0, "fp32_speedup": 4.0, "int8_peak_fraction": 0.5,
           "int8_over_fp32": 1.5, "fp32_over_conv": 3.0, "default_matrix_seconds": 180.0}
RULE_TOLERANCE = 0.05  # a form within 5 % of the fastest is "as fast" (keeps the current rule)
IMAGES_CYCLED = 8      # real test images cycled through the timed runs

HELP = PACKAGE_DOC.split("\n\nOne module per phase")[0]

# The full matrix (``make bench-perf``) and ``--quick``: option -> default. None for backends and
# forms means every one the library has; "default" for forms: conv + the default export form.
FULL_DEFAULTS = {"models": list(DEFAULT_MODELS), "backends": None, "forms": None, "recipes": "all",
                 "threads": [1, 2], "rounds": 10, "runs_per_round": 20, "warmup": 3,
                 "gemm_sizes": [256, 512, 1024], "gemm_runs": 3, "slice_budget": 1.5,
                 "calibration_size": 128, "validation_limit": None, "vit": True, "profile": True}
QUICK_DEFAULTS = {**FULL_DEFAULTS, "models": ["lkca-1m"], "forms": "default", "recipes": "default",
                  "rounds": 2, "runs_per_round": 5, "warmup": 2, "gemm_sizes": [256],
                  "gemm_runs": 2, "slice_budget": 0.5, "calibration_size": 16,
                  "validation_limit": 32, "profile": False}


@dataclass
class Settings:
    models: list[str]
    backends: list[str]
    forms: list[str]
    recipes: str            # "all" | "default" | "target"
    threads: list[int]
    rounds: int
    runs_per_round: int
    warmup: int
    gemm_sizes: list[int]
    gemm_runs: int
    slice_budget: float
    calibration_size: int
    validation_limit: int | None
    vit: bool
    profile: bool
    quick: bool
    out: str
    cache: str | None
    reuse: str | None = None
    argv: list[str] = field(default_factory=list)


def _parser(all_backends: list[str]) -> argparse.ArgumentParser:
    from lkca_edge.forms import LKCA_FORMS

    ap = argparse.ArgumentParser(prog="operator_forms.py", description=HELP.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(HELP.splitlines()[1:]))
    ap.add_argument("--models", nargs="+", default=None,
                    help="LKCA models as NAME or NAME@PX (patch = PX/8); the matched ViT is "
                         f"added for each (default: {' '.join(DEFAULT_MODELS)})")
    ap.add_argument("--backends", nargs="+", default=None,
                    help=f"default: {' '.join(all_backends)} (coreml: conversion only on "
                         f"non-macOS)")
    ap.add_argument("--forms", nargs="+", default=None, choices=LKCA_FORMS,
                    help="LKCA forms (default: all)")
    ap.add_argument("--recipes", choices=("all", "default", "target"), default=None,
                    help="all: every fp32/int8 recipe of each backend; default: its default fp32 "
                         f"and int8 recipes; target: all for {TARGET_SUBJECT} and its ViT, defaults "
                         "for the other models (default: all; --quick: default)")
    ap.add_argument("--threads", nargs="+", type=int, default=None, help="default: 1 2")
    ap.add_argument("--rounds", type=int, default=None, help="alternation rounds (default 10)")
    ap.add_argument("--runs-per-round", type=int, default=None,
                    help="timed runs per variant per round (default 20)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed runs at the start of every slice (default 3)")
    ap.add_argument("--gemm-sizes", type=int, nargs="+", default=None,
                    help="M = K = N of the peak GEMMs; the peak is the best size and method "
                         "(default 256 512 1024; short GEMMs are what survives a busy machine)")
    ap.add_argument("--gemm-runs", type=int, default=None,
                    help="timed GEMMs per round per method (default 3)")
    ap.add_argument("--slice-budget", type=float, default=None,
                    help="seconds after which a slice stops early (after 3 timed runs), so a "
                         "pathologically slow variant cannot stall the run (default 1.5)")
    ap.add_argument("--calibration-size", type=int, default=None, help="default 128")
    ap.add_argument("--validation-limit", type=int, default=None,
                    help="test images per validation (default: all 360)")
    ap.add_argument("--no-vit", action="store_true", help="skip the matched ViT baselines")
    ap.add_argument("--no-profile", action="store_true", help="skip the per-operator profiles")
    ap.add_argument("--quick", action="store_true",
                    help="tiny smoke settings: lkca-1m 32 px, forms conv + the default export form, default "
                         "recipes, 2 rounds x 5 runs, 256 GEMMs, 16 calibration / 32 validation "
                         "images, no operator profiles")
    ap.add_argument("--out", default=None, help="output directory (default runs/operator_forms/STAMP)")
    ap.add_argument("--cache", default=None, help="reuse converted artifacts kept in this directory")
    ap.add_argument("--reuse", default=None, metavar="RUN_JSON",
                    help="re-time the artifacts of a previous run (its operator_forms.json) with "
                         "their recorded conversion and validation results, even if the pipeline "
                         "sources changed since (said in the output); cells it lacks are converted")
    return ap


def parse_args(argv: list[str] | None = None) -> Settings:
    from lkca_edge.converters import backend_names, resolve_backend_name
    from lkca_edge.errors import UserError
    from lkca_edge.forms import EXPORT_DEFAULT_FORM, LKCA_FORMS

    all_backends = backend_names()
    ap = _parser(all_backends)
    a = ap.parse_args(argv)

    q = a.quick
    defaults = dict(QUICK_DEFAULTS if q else FULL_DEFAULTS)
    defaults["backends"] = defaults["backends"] or list(all_backends)
    defaults["forms"] = (["conv", EXPORT_DEFAULT_FORM] if defaults["forms"] == "default"
                         else defaults["forms"] or list(LKCA_FORMS))
    def pick(name):
        value = getattr(a, name)
        value = defaults[name] if value is None else value
        return list(value) if isinstance(value, list) else value

    s = Settings(
        models=pick("models"), backends=pick("backends"), forms=pick("forms"),
        recipes=pick("recipes"), threads=pick("threads"), rounds=pick("rounds"),
        runs_per_round=pick("runs_per_round"), warmup=pick("warmup"),
        gemm_sizes=pick("gemm_sizes"), gemm_runs=pick("gemm_runs"),
        slice_budget=pick("slice_budget"), calibration_size=pick("calibration_size"),
        validation_limit=pick("validation_limit"),
        vit=not a.no_vit and defaults["vit"], profile=not a.no_profile and defaults["profile"],
        quick=q,
        out=a.out or str(REPO_ROOT / "runs" / "operator_forms" / time.strftime("%Y%m%d-%H%M%S")),
        cache=a.cache, reuse=a.reuse,
        argv=list(sys.argv if argv is None else ["operator_forms.py", *argv]))
    try:
        s.backends = list(dict.fromkeys(resolve_backend_name(b) for b in s.backends))
    except UserError as exc:  # "unknown backend 'x'; did you mean ...? (valid: ...)"
        ap.error(str(exc))
    for name, value, low in (("--rounds", s.rounds, 1), ("--runs-per-round", s.runs_per_round, 1),
                             ("--warmup", s.warmup, 0), ("--gemm-sizes", min(s.gemm_sizes), 32),
                             ("--gemm-runs", s.gemm_runs, 1),
                             ("--calibration-size", s.calibration_size, 1)):
        if value < low:
            ap.error(f"{name} must be at least {low}, got {value}")
    if not s.threads or any(t < 1 for t in s.threads):
        ap.error("--threads takes positive thread counts")
    s.threads = sorted(set(s.threads))
    return s
