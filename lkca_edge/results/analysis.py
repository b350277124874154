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


def what_to_ship(results: dict) -> list[dict]:
    """Per device profile: the fastest ok cell (lowest median) that meets its budgets (latency and
    peak memory, by ``lkca_edge.budgets``) and accuracy gate and whose backend and precision it
    supports; else why nothing qualifies."""
    run = results.get("run", {})
    measured_device = run.get("device")
    out = []
    for name, prof in (run.get("device_profiles") or {}).items():
        reasons: dict[str, int] = {}

        def no(why: str) -> None:
            reasons[why] = reasons.get(why, 0) + 1

        fits = []
        for c in results.get("cells", []):
            if c.get("status") != "ok":
                no("failed")
                continue
            if c["backend"] not in prof["backends"]:
                no(f"backend not on {name}")
                continue
            # a variant cell (int8-mixed) runs where its artifact's precision does
            if (c.get("manifest") or {}).get("precision", c["precision"]) not in prof["precisions"]:
                no(f"precision not on {name}")
                continue
            latency = (c.get("profile") or {}).get("latency_ms")
            if latency is None and metric(c, "latency_p90_ms") is not None:
                latency = {"p90": metric(c, "latency_p90_ms")}  # a results file without profiles
            checked = check_budgets(prof, latency, metric(c, "peak_rss_mb"),
                                    accuracy_drop_points(c.get("validation")))
            if checked["latency_value"] is None:
                no("no latency measured here")
                continue
            if (c.get("validation") or {}).get("passed") is False:
                no("validation gate failed")
                continue
            if checked["accuracy_ok"] is None:
                no("no accuracy measured")
                continue
            if not checked["accuracy_ok"]:
                no(f"accuracy drop > {prof['accuracy_gate']:g} pt")
                continue
            if not checked["latency_ok"]:
                no(f"{checked['latency_stat']} > {prof['latency_budget_ms']:g} ms")
                continue
            if checked["memory_ok"] is False:
                no(f"peak memory > {prof['ram_budget_mb']:g} MB")
                continue
            fits.append(c)
        entry = {"device": name, "cell": None, "reason": "", "measured_on_this_device": name == measured_device}
        if fits:
            best = min(fits, key=lambda c: (metric(c, "latency_median_ms") or metric(c, "latency_p90_ms"),
                                            metric(c, "latency_p90_ms")))
            entry["cell"] = list(cell_key(best))
            entry["latency_median_ms"] = metric(best, "latency_median_ms")
            entry["latency_p90_ms"] = metric(best, "latency_p90_ms")
            entry["accuracy"] = metric(best, "accuracy")
            entry["peak_rss_mb"] = metric(best, "peak_rss_mb")
        else:
            entry["reason"] = "; ".join(f"{why} ({n})" for why, n in
                                        sorted(reasons.items(), key=lambda kv: -kv[1])) or "no cells"
        out.append(entry)
    return out


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
        if entry.get("peak_rss_mb") is not None:
            figures.append(f"peak {entry['peak_rss_mb']:.0f} MB")
        where = "" if entry.get("measured_on_this_device") else \
            f" (from this host's measurements under the {measured_device} profile; not measured on {name})"
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
