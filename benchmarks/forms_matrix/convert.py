"""Phase 1: every cell through the export pipeline, then validated on real test images against the
torch source in the same form, stage by stage (convert, load, run, gate), each failure recorded
with its one-line reason. ``--cache`` and ``--reuse`` keep what did not change."""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .plan import Cell, Subject, build_model
from .settings import IMAGES_CYCLED, SCHEMA, Settings


def _sha_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes() if p.exists() else b"<missing>")
    return h.hexdigest()


def pipeline_sources(backend: str) -> list[Path]:
    """The source files that decide a cell's artifact and its validation figures."""
    import lkca_edge
    import lkca_edge.converters

    lk = Path(lkca_edge.__file__).parent
    conv = Path(lkca_edge.converters.__file__).parent
    return [conv / "base.py", conv / f"{backend}.py", *sorted(conv.glob("_*.py")),
            *(lk / name for name in ("models.py", "models_config.py", "forms.py", "data.py",
                                     "preprocessing.py", "evaluation.py", "gates.py")),
            lk / "pipelines" / "export.py", lk / "pipelines" / "validate.py"]


def cache_key(cell: Cell, subject: Subject, settings: Settings, backend) -> str:
    """Everything that can change the artifact or its validation figures."""
    from lkca_edge.versions import CORE_PACKAGES, tool_versions

    weights = ""
    if subject.pretrained:
        from lkca_edge.zoo import get_spec

        weights = _sha_files([get_spec(subject.name).get_weights(True).path])
    payload = {"cell": cell.id, "sources": _sha_files(pipeline_sources(cell.backend)),
               "weights": weights,
               "versions": tool_versions(CORE_PACKAGES + backend.tool_packages, python=True),
               "calibration": settings.calibration_size, "validation": settings.validation_limit}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


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


def _cached_record(record: Path) -> dict | None:
    """A cache record whose artifact still exists (or that failed), else None."""
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("status") == "failed" or Path(saved.get("artifact") or "").exists():
        return saved
    return None


def _small_details(details: dict | None) -> dict:
    """The manifest details worth keeping in the benchmark record (op counts, delegation)."""
    details = details or {}
    return {k: details[k] for k in ("op_counts", "delegated", "not_delegated", "tool", "opset")
            if k in details}


def _validation_text(cell: Cell) -> str:
    v = cell.validation or {}
    if v.get("accuracy") is None:
        return ""
    return (f"; {'estimated ' if v.get('estimate') else ''}acc {v['accuracy']:.2%} "
            f"(ref {v['reference_accuracy']:.2%}), "
            f"agree {v['top1_agreement']:.1%}, max err {v['max_abs_err']:.2g}")


def _save_record(path: Path, cell: Cell, settings: Settings) -> None:
    if not settings.cache:
        return
    from lkca_edge.fileio import write_json

    d = asdict(cell)
    d["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(path, d)


class _Sources:
    """Per subject, built once: the torch model, its data set and reference logits per form."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.models: dict[str, object] = {}
        self.datasets: dict[str, object] = {}
        self.facts: dict[str, dict] = {}
        self.formed: dict[tuple[str, str | None], object] = {}
        self.references: dict[tuple[str, str | None], np.ndarray] = {}

    def get(self, subj: Subject):
        if subj.key not in self.models:
            from lkca_edge.data import load_dataset

            m = build_model(subj)
            self.models[subj.key] = m
            d = self.datasets[subj.key] = load_dataset("digits", m.preprocessing)
            subj.measure(m)
            self.facts[subj.key] = {
                "dataset": "digits", "test_images": int(len(d.test_x)),
                "calibration_images": int(min(self.settings.calibration_size, len(d.train_x)))}
        return self.models[subj.key], self.datasets[subj.key]

    def source(self, subj: Subject, form: str | None):
        """The torch source in ``form``: the function the cell's artifact was made from."""
        key = (subj.key, form)
        if key not in self.formed:
            model = copy.deepcopy(self.get(subj)[0])
            if form is not None:
                model.set_form(form)
            self.formed[key] = model.eval()
        return self.formed[key]

    def reference(self, subj: Subject, form: str | None, x: np.ndarray) -> np.ndarray:
        from lkca_edge.evaluation import reference_logits

        key = (subj.key, form)
        if key not in self.references:
            self.references[key] = reference_logits(self.source(subj, form), x)
        return self.references[key]

    def images(self) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(d.test_x[:IMAGES_CYCLED], np.float32)
                for k, d in self.datasets.items()}


def _validate_runnable(cell: Cell, trained: bool, backend, artifact, logits_ref, x, y) -> None:
    """Load, run and gate a runnable artifact (an untrained model by the library's untrained
    gate: numerics alone)."""
    import torch

    from lkca_edge.errors import describe_exception
    from lkca_edge.gates import validate_logits
    from lkca_edge.logs import quiet

    try:
        with quiet():
            runner = backend.load(artifact, threads=1)
    except Exception as exc:  # noqa: BLE001 - every failure is a recorded outcome
        cell.status, cell.stage, cell.reason = "failed", "load", describe_exception(exc, 300)
        return
    try:
        with torch.no_grad():
            logits = runner.run_many(x)
    except Exception as exc:  # noqa: BLE001
        cell.status, cell.stage, cell.reason = "failed", "run", describe_exception(exc, 300)
        return
    finally:
        del runner
    v = validate_logits(logits, logits_ref, y, backend.name, cell.precision, trained=trained,
                        data="digits")
    cell.validation = v.to_dict()
    if v.passed:
        cell.status = "ok"
    else:
        cell.status, cell.stage = "gate-failed", "gate"
        cell.reason = f"{cell.precision} gate: {'; '.join(v.failures)}"


def _validate_static(cell: Cell, trained: bool, backend, artifact, model, logits_ref, x, y) -> None:
    """An artifact this OS cannot run: the pipeline's static checks (and estimate, if any)."""
    from lkca_edge.errors import describe_exception
    from lkca_edge.logs import quiet
    from lkca_edge.pipelines.validate import static_validation

    reason = backend.runnable()
    cell.status, cell.reason = "convert-only", reason
    try:
        with quiet():
            v = static_validation(backend, artifact, model, x, y, logits_ref, cell.precision, reason,
                                  trained=trained, data="digits")
    except Exception as exc:  # noqa: BLE001
        cell.validation = {"static": True, "passed": None, "note": describe_exception(exc, 300)}
        return
    cell.validation = {**v.to_dict(), "static": True}
    if v.passed is False:
        cell.status, cell.stage = "gate-failed", "gate"
        cell.reason = f"static check: {'; '.join(v.failures)}"[:254]


def _convert_and_validate(cell: Cell, subj: Subject, sources: _Sources, settings: Settings,
                          out_dir: Path, stem: str, prefix: str) -> bool:
    """One cell through ``export_model``, then validated. False when the conversion failed."""
    from lkca_edge.converters import get_backend
    from lkca_edge.errors import describe_exception
    from lkca_edge.hostinfo import load_average
    from lkca_edge.pipelines.export import ExportRequest, export_model

    model, data = sources.get(subj)
    backend = get_backend(cell.backend)
    cell.load_at_convert = load_average()
    req = ExportRequest(model=subj.name, backend=cell.backend, precision=cell.precision,
                        recipe=cell.recipe, form=cell.form, out=str(out_dir), validate=False,
                        enforce_gate=False, calibration_size=settings.calibration_size, name=stem)
    t0 = time.perf_counter()
    try:
        res = export_model(req, model=model, dataset=data)  # works on a copy of the model
    except Exception as exc:  # noqa: BLE001 - every failure is a recorded outcome
        cell.export_s = round(time.perf_counter() - t0, 2)
        cell.status, cell.stage, cell.reason = "failed", "convert", describe_exception(exc, 300)
        print(f"{prefix}: FAILED to convert after {cell.export_s:.1f} s: {cell.reason}", flush=True)
        return False
    cell.export_s = round(time.perf_counter() - t0, 2)
    cell.convert_s = res.manifest.conversion_seconds
    cell.artifact, cell.size_bytes = str(res.artifact), res.manifest.size_bytes
    cell.details = _small_details(res.manifest.details)

    t1 = time.perf_counter()
    limit = settings.validation_limit or len(data.test_x)
    x, y = data.test_x[:limit], data.test_y[:limit]
    ref = sources.reference(subj, cell.form, x)
    trained = bool(getattr(model, "trained", subj.trained))
    if backend.runnable() is None:
        _validate_runnable(cell, trained, backend, res.artifact, ref, x, y)
    else:
        _validate_static(cell, trained, backend, res.artifact, sources.source(subj, cell.form),
                         ref, x, y)
    cell.validate_s = round(time.perf_counter() - t1, 2)
    print(f"{prefix}: {cell.status} convert {cell.convert_s:.1f} s, export {cell.export_s:.1f} s"
          + _validation_text(cell) + (f" - {cell.reason}" if cell.reason and cell.status != "ok"
                                      else ""), flush=True)
    return True


def run_conversions(cells: list[Cell], subjects: list[Subject], settings: Settings,
                    work: Path) -> tuple[dict, dict]:
    """Convert and validate every cell; fills the cells in place.

    Returns per-subject data facts and the first test images of each subject (for timing)."""
    from lkca_edge.converters import get_backend
    from lkca_edge.fileio import ensure_dir

    by_subject = {s.key: s for s in subjects}
    sources = _Sources(settings)
    root = Path(settings.cache) if settings.cache else work / "artifacts"
    reused = load_reused(settings)
    t_all = time.perf_counter()
    for i, cell in enumerate(cells, 1):
        subj = by_subject[cell.subject]
        sources.get(subj)
        backend = get_backend(cell.backend)
        prefix = f"[{i}/{len(cells)}] {cell.id}"
        reason = backend.available()
        if reason:
            cell.status, cell.stage, cell.reason = "unavailable", "convert", reason
            print(f"{prefix}: unavailable ({reason})", flush=True)
            continue

        old = reused.get(cell.id)
        if old is not None:
            cell.restore(old)
            print(f"{prefix}: reused from {settings.reuse}: {cell.status}"
                  + (f" ({cell.reason})" if cell.reason else ""), flush=True)
            continue

        key = cache_key(cell, subj, settings, backend)
        out_dir = ensure_dir(root / subj.key / cell.backend)
        stem = f"{subj.name}-{subj.image_size}_{cell.form or 'vit'}_{cell.recipe}.{key}"
        record = out_dir / f"{stem}.cell.json"
        saved = _cached_record(record) if settings.cache and record.exists() else None
        if saved is not None:
            cell.restore(saved)
            print(f"{prefix}: cached {cell.status}" + (f" ({cell.reason})" if cell.reason else ""),
                  flush=True)
            continue

        _convert_and_validate(cell, subj, sources, settings, out_dir, stem, prefix)
        _save_record(record, cell, settings)
    print(f"conversion phase: {time.perf_counter() - t_all:.0f} s for {len(cells)} cells", flush=True)
    return sources.facts, sources.images()
