"""Phase 3, verdicts: the issue's performance targets (met / not met / incomplete) and the form
rule table measured here against ``EXPORT_FORM_RULES``."""

from __future__ import annotations

from .settings import RULE_TOLERANCE, TARGET_SUBJECT, TARGET_THREADS, TARGETS


def _label(r) -> str:
    return f"{r['backend']} {r['form'] or 'vit'} {r['recipe']}"


def _best(rows, subject, precision, n, med, family="lkca"):
    cands = [r for r in rows if r["subject"] == subject and r["kind"] == "artifact"
             and r["precision"] == precision and r["status"] in ("ok", "ungated")
             and med(r, n) is not None]
    return min(cands, key=lambda r: med(r, n)) if cands else None


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


def _speedup_checks(add, rows, peak, subj, med, n) -> None:
    base_row = next((r for r in rows if r["id"] == f"{TARGET_SUBJECT}/torch/conv/fp32"), None)
    base = med(base_row, n) if base_row else None
    for precision, goal in (("int8", TARGETS["int8_speedup"]), ("fp32", TARGETS["fp32_speedup"])):
        best = _best(rows, TARGET_SUBJECT, precision, n, med)
        name = f"best {precision} artifact >= {goal:g}x faster than the baseline"
        if best is None or base is None:
            add(name, None, goal, False, f"no validated {precision} artifact was timed")
            continue
        sp = base / med(best, n)
        sp10 = base_row["threads"][str(n)]["p10_ms"] / best["threads"][str(n)]["p10_ms"]
        add(name, sp, goal, sp >= goal,
            f"{_label(best)}: {med(best, n):.3f} ms vs baseline {base:.3f} ms; at p10 {sp10:.1f}x")
    best8 = _best(rows, TARGET_SUBJECT, "int8", n, med)
    pk = peak["best"].get("int8", {}).get(str(n))
    goal = TARGETS["int8_peak_fraction"]
    name = f"best int8 artifact >= {goal:.0%} of the measured int8 GEMM peak"
    if best8 and pk:
        g = best8["threads"][str(n)]["gmacs"]
        pk10 = peak["best_p10"].get("int8", {}).get(str(n))
        g10 = (subj[TARGET_SUBJECT].executed_macs(best8["form"])
               / (best8["threads"][str(n)]["p10_ms"] / 1e3) / 1e9)
        add(name, g / pk["gmacs"], goal, g / pk["gmacs"] >= goal,
            f"{_label(best8)}: {g:.1f} GMAC/s vs {pk['gmacs']:.1f} GMAC/s ({pk['method']}); "
            f"at p10 {g10:.1f} vs {pk10['gmacs']:.1f} GMAC/s = {g10 / pk10['gmacs']:.0%}")
    else:
        add(name, None, goal, False, "no int8 artifact or no int8 peak measured")


def _backend_checks(add, settings, rows, med, n) -> None:
    """Per runnable backend: default int8 vs default fp32, default fp32 vs its own conv form."""
    target_rows = [r for r in rows if r["subject"] == TARGET_SUBJECT and r["kind"] == "artifact"]
    for b in settings.backends:
        brows = [r for r in target_rows if r["backend"] == b]
        if not brows or all(r["status"] in ("convert-only", "unavailable") for r in brows):
            continue  # not runnable here: no timing targets
        d32 = next((r for r in brows if r["precision"] == "fp32" and r["default_recipe"]
                    and r["default_form"]), None)
        d8 = next((r for r in brows if r["precision"] == "int8" and r["default_recipe"]
                   and r["default_form"]), None)
        conv32 = next((r for r in brows if r["precision"] == "fp32" and r["default_recipe"]
                       and r["form"] == "conv"), None)
        goal = TARGETS["int8_over_fp32"]
        add(f"{b}: default int8 export >= {goal:g}x faster than its default fp32 export",
            *_pair(d32, d8, n, med, goal))
        goal = TARGETS["fp32_over_conv"]
        add(f"{b}: default fp32 export >= {goal:g}x faster than its fp32 conv-form export",
            *_pair(conv32, d32, n, med, goal))


def _matrix_check(add, cells, all_backends) -> None:
    """Conversion time of the default matrix: target subject x every backend x fp32/int8."""
    matrix = [c for c in cells if c.subject == TARGET_SUBJECT and c.default_recipe and c.default_form]
    covered = sorted({c.backend for c in matrix})
    total = sum((c.export_s or 0.0) for c in matrix)
    failed = [c.id for c in matrix if c.export_s is None]
    goal = TARGETS["default_matrix_seconds"]
    complete = set(covered) >= set(all_backends) and not failed
    detail = (f"{len(matrix)} cells ({', '.join(covered)}); export_model wall time (convert + "
              f"manifest) {total:.0f} s, convert() alone {sum(c.convert_s or 0 for c in matrix):.0f} s, "
              f"with validation on the test images "
              f"{total + sum(c.validate_s or 0 for c in matrix):.0f} s; per cell: "
              + ", ".join(f"{c.backend}/{c.precision} {c.export_s or 0:.0f} s" for c in matrix)
              + ("; some timings from the cache" if any(c.cached for c in matrix) else "")
              + ("" if complete else f"; INCOMPLETE: needs all of {', '.join(all_backends)}"))
    add(f"default matrix (lkca-1m x {len(all_backends)} backends x fp32/int8) converts in "
        f"<= {goal:.0f} s", total, goal, (total <= goal) if complete else None, detail, kind="<=")


def evaluate_targets(settings, rows, cells, peak, subj, med, all_backends) -> dict:
    n = TARGET_THREADS
    out: dict = {"subject": TARGET_SUBJECT, "threads": n, "checks": []}
    if TARGET_SUBJECT not in subj or n not in settings.threads:
        out["note"] = f"targets need {TARGET_SUBJECT} with {n} thread(s) in the run"
        return out

    def add(name, measured, threshold, met, detail, kind=">="):
        out["checks"].append({"target": name, "measured": measured, "threshold": threshold,
                              "met": met, "detail": detail, "kind": kind})

    _speedup_checks(add, rows, peak, subj, med, n)
    _backend_checks(add, settings, rows, med, n)
    _matrix_check(add, cells, all_backends)
    return out


def _rule_entry(sk, n, b, precision, rows, med, current) -> dict | None:
    """The fastest form of one (subject, threads, backend, precision), default recipe."""
    cand = [r for r in rows if r["subject"] == sk and r["backend"] == b and r["precision"] == precision
            and r["default_recipe"] and r["kind"] == "artifact"]
    if not cand:
        return None
    good = [r for r in cand if r["status"] in ("ok", "ungated") and med(r, n) is not None]
    timed = {r["form"]: med(r, n) for r in good}
    rounds = {r["form"]: r["threads"][str(n)].get("round_medians_ms") or [] for r in good}
    rule = current.get((b, precision))
    # forms that fail any recipe of this precision (not only the default one)
    fragile = sorted({f"{r['form']}:{r['recipe']}" for r in rows
                      if r["subject"] == sk and r["backend"] == b and r["precision"] == precision
                      and r["kind"] == "artifact" and r["status"] in ("failed", "gate-failed")})
    entry = {"subject": sk, "threads": n, "backend": b, "precision": precision,
             "current": rule, "medians_ms": timed, "failing": fragile}
    if not timed:
        entry["fastest"] = entry["proposed"] = None
        entry["note"] = "no form timed (not runnable here or every form failed)"
        return entry
    fastest = min(timed, key=timed.get)
    entry["fastest"] = fastest
    # paired per round (the rounds alternate, so drift is shared): how often the fastest form
    # beat the current rule's form
    ra, rb = rounds.get(fastest, []), rounds.get(rule, [])
    paired = min(len(ra), len(rb))
    wins = sum(x < y for x, y in zip(ra, rb))
    entry["fastest_wins_rounds"] = f"{wins}/{paired}" if fastest != rule else None
    clear = (rule not in timed
             or (timed[rule] > timed[fastest] * (1 + RULE_TOLERANCE) and wins >= 0.75 * paired))
    entry["proposed"] = fastest if clear else rule
    entry["rule_vs_fastest"] = (timed[rule] / timed[fastest]) if rule in timed else None
    return entry


def form_rules(settings, rows, subjects, med, current) -> dict:
    """(backend, precision) -> fastest form (default recipe of that precision), per subject and
    thread count; the proposal comes from the target subject at 1 thread."""
    out = {"tolerance": RULE_TOLERANCE, "measured": [], "proposed": {}, "differences": []}
    for sk in [s.key for s in subjects if s.family == "lkca"]:
        for n in settings.threads:
            for b in settings.backends:
                for precision in ("fp32", "int8"):
                    entry = _rule_entry(sk, n, b, precision, rows, med, current)
                    if entry is not None:
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
