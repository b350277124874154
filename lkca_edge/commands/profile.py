"""Profile an exported artifact for a device profile: cold start, first inference, latency
percentiles over timed runs on real images, peak/growth RSS, runtime-planned memory, size, the
top operators, and budget verdicts. The artifact runs in a child process that loads only its
runtime, pinned to the profile's thread count (capped by this host's cores and labelled
"host-emulated threads" for any profile but `host`). Latency and memory verdicts come only from
the device itself: a profile for another device measured here leaves them null and says so.
--remote ssh://USER@HOST copies the artifact (with its manifest and validation pack) to a board
and runs the board's own lkca-edge there; --remote adb://SERIAL --runner PATH runs LiteRT
benchmark_model or ExecuTorch executor_runner on an Android phone. Core ML on Linux reports
static figures."""

from __future__ import annotations

HELP = "measure an artifact's latency, memory and size for a device profile"


def add_arguments(p) -> None:
    p.add_argument("artifact", help="an exported artifact (its .manifest.json beside it)")
    p.add_argument("--device", default="host", help="device profile (see `lkca-edge devices`; default: host)")
    p.add_argument("--threads", type=int, help="override the profile's thread count")
    p.add_argument("--runs", type=int, default=100, help="timed runs (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up runs before timing (default 10)")
    p.add_argument("--op-runs", type=int, default=10,
                   help="runs for the per-operator profile (0 = skip; default 10)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before giving up (default 600)")
    p.add_argument("--dataset", metavar="SPEC",
                   help="time on this data's test images: digits, cifar10:DIR, cifar100:DIR or "
                        "folder:DIR (default: the artifact's validation pack)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-verify", action="store_true", help="skip the manifest's sha256 check")
    p.add_argument("--profiles-dir", metavar="DIR", action="append",
                   help="also read *.yaml device profiles from DIR (repeatable)")
    from lkca_edge.commands.common import add_remote_arguments

    add_remote_arguments(p)
    p.add_argument("--on-device", action="store_true",
                   help="this machine is the device profile's device (what --remote runs on a "
                        "board): its latency and memory verdicts are real, not null")
    p.add_argument("--adb", action="store_true", help="the same as --remote adb://")
    p.add_argument("--runner", metavar="PATH",
                   help="with adb://: benchmark_model (LiteRT) or executor_runner (ExecuTorch) built for the phone")
    p.add_argument("--serial", help="with --adb: which attached device (default: the only one, or ANDROID_SERIAL)")


def run(args) -> int:
    from lkca_edge.pipelines.profile import profile_artifact

    result = profile_artifact(args.artifact, device=args.device, threads=args.threads,
                              runs=args.runs, warmup=args.warmup, verify=not args.no_verify,
                              profiles_dir=args.profiles_dir, op_runs=args.op_runs,
                              timeout=args.timeout, adb=args.adb, runner=args.runner,
                              serial=args.serial, dataset=args.dataset, remote=args.remote,
                              remote_command=args.remote_command, ssh_options=args.ssh_option,
                              on_device=args.on_device)
    if args.json:
        from lkca_edge.commands.common import print_json

        print_json(result.to_dict())
        return 0
    print_summary(result)
    return 0


def _ms(v) -> str:
    return "n/a" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")


def _ok(v) -> str:
    return {True: "OK", False: "OVER", None: "n/a"}[v]


def print_summary(r) -> None:
    from lkca_edge.commands.common import say

    name = r.artifact.rsplit("/", 1)[-1]
    say(f"{name}: {r.model} {r.backend} {r.recipe} ({r.precision}), device profile {r.device}")
    if r.mode == "static":
        say(f"  {r.note}")
    elif r.mode in ("adb", "ssh"):
        say(f"  {r.verdict.get('measured_on')}, {r.runs} timed runs after {r.warmup} warm-up"
              + (f" on {r.details.get('inputs')}" if r.details.get("inputs") else ""))
    else:
        say(f"  {r.host.get('thread_note')}; cpus {r.details.get('cpus')}; {r.runs} timed runs after "
              f"{r.warmup} warm-up on {r.details.get('inputs')}")
    lat = r.latency_ms
    if lat is not None:
        say(f"  latency ms: median {_ms(lat.median)}  p90 {_ms(lat.p90)}  p99 {_ms(lat.p99)}  "
              f"min {_ms(lat.min)}  mean {_ms(lat.mean)}"
              + (f" ± {_ms(lat.std)}" if lat.std is not None else "")
              + (f"  ({r.throughput_ips:.0f} images/s at batch 1)" if r.throughput_ips else ""))
        say(f"  cold start: load {_ms(r.load_ms)} ms, first inference {_ms(r.first_inference_ms)} ms")
    mem = []
    if r.peak_rss_mb is not None:
        mem.append(f"peak RSS {r.peak_rss_mb:.1f} MB")
    if r.rss_growth_mb is not None:
        mem.append(f"growth {r.rss_growth_mb:+.1f} MB")
    if r.planned_memory_bytes is not None:
        mem.append(f"{r.planned_memory_label or 'planned'} {r.planned_memory_bytes / 1024:.0f} KB")
    m = r.memory or {}
    if m.get("constant_bytes") is not None:
        mem.append(f"constants {m['constant_bytes'] / 1024:.0f} KB")
    if mem:
        say(f"  memory: {', '.join(mem)}")
    if m.get("device_memory_mb") is not None and m.get("device_memory_mb") != r.peak_rss_mb:
        say(f"  memory held against the budget: {m['device_memory_mb']:.1f} MB ({m.get('basis')})")
    size = f"  size: {r.size_bytes / 1024:.0f} KB on disk"
    if r.param_bytes is not None:
        size += f", weights ~{r.param_bytes / 1024:.0f} KB ({r.params:,} params)"
    if r.macs:
        size += f", {r.macs / 1e6:.1f} MMACs"
    say(size)
    if r.ops:
        top = r.ops[:5]
        if top[0].get("ms") is not None:
            say("  top ops: " + ", ".join(
                f"{o['op']} {o['ms']:.3f} ms x{o.get('count')}" + (" [delegated]" if o.get("delegated") else "")
                for o in top))
            layers: dict = {}
            for o in r.ops:
                if o.get("module") and o.get("ms") is not None:
                    layers[o["module"]] = layers.get(o["module"], 0.0) + o["ms"]
            if layers:
                top_layers = sorted(layers.items(), key=lambda kv: -kv[1])[:5]
                say("  top layers: " + ", ".join(f"{k} {v:.3f} ms" for k, v in top_layers))
            if r.details.get("ops_method"):
                say(f"  ops: {r.details['ops_method']}")
            if r.details.get("ops_note"):
                say(f"  ops note: {r.details['ops_note']}")
        else:
            say("  op counts: " + ", ".join(f"{o['op']} x{o.get('count')}" for o in r.ops[:8]))
    elif r.mode == "measured" and r.details.get("op_runs"):
        say(f"  ops: the {r.backend} runner reports no per-operator times")
    v = r.verdict
    b = v.get("budgets", {})
    say(f"  verdict for {r.device}: memory {_ok(v.get('memory_ok'))} (budget {b.get('ram_mb'):g} MB), "
          f"latency {_ok(v.get('latency_ok'))} ({b.get('latency_stat')} vs {b.get('latency_ms'):g} ms), "
          f"accuracy {_ok(v.get('accuracy_ok'))} (drop "
          f"{'n/a' if v.get('accuracy_drop_pts') is None else format(v['accuracy_drop_pts'], '.2f')} "
          f"vs {b.get('accuracy_drop_pts'):g} pt)")
    say(f"  {v.get('note')}")
    notes = [n for n in r.details.get("notes", []) if n != r.host.get("thread_note")]
    if notes and r.mode != "static":
        say(f"  note: {'; '.join(notes)}")
