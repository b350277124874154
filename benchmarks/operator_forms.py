"""LKCA forms x backends x precisions vs the PyTorch conv baseline, a matched ViT and the GEMM peak.

Latency of every operator form on every backend and precision against the paper's PyTorch eager
conv form, against a matched softmax ViT, and against this CPU's measured GEMM peak, in one run.

    .venv/bin/python benchmarks/operator_forms.py                  # the full matrix (make bench-perf)
    .venv/bin/python benchmarks/operator_forms.py --quick          # tiny smoke settings
    .venv/bin/python benchmarks/operator_forms.py --models lkca-1m --threads 1 2 \\
        --rounds 10 --runs-per-round 20 --cache .lkca-edge-cache/forms --out runs/forms

Phases:
1. Convert: every (model, backend, form, recipe) cell through ``export_model`` (the export
   pipeline), then validated on real digits test images against the torch source with the export
   gates. A cell that fails to convert, to load or its gate is kept with its one-line reason.
   ``--cache DIR`` keeps artifacts and their records, keyed by the converter sources, tool
   versions, weights and settings, so a re-run converts only what changed.
2. Time (in a fresh child process): the torch eager baselines, every runnable artifact and the
   large fp32/int8 GEMMs, each with 1 and 2 threads, alternated: every round times every
   (variant, threads) pair for a slice of runs, so machine drift hits all of them alike. The
   reported figure is the median over all rounds.
3. Report: JSON + markdown (medians, speed-up over the baseline, achieved GMAC/s, share of the
   measured peak, the issue's targets met / not met, conversion times, the form rule table
   measured here against ``EXPORT_FORM_RULES``, where the time goes per operator).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from lkca_edge.models_config import count_macs  # noqa: E402  (torch-free)

SCHEMA = "lkca-edge-operator-forms/1"
DEFAULT_MODELS = ("lkca-1m", "lkca-base", "lkca-1m@64")
ALL_BACKENDS = ("executorch", "coreml", "tflite", "onnx")
TARGET_SUBJECT = "lkca-1m@32"   # the targets: lkca-1m, 32 px, batch 1, 1 thread
TARGET_THREADS = 1
TARGETS = {"int8_speedup": 12.0, "fp32_speedup": 4.0, "int8_peak_fraction": 0.5,
           "int8_over_fp32": 1.5, "fp32_over_conv": 3.0, "default_matrix_seconds": 180.0}
RULE_TOLERANCE = 0.05  # a form within 5 % of the fastest is "as fast" (keeps the current rule)
IMAGES_CYCLED = 8      # real test images cycled through the timed runs


# ==================================================================================================
# Settings
# ==================================================================================================
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


def parse_args(argv: list[str] | None = None) -> Settings:
    from lkca_edge.forms import EXPORT_DEFAULT_FORM, LKCA_FORMS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--models", nargs="+", default=None,
                    help="LKCA models as NAME or NAME@PX (patch = PX/8); the matched ViT is "
                         f"added for each (default: {' '.join(DEFAULT_MODELS)})")
    ap.add_argument("--backends", nargs="+", default=None,
                    help=f"default: {' '.join(ALL_BACKENDS)} (coreml: conversion only on "
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
    a = ap.parse_args(argv)

    q = a.quick
    pick = (lambda value, quick, full: value if value is not None else (quick if q else full))
    s = Settings(
        models=pick(a.models, ["lkca-1m"], list(DEFAULT_MODELS)),
        backends=pick(a.backends, list(ALL_BACKENDS), list(ALL_BACKENDS)),
        forms=pick(a.forms, ["conv", EXPORT_DEFAULT_FORM], list(LKCA_FORMS)),
        recipes=pick(a.recipes, "default", "all"),
        threads=pick(a.threads, [1, 2], [1, 2]),
        rounds=pick(a.rounds, 2, 10),
        runs_per_round=pick(a.runs_per_round, 5, 20),
        warmup=pick(a.warmup, 2, 3),
        gemm_sizes=pick(a.gemm_sizes, [256], [256, 512, 1024]),
        gemm_runs=pick(a.gemm_runs, 2, 3),
        slice_budget=pick(a.slice_budget, 0.5, 1.5),
        calibration_size=pick(a.calibration_size, 16, 128),
        validation_limit=pick(a.validation_limit, 32, None),
        vit=not a.no_vit, profile=not a.no_profile and not q, quick=q,
        out=a.out or str(REPO_ROOT / "runs" / "operator_forms" / time.strftime("%Y%m%d-%H%M%S")),
        cache=a.cache, reuse=a.reuse,
        argv=list(sys.argv if argv is None else ["operator_forms.py", *argv]))
    from lkca_edge.converters import resolve_backend_name

    s.backends = list(dict.fromkeys(resolve_backend_name(b) for b in s.backends))
    bad = [b for b in s.backends if b not in ALL_BACKENDS]
    if bad:
        ap.error(f"unknown backend(s) {', '.join(bad)} (valid: {', '.join(ALL_BACKENDS)})")
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


# ==================================================================================================
# Subjects: the models measured (each LKCA model plus its size-matched ViT)
# ==================================================================================================
@dataclass
class Subject:
    key: str            # "lkca-1m@32"
    name: str           # zoo name
    image_size: int
    family: str         # lkca | vit
    pretrained: bool    # shipped trained weights used
    pair: str           # the LKCA subject this one is compared with (itself for LKCA)
    macs: int = 0       # nominal (the model's function)
    fused_macs: int = 0  # what form ``fused`` executes (one dim x dim matmul per block fewer)
    params: int = 0
    patch_size: int = 0

    def executed_macs(self, form: str | None) -> int:
        return self.fused_macs if form == "fused" and self.family == "lkca" else self.macs

    @property
    def trained(self) -> bool:
        return self.pretrained


def matched_vit(lkca_name: str) -> str:
    """The softmax ViT whose parameter count is closest to the LKCA model's."""
    from lkca_edge.models_config import count_params
    from lkca_edge.zoo import get_spec, list_models

    target = count_params(get_spec(lkca_name).config)
    vits = [s for s in list_models() if s.family == "vit"]
    return min(vits, key=lambda s: abs(count_params(s.config) - target)).name


def plan_subjects(settings: Settings) -> list[Subject]:
    from lkca_edge.errors import UserError
    from lkca_edge.zoo import get_spec

    subjects: dict[str, Subject] = {}
    for item in settings.models:
        name, _, px = item.partition("@")
        spec = get_spec(name)
        if spec.family != "lkca":
            raise UserError(f"--models takes LKCA models (the matched ViT is added): {item}")
        size = int(px) if px else spec.config.image_size
        pretrained = bool(spec.weights) and size == spec.config.image_size
        key = f"{spec.name}@{size}"
        subjects.setdefault(key, Subject(key, spec.name, size, "lkca", pretrained, key))
        if settings.vit:
            vit = matched_vit(spec.name)
            vkey = f"{vit}@{size}"
            subjects.setdefault(vkey, Subject(vkey, vit, size, "vit", False, key))
    return list(subjects.values())


def build_model(subject: Subject, form: str | None = None):
    from lkca_edge import create_model

    if subject.pretrained:
        model = create_model(subject.name, pretrained=True, form=form)
    else:
        model = create_model(subject.name, image_size=subject.image_size, form=form)
    return model.eval()


# ==================================================================================================
# Phase 1: conversion + validation of every cell
# ==================================================================================================
@dataclass
class Cell:
    id: str
    subject: str
    family: str
    backend: str
    form: str | None
    recipe: str
    precision: str
    default_recipe: bool
    default_form: bool
    status: str = "pending"   # ok | ungated | gate-failed | failed | convert-only | unavailable
    stage: str | None = None  # where a failure happened: convert | load | run | gate
    reason: str | None = None
    artifact: str | None = None
    size_bytes: int | None = None
    convert_s: float | None = None    # the backend's convert() only (manifest)
    export_s: float | None = None     # export_model wall time: convert + manifest
    validate_s: float | None = None
    load_at_convert: list | None = None
    cached: bool = False
    validation: dict | None = None
    details: dict | None = None

    @property
    def timeable(self) -> bool:
        return self.status in ("ok", "ungated", "gate-failed") and self.artifact is not None

    @property
    def eligible(self) -> bool:
        """May count as a 'best' artifact or a default export: validated and not wrong."""
        return self.status in ("ok", "ungated")


def _one_line(exc: BaseException) -> str:
    from lkca_edge.errors import UserError

    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, UserError):
        return first[:300] or type(exc).__name__
    return f"{type(exc).__name__}: {first}"[:300]


def _sha_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes() if p.exists() else b"<missing>")
    return h.hexdigest()


def cache_key(cell: Cell, subject: Subject, settings: Settings, backend) -> str:
    """Everything that can change the artifact or its validation figures."""
    from lkca_edge.versions import tool_versions

    sources = [REPO_ROOT / "converters" / "base.py", REPO_ROOT / "converters" / f"{cell.backend}.py",
               REPO_ROOT / "lkca_edge" / "models.py", REPO_ROOT / "lkca_edge" / "export.py",
               REPO_ROOT / "lkca_edge" / "validation.py", REPO_ROOT / "lkca_edge" / "data.py"]
    weights = ""
    if subject.pretrained:
        from lkca_edge.zoo import get_spec

        weights = _sha_files([get_spec(subject.name).get_weights(True).path])
    versions = tool_versions(("torch", "torchao", "executorch", "litert-torch", "ai-edge-litert",
                              "ai-edge-quantizer", "onnx", "onnxscript", "onnxruntime",
                              "coremltools", "numpy", *backend.tool_packages))
    payload = {"cell": cell.id, "sources": _sha_files(sources), "weights": weights,
               "versions": versions, "calibration": settings.calibration_size,
               "validation": settings.validation_limit, "python": platform.python_version()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def plan_cells(subjects: list[Subject], settings: Settings) -> list[Cell]:
    from lkca_edge.converters import get_backend
    from lkca_edge.forms import default_export_form

    cells = []
    for subj in subjects:
        for bname in settings.backends:
            backend = get_backend(bname)
            convert_only = backend.runnable() is not None
            if convert_only and (subj.key != TARGET_SUBJECT):
                continue  # a backend that cannot run here: only the default-matrix cells
            recipes = []
            for precision in ("fp32", "int8"):
                default = backend.default_recipes.get(precision)
                if default is None:
                    continue
                every = settings.recipes == "all" or (settings.recipes == "target"
                                                       and subj.pair == TARGET_SUBJECT)
                names = [default] if (not every or convert_only) else \
                    [n for n, r in backend.recipes.items() if r.precision == precision]
                recipes += [(precision, n, n == default) for n in names]
            forms = settings.forms if subj.family == "lkca" else [None]
            for precision, rname, is_default in recipes:
                rule = default_export_form(backend.name, precision)
                for form in forms:
                    if convert_only and form is not None and form != rule:
                        continue
                    cid = f"{subj.key}/{backend.name}/{form or '-'}/{rname}"
                    cells.append(Cell(cid, subj.key, subj.family, backend.name, form, rname,
                                      precision, is_default, form is None or form == rule))
    return cells


def run_conversions(cells: list[Cell], subjects: list[Subject], settings: Settings,
                    work: Path) -> tuple[dict, dict]:
    """Convert and validate every cell; fills the cells in place.

    Returns per-subject data facts and the first test images of each subject (for timing)."""
    import torch

    from lkca_edge.converters import get_backend
    from lkca_edge.logs import quiet
    from lkca_edge.data import load_dataset
    from lkca_edge.pipelines.export import ExportRequest, export_model
    from lkca_edge.fileio import ensure_dir
    from lkca_edge.evaluation import reference_logits
    from lkca_edge.gates import validate_logits

    by_subject = {s.key: s for s in subjects}
    facts: dict[str, dict] = {}
    models: dict[str, object] = {}
    datasets: dict[str, object] = {}
    references: dict[tuple[str, str | None], np.ndarray] = {}
    root = Path(settings.cache) if settings.cache else work / "artifacts"
    reused = load_reused(settings)
    t_all = time.perf_counter()
    for i, cell in enumerate(cells, 1):
        subj = by_subject[cell.subject]
        if subj.key not in models:
            m = build_model(subj)
            models[subj.key] = m
            datasets[subj.key] = load_dataset("digits", m.preprocessing)
            subj.macs, subj.params = m.macs(), m.num_params()
            subj.fused_macs = count_macs(m.config, "fused")
            subj.patch_size = m.config.patch_size
            d = datasets[subj.key]
            facts[subj.key] = {"dataset": "digits", "test_images": int(len(d.test_x)),
                               "calibration_images": int(min(settings.calibration_size, len(d.train_x)))}
        model, data = models[subj.key], datasets[subj.key]
        backend = get_backend(cell.backend)
        prefix = f"[{i}/{len(cells)}] {cell.id}"
        reason = backend.available()
        if reason:
            cell.status, cell.stage, cell.reason = "unavailable", "convert", reason
            print(f"{prefix}: unavailable ({reason})", flush=True)
            continue

        old = reused.get(cell.id)
        if old is not None:
            for k, v in old.items():
                if k in Cell.__dataclass_fields__ and k != "id":
                    setattr(cell, k, v)
            cell.cached = True
            print(f"{prefix}: reused from {settings.reuse}: {cell.status}"
                  + (f" ({cell.reason})" if cell.reason else ""), flush=True)
            continue

        key = cache_key(cell, subj, settings, backend)
        out_dir = ensure_dir(root / subj.key / cell.backend)
        stem = f"{subj.name}-{subj.image_size}_{cell.form or 'vit'}_{cell.recipe}.{key}"
        record = out_dir / f"{stem}.cell.json"
        if settings.cache and record.exists():
            try:
                saved = json.loads(record.read_text())
                if saved.get("status") == "failed" or Path(saved.get("artifact") or "").exists():
                    for k, v in saved.items():
                        if k in Cell.__dataclass_fields__ and k not in ("id",):
                            setattr(cell, k, v)
                    cell.cached = True
                    print(f"{prefix}: cached {cell.status}"
                          + (f" ({cell.reason})" if cell.reason else ""), flush=True)
                    continue
            except (OSError, ValueError):
                pass

        # -- convert (the export pipeline; validation done below, stage by stage) ----------------
        cell.load_at_convert = [round(x, 2) for x in os.getloadavg()]
        work_model = copy.deepcopy(model)
        req = ExportRequest(model=subj.name, backend=cell.backend, precision=cell.precision,
                            recipe=cell.recipe, form=cell.form, out=str(out_dir), validate=False,
                            enforce_gate=False, calibration_size=settings.calibration_size,
                            name=stem)
        t0 = time.perf_counter()
        try:
            res = export_model(req, model=work_model, dataset=data)
        except Exception as exc:  # noqa: BLE001 - every failure is a recorded outcome
            cell.export_s = round(time.perf_counter() - t0, 2)
            cell.status, cell.stage, cell.reason = "failed", "convert", _one_line(exc)
            print(f"{prefix}: FAILED to convert after {cell.export_s:.1f} s: {cell.reason}", flush=True)
            _save_record(record, cell, settings)
            continue
        cell.export_s = round(time.perf_counter() - t0, 2)
        cell.convert_s = res.manifest.conversion_seconds
        cell.artifact, cell.size_bytes = str(res.artifact), res.manifest.size_bytes
        cell.details = _small_details(res.manifest.details)

        # -- validate on real test images against the torch source in the same form -------------
        t1 = time.perf_counter()
        limit = settings.validation_limit or len(data.test_x)
        x, y = data.test_x[:limit], data.test_y[:limit]
        gated = subj.trained or cell.precision == "fp32"
        if backend.runnable() is None:
            ref_key = (subj.key, cell.form)
            if ref_key not in references:
                references[ref_key] = reference_logits(work_model, x)
            try:
                with quiet():
                    runner = backend.load(res.artifact, threads=1)
            except Exception as exc:  # noqa: BLE001
                cell.status, cell.stage, cell.reason = "failed", "load", _one_line(exc)
            else:
                try:
                    with torch.no_grad():
                        logits = runner.run_many(x)
                except Exception as exc:  # noqa: BLE001
                    cell.status, cell.stage, cell.reason = "failed", "run", _one_line(exc)
                else:
                    v = validate_logits(logits, references[ref_key], y, backend.name, cell.precision)
                    cell.validation = v.to_dict()
                    if not gated:
                        cell.status = "ungated"
                        cell.reason = ("untrained weights: int8 agreement reported, not gated"
                                       + (f" (the gate would say: {'; '.join(v.failures)})"
                                          if v.failures else ""))
                        cell.validation["passed"] = None
                    elif v.passed:
                        cell.status = "ok"
                    else:
                        cell.status, cell.stage = "gate-failed", "gate"
                        cell.reason = f"{cell.precision} gate: {'; '.join(v.failures)}"
                del runner
        else:
            cell.status = "convert-only"
            cell.reason = backend.runnable()
            if hasattr(backend, "validate_static"):
                try:
                    with quiet():
                        static = backend.validate_static(res.artifact, work_model)
                    cell.validation = {"static": True, "passed": static.get("passed"),
                                       "failures": static.get("failures", []),
                                       "note": static.get("note", "")}
                    if static.get("passed") is False:
                        cell.status, cell.stage = "gate-failed", "gate"
                        cell.reason = f"static check: {'; '.join(static.get('failures', []))[:240]}"
                except Exception as exc:  # noqa: BLE001
                    cell.validation = {"static": True, "passed": None, "note": _one_line(exc)}
        cell.validate_s = round(time.perf_counter() - t1, 2)
        print(f"{prefix}: {cell.status} convert {cell.convert_s:.1f} s, export {cell.export_s:.1f} s"
              + _validation_text(cell) + (f" - {cell.reason}" if cell.reason and cell.status != "ok"
                                          else ""), flush=True)
        _save_record(record, cell, settings)
    print(f"conversion phase: {time.perf_counter() - t_all:.0f} s for {len(cells)} cells", flush=True)
    images = {k: np.ascontiguousarray(d.test_x[:IMAGES_CYCLED], np.float32) for k, d in datasets.items()}
    return facts, images


def load_reused(settings: Settings) -> dict[str, dict]:
    """Cells of a previous run whose artifacts still exist (or that failed), by cell id."""
    from lkca_edge.errors import UserError

    if not settings.reuse:
        return {}
    try:
        previous = json.loads(Path(settings.reuse).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"--reuse {settings.reuse}: not a readable run JSON ({exc})") from None
    if previous.get("schema") != SCHEMA:
        raise UserError(f"--reuse {settings.reuse}: not an operator_forms result ({SCHEMA})")
    out = {}
    for c in previous.get("cells", []):
        if c.get("artifact") and not Path(c["artifact"]).exists() and c.get("status") != "failed":
            continue  # artifact gone: convert again
        out[c["id"]] = c
    return out


def _small_details(details: dict | None) -> dict:
    """The manifest details worth keeping in the benchmark record (op counts, delegation)."""
    details = details or {}
    keep = {}
    for k in ("op_counts", "delegated", "not_delegated", "tool", "opset"):
        if k in details:
            keep[k] = details[k]
    return keep


def _validation_text(cell: Cell) -> str:
    v = cell.validation or {}
    if v.get("accuracy") is None:
        return ""
    return (f"; acc {v['accuracy']:.2%} (ref {v['reference_accuracy']:.2%}), "
            f"agree {v['top1_agreement']:.1%}, max err {v['max_abs_err']:.2g}")


def _save_record(path: Path, cell: Cell, settings: Settings) -> None:
    if not settings.cache:
        return
    from lkca_edge.fileio import write_json

    d = asdict(cell)
    d["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(path, d)


# ==================================================================================================
# Phase 2: timing (runs in a fresh child process)
# ==================================================================================================
def _peak_gemm_fns(size: int, threads: int) -> list[tuple[str, str, object]]:
    """(method, precision, callable) for large GEMMs at ``threads`` threads."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    out = []
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    c = torch.empty(size, size)
    out.append(("torch.mm fp32", "fp32", lambda: torch.mm(a, b, out=c)))
    ai = torch.randint(-128, 127, (size, size), dtype=torch.int8)
    bi = torch.randint(-128, 127, (size, size), dtype=torch.int8)
    try:
        torch._int_mm(ai[:32, :32], bi[:32, :32])
        out.append(("torch._int_mm s8s8", "int8", lambda: torch._int_mm(ai, bi)))
    except Exception:  # noqa: BLE001 - not on this build
        pass

    def session(nodes, inputs, outputs, inits):
        g = helper.make_graph(nodes, "peak", inputs, outputs, inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.inter_op_num_threads = 1
        o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return ort.InferenceSession(m.SerializeToString(), o, providers=["CPUExecutionProvider"])

    f32 = rng.standard_normal((size, size)).astype(np.float32)
    s_f = session([helper.make_node("MatMul", ["A", "B"], ["Y"])],
                  [helper.make_tensor_value_info("A", TensorProto.FLOAT, [size, size])],
                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [size, size])],
                  [helper.make_tensor("B", TensorProto.FLOAT, [size, size],
                                      rng.standard_normal((size, size)).astype(np.float32).tobytes(),
                                      raw=True)])
    out.append(("onnxruntime MatMul fp32", "fp32", lambda: s_f.run(None, {"A": f32})))
    u8 = rng.integers(0, 255, (size, size)).astype(np.uint8)
    w8 = rng.integers(-128, 127, (size, size)).astype(np.int8)
    s_i = session([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
                  [helper.make_tensor_value_info("A", TensorProto.UINT8, [size, size])],
                  [helper.make_tensor_value_info("Y", TensorProto.INT32, [size, size])],
                  [helper.make_tensor("B", TensorProto.INT8, [size, size], w8.tobytes(), raw=True)])
    out.append(("onnxruntime MatMulInteger u8s8", "int8", lambda: s_i.run(None, {"A": u8})))
    scalars = [helper.make_tensor("as", TensorProto.FLOAT, [], [0.02]),
               helper.make_tensor("az", TensorProto.UINT8, [], [128]),
               helper.make_tensor("bs", TensorProto.FLOAT, [], [0.01]),
               helper.make_tensor("bz", TensorProto.INT8, [], [0]),
               helper.make_tensor("ys", TensorProto.FLOAT, [], [4.0]),
               helper.make_tensor("yz", TensorProto.UINT8, [], [128]),
               helper.make_tensor("B", TensorProto.INT8, [size, size], w8.tobytes(), raw=True)]
    try:
        s_q = session([helper.make_node("QLinearMatMul", ["A", "as", "az", "B", "bs", "bz", "ys", "yz"],
                                        ["Y"])],
                      [helper.make_tensor_value_info("A", TensorProto.UINT8, [size, size])],
                      [helper.make_tensor_value_info("Y", TensorProto.UINT8, [size, size])], scalars)
        s_q.run(None, {"A": u8[:size]})
        out.append(("onnxruntime QLinearMatMul u8s8", "int8", lambda: s_q.run(None, {"A": u8})))
    except Exception:  # noqa: BLE001
        pass
    return out


class _EtRunners:
    """ExecuTorch runners that are safe to hold together.

    ExecuTorch's Python threadpool is one global pthreadpool, and ``_unsafe_reset_threadpool``
    (called by every ExecuTorchRunner load) destroys it and creates a new one; an XNNPACK method
    loaded before keeps the old pool's pointer and aborts the process on its next run ("The futex
    facility returned an unexpected error code"). So only methods of ONE thread count are alive
    at a time: changing the count drops them all first, then reloads on demand.
    """

    def __init__(self):
        self.threads: int | None = None
        self.live: dict[str, object] = {}

    def get(self, path: str, threads: int):
        import gc

        from lkca_edge.converters import get_backend
        from lkca_edge.logs import quiet

        if threads != self.threads:
            self.live.clear()
            gc.collect()
            self.threads = threads
        runner = self.live.get(path)
        if runner is None:
            with quiet():  # the runtime logs "Resetting threadpool" to fd 2
                runner = get_backend("executorch").load(path, threads=threads)
            self.live[path] = runner
        return runner


def _torch_runner(model):
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()
    return run


def time_plan(plan: dict) -> dict:
    """Load every variant, then time them alternated. Runs in a spawned child process."""
    import gc

    import torch

    from lkca_edge.converters import get_backend
    from lkca_edge.logs import quiet

    threads_list = plan["threads"]
    rounds, runs, warmup = plan["rounds"], plan["runs_per_round"], plan["warmup"]
    budget = plan.get("slice_budget", 1.5)
    truncated: dict[str, int] = {}
    subjects = {s["key"]: Subject(**s) for s in plan["subjects"]}
    images = {k: np.ascontiguousarray(v, np.float32) for k, v in plan["images"].items()}
    errors: dict[str, str] = {}
    gemm_meta: dict[str, dict] = {}
    et = _EtRunners()

    def prepare_for(v: dict, n: int):
        """A callable that readies this variant for ``n`` threads and returns its run function."""
        if v["kind"] == "torch":
            mk = (v["subject"], v["form"])
            if mk not in torch_models:
                torch_models[mk] = build_model(subjects[v["subject"]], form=v["form"])
            fn = _torch_runner(torch_models[mk])

            def prep(fn=fn):
                torch.set_num_threads(n)
                return fn
            return prep
        if v["backend"] == "executorch":
            return lambda: et.get(v["artifact"], n)
        with quiet():
            runner = get_backend(v["backend"]).load(v["artifact"], threads=n)
        return lambda: runner

    # -- load everything (a load failure is recorded, the rest goes on) --------------------------
    # Slots are grouped by thread count: each round times every 1-thread slot, then every
    # 2-thread slot (the block order flips every round), so ExecuTorch reloads only at block edges.
    slots = []
    torch_models: dict[tuple, object] = {}
    for n in threads_list:
        for v in plan["variants"]:
            key = f"{v['id']}|{n}"
            try:
                prep = prepare_for(v, n)
                prep()  # loads ExecuTorch now too, so a load failure is reported here
            except Exception as exc:  # noqa: BLE001
                errors[key] = f"load: {_one_line(exc)}"
                continue
            slots.append({"key": key, "id": v["id"], "threads": n, "prepare": prep, "runs": runs,
                          "inputs": images[v["subject"]]})
        torch.set_num_threads(n)
        fns = []
        for size in plan["gemm_sizes"]:
            try:
                fns += [(m, p, f, size) for m, p, f in _peak_gemm_fns(size, n)]
            except Exception as exc:  # noqa: BLE001
                errors[f"gemm {size}|{n}"] = _one_line(exc)
        for method, precision, fn, size in fns:
            vid = f"peak/{method}/{size}"
            gemm_meta[vid] = {"method": method, "precision": precision, "size": size}

            def prep(fn=fn, n=n):
                torch.set_num_threads(n)
                return lambda _x: fn()
            slots.append({"key": f"{vid}|{n}", "id": vid, "threads": n, "prepare": prep,
                          "runs": plan["gemm_runs"], "inputs": None})

    # -- warm every slot once, so first-call costs (prepacking, allocation) are not timed -------
    for s in list(slots):
        try:
            fn = s["prepare"]()
            for _ in range(max(1, warmup)):
                fn(s["inputs"][:1] if s["inputs"] is not None else None)
        except Exception as exc:  # noqa: BLE001
            errors[s["key"]] = f"run: {_one_line(exc)}"
            slots.remove(s)
    blocks = [[s for s in slots if s["threads"] == n] for n in threads_list]

    samples: dict[str, list[float]] = {s["key"]: [] for s in slots}
    per_round: dict[str, list[list[float]]] = {s["key"]: [] for s in slots}
    cpu_ratio: dict[str, list[float]] = {s["key"]: [] for s in slots}
    loads = []
    print(f"timing {len(slots)} (variant, threads) slots: {rounds} rounds x "
          f"{runs} runs (+{warmup} warm-up per slice)", flush=True)
    t_start = time.perf_counter()
    gc.disable()
    try:
        for r in range(rounds):
            loads.append([round(x, 2) for x in os.getloadavg()])
            order = []
            for block in (blocks if r % 2 == 0 else blocks[::-1]):
                k = r % len(block) if block else 0
                rotated = block[k:] + block[:k]  # a different variant goes first every round
                order += rotated if r % 2 == 0 else rotated[::-1]
            for s in order:
                fn = s["prepare"]()
                x_all = s["inputs"]
                for w in range(warmup):
                    fn(x_all[w % len(x_all): w % len(x_all) + 1] if x_all is not None else None)
                c0, w0 = time.process_time(), time.perf_counter()
                out = samples[s["key"]]
                start = len(out)
                for i in range(s["runs"]):
                    x = x_all[i % len(x_all): i % len(x_all) + 1] if x_all is not None else None
                    t0 = time.perf_counter_ns()
                    fn(x)
                    out.append((time.perf_counter_ns() - t0) / 1e6)
                    if i >= 2 and time.perf_counter() - w0 > budget:
                        truncated[s["key"]] = truncated.get(s["key"], 0) + 1
                        break
                per_round[s["key"]].append(out[start:])
                wall = time.perf_counter() - w0
                if wall > 0:
                    cpu_ratio[s["key"]].append((time.process_time() - c0) / wall)
            gc.collect()
            print(f"  round {r + 1}/{rounds} done ({time.perf_counter() - t_start:.0f} s, "
                  f"load {loads[-1][0]})", flush=True)
    finally:
        gc.enable()
    loads.append([round(x, 2) for x in os.getloadavg()])

    timings = {}
    for s in slots:
        xs = samples[s["key"]]
        if not xs:
            continue
        q = np.percentile(xs, [10, 25, 50, 75, 90])
        timings[s["key"]] = {"id": s["id"], "threads": s["threads"], "n": len(xs),
                             "slices_cut_by_budget": truncated.get(s["key"], 0),
                             "median_ms": float(q[2]), "p10_ms": float(q[0]), "p25_ms": float(q[1]),
                             "p75_ms": float(q[3]), "p90_ms": float(q[4]), "min_ms": float(min(xs)),
                             "round_medians_ms": [float(np.median(r)) for r in per_round[s["key"]]
                                                  if r],
                             "cpu_per_wall": (float(statistics.median(cpu_ratio[s["key"]]))
                                              if cpu_ratio[s["key"]] else None)}

    profiles = {}
    if plan.get("profile"):
        profiles = _profiles(plan, slots, timings, subjects, images)
    return {"timings": timings, "errors": errors, "gemm": gemm_meta, "loadavg_per_round": loads,
            "seconds": round(time.perf_counter() - t_start, 1), "profiles": profiles}


def _profiles(plan, slots, timings, subjects, images) -> dict:
    """Where the time goes: ORT's profiler for the target subject's ONNX artifacts, torch's for
    the baseline (1 thread). Other runtimes report nothing per operator from Python."""
    import torch

    from lkca_edge.converters import get_backend
    from lkca_edge.logs import quiet

    target = plan["profile_subject"]
    out = {}
    n = min(plan["threads"])
    for v in plan["variants"]:
        if v.get("subject") != target and v.get("subject") != plan.get("profile_vit"):
            continue
        x = images[v["subject"]][:1]
        try:
            if v["kind"] == "torch" and v["form"] in ("conv", plan.get("profile_form")):
                torch.set_num_threads(n)
                model = build_model(subjects[v["subject"]], form=v["form"])
                from torch.profiler import ProfilerActivity, profile

                with torch.inference_mode():
                    for _ in range(5):
                        model(torch.from_numpy(x))
                    with profile(activities=[ProfilerActivity.CPU]) as prof:
                        for _ in range(20):
                            model(torch.from_numpy(x))
                rows = [{"op": e.key, "ms": e.self_cpu_time_total / 20 / 1000.0, "count": e.count // 20}
                        for e in prof.key_averages() if e.self_cpu_time_total > 0]
            elif v["kind"] == "artifact" and v["backend"] == "onnx":
                with quiet():
                    runner = get_backend("onnx").load(v["artifact"], threads=n)
                    rows = runner.operator_profile(x, runs=30)
            else:
                continue
        except Exception as exc:  # noqa: BLE001
            out[v["id"]] = {"error": _one_line(exc)}
            continue
        total = sum(r["ms"] for r in rows) or 1.0
        rows = sorted(rows, key=lambda r: -r["ms"])
        out[v["id"]] = {"threads": n, "total_ms": total,
                        "ops": [{**r, "share": r["ms"] / total} for r in rows[:8]]}
    return out


# ==================================================================================================
# Phase 3: analysis and report
# ==================================================================================================
def build_variants(subjects: list[Subject], cells: list[Cell], forms: list[str]) -> list[dict]:
    """Torch eager of every measured form (conv = the baseline) and every timeable artifact."""
    variants = []
    lkca_forms = ["conv"] + [f for f in forms if f != "conv"]
    for s in subjects:
        forms = lkca_forms if s.family == "lkca" else (None,)
        for form in forms:
            variants.append({"id": f"{s.key}/torch/{form or '-'}/fp32", "kind": "torch",
                             "subject": s.key, "backend": "torch", "form": form,
                             "recipe": "eager", "precision": "fp32"})
    for c in cells:
        if c.timeable:
            variants.append({"id": c.id, "kind": "artifact", "subject": c.subject,
                             "backend": c.backend, "form": c.form, "recipe": c.recipe,
                             "precision": c.precision, "artifact": c.artifact})
    return variants


def baseline_id(subject_key: str, subjects: dict[str, Subject]) -> str:
    """The paper's form in PyTorch eager fp32 of the LKCA model this subject is compared with."""
    return f"{subjects[subject_key].pair}/torch/conv/fp32"


def analyse(settings: Settings, subjects: list[Subject], cells: list[Cell], variants: list[dict],
            timed: dict, facts: dict, host: dict) -> dict:
    from lkca_edge.forms import EXPORT_FORM_RULES, default_export_form

    subj = {s.key: s for s in subjects}
    T = timed["timings"]
    cell_by_id = {c.id: c for c in cells}

    # -- peak --------------------------------------------------------------------------------------
    peak: dict = {"sizes": settings.gemm_sizes, "methods": {}, "best": {}, "best_p10": {}}
    for key, t in T.items():
        vid, n = key.rsplit("|", 1)
        if not vid.startswith("peak/"):
            continue
        meta = timed["gemm"][vid]
        macs = meta["size"] ** 3
        rate = macs / (t["median_ms"] / 1e3) / 1e9
        rate10 = macs / (t["p10_ms"] / 1e3) / 1e9
        name = f"{meta['method']} @ {meta['size']}"
        peak["methods"].setdefault(name, {"precision": meta["precision"], "method": meta["method"],
                                          "size": meta["size"]})[n] = {
            "gmacs": rate, "gmacs_p10": rate10, "median_ms": t["median_ms"]}
        for table, value in (("best", rate), ("best_p10", rate10)):
            best = peak[table].setdefault(meta["precision"], {})
            if n not in best or value > best[n]["gmacs"]:
                best[n] = {"gmacs": value, "method": name}

    # -- rows: one per variant, per thread count ---------------------------------------------------
    for c in cells:  # a load failure's message starts with the artifact path: keep the reason
        if c.reason and c.artifact:
            c.reason = c.reason.replace(f"{c.artifact}: ", "")
    rows = []
    for v in variants:
        c = cell_by_id.get(v["id"])
        row = {**{k: v[k] for k in ("id", "kind", "subject", "backend", "form", "recipe", "precision")},
               "family": subj[v["subject"]].family,
               "status": c.status if c else "ok", "reason": c.reason if c else None,
               "default_recipe": c.default_recipe if c else None,
               "default_form": c.default_form if c else None,
               "convert_s": c.convert_s if c else None, "export_s": c.export_s if c else None,
               "size_bytes": c.size_bytes if c else None,
               "validation": _validation_summary(c) if c else None, "threads": {}}
        for n in settings.threads:
            t = T.get(f"{v['id']}|{n}")
            err = timed["errors"].get(f"{v['id']}|{n}")
            if t is None:
                row["threads"][str(n)] = {"error": err or "not timed"}
                continue
            base = T.get(f"{baseline_id(v['subject'], subj)}|{n}")
            macs = subj[v["subject"]].executed_macs(v["form"])
            gmacs = macs / (t["median_ms"] / 1e3) / 1e9
            pk = peak["best"].get("int8" if v["precision"] == "int8" else "fp32", {}).get(str(n))
            row["threads"][str(n)] = {
                **{k: t[k] for k in ("median_ms", "p25_ms", "p75_ms", "p10_ms", "p90_ms", "n",
                                     "cpu_per_wall", "round_medians_ms", "slices_cut_by_budget")},
                "speedup": (base["median_ms"] / t["median_ms"]) if base else None,
                "gmacs": gmacs, "peak_fraction": gmacs / pk["gmacs"] if pk else None,
                "executed_macs": macs,
                "equivalent_gmacs": subj[v["subject"]].macs / (t["median_ms"] / 1e3) / 1e9}
        rows.append(row)
    for c in cells:  # cells that were never timed (failed, convert-only, unavailable)
        if not c.timeable:
            rows.append({"id": c.id, "kind": "artifact", "subject": c.subject, "backend": c.backend,
                         "form": c.form, "recipe": c.recipe, "precision": c.precision,
                         "family": c.family, "status": c.status, "stage": c.stage,
                         "reason": c.reason, "default_recipe": c.default_recipe,
                         "default_form": c.default_form, "convert_s": c.convert_s,
                         "export_s": c.export_s, "size_bytes": c.size_bytes,
                         "validation": _validation_summary(c), "threads": {}})

    def med(row, n):
        t = row["threads"].get(str(n)) or {}
        return t.get("median_ms")

    # -- targets -----------------------------------------------------------------------------------
    targets = evaluate_targets(settings, rows, cells, peak, subj, med)
    rules = form_rules(settings, rows, subjects, med, EXPORT_FORM_RULES, default_export_form)
    vs_vit = lkca_vs_vit(settings, rows, subjects, med)
    return {"schema": SCHEMA, "host": host, "settings": asdict(settings),
            "subjects": [asdict(s) for s in subjects], "data": facts, "peak": peak,
            "rows": rows, "targets": targets, "form_rules": rules, "lkca_vs_vit": vs_vit,
            "timing": {"seconds": timed["seconds"], "loadavg_per_round": timed["loadavg_per_round"],
                       "errors": timed["errors"]},
            "profiles": timed.get("profiles", {}),
            "conversion": conversion_summary(cells)}


def _validation_summary(c: Cell | None) -> dict | None:
    if c is None or not c.validation:
        return None
    v = c.validation
    return {k: v.get(k) for k in ("accuracy", "reference_accuracy", "top1_agreement", "max_abs_err",
                                  "cosine", "passed", "n_images", "static")}


def _best(rows, subject, precision, n, med, family="lkca"):
    cands = [r for r in rows if r["subject"] == subject and r["kind"] == "artifact"
             and r["precision"] == precision and r["status"] in ("ok", "ungated")
             and med(r, n) is not None]
    return min(cands, key=lambda r: med(r, n)) if cands else None


def evaluate_targets(settings, rows, cells, peak, subj, med) -> dict:
    n = TARGET_THREADS
    out: dict = {"subject": TARGET_SUBJECT, "threads": n, "checks": []}
    if TARGET_SUBJECT not in subj or n not in settings.threads:
        out["note"] = f"targets need {TARGET_SUBJECT} with {n} thread(s) in the run"
        return out
    checks = out["checks"]
    base_row = next((r for r in rows if r["id"] == f"{TARGET_SUBJECT}/torch/conv/fp32"), None)
    base = med(base_row, n) if base_row else None

    def add(name, measured, threshold, met, detail, kind=">="):
        checks.append({"target": name, "measured": measured, "threshold": threshold,
                       "met": met, "detail": detail, "kind": kind})

    for precision, goal in (("int8", TARGETS["int8_speedup"]), ("fp32", TARGETS["fp32_speedup"])):
        best = _best(rows, TARGET_SUBJECT, precision, n, med)
        if best is None or base is None:
            add(f"best {precision} artifact >= {goal:g}x faster than the baseline", None, goal, False,
                f"no validated {precision} artifact was timed")
            continue
        sp = base / med(best, n)
        sp10 = base_row["threads"][str(n)]["p10_ms"] / best["threads"][str(n)]["p10_ms"]
        add(f"best {precision} artifact >= {goal:g}x faster than the baseline", sp, goal, sp >= goal,
            f"{_label(best)}: {med(best, n):.3f} ms vs baseline {base:.3f} ms; at p10 {sp10:.1f}x")
    best8 = _best(rows, TARGET_SUBJECT, "int8", n, med)
    pk = peak["best"].get("int8", {}).get(str(n))
    goal = TARGETS["int8_peak_fraction"]
    if best8 and pk:
        g = best8["threads"][str(n)]["gmacs"]
        pk10 = peak["best_p10"].get("int8", {}).get(str(n))
        g10 = (subj[TARGET_SUBJECT].executed_macs(best8["form"])
               / (best8["threads"][str(n)]["p10_ms"] / 1e3) / 1e9)
        add(f"best int8 artifact >= {goal:.0%} of the measured int8 GEMM peak", g / pk["gmacs"], goal,
            g / pk["gmacs"] >= goal,
            f"{_label(best8)}: {g:.1f} GMAC/s vs {pk['gmacs']:.1f} GMAC/s ({pk['method']}); "
            f"at p10 {g10:.1f} vs {pk10['gmacs']:.1f} GMAC/s = {g10 / pk10['gmacs']:.0%}")
    else:
        add(f"best int8 artifact >= {goal:.0%} of the measured int8 GEMM peak", None, goal, False,
            "no int8 artifact or no int8 peak measured")

    # per backend: default int8 vs default fp32, default fp32 vs own fp32 conv form
    target_rows = [r for r in rows if r["subject"] == TARGET_SUBJECT and r["kind"] == "artifact"]
    for b in [b for b in settings.backends]:
        brows = [r for r in target_rows if r["backend"] == b]
        if not brows:
            continue
        if all(r["status"] == "convert-only" or r["status"] == "unavailable" for r in brows):
            continue  # not runnable here: no timing targets
        d32 = next((r for r in brows if r["precision"] == "fp32" and r["default_recipe"]
                    and r["default_form"]), None)
        d8 = next((r for r in brows if r["precision"] == "int8" and r["default_recipe"]
                   and r["default_form"]), None)
        conv32 = next((r for r in brows if r["precision"] == "fp32" and r["default_recipe"]
                       and r["form"] == "conv"), None)
        goal = TARGETS["int8_over_fp32"]
        name = f"{b}: default int8 export >= {goal:g}x faster than its default fp32 export"
        add(name, *_pair(d32, d8, n, med, goal))
        goal = TARGETS["fp32_over_conv"]
        name = f"{b}: default fp32 export >= {goal:g}x faster than its fp32 conv-form export"
        add(name, *_pair(conv32, d32, n, med, goal))

    # conversion time of the default matrix: target subject x 4 backends x fp32/int8 defaults
    matrix = [c for c in cells if c.subject == TARGET_SUBJECT and c.default_recipe and c.default_form]
    covered = sorted({c.backend for c in matrix})
    total = sum((c.export_s or 0.0) for c in matrix)
    failed = [c.id for c in matrix if c.export_s is None]
    goal = TARGETS["default_matrix_seconds"]
    complete = set(covered) >= set(ALL_BACKENDS) and not failed
    detail = (f"{len(matrix)} cells ({', '.join(covered)}); export_model wall time (convert + "
              f"manifest) {total:.0f} s, convert() alone {sum(c.convert_s or 0 for c in matrix):.0f} s, "
              f"with validation on the test images "
              f"{total + sum(c.validate_s or 0 for c in matrix):.0f} s; per cell: "
              + ", ".join(f"{c.backend}/{c.precision} {c.export_s or 0:.0f} s" for c in matrix)
              + ("; some timings from the cache" if any(c.cached for c in matrix) else "")
              + ("" if complete else f"; INCOMPLETE: needs all of {', '.join(ALL_BACKENDS)}"))
    add(f"default matrix (lkca-1m x 4 backends x fp32/int8) converts in <= {goal:.0f} s", total, goal,
        (total <= goal) if complete else None, detail, kind="<=")
    return out


def _pair(slow_row, fast_row, n, med, goal):
    """(measured ratio, threshold, met, detail) of slow/fast medians."""
    def why(r, what):
        if r is None:
            return f"no {what} cell"
        return f"{what} {_label(r)} is {r['status']}" + (f" ({r['reason']})" if r.get("reason") else "")
    for r, what in ((slow_row, "reference"), (fast_row, "candidate")):
        if r is None:  # not part of this run (e.g. --forms without conv): cannot judge
            return None, goal, None, why(r, what)
        if r["status"] not in ("ok", "ungated") or med(r, n) is None:
            return None, goal, False, why(r, what)
    ratio = med(slow_row, n) / med(fast_row, n)
    return ratio, goal, ratio >= goal, (f"{_label(fast_row)} {med(fast_row, n):.3f} ms vs "
                                        f"{_label(slow_row)} {med(slow_row, n):.3f} ms")


def _label(r) -> str:
    return f"{r['backend']} {r['form'] or 'vit'} {r['recipe']}"


def form_rules(settings, rows, subjects, med, current, default_export_form) -> dict:
    """(backend, precision) -> fastest form (default recipe of that precision), per subject and
    thread count; the proposal comes from the target subject at 1 thread."""
    out = {"tolerance": RULE_TOLERANCE, "measured": [], "proposed": {}, "differences": []}
    lkca = [s.key for s in subjects if s.family == "lkca"]
    for sk in lkca:
        for n in settings.threads:
            for b in settings.backends:
                for precision in ("fp32", "int8"):
                    cand = [r for r in rows if r["subject"] == sk and r["backend"] == b
                            and r["precision"] == precision and r["default_recipe"]
                            and r["kind"] == "artifact"]
                    if not cand:
                        continue
                    good = [r for r in cand if r["status"] in ("ok", "ungated") and med(r, n) is not None]
                    timed = {r["form"]: med(r, n) for r in good}
                    rounds = {r["form"]: r["threads"][str(n)].get("round_medians_ms") or [] for r in good}
                    rule = current.get((b, precision))
                    # forms that fail any recipe of this precision (not only the default one)
                    fragile = sorted({f"{r['form']}:{r['recipe']}" for r in rows
                                      if r["subject"] == sk and r["backend"] == b
                                      and r["precision"] == precision and r["kind"] == "artifact"
                                      and r["status"] in ("failed", "gate-failed")})
                    entry = {"subject": sk, "threads": n, "backend": b, "precision": precision,
                             "current": rule, "medians_ms": timed, "failing": fragile}
                    if timed:
                        fastest = min(timed, key=timed.get)
                        entry["fastest"] = fastest
                        # paired per round (the rounds alternate, so drift is shared): how often
                        # the fastest form beat the current rule's form
                        ra, rb = rounds.get(fastest, []), rounds.get(rule, [])
                        paired = min(len(ra), len(rb))
                        wins = sum(x < y for x, y in zip(ra, rb))
                        entry["fastest_wins_rounds"] = f"{wins}/{paired}" if fastest != rule else None
                        clear = (rule not in timed
                                 or (timed[rule] > timed[fastest] * (1 + RULE_TOLERANCE)
                                     and wins >= 0.75 * paired))
                        entry["proposed"] = fastest if clear else rule
                        entry["rule_vs_fastest"] = (timed[rule] / timed[fastest]) if rule in timed else None
                    else:
                        entry["fastest"] = entry["proposed"] = None
                        entry["note"] = "no form timed (not runnable here or every form failed)"
                    out["measured"].append(entry)
    for e in out["measured"]:
        if e["subject"] == TARGET_SUBJECT and e["threads"] == TARGET_THREADS and e.get("proposed"):
            key = f"{e['backend']}/{e['precision']}"
            # a form that breaks another recipe of the same precision is not proposed
            broken = {f.split(":")[0] for f in e["failing"]}
            proposal = e["proposed"]
            if proposal in broken:
                ok = [f for f in sorted(e["medians_ms"], key=e["medians_ms"].get) if f not in broken]
                if ok:
                    proposal = ok[0]
            out["proposed"][key] = proposal
            if proposal != e["current"]:
                out["differences"].append({"backend": e["backend"], "precision": e["precision"],
                                           "current": e["current"], "proposed": proposal,
                                           "current_ms": e["medians_ms"].get(e["current"]),
                                           "proposed_ms": e["medians_ms"][proposal]})
    for (b, p), form in current.items():
        key = f"{b}/{p}"
        if key not in out["proposed"]:
            out["proposed"][key] = form  # not measured here: unchanged
    return out


def lkca_vs_vit(settings, rows, subjects, med) -> list[dict]:
    """Per LKCA subject, backend, recipe and thread count: LKCA (default form) vs its ViT."""
    out = []
    for s in subjects:
        if s.family != "vit":
            continue
        for n in settings.threads:
            for r in rows:
                if r["subject"] != s.key or med(r, n) is None:
                    continue
                if r["kind"] == "torch":
                    twin = next((x for x in rows if x["subject"] == s.pair and x["kind"] == "torch"
                                 and x["form"] == "conv"), None)
                else:
                    twin = next((x for x in rows if x["subject"] == s.pair and x["kind"] == "artifact"
                                 and x["backend"] == r["backend"] and x["recipe"] == r["recipe"]
                                 and x["default_form"]), None)
                lk = med(twin, n) if twin else None
                out.append({"lkca": s.pair, "vit": s.key, "threads": n, "backend": r["backend"],
                            "recipe": r["recipe"], "precision": r["precision"],
                            "lkca_form": twin["form"] if twin else None,
                            "lkca_status": twin["status"] if twin else None,
                            "vit_status": r["status"], "vit_ms": med(r, n), "lkca_ms": lk,
                            "vit_over_lkca": (med(r, n) / lk) if lk else None})
    return out


def conversion_summary(cells: list[Cell]) -> dict:
    by_backend: dict[str, dict] = {}
    for c in cells:
        b = by_backend.setdefault(c.backend, {"cells": 0, "export_s": 0.0, "failed": 0, "cached": 0})
        b["cells"] += 1
        b["export_s"] += c.export_s or 0.0
        b["failed"] += c.status in ("failed", "gate-failed")
        b["cached"] += bool(c.cached)
    return {"by_backend": by_backend, "total_export_s": sum(c.export_s or 0 for c in cells)}


# -- markdown ----------------------------------------------------------------------------------------
def _f(x, fmt="{:.3f}", none="–"):
    return none if x is None else fmt.format(x)


def to_markdown(res: dict) -> str:
    s = res["settings"]
    threads = s["threads"]
    host = res["host"]
    L = []
    L.append(f"# LKCA operator forms x backends ({time.strftime('%Y-%m-%d %H:%M', time.localtime())})\n")
    L.append(f"Command: `{res['command']}`  ")
    L.append(f"Host: {host.get('cpu')}, {host.get('cores')} cores; load average before "
             f"{host.get('load_before')}, per timing round "
             f"{[l[0] for l in res['timing']['loadavg_per_round']]}"
             + ("  \n**Measured under load** (1-min load above the core count): absolute figures "
                "are pessimistic, ratios less so (all variants alternated)." if res.get("under_load") else ""))
    if s.get("reuse"):
        L.append(f"Conversion and validation records (and conversion times) reused from "
                 f"`{s['reuse']}`; only the timing is from this run.  ")
    L.append(f"Batch 1; {s['rounds']} rounds x {s['runs_per_round']} runs per variant and thread "
             f"count (alternated, {s['warmup']} warm-up runs per slice); medians over all rounds. "
             f"Timing phase {res['timing']['seconds']:.0f} s.  ")
    untrained = [x["key"] for x in res["subjects"] if not x["pretrained"]]
    trained = [x["key"] for x in res["subjects"] if x["pretrained"]]
    L.append(f"Weights: {', '.join(trained) or 'none'} trained (shipped digits weights); "
             f"{', '.join(untrained) or 'none'} **untrained** (random init): their int8 cells are "
             f"reported without a gate (agreement only), their fp32 cells are gated.  ")
    L.append("Speed-up = the paper's conv form in PyTorch eager fp32 (same LKCA model, same thread "
             "count) / the variant's median. GMAC/s = multiply-accumulates the variant executes / "
             "median (form `fused` executes one dim x dim matmul per block fewer than the model's "
             "nominal count; the JSON also has `equivalent_gmacs` = nominal MACs / median). "
             "% peak = GMAC/s / the best measured GEMM rate of the same precision and thread "
             "count.\n")

    # peak
    L.append("## Measured peak (GEMMs timed in the same run)\n")
    L.append("Square GEMMs (M = K = N) timed in the same alternation as the models; GMAC/s from the "
             "median (p10 in brackets). The peak of a precision is its best method and size.\n")
    L.append("| method @ size | precision | " + " | ".join(f"{n} thr GMAC/s" for n in threads) + " |")
    L.append("|---|---|" + "---|" * len(threads))
    for m, d in sorted(res["peak"]["methods"].items(), key=lambda kv: (kv[1]["precision"], kv[0])):
        cells = []
        for n in threads:
            x = d.get(str(n)) or {}
            cells.append(f"{_f(x.get('gmacs'), '{:.1f}')} ({_f(x.get('gmacs_p10'), '{:.0f}')})")
        L.append(f"| {m} | {d['precision']} | " + " | ".join(cells) + " |")
    for prec, by_n in sorted(res["peak"]["best"].items()):
        L.append(f"\n**{prec} peak**: " + "; ".join(
            f"{n} thr {b['gmacs']:.1f} GMAC/s ({b['method']})" for n, b in sorted(by_n.items())))
    L.append("")

    # targets
    t = res["targets"]
    L.append(f"## Targets ({t['subject']}, batch 1, {t['threads']} thread)\n")
    if t.get("note"):
        L.append(t["note"] + "\n")
    L.append("| target | measured | met |")
    L.append("|---|---|---|")
    for c in t["checks"]:
        unit = "s" if c["kind"] == "<=" else ("" if "peak" in c["target"] else "x")
        m = ("–" if c["measured"] is None else
             (f"{c['measured']:.0%}" if "peak" in c["target"] else f"{c['measured']:.2f}{unit}"))
        met = {True: "**met**", False: "**not met**", None: "incomplete"}[c["met"]]
        L.append(f"| {c['target']} | {m} ({c['detail']}) | {met} |")
    L.append("")

    # per subject tables
    rows = res["rows"]
    for subj in res["subjects"]:
        key = subj["key"]
        L.append(f"## {key} ({subj['family']}, patch {subj['patch_size']}, {subj['params']:,} params, "
                 f"{subj['macs'] / 1e6:.1f} M MACs, {'trained' if subj['pretrained'] else 'untrained'})\n")
        head = "| backend | form | recipe | status |"
        sep = "|---|---|---|---|"
        for n in threads:
            head += f" {n}t ms | {n}t x base | {n}t GMAC/s | {n}t % peak |"
            sep += "---|---|---|---|"
        head += " export s | KB | acc / agree |"
        sep += "---|---|---|"
        L.append(head)
        L.append(sep)
        srows = [r for r in rows if r["subject"] == key]
        srows.sort(key=lambda r: (r["kind"] != "torch", r["backend"], r["precision"],
                                  r["recipe"], r["form"] or ""))
        for r in srows:
            mark = " (default)" if r.get("default_recipe") and r.get("default_form") else ""
            status = r["status"] + (f": {r['reason'][:90]}" if r.get("reason") and
                                    r["status"] not in ("ok",) else "")
            line = f"| {r['backend']} | {r['form'] or '–'} | {r['recipe']}{mark} | {status} |"
            for n in threads:
                x = r["threads"].get(str(n)) or {}
                line += (f" {_f(x.get('median_ms'))} | {_f(x.get('speedup'), '{:.2f}')} | "
                         f"{_f(x.get('gmacs'), '{:.1f}')} | {_f(x.get('peak_fraction'), '{:.1%}')} |")
            v = r.get("validation") or {}
            acc = ("–" if v.get("accuracy") is None else
                   f"{v['accuracy']:.1%} / {v['top1_agreement']:.0%}")
            L.append(line + f" {_f(r.get('export_s'), '{:.1f}')} | "
                     f"{_f(r['size_bytes'] / 1024 if r.get('size_bytes') else None, '{:.0f}')} | {acc} |")
        L.append("")

    # LKCA vs ViT
    if res["lkca_vs_vit"]:
        L.append("## LKCA (default form) vs matched softmax ViT, same backend and recipe\n")
        L.append("| LKCA | ViT | threads | backend | recipe | LKCA ms | ViT ms | ViT / LKCA |")
        L.append("|---|---|---|---|---|---|---|---|")
        for e in res["lkca_vs_vit"]:
            L.append(f"| {e['lkca']} ({e['lkca_form'] or '–'}) | {e['vit']} | {e['threads']} | "
                     f"{e['backend']} | {e['recipe']} | {_f(e['lkca_ms'])} | {_f(e['vit_ms'])} | "
                     f"{_f(e['vit_over_lkca'], '{:.2f}')} |")
        L.append("")

    # conversion
    L.append("## Conversion time\n")
    L.append("| backend | cells | export s (sum) | failed | from cache |")
    L.append("|---|---|---|---|---|")
    for b, d in res["conversion"]["by_backend"].items():
        L.append(f"| {b} | {d['cells']} | {d['export_s']:.0f} | {d['failed']} | {d['cached']} |")
    L.append(f"\nPer-cell export times are in the tables above (column 'export s'). Total "
             f"{res['conversion']['total_export_s']:.0f} s.\n")

    # rules
    fr = res["form_rules"]
    L.append(f"## Fastest form per (backend, precision), default recipe\n")
    L.append(f"The current rule is kept unless another form is more than {fr['tolerance']:.0%} "
             f"faster by median AND faster in at least 3/4 of the (alternated) rounds.\n")
    L.append("| subject | threads | backend | precision | current rule | fastest | proposed | "
             "rule / fastest | fastest won rounds | medians ms | failing form:recipe |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for e in fr["measured"]:
        med = ", ".join(f"{k}: {v:.3f}" for k, v in sorted(e["medians_ms"].items(), key=lambda kv: kv[1]))
        L.append(f"| {e['subject']} | {e['threads']} | {e['backend']} | {e['precision']} | "
                 f"{e['current']} | {e.get('fastest') or '–'} | {e.get('proposed') or '–'} | "
                 f"{_f(e.get('rule_vs_fastest'), '{:.2f}')} | {e.get('fastest_wins_rounds') or '–'} | "
                 f"{med or e.get('note', '')} | "
                 f"{', '.join(e['failing']) or '–'} |")
    L.append(f"\nProposed `EXPORT_FORM_RULES` (from {TARGET_SUBJECT}, {TARGET_THREADS} thread; "
             f"backends not timed here keep their rule):\n")
    L.append("```python")
    L.append("EXPORT_FORM_RULES = {")
    for k, form in fr["proposed"].items():
        b, p = k.split("/")
        L.append(f'    ("{b}", "{p}"): "{form}",')
    L.append("}")
    L.append("```")
    if fr["differences"]:
        L.append("\nDifferences from the current table:\n")
        for d in fr["differences"]:
            L.append(f"- ({d['backend']}, {d['precision']}): {d['current']} -> **{d['proposed']}** "
                     f"({_f(d['current_ms'])} ms -> {_f(d['proposed_ms'])} ms)")
    else:
        L.append("\nNo differences from the current table.")
    L.append("")

    # profiles
    if res.get("profiles"):
        L.append("## Where the time goes (per-operator self time, 1 thread)\n")
        for vid, p in res["profiles"].items():
            if "error" in p:
                L.append(f"- {vid}: profiler failed ({p['error']})")
                continue
            ops = "; ".join(f"{o['op']} {o['share']:.0%} ({o['ms']:.3f} ms x{o.get('count', '')})"
                            for o in p["ops"][:6])
            L.append(f"- `{vid}` (sum {p['total_ms']:.3f} ms): {ops}")
        L.append("")

    cut = sorted({f"{r['id']} ({n} thr)" for r in rows for n, t in r["threads"].items()
                  if (t or {}).get("slices_cut_by_budget")})
    if cut:
        L.append(f"Slices stopped early by the {s['slice_budget']:g} s budget (fewer samples, "
                 f"median still over every round): {', '.join(cut)}\n")

    # failures
    fails = [r for r in rows if r["status"] in ("failed", "gate-failed", "unavailable")]
    errs = res["timing"]["errors"]
    if fails or errs:
        L.append("## Failures (recorded, not dropped)\n")
        for r in fails:
            L.append(f"- `{r['id']}`: {r['status']}"
                     + (f" at {r.get('stage')}" if r.get("stage") else "") + f": {r['reason']}")
        for k, e in errs.items():
            L.append(f"- `{k}` (timing): {e}")
        L.append("")
    return "\n".join(L)


# ==================================================================================================
# Main
# ==================================================================================================
def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    from lkca_edge.converters import get_backend
    from lkca_edge.bench import versions
    from lkca_edge.hostinfo import host_info as host_facts
    from lkca_edge.errors import UserError
    from lkca_edge.fileio import ensure_dir, write_json, write_text
    from lkca_edge.isolation import run_isolated

    try:
        out = ensure_dir(settings.out)
        host = {**host_facts(), "versions": versions()}
        host["load_before"] = host.get("loadavg")
        under_load = bool(host.get("loadavg")) and host["loadavg"][0] > (os.cpu_count() or 1) + 0.5
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
            from lkca_edge.data import load_dataset

            for s in subjects:  # subjects without any conversion cell (e.g. --backends coreml)
                if s.key not in images:
                    m = build_model(s)
                    s.macs, s.params, s.patch_size = m.macs(), m.num_params(), m.config.patch_size
                    s.fused_macs = count_macs(m.config, "fused")
                    data = load_dataset("digits", m.preprocessing)
                    images[s.key] = np.ascontiguousarray(data.test_x[:IMAGES_CYCLED], np.float32)
            variants = build_variants(subjects, cells, settings.forms)
            vit_of_target = next((s.key for s in subjects if s.family == "vit"
                                  and s.pair == TARGET_SUBJECT), None)
            plan = {"threads": settings.threads, "rounds": settings.rounds,
                    "runs_per_round": settings.runs_per_round, "warmup": settings.warmup,
                    "gemm_sizes": settings.gemm_sizes, "gemm_runs": settings.gemm_runs,
                    "slice_budget": settings.slice_budget,
                    "subjects": [asdict(s) for s in subjects], "images": images,
                    "variants": variants, "profile": settings.profile,
                    "profile_subject": TARGET_SUBJECT, "profile_vit": vit_of_target,
                    "profile_form": "frozen-linear"}
            print(f"timing in a fresh process: {len(variants)} variants x threads "
                  f"{settings.threads} + peak GEMMs", flush=True)
            timed = run_isolated(time_plan, plan, what="the timing process", timeout=None)
        host["load_after"] = [round(x, 2) for x in os.getloadavg()]
        res = analyse(settings, subjects, cells, variants, timed, facts, host)
        res["command"] = " ".join(shlex.quote(a) for a in [".venv/bin/python",
                                                            "benchmarks/operator_forms.py",
                                                            *settings.argv[1:]])
        res["under_load"] = under_load or any(l[0] > (os.cpu_count() or 1) + 0.5
                                              for l in timed["loadavg_per_round"])
        res["cells"] = [asdict(c) for c in cells]
        write_json(out / "operator_forms.json", res)
        md = to_markdown(res)
        write_text(out / "operator_forms.md", md)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(md)
    print(f"\nwrote {out / 'operator_forms.json'} and {out / 'operator_forms.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
