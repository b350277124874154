"""What a bench run's figures mean: best cells, the Pareto front, what to ship per device
profile (the budget rule of ``lkca_edge.budgets``) and run-to-run comparison."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lkca_edge.budgets import accuracy_drop_points, check_budgets
from lkca_edge.results.schema import METRICS, cell_key, metric, ok_cells


ESTIMABLE = ("accuracy", "top1_agreement", "accuracy_drop_pts", "max_abs_err")


def is_estimate(cell: dict, name: str) -> bool:
    """True when ``name`` is an off-device estimate (e.g. Core ML on Linux), not a measurement."""
    return name in ESTIMABLE and bool((cell.get("metrics") or {}).get("accuracy_estimate"))


def best_cells(results: dict) -> dict[str, set[tuple[str, str, str]]]:
    """metric -> keys of the best ok cells for it (lowest latency/memory/size, highest accuracy;
    every cell tied for best). Estimates never win, and a metric on which all cells tie marks
    none."""
    best = {}
    for name, (_, _, sense) in METRICS.items():
        have = [(metric(c, name), c) for c in ok_cells(results)
                if metric(c, name) is not None and not is_estimate(c, name)]
        if not have:
            continue
        target = min(v for v, _ in have) if sense == "min" else max(v for v, _ in have)
        keys = {cell_key(c) for v, c in have if math.isclose(v, target, rel_tol=1e-9, abs_tol=1e-12)}
        if len(keys) < len(have) or len(have) == 1:
            best[name] = keys
    return best


def pareto_front(results: dict, x: str = "latency_median_ms", y: str = "accuracy") -> list[tuple]:
    """Keys of the ok cells no other cell beats on both lower ``x`` and higher ``y``."""
    pts = [(metric(c, x), metric(c, y), cell_key(c)) for c in ok_cells(results)]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    front = []
    for px, py, key in pts:
        dominated = any((qx <= px and qy >= py) and (qx < px or qy > py) for qx, qy, _ in pts)
        if not dominated:
            front.append(key)
    return sorted(front, key=lambda k: next(p[0] for p in pts if p[2] == k))


NOT_ON_DEVICE = "not measured on the device"


def measured_on_device(c: dict, name: str) -> tuple[bool, str]:
    """(True, "") when cell ``c``'s latency and memory were measured on device ``name`` itself
    (this host for ``host``, a board over ssh, a phone over adb); else (False, where it was)."""
    prof = c.get("profile") or {}
    verdict = prof.get("verdict") or {}
    device = prof.get("device")
    host = prof.get("host") or {}
    here = f"measured on host {host.get('machine') or 'x86_64'}, not on {name}"
    mode = prof.get("mode") or c.get("mode")
    if "on_device" in verdict:  # results written since the on-device rule
        on_device = bool(verdict["on_device"])
    else:
        on_device = mode in ("adb", "ssh") or (mode == "measured" and device in (None, "host")
                                               and name == "host")
    if device is not None and device != name:
        if on_device and device != "host":
            return False, f"measured on {device} ({host.get('remote') or mode}), not on {name}"
        return False, here
    if not on_device:
        return False, verdict.get("not_on_device") or here
    return True, ""


def _rejection(c: dict, name: str, prof: dict) -> str | None:
    """Why cell ``c`` cannot ship on device profile ``prof``, in words; None when it fits.
    Latency and memory count only where they were measured on that device."""
    if c.get("status") != "ok":
        return f"its {c.get('failed_step') or 'run'} failed ({c.get('error') or 'no reason recorded'})"
    if c["backend"] not in prof["backends"]:
        return f"{name} does not run {c['backend']} (it runs {', '.join(prof['backends'])})"
    # a variant cell (int8-mixed) runs where its artifact's precision does
    precision = (c.get("manifest") or {}).get("precision", c["precision"])
    if precision not in prof["precisions"]:
        return f"{name} does not run {precision} models (it runs {', '.join(prof['precisions'])})"
    validation = c.get("validation") or {}
    latency = (c.get("profile") or {}).get("latency_ms")
    if latency is None and metric(c, "latency_p90_ms") is not None:
        latency = {"p90": metric(c, "latency_p90_ms")}  # a results file without profiles
    memory = metric(c, "device_memory_mb")
    if memory is None:
        memory = metric(c, "peak_rss_mb")
    checked = check_budgets(prof, latency, memory, accuracy_drop_points(validation))
    if validation.get("passed") is False:
        first = (validation.get("failures") or ["no reason recorded"])[0]
        return f"it failed its validation gate ({first})"
    if checked["latency_value"] is None:
        why = (c.get("note") or "").split("; ")[0] or "it was not run"
        return f"no latency was measured ({why})"
    on_device, where = measured_on_device(c, name)
    if not on_device:
        return f"{NOT_ON_DEVICE} ({where})"
    if validation.get("trained") is False:
        return "the model is untrained: its accuracy says nothing, so it is no candidate to ship"
    if checked["accuracy_ok"] is None:
        return ("no accuracy was measured on a runtime (only an off-device estimate)"
                if validation.get("estimate") else "no accuracy was measured on a runtime")
    if not checked["accuracy_ok"]:
        return (f"its accuracy drop of {accuracy_drop_points(validation):.2f} pt exceeds the "
                f"{prof['accuracy_gate']:g} pt gate")
    if not checked["latency_ok"]:
        return (f"its {checked['latency_stat']} latency of {checked['latency_value']:.3g} ms "
                f"exceeds the {prof['latency_budget_ms']:g} ms budget")
    if checked["memory_ok"] is False:
        return (f"its peak memory of {memory:.0f} MB exceeds the "
                f"{prof['ram_budget_mb']:g} MB budget")
    return None


def what_to_ship(results: dict) -> list[dict]:
    """Per device profile: the fastest ok cell (lowest median) that meets its budgets (latency and
    peak memory, by ``lkca_edge.budgets``) and accuracy gate and whose backend and precision it
    supports; else, per cell, why not (``rejected``) and a summary (``reason``)."""
    run = results.get("run", {})
    measured_device = run.get("device")
    out = []
    for name, prof in (run.get("device_profiles") or {}).items():
        fits, rejected = [], []
        for c in results.get("cells", []):
            why = _rejection(c, name, prof)
            if why is None:
                fits.append(c)
            else:
                rejected.append({"cell": list(cell_key(c)), "why": why})
        entry = {"device": name, "cell": None, "reason": "", "rejected": rejected,
                 "measured_on_this_device": name == measured_device}
        if fits:
            best = min(fits, key=lambda c: (metric(c, "latency_median_ms") or metric(c, "latency_p90_ms"),
                                            metric(c, "latency_p90_ms") or 0.0))
            entry["cell"] = list(cell_key(best))
            entry["latency_median_ms"] = metric(best, "latency_median_ms")
            entry["latency_p90_ms"] = metric(best, "latency_p90_ms")
            entry["accuracy"] = metric(best, "accuracy")
            entry["peak_rss_mb"] = metric(best, "peak_rss_mb")
            entry["device_memory_mb"] = metric(best, "device_memory_mb")
            entry["measured_on"] = ((best.get("profile") or {}).get("verdict") or {}).get("measured_on")
        else:
            entry["reason"] = _summary(rejected) or "no cells"
        out.append(entry)
    return out


def _summary(rejected: list[dict]) -> str:
    """One sentence per distinct reason, with the cells it applies to."""
    groups: dict[str, list[str]] = {}
    for r in rejected:
        _, backend, precision = r["cell"]
        groups.setdefault(r["why"], []).append(f"{backend} {precision}")
    return "; ".join(f"{', '.join(cells)}: {why}" for why, cells in groups.items())


def ship_line(entry: dict, measured_device: str | None = None) -> str:
    """One line per device profile: 'pixel-8: ship lkca-1m onnx int8 (p90 0.41 ms, ...)'."""
    name = entry["device"]
    if entry.get("cell"):
        model, backend, precision = entry["cell"]
        figures = [f"median {entry['latency_median_ms']:.3g} ms" if entry.get("latency_median_ms") else "",
                   f"p90 {entry['latency_p90_ms']:.3g} ms"]
        figures = [f for f in figures if f]
        if entry.get("accuracy") is not None:
            figures.append(f"accuracy {entry['accuracy']:.2%}")
        memory = entry.get("device_memory_mb")
        memory = entry.get("peak_rss_mb") if memory is None else memory
        if memory is not None:
            figures.append(f"peak {memory:.0f} MB")
        where = f" ({entry['measured_on']})" if entry.get("measured_on") else ""
        return f"{name}: ship {model} {backend} {precision} — {', '.join(figures)}{where}"
    return f"{name}: nothing qualifies — {entry.get('reason')}"


# -- comparison -------------------------------------------------------------------------------------
@dataclass
class Thresholds:
    latency_pct: float = 10.0     # median latency slower by more than this -> regression
    accuracy_pts: float = 0.5     # accuracy lower by more than this many points -> regression
    memory_pct: float = 10.0      # peak memory higher by more than this -> regression
    size_pct: float = 10.0        # artifact larger by more than this -> regression


@dataclass
class CellChange:
    key: tuple[str, str, str]
    status_a: str | None
    status_b: str | None
    a: dict = field(default_factory=dict)        # metric -> value in run A
    b: dict = field(default_factory=dict)
    regressions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


COMPARED = ("latency_median_ms", "latency_p90_ms", "peak_rss_mb", "size_bytes", "accuracy")


def _pct(a, b):
    if a is None or b is None or a == 0:
        return None
    return (b - a) / a * 100.0


def compare_results(a: dict, b: dict, thresholds: Thresholds | None = None) -> list[CellChange]:
    """Per-cell changes from run ``a`` to run ``b``, with regressions beyond ``thresholds``."""
    t = thresholds or Thresholds()
    cells_a = {cell_key(c): c for c in a.get("cells", [])}
    cells_b = {cell_key(c): c for c in b.get("cells", [])}
    keys = list(cells_a) + [k for k in cells_b if k not in cells_a]
    changes = []
    for key in keys:
        ca, cb = cells_a.get(key), cells_b.get(key)
        ch = CellChange(key, ca and ca.get("status"), cb and cb.get("status"))
        for name in COMPARED:
            ch.a[name] = metric(ca, name) if ca and ca.get("status") == "ok" else None
            ch.b[name] = metric(cb, name) if cb and cb.get("status") == "ok" else None
        if ca is None:
            ch.notes.append("new in B")
        elif cb is None:
            ch.notes.append("not in B")
        elif ch.status_a == "ok" and ch.status_b != "ok":
            ch.regressions.append(f"now fails: {cb.get('error') or 'failed'}")
        elif ch.status_a != "ok" and ch.status_b == "ok":
            ch.notes.append("fixed (failed in A)")
        elif ch.status_a == "ok" and ch.status_b == "ok":
            lat = _pct(ch.a["latency_median_ms"], ch.b["latency_median_ms"])
            if lat is not None and lat > t.latency_pct:
                ch.regressions.append(f"latency +{lat:.0f}% (> {t.latency_pct:g}%)")
            mem = _pct(ch.a["peak_rss_mb"], ch.b["peak_rss_mb"])
            if mem is not None and mem > t.memory_pct:
                ch.regressions.append(f"peak memory +{mem:.0f}% (> {t.memory_pct:g}%)")
            size = _pct(ch.a["size_bytes"], ch.b["size_bytes"])
            if size is not None and size > t.size_pct:
                ch.regressions.append(f"size +{size:.0f}% (> {t.size_pct:g}%)")
            if ch.a["accuracy"] is not None and ch.b["accuracy"] is not None:
                drop = (ch.a["accuracy"] - ch.b["accuracy"]) * 100.0
                if drop > t.accuracy_pts + 1e-9:
                    ch.regressions.append(f"accuracy -{drop:.2f} pt (> {t.accuracy_pts:g} pt)")
            if ch.a["latency_median_ms"] is None and ch.b["latency_median_ms"] is None:
                ch.notes.append("not measured (static)")
        changes.append(ch)
    return changes


def run_differences(a: dict, b: dict) -> list[str]:
    """What differs between the conditions of two runs (host, device profile, threads, data,
    weights, tool versions): figures compared across such runs compare more than the change."""
    ra, rb = a.get("run") or {}, b.get("run") or {}
    out = []

    def host(run):
        h = run.get("host") or {}
        return (h.get("name"), h.get("cpu")) if isinstance(h, dict) else (str(h), None)

    if host(ra) != host(rb):
        out.append(f"host: {' / '.join(str(x) for x in host(ra) if x)} vs "
                   f"{' / '.join(str(x) for x in host(rb) if x)}")
    for key, what in (("device", "device profile"), ("threads", "threads")):
        if ra.get(key) != rb.get(key):
            out.append(f"{what}: {ra.get(key)} vs {rb.get(key)}")

    def per_model(run, key, field=None):
        d = run.get(key) or {}
        return {m: (v.get(field) if field and isinstance(v, dict) else v) for m, v in d.items()}

    for key, field, what in (("data", "spec", "data"), ("weights", None, "weights")):
        da, db = per_model(ra, key, field), per_model(rb, key, field)
        for model in sorted(set(da) & set(db)):
            if da[model] != db[model]:
                out.append(f"{what} of {model}: {da[model]} vs {db[model]}")
    va, vb = ra.get("versions") or {}, rb.get("versions") or {}
    changed = sorted(k for k in set(va) & set(vb) if va[k] != vb[k])
    if changed:
        out.append("tool versions: " + ", ".join(f"{k} {va[k]} vs {vb[k]}" for k in changed))
    return out
