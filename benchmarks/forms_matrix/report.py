"""Phase 3, markdown: the result JSON as tables, one function per section.

Reads only the result dict (standard library only, no lkca_edge import), so the same tables come
out of a fresh run and of a committed result file (``benchmarks/render_readme.py``)."""

from __future__ import annotations

import time


def _f(x, fmt="{:.3f}", none="–"):
    return none if x is None else fmt.format(x)


def _loads(res: dict) -> list:
    return [l[0] if l else None for l in res["timing"]["loadavg_per_round"]]


def header(res: dict) -> list[str]:
    """Command, host, load, how the timing was done, which weights are trained."""
    s = res["settings"]
    host = res["host"]
    L = [f"Command: `{res['command']}`  ",
         f"Host: {host.get('cpu')}, {host.get('cores')} cores; load average before "
         f"{host.get('load_before')}, per timing round {_loads(res)}"
         + ("  \n**Measured under load** (1-min load above the core count): absolute figures "
            "are pessimistic, ratios less so (all variants alternated)." if res.get("under_load") else "")]
    if s.get("reuse"):
        L.append(f"Conversion and validation records (and conversion times) reused from "
                 f"`{s['reuse']}`; only the timing is from this run.  ")
    L.append(f"Batch 1; {s['rounds']} rounds x {s['runs_per_round']} runs per variant and thread "
             f"count (alternated, {s['warmup']} warm-up runs per slice); medians over all rounds. "
             f"Timing phase {res['timing']['seconds']:.0f} s.  ")
    untrained = [x["key"] for x in res["subjects"] if not x["pretrained"]]
    trained = [x["key"] for x in res["subjects"] if x["pretrained"]]
    L.append(f"Weights: {', '.join(trained) or 'none'} trained (shipped digits weights); "
             f"{', '.join(untrained) or 'none'} **untrained** (random init): gated on numerics "
             f"alone (the library's untrained gate), their accuracy is not meaningful.  ")
    L.append("Speed-up = the paper's conv form in PyTorch eager fp32 (same LKCA model, same thread "
             "count) / the variant's median. GMAC/s = multiply-accumulates the variant executes / "
             "median (form `fused` executes one dim x dim matmul per block fewer than the model's "
             "nominal count; the JSON also has `equivalent_gmacs` = nominal MACs / median). "
             "% peak = GMAC/s / the best measured GEMM rate of the same precision and thread "
             "count.\n")
    return L


def peak_section(res: dict, level: str = "##") -> list[str]:
    threads = res["settings"]["threads"]
    L = [f"{level} Measured peak (GEMMs timed in the same run)\n",
         "Square GEMMs (M = K = N) timed in the same alternation as the models; GMAC/s from the "
         "median (p10 in brackets). The peak of a precision is its best method and size.\n",
         "| method @ size | precision | " + " | ".join(f"{n} thr GMAC/s" for n in threads) + " |",
         "|---|---|" + "---|" * len(threads)]
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
    return L


def targets_section(res: dict, level: str = "##") -> list[str]:
    t = res["targets"]
    L = [f"{level} Targets ({t['subject']}, batch 1, {t['threads']} thread)\n"]
    if t.get("note"):
        L.append(t["note"] + "\n")
    L += ["| target | measured | met |", "|---|---|---|"]
    for c in t["checks"]:
        unit = "s" if c["kind"] == "<=" else ("" if "peak" in c["target"] else "x")
        m = ("–" if c["measured"] is None else
             (f"{c['measured']:.0%}" if "peak" in c["target"] else f"{c['measured']:.2f}{unit}"))
        met = {True: "**met**", False: "**not met**", None: "incomplete"}[c["met"]]
        L.append(f"| {c['target']} | {m} ({c['detail']}) | {met} |")
    L.append("")
    return L


def _accuracy(v: dict) -> str:
    if v.get("accuracy") is None:
        return "–"
    est = "est. " if v.get("estimate") else ""  # Core ML off macOS: an estimate, not a run
    return f"{est}{v['accuracy']:.1%} / {v['top1_agreement']:.0%}"


def subject_sections(res: dict, level: str = "##") -> list[str]:
    """One table per model: every variant's medians, ratios, size and accuracy."""
    threads = res["settings"]["threads"]
    rows = res["rows"]
    L = []
    for subj in res["subjects"]:
        key = subj["key"]
        L.append(f"{level} {key} ({subj['family']}, patch {subj['patch_size']}, {subj['params']:,} params, "
                 f"{subj['macs'] / 1e6:.1f} M MACs, {'trained' if subj['pretrained'] else 'untrained'})\n")
        head = "| backend | form | recipe | status |"
        sep = "|---|---|---|---|"
        for n in threads:
            head += f" {n}t ms | {n}t x base | {n}t GMAC/s | {n}t % peak |"
            sep += "---|---|---|---|"
        L += [head + " export s | KB | acc / agree |", sep + "---|---|---|"]
        srows = sorted((r for r in rows if r["subject"] == key),
                       key=lambda r: (r["kind"] != "torch", r["backend"], r["precision"],
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
            L.append(line + f" {_f(r.get('export_s'), '{:.1f}')} | "
                     f"{_f(r['size_bytes'] / 1024 if r.get('size_bytes') else None, '{:.0f}')} | "
                     f"{_accuracy(r.get('validation') or {})} |")
        L.append("")
    return L


def vit_section(res: dict, level: str = "##") -> list[str]:
    if not res["lkca_vs_vit"]:
        return []
    L = [f"{level} LKCA (default form) vs matched softmax ViT, same backend and recipe\n",
         "| LKCA | ViT | threads | backend | recipe | LKCA ms | ViT ms | ViT / LKCA |",
         "|---|---|---|---|---|---|---|---|"]
    for e in res["lkca_vs_vit"]:
        L.append(f"| {e['lkca']} ({e['lkca_form'] or '–'}) | {e['vit']} | {e['threads']} | "
                 f"{e['backend']} | {e['recipe']} | {_f(e['lkca_ms'])} | {_f(e['vit_ms'])} | "
                 f"{_f(e['vit_over_lkca'], '{:.2f}')} |")
    L.append("")
    return L


def conversion_section(res: dict, level: str = "##") -> list[str]:
    L = [f"{level} Conversion time\n", "| backend | cells | export s (sum) | failed | from cache |",
         "|---|---|---|---|---|"]
    for b, d in res["conversion"]["by_backend"].items():
        L.append(f"| {b} | {d['cells']} | {d['export_s']:.0f} | {d['failed']} | {d['cached']} |")
    L.append(f"\nPer-cell export times are in the tables above (column 'export s'). Total "
             f"{res['conversion']['total_export_s']:.0f} s.\n")
    return L


def rules_section(res: dict, level: str = "##") -> list[str]:
    fr = res["form_rules"]
    t = res["targets"]
    L = [f"{level} Fastest form per (backend, precision), default recipe\n",
         f"The current rule is kept unless another form is more than {fr['tolerance']:.0%} "
         f"faster by median AND faster in at least 3/4 of the (alternated) rounds.\n",
         "| subject | threads | backend | precision | current rule | fastest | proposed | "
         "rule / fastest | fastest won rounds | medians ms | failing form:recipe |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in fr["measured"]:
        med = ", ".join(f"{k}: {v:.3f}" for k, v in sorted(e["medians_ms"].items(), key=lambda kv: kv[1]))
        L.append(f"| {e['subject']} | {e['threads']} | {e['backend']} | {e['precision']} | "
                 f"{e['current']} | {e.get('fastest') or '–'} | {e.get('proposed') or '–'} | "
                 f"{_f(e.get('rule_vs_fastest'), '{:.2f}')} | {e.get('fastest_wins_rounds') or '–'} | "
                 f"{med or e.get('note', '')} | "
                 f"{', '.join(e['failing']) or '–'} |")
    L += [f"\nProposed `EXPORT_FORM_RULES` (from {t['subject']}, {t['threads']} thread; "
          f"backends not timed here keep their rule):\n", "```python", "EXPORT_FORM_RULES = {"]
    for k, form in fr["proposed"].items():
        b, p = k.split("/")
        L.append(f'    ("{b}", "{p}"): "{form}",')
    L += ["}", "```"]
    if fr["differences"]:
        L.append("\nDifferences from the current table:\n")
        for d in fr["differences"]:
            L.append(f"- ({d['backend']}, {d['precision']}): {d['current']} -> **{d['proposed']}** "
                     f"({_f(d['current_ms'])} ms -> {_f(d['proposed_ms'])} ms)")
    else:
        L.append("\nNo differences from the current table.")
    L.append("")
    return L


def profiles_section(res: dict, level: str = "##") -> list[str]:
    if not res.get("profiles"):
        return []
    L = [f"{level} Where the time goes (per-operator self time, 1 thread)\n"]
    for vid, p in res["profiles"].items():
        if "error" in p:
            L.append(f"- {vid}: profiler failed ({p['error']})")
            continue
        ops = "; ".join(f"{o['op']} {o['share']:.0%} ({o['ms']:.3f} ms x{o.get('count', '')})"
                        for o in p["ops"][:6])
        L.append(f"- `{vid}` (sum {p['total_ms']:.3f} ms): {ops}")
    L.append("")
    return L


def budget_note(res: dict) -> list[str]:
    cut = sorted({f"{r['id']} ({n} thr)" for r in res["rows"] for n, t in r["threads"].items()
                  if (t or {}).get("slices_cut_by_budget")})
    if not cut:
        return []
    return [f"Slices stopped early by the {res['settings']['slice_budget']:g} s budget (fewer "
            f"samples, median still over every round): {', '.join(cut)}\n"]


def failures_section(res: dict, level: str = "##") -> list[str]:
    fails = [r for r in res["rows"] if r["status"] in ("failed", "gate-failed", "unavailable")]
    errs = res["timing"]["errors"]
    if not fails and not errs:
        return []
    L = [f"{level} Failures (recorded, not dropped)\n"]
    for r in fails:
        L.append(f"- `{r['id']}`: {r['status']}"
                 + (f" at {r.get('stage')}" if r.get("stage") else "") + f": {r['reason']}")
    for k, e in errs.items():
        L.append(f"- `{k}` (timing): {e}")
    L.append("")
    return L


def to_markdown(res: dict) -> str:
    """The whole report: what the harness writes as ``operator_forms.md`` and prints."""
    stamp = res.get("finished") or time.strftime("%Y-%m-%d %H:%M", time.localtime())
    L = [f"# LKCA operator forms x backends ({stamp})\n"]
    L += header(res)
    L += peak_section(res)
    L += targets_section(res)
    L += subject_sections(res)
    L += vit_section(res)
    L += conversion_section(res)
    L += rules_section(res)
    L += profiles_section(res)
    L += budget_note(res)
    L += failures_section(res)
    return "\n".join(L)
