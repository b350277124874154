"""One bench cell: a (model, backend, precision) exported (and so validated), then profiled.

A cell's own failure is recorded with its step and one line, never raised; a full disk is no
cell's fault and stops the bench.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

from lkca_edge.bench.config import BenchConfig
from lkca_edge.errors import UserError, describe_exception
from lkca_edge.logs import debug_enabled


def delegation_summary(details: dict | None) -> dict | None:
    """Delegation coverage from a manifest's details: ExecuTorch's lowered graph (with the
    partitioner's reasons) or LiteRT's XNNPACK counts; None for backends that delegate nothing."""
    details = details or {}
    xnnpack = details.get("xnnpack")
    if isinstance(xnnpack, dict) and "delegated" in xnnpack:  # LiteRT
        d, n = int(xnnpack.get("delegated_ops") or 0), int(xnnpack.get("builtin_ops") or 0)
        return {"delegated_ops": d, "not_delegated_ops": n,
                "coverage": (d / (d + n)) if d + n else None,
                "subgraphs": {"XNNPACK partitions": xnnpack.get("xnnpack_partitions")},
                "not_delegated": xnnpack.get("builtin") or {}, "reasons": []}
    delegated, rest = details.get("delegated"), details.get("not_delegated")
    if not isinstance(delegated, dict) and not isinstance(rest, dict):
        return None

    def total(d):
        return sum(int(v) for v in (d or {}).values() if isinstance(v, (int, float)))

    d, n = total(delegated), total(rest)
    return {"delegated_ops": d, "not_delegated_ops": n,
            "coverage": (d / (d + n)) if d + n else None,
            "subgraphs": details.get("delegate_subgraphs") or {},
            "not_delegated": rest or {}, "reasons": details.get("not_delegated_reasons") or []}



def new_cell(model: str, backend: str, precision: str) -> dict:
    return {"model": model, "backend": backend, "precision": precision, "recipe": None,
            "form": None, "status": "failed", "failed_step": None, "error": None, "mode": None,
            "note": "", "artifact": None, "metrics": {}, "validation": None, "profile": None,
            "delegation": None, "manifest": None, "per_layer": None}


def run_cell(cfg: BenchConfig, model_name: str, backend_name: str, precision: str, model, data,
             out_dir: Path, step=lambda text: None) -> dict:
    """Convert (export_model validates), then profile; never raises for a cell's own failure."""
    from lkca_edge.bench.config import cell_recipe
    from lkca_edge.converters import get_backend
    from lkca_edge.logs import quiet
    from lkca_edge.pipelines.export import ExportRequest, export_model

    cell = new_cell(model_name, backend_name, precision)
    t_cell = time.perf_counter()
    # -- convert + validate --
    step("converting")
    try:
        backend = get_backend(backend_name)
        recipe = cell_recipe(backend, precision)
        cell["recipe"] = recipe.name
        reason = backend.available()
        if reason:
            raise UserError(reason)
        req = ExportRequest(model=model_name, backend=backend_name, recipe=recipe.name,
                            checkpoint=cfg.checkpoint, calibration=data.record.spec if data.record else None,
                            out=str(out_dir / "artifacts"), validation_limit=cfg.validation_limit,
                            threads=1)
        t0 = time.perf_counter()
        with quiet():  # runtimes log to fd 2 while validating; the progress bar writes elsewhere
            result = export_model(req, model=model, dataset=data)  # exports work on a copy
        export_s = time.perf_counter() - t0
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - one cell's failure never stops the bench
        raise_if_disk_full(exc)
        cell.update(failed_step="convert", error=describe_exception(exc))
        cell["metrics"]["export_s"] = round(time.perf_counter() - t_cell, 2)
        debug_trace()
        return cell

    m = result.manifest
    v = m.validation or {}
    cell.update(recipe=(m.recipe or {}).get("name"), form=m.form, validation=v or None,
                artifact=os.path.relpath(result.artifact, out_dir), manifest=m.to_dict(),
                delegation=delegation_summary(m.details))
    cell["manifest"].pop("validation", None)  # kept once, under "validation"
    acc, ref = v.get("accuracy"), v.get("reference_accuracy")
    cell["metrics"].update(
        conversion_s=m.conversion_seconds, export_s=round(export_s, 2), size_bytes=m.size_bytes,
        params=m.params or None, macs=m.macs or None, accuracy=acc, reference_accuracy=ref,
        top1_agreement=v.get("top1_agreement"), max_abs_err=v.get("max_abs_err"),
        accuracy_estimate=bool(v.get("estimate")) if acc is not None else None,
        accuracy_drop_pts=(None if acc is None or ref is None else round((ref - acc) * 100.0, 4)),
        gate_passed=v.get("passed"),
        delegation_coverage=(cell["delegation"] or {}).get("coverage"),
        float_layers=len((m.details or {}).get("float_layers") or []) if m.precision == "int8" else None)
    notes: list[str] = []

    # -- per-layer numerics (int8 cells): where the artifact drifts from the source --
    if m.precision == "int8" and cfg.per_layer:
        step("per-layer")
        try:
            cell["per_layer"] = cell_layers(result, model, data, cfg.validation_limit)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the cell's other figures stand
            raise_if_disk_full(exc)
            notes.append(f"per-layer comparison failed: {describe_exception(exc)}")
            debug_trace()

    # -- profile --
    step("profiling")
    try:
        from lkca_edge.pipelines.profile import profile_artifact

        t0 = time.perf_counter()
        prof = profile_artifact(result.artifact, device=cfg.device, threads=cfg.threads,
                                         runs=cfg.runs, warmup=cfg.warmup, verify=True,
                                         profiles_dir=cfg.profiles_dir, op_runs=cfg.op_runs,
                                         remote=cfg.remote, remote_command=cfg.remote_command,
                                         ssh_options=cfg.ssh_options)
        profile_s = time.perf_counter() - t0
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        raise_if_disk_full(exc)
        cell.update(failed_step="profile", error=describe_exception(exc), note="; ".join(notes))
        debug_trace()
        return cell

    p = prof.to_dict()
    lat = p.get("latency_ms") or {}
    cell["profile"] = p
    cell["mode"] = p.get("mode") or ("measured" if lat else "static")
    if p.get("note"):
        notes.append(p["note"])
    cell["metrics"].update(
        profile_s=round(profile_s, 2), load_ms=p.get("load_ms"),
        first_inference_ms=p.get("first_inference_ms"), latency_median_ms=lat.get("median"),
        latency_p90_ms=lat.get("p90"), latency_p99_ms=lat.get("p99"), latency_mean_ms=lat.get("mean"),
        latency_min_ms=lat.get("min"), throughput_ips=p.get("throughput_ips"),
        peak_rss_mb=p.get("peak_rss_mb"), rss_growth_mb=p.get("rss_growth_mb"),
        planned_memory_bytes=p.get("planned_memory_bytes"),
        device_memory_mb=(p.get("memory") or {}).get("device_memory_mb"))
    cell["status"] = "ok"
    cell["note"] = "; ".join(dict.fromkeys(n for n in notes if n))
    return cell


def cell_layers(result, model, data, limit: int | None) -> dict:
    """The per-layer table of an exported cell, on its validation images."""
    import copy

    from lkca_edge.converters import get_backend
    from lkca_edge.logs import quiet
    from lkca_edge.pipelines.per_layer import measure_layers

    m = result.manifest
    source = copy.deepcopy(model)
    if m.form:
        source.set_form(m.form)
    x = data.test_x[:limit or len(data.test_x)]
    with quiet():
        layers = measure_layers(get_backend(m.backend), result.artifact, source.eval(), x,
                                precision=m.precision, recipe=(m.recipe or {}).get("name", ""),
                                inputs=source.preprocessing.as_input(x, m.input_kind))
    return layers.to_dict()


def raise_if_disk_full(exc: BaseException) -> None:
    """A full disk is no cell's fault and would fail every cell after it: stop the bench."""
    import errno

    from lkca_edge.errors import DiskFull

    if isinstance(exc, DiskFull):
        raise exc
    seen = set()
    while exc is not None and id(exc) not in seen:  # converters wrap the OSError
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG):
            raise DiskFull(f"no space left while converting ({exc.strerror}); free some space") from None
        exc = exc.__cause__ or exc.__context__


def debug_trace() -> None:
    if debug_enabled():
        traceback.print_exc()
