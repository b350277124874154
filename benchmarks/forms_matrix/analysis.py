"""Phase 3, figures: the measured peak, one row per variant (medians, speed-up, GMAC/s, share of
peak), LKCA vs its matched ViT and the conversion summary; the result JSON's body."""

from __future__ import annotations

from dataclasses import asdict

from .plan import Cell, Subject, baseline_id
from .settings import SCHEMA, Settings
from .targets import evaluate_targets, form_rules


def median_ms(row: dict | None, n: int) -> float | None:
    """A row's median latency at ``n`` threads (None when not timed)."""
    if row is None:
        return None
    t = row["threads"].get(str(n)) or {}
    return t.get("median_ms")


def measured_peak(settings: Settings, timed: dict) -> dict:
    """GMAC/s of every GEMM method and size, and the best per precision and thread count."""
    peak: dict = {"sizes": settings.gemm_sizes, "methods": {}, "best": {}, "best_p10": {}}
    for key, t in timed["timings"].items():
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
    return peak


def _validation_summary(c: Cell | None) -> dict | None:
    if c is None or not c.validation:
        return None
    v = c.validation
    return {k: v.get(k) for k in ("accuracy", "reference_accuracy", "top1_agreement", "max_abs_err",
                                  "cosine", "passed", "n_images", "static", "estimate")}


def _thread_figures(v: dict, n: int, timed: dict, peak: dict, subj: dict[str, Subject]) -> dict:
    T = timed["timings"]
    t = T.get(f"{v['id']}|{n}")
    if t is None:
        return {"error": timed["errors"].get(f"{v['id']}|{n}") or "not timed"}
    base = T.get(f"{baseline_id(v['subject'], subj)}|{n}")
    macs = subj[v["subject"]].executed_macs(v["form"])
    gmacs = macs / (t["median_ms"] / 1e3) / 1e9
    pk = peak["best"].get("int8" if v["precision"] == "int8" else "fp32", {}).get(str(n))
    return {**{k: t[k] for k in ("median_ms", "p25_ms", "p75_ms", "p10_ms", "p90_ms", "n",
                                 "cpu_per_wall", "round_medians_ms", "slices_cut_by_budget")},
            "speedup": (base["median_ms"] / t["median_ms"]) if base else None,
            "gmacs": gmacs, "peak_fraction": gmacs / pk["gmacs"] if pk else None,
            "executed_macs": macs,
            "equivalent_gmacs": subj[v["subject"]].macs / (t["median_ms"] / 1e3) / 1e9}


def variant_rows(settings: Settings, subj: dict[str, Subject], cells: list[Cell],
                 variants: list[dict], timed: dict, peak: dict) -> list[dict]:
    """One row per timed variant, then one per cell that was never timed (with its reason)."""
    cell_by_id = {c.id: c for c in cells}
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
               "validation": _validation_summary(c) if c else None,
               "threads": {str(n): _thread_figures(v, n, timed, peak, subj) for n in settings.threads}}
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
    return rows


def lkca_vs_vit(settings: Settings, rows: list[dict], subjects: list[Subject]) -> list[dict]:
    """Per LKCA subject, backend, recipe and thread count: LKCA (default form) vs its ViT."""
    med = median_ms
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


def analyse(settings: Settings, subjects: list[Subject], cells: list[Cell], variants: list[dict],
            timed: dict, facts: dict, host: dict) -> dict:
    """The result JSON (schema ``lkca-edge-operator-forms/1``) without command and cells."""
    from lkca_edge.converters import backend_names
    from lkca_edge.forms import EXPORT_FORM_RULES

    subj = {s.key: s for s in subjects}
    peak = measured_peak(settings, timed)
    rows = variant_rows(settings, subj, cells, variants, timed, peak)
    targets = evaluate_targets(settings, rows, cells, peak, subj, median_ms, backend_names())
    rules = form_rules(settings, rows, subjects, median_ms, EXPORT_FORM_RULES)
    return {"schema": SCHEMA, "host": host, "settings": asdict(settings),
            "subjects": [asdict(s) for s in subjects], "data": facts, "peak": peak,
            "rows": rows, "targets": targets, "form_rules": rules,
            "lkca_vs_vit": lkca_vs_vit(settings, rows, subjects),
            "timing": {"seconds": timed["seconds"], "loadavg_per_round": timed["loadavg_per_round"],
                       "errors": timed["errors"]},
            "profiles": timed.get("profiles", {}),
            "conversion": conversion_summary(cells)}
