"""The ``results.json`` schema of a bench run, its cells' figures and its CSV form.

Standard library only (no torch, no numpy), like the rest of ``lkca_edge.results``.

``results.json`` (schema ``lkca-edge-results/1``)::

    {"schema": "lkca-edge-results/1",
     "run":   {id, time, finished, duration_s, complete, host {name, cpu, cores, usable_cores, os,
               loadavg, ...}, versions {package: version}, command_line, argv, device,
               device_profile {...}, device_profiles {name: budgets, backends, precisions},
               models, backends, precisions, runs, warmup, op_runs, threads, dataset,
               data {model: {spec, labels, labels_note, trained}},
               weights {model: where from}, out_dir, [db_id, db]},
     "cells": [{model, backend, precision, recipe, form, status "ok" | "failed",
                failed_step null | "setup" | "convert" | "profile", error (one line) | null,
                mode "measured" | "static" | "ssh" | "adb", note, artifact (relative path),
                metrics {conversion_s, export_s, profile_s, size_bytes, params, macs, load_ms,
                         first_inference_ms, latency_{median,p90,p99,mean,min}_ms, throughput_ips,
                         peak_rss_mb, rss_growth_mb, planned_memory_bytes,
                         device_memory_mb (what the memory verdict holds), accuracy,
                         reference_accuracy, top1_agreement, accuracy_drop_pts, max_abs_err,
                         accuracy_estimate (true: an off-device estimate, not a run),
                         gate_passed, delegation_coverage},   (null where not measured)
                validation {the manifest's validation}, profile {ProfileResult.to_dict()},
                delegation {delegated_ops, not_delegated_ops, coverage, ...} | null,
                manifest {the artifact's manifest, without validation}}],
     "ship":  [{device, cell [model, backend, precision] | null, reason, ...}]}

A ``static`` cell (the backend cannot run here, e.g. Core ML on Linux) is ``ok`` with its size
and static checks, null latency/memory/accuracy, and ``note`` saying why. A cell measured
anywhere but on the device profile's device has ``profile.verdict.on_device`` false and null
latency/memory verdicts (``profile.verdict.not_on_device`` says where it was measured).
"""

from __future__ import annotations

import math
from pathlib import Path

from lkca_edge.errors import UserError

SCHEMA = "lkca-edge-results/1"

# The figures every cell carries under "metrics" (None where not measured), with how to read them.
METRICS = {
    "latency_median_ms": ("latency median", "ms", "min"),
    "latency_p90_ms": ("latency p90", "ms", "min"),
    "load_ms": ("load", "ms", "min"),
    "peak_rss_mb": ("peak memory", "MB", "min"),
    "size_bytes": ("size", "bytes", "min"),
    "accuracy": ("accuracy", "", "max"),
    "top1_agreement": ("top-1 agreement", "", "max"),
    "conversion_s": ("conversion", "s", "min"),
}
CSV_COLUMNS = (
    "model", "backend", "precision", "recipe", "form", "status", "mode", "failed_step", "error",
    "conversion_s", "export_s", "profile_s", "size_bytes", "params", "macs", "load_ms",
    "first_inference_ms", "latency_median_ms", "latency_p90_ms", "latency_p99_ms",
    "latency_mean_ms", "throughput_ips", "peak_rss_mb", "rss_growth_mb", "planned_memory_bytes",
    "device_memory_mb", "accuracy", "reference_accuracy", "top1_agreement", "accuracy_drop_pts", "max_abs_err",
    "accuracy_estimate", "gate_passed", "memory_ok", "latency_ok", "accuracy_ok", "delegation_coverage", "threads",
    "note", "artifact",
)


# -- cells ------------------------------------------------------------------------------------------
def cell_key(cell: dict) -> tuple[str, str, str]:
    return (cell["model"], cell["backend"], cell["precision"])


def cell_name(cell: dict) -> str:
    return f"{cell['model']} {cell['backend']} {cell['precision']}"


def metric(cell: dict, name: str):
    """A cell's figure, or None (failed cells and unmeasured figures)."""
    value = (cell.get("metrics") or {}).get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def ok_cells(results: dict) -> list[dict]:
    return [c for c in results.get("cells", []) if c.get("status") == "ok"]


# -- results files ---------------------------------------------------------------------------------
# The types of what a results file's readers use (compare, the report, the history).
_OPT_TEXT = str | None
CELL_FIELDS = {"model": str, "backend": str, "precision": str, "status": str, "recipe": _OPT_TEXT,
               "form": _OPT_TEXT, "failed_step": _OPT_TEXT, "error": _OPT_TEXT, "mode": _OPT_TEXT,
               "note": _OPT_TEXT, "artifact": _OPT_TEXT, "metrics": dict | None,
               "validation": dict | None, "profile": dict | None, "delegation": dict | None,
               "manifest": dict | None, "per_layer": dict | None}
# What the report reads from a cell's per-layer table and per-operator times.
_NUM = float | None
# (every field of a layer row and of a delegation reason is required: the report formats each)
LAYER_FIELDS = {"name": str, "sqnr_db": float, "max_abs_err": float, "cosine": float,
                "mean_abs_err": float}
REASON_FIELDS = {"op": str, "count": int, "reason": str}
OP_FIELDS = {"name": _OPT_TEXT, "type": _OPT_TEXT, "module": _OPT_TEXT, "op": _OPT_TEXT,
             "count": _NUM, "total_ms": _NUM, "mean_ms": _NUM, "share": _NUM, "ms": _NUM,
             "delegated": bool | None}
RUN_FIELDS = {"id": _OPT_TEXT, "time": _OPT_TEXT, "finished": _OPT_TEXT, "device": _OPT_TEXT,
              "command_line": _OPT_TEXT, "out_dir": _OPT_TEXT, "complete": bool | None,
              "models": list[str] | None, "backends": list[str] | None,
              "precisions": list[str] | None, "argv": list[str] | None,
              "device_profiles": dict | None, "device_profile": dict | None,
              "host": dict | str | None, "versions": dict | None, "weights": dict | None,
              "db_id": int | None}


def check_results(results, source: str = "results") -> dict:
    """Refuse anything that is not a results object of a known schema version, or whose run or
    cells have fields of the wrong type (one line naming the source and the field)."""
    from lkca_edge.schemas import check_value

    if not isinstance(results, dict):
        raise UserError(f"{source}: not a JSON object")
    if results.get("schema") != SCHEMA:
        raise UserError(f"{source}: unsupported results schema {results.get('schema')!r} "
                        f"(expected {SCHEMA})")
    if not isinstance(results.get("run"), dict) or not isinstance(results.get("cells"), list):
        raise UserError(f"{source}: a results object needs 'run' (object) and 'cells' (list)")
    for key, hint in RUN_FIELDS.items():
        if key in results["run"]:
            check_value(results["run"][key], hint, source, f"run.{key}")
    for i, c in enumerate(results["cells"]):
        if not isinstance(c, dict) or not all(isinstance(c.get(k), str) for k in
                                              ("model", "backend", "precision", "status")):
            raise UserError(f"{source}: cell {i} needs model, backend, precision and status")
        for key, hint in CELL_FIELDS.items():
            if key in c:
                check_value(c[key], hint, source, f"cells[{i}].{key}")
        if isinstance(c.get("profile"), dict) and "latency_ms" in c["profile"]:
            check_value(c["profile"]["latency_ms"], dict[str, float | None] | None, source,
                        f"cells[{i}].profile.latency_ms")
        per_layer = c.get("per_layer") or {}
        _check_rows(per_layer.get("layers"), LAYER_FIELDS, source, f"cells[{i}].per_layer.layers",
                    required=True)
        for key, hint in (("worst", list[str]), ("missing", dict[str, str])):
            if key in per_layer:
                check_value(per_layer[key], hint, source, f"cells[{i}].per_layer.{key}")
        _check_rows((c.get("delegation") or {}).get("reasons"), REASON_FIELDS, source,
                    f"cells[{i}].delegation.reasons", required=True)
        _check_rows(((c.get("profile") or {}).get("ops")), OP_FIELDS, source,
                    f"cells[{i}].profile.ops")
        mixed = ((c.get("manifest") or {}).get("details") or {}).get("mixed_precision")
        if mixed is not None:
            check_value(mixed, dict, source, f"cells[{i}].manifest.details.mixed_precision")
            check_value(mixed.get("float_layers", []), list[str], source,
                        f"cells[{i}].manifest.details.mixed_precision.float_layers")
    return results


def _check_rows(rows, fields: dict, source: str, where: str, required: bool = False) -> None:
    """A list of objects whose keys have the types in ``fields`` (None: nothing to check);
    ``required``: every one of those keys must be there."""
    from lkca_edge.schemas import check_value

    if rows is None:
        return
    check_value(rows, list[dict], source, where)
    for j, row in enumerate(rows):
        for key, hint in fields.items():
            if key in row:
                check_value(row[key], hint, source, f"{where}[{j}].{key}")
            elif required:
                raise UserError(f"{source}: {where}[{j}] has no {key!r}")


def read_results(path: str | Path) -> dict:
    from lkca_edge.safeio import read_json

    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.exists() and not path.is_symlink():
        raise UserError(f"no results file at {path}")
    return check_results(read_json(path, "results file"), str(path))


def csv_rows(results: dict) -> list[dict]:
    rows = []
    for c in results.get("cells", []):
        m = c.get("metrics") or {}
        v = (c.get("profile") or {}).get("verdict") or {}
        row = {k: c.get(k) for k in ("model", "backend", "precision", "recipe", "form", "status",
                                     "mode", "failed_step", "error", "note", "artifact")}
        row.update({k: m.get(k) for k in CSV_COLUMNS if k in m})
        row.update(memory_ok=v.get("memory_ok"), latency_ok=v.get("latency_ok"),
                   accuracy_ok=v.get("accuracy_ok"), threads=(c.get("profile") or {}).get("threads"))
        rows.append({k: row.get(k) for k in CSV_COLUMNS})
    return rows


def to_csv(results: dict) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in csv_rows(results):
        w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()
