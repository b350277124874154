"""The device-budget rule, in one place: what a profile's verdict and the report's "what to ship"
both apply.

Latency is judged on p90; where a runner prints no p90 (LiteRT's benchmark_model, ExecuTorch's
executor_runner), the stricter p95, else the mean. Memory is what the device would hold (the
peak resident set of the runtime, or for ExecuTorch run through its Python bindings the model's
own share without libtorch: ``ProfileResult.memory``); accuracy is the drop against the fp32
source, in points, from a runnable validation.

Latency and memory are judged only from measurements on the device itself: a profile for device
D measured on another machine gets ``latency_ok``/``memory_ok`` null and says where it was
measured (``not_on_device``), never true or false.
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


def not_on_device_reason(machine: str, device_name: str, where: str = "host") -> str | None:
    """"measured on host x86_64, not on raspberry-pi-4"; None when the device is the host."""
    if device_name == "host":
        return None
    return f"measured on {where} {machine}, not on {device_name}"


def make_verdict(device, manifest, latency, memory_mb: float | None,
                 measured_on: str | None, not_on_device: str | None = None) -> dict:
    """A profile's verdict for ``device`` (a DeviceProfile): budgets, backend and precision.
    ``memory_mb`` is what the device would hold; ``not_on_device`` (e.g. "measured on host
    x86_64, not on raspberry-pi-4") leaves the latency and memory verdicts null, with that
    reason."""
    drop = accuracy_drop_points(manifest.validation)
    budgets = {"ram_budget_mb": device.ram_budget_mb, "latency_budget_ms": device.latency_budget_ms,
               "accuracy_gate": device.accuracy_gate}
    checked = check_budgets(budgets, None if not_on_device else latency,
                            None if not_on_device else memory_mb, drop)
    verdict = {
        "memory_ok": checked["memory_ok"],
        "latency_ok": checked["latency_ok"],
        "on_device": measured_on is not None and not not_on_device,
        "not_on_device": not_on_device,
        "accuracy_ok": checked["accuracy_ok"],
        "backend_ok": manifest.backend in device.backends,
        "precision_ok": manifest.precision in device.precisions,
        "measured_on": measured_on,
        "budgets": {"ram_mb": device.ram_budget_mb, "latency_ms": device.latency_budget_ms,
                    "latency_stat": checked["latency_stat"], "accuracy_drop_pts": device.accuracy_gate},
        "accuracy_drop_pts": None if drop is None else round(drop, 3),
    }
    if not_on_device:
        first = f"no memory/latency verdict for {device.name}: {not_on_device}"
    elif measured_on:
        first = f"memory/latency verdicts {measured_on}"
    else:
        first = "no memory/latency verdict: nothing was run"
    parts = [first,
             "accuracy from the manifest's validation" if drop is not None
             else "no accuracy verdict (the manifest has no runnable validation)"]
    if not verdict["backend_ok"]:
        parts.append(f"{manifest.backend} is not a backend of {device.name} "
                     f"(it lists {', '.join(device.backends)})")
    if not verdict["precision_ok"]:
        parts.append(f"{manifest.precision} is not a precision of {device.name}")
    verdict["note"] = "; ".join(parts)
    return verdict
