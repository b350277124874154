"""The device-budget rule, in one place: what a profile's verdict and the report's "what to ship"
both apply.

Latency is judged on p90; where a runner prints no p90 (LiteRT's benchmark_model, ExecuTorch's
executor_runner), the stricter p95, else the mean. Memory is the peak resident set; accuracy is
the drop against the fp32 source, in points, from a runnable validation.
"""

from __future__ import annotations

LATENCY_STATS = ("p90", "p95", "mean")  # in order of preference


def latency_for_budget(latency) -> tuple[str, float | None]:
    """(statistic, value) to hold against a latency budget, from a LatencyStats or its dict."""
    if latency is None:
        return LATENCY_STATS[0], None
    get = latency.get if isinstance(latency, dict) else (lambda k: getattr(latency, k, None))
    for stat in LATENCY_STATS:
        value = get(stat)
        if value is not None:
            return stat, float(value)
    return LATENCY_STATS[0], None


def accuracy_drop_points(validation: dict | None) -> float | None:
    """fp32 accuracy minus artifact accuracy, in points, from a runnable (not estimated)
    validation; None where there is none."""
    v = validation or {}
    if not v.get("runnable") or v.get("estimate") or v.get("accuracy") is None \
            or v.get("reference_accuracy") is None:
        return None
    return (v["reference_accuracy"] - v["accuracy"]) * 100.0


def check_budgets(budgets: dict, latency, peak_rss_mb: float | None,
                  accuracy_drop_pts: float | None) -> dict:
    """{memory_ok, latency_ok, accuracy_ok, latency_stat, latency_value}: each None where its
    figure is missing. ``budgets``: ram_budget_mb, latency_budget_ms, accuracy_gate (points)."""
    stat, value = latency_for_budget(latency)
    return {
        "memory_ok": None if peak_rss_mb is None else peak_rss_mb <= budgets["ram_budget_mb"],
        "latency_ok": None if value is None else value <= budgets["latency_budget_ms"],
        "accuracy_ok": (None if accuracy_drop_pts is None
                        else accuracy_drop_pts <= budgets["accuracy_gate"] + 1e-9),
        "latency_stat": stat,
        "latency_value": value,
    }


def make_verdict(device, manifest, latency, peak_rss_mb: float | None,
                 measured_on: str | None) -> dict:
    """A profile's verdict for ``device`` (a DeviceProfile): budgets, backend and precision."""
    drop = accuracy_drop_points(manifest.validation)
    budgets = {"ram_budget_mb": device.ram_budget_mb, "latency_budget_ms": device.latency_budget_ms,
               "accuracy_gate": device.accuracy_gate}
    checked = check_budgets(budgets, latency, peak_rss_mb, drop)
    verdict = {
        "memory_ok": checked["memory_ok"],
        "latency_ok": checked["latency_ok"],
        "accuracy_ok": checked["accuracy_ok"],
        "backend_ok": manifest.backend in device.backends,
        "precision_ok": manifest.precision in device.precisions,
        "measured_on": measured_on,
        "budgets": {"ram_mb": device.ram_budget_mb, "latency_ms": device.latency_budget_ms,
                    "latency_stat": checked["latency_stat"], "accuracy_drop_pts": device.accuracy_gate},
        "accuracy_drop_pts": None if drop is None else round(drop, 3),
    }
    parts = [f"memory/latency verdicts {measured_on}" if measured_on
             else "no memory/latency verdict: nothing was run",
             "accuracy from the manifest's validation" if drop is not None
             else "no accuracy verdict (the manifest has no runnable validation)"]
    if not verdict["backend_ok"]:
        parts.append(f"{manifest.backend} is not a backend of {device.name} "
                     f"(it lists {', '.join(device.backends)})")
    if not verdict["precision_ok"]:
        parts.append(f"{manifest.precision} is not a precision of {device.name}")
    verdict["note"] = "; ".join(parts)
    return verdict
