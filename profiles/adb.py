"""Profile on an Android phone over adb with a runner you built for it.

``lkca-edge profile model.tflite --device pixel-8 --remote adb:// --runner path/to/benchmark_model`` pushes
the artifact and the runner to ``/data/local/tmp/lkca-edge``, runs it with the profile's thread
count, parses its statistics into the same ``ProfileResult`` as a host run, and removes what it
pushed. Runners:

* LiteRT ``benchmark_model`` (tensorflow/lite/tools/benchmark) for .tflite: count/min/max/avg/std
  (and p5/median/p95 in newer builds), init and first-inference time, memory footprint, and an
  op table from a second run with ``--enable_op_profiling``;
* ExecuTorch ``executor_runner`` (examples/portable/executor_runner) for .pte: the mean over
  ``--num_executions`` and the planned buffer sizes (it reports nothing else).

Percentiles a runner does not print are null, never estimated.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from lkca_edge.errors import UserError
from lkca_edge.fileio import temporary_directory

REMOTE_DIR = "/data/local/tmp/lkca-edge"
NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
RUNNERS = {"benchmark_model": "tflite", "executor_runner": "executorch"}


# -- parsers ---------------------------------------------------------------------------------------
def _f(x: str | None) -> float | None:
    return None if x is None else float(x)


def _stat_lines(text: str) -> list[dict]:
    """Every ``count=... first=... avg=...`` statistics line of the benchmark itself, in order.

    Lines of the op profiler's own summaries ("Timings (microseconds):", "Memory (bytes):") are
    skipped: they describe the profiler, not the timed runs.
    """
    stats = []
    for line in text.splitlines():
        if "Timings (microseconds)" in line or "Memory (bytes)" in line:
            continue
        m = re.search(r"(?:^|[\s:\]])count=(\d+)\b(.*)$", line)
        if not m:
            continue
        kv = {k: float(v) for k, v in re.findall(rf"\b(\w+)=({NUM})", m.group(2))}
        kv["count"] = int(m.group(1))
        stats.append(kv)
    return stats


def parse_benchmark_model(text: str) -> dict:
    """Figures from LiteRT/TFLite ``benchmark_model`` output (times converted to ms)."""
    stats = _stat_lines(text)
    summary = re.search(rf"Inference timings in us:\s*Init:\s*({NUM}),\s*First inference:\s*({NUM}),"
                        rf"\s*Warmup \(avg\):\s*({NUM}),\s*Inference \(avg\):\s*({NUM})", text)
    old_summary = re.search(rf"Average inference timings in us:\s*Warmup:\s*({NUM}),\s*Init:\s*({NUM}),"
                            rf"\s*(?:no stats:\s*)?Inference:\s*({NUM})", text)
    if not stats and not summary and not old_summary:
        last = [ln.strip() for ln in text.splitlines() if ln.strip()]
        raise UserError("found no benchmark statistics in benchmark_model's output"
                        + (f"; its last line: {last[-1][:200]}" if last else " (it printed nothing)"))
    run = stats[-1] if stats else {}
    warm = stats[-2] if len(stats) >= 2 else None
    us = 1000.0

    def ms(key: str, src: dict | None = None) -> float | None:
        src = run if src is None else src
        return None if key not in src else src[key] / us

    init_us = first_us = warmup_us = avg_us = None
    if summary:
        init_us, first_us, warmup_us, avg_us = (float(g) for g in summary.groups())
    elif old_summary:
        warmup_us, init_us, avg_us = (float(g) for g in old_summary.groups())
    mean = ms("avg") if "avg" in run else (avg_us / us if avg_us is not None else ms("curr"))
    single = "avg" not in run and "curr" in run   # "count=1 curr=X" / "(all same)"
    latency = {
        "min": ms("curr") if single else ms("min"),
        "median": ms("median") if "median" in run else (ms("curr") if single else None),
        "p90": None, "p99": None,
        "mean": mean,
        "std": 0.0 if single else ms("std"),
        "p95": ms("p95"),
        "max": ms("curr") if single else ms("max"),
    }
    out: dict = {
        "runs": run.get("count"),
        "latency_ms": latency,
        "init_ms": None if init_us is None else init_us / us,
        "first_inference_ms": (None if first_us is None else first_us / us) if summary
        else (ms("first", warm) if warm and "first" in warm else None),
        "warmup_avg_ms": None if warmup_us is None else warmup_us / us,
        "warmup_runs": warm.get("count") if warm else None,
    }
    m = re.search(rf"Overall peak memory footprint \(MB\) via periodic monitoring:\s*({NUM})", text)
    out["peak_memory_mb"] = _f(m.group(1)) if m else None
    m = re.search(rf"(Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\):"
                  rf"\s*init=({NUM})\s+overall=({NUM})", text)
    out["memory_footprint_mb"] = ({"kind": m.group(1), "init": float(m.group(2)),
                                   "overall": float(m.group(3))} if m else None)
    m = re.search(r"#threads used for CPU inference:\s*\[(\d+)\]", text) or \
        re.search(r"Num threads:\s*\[(\d+)\]", text)
    out["threads"] = int(m.group(1)) if m else None
    m = re.search(rf"The input model file size \(MB\):\s*({NUM})", text)
    out["model_size_mb"] = _f(m.group(1)) if m else None
    m = re.search(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]+)\)", text)
    out["delegation"] = ({"delegated_nodes": int(m.group(1)), "total_nodes": int(m.group(2)),
                          "delegate": m.group(3)} if m else None)
    out["ops"] = parse_op_summary(text)
    return out


_ROW_TAB = re.compile(rf"([A-Za-z_][\w/:.\-]*)\s+(\d+)\s+({NUM})\s+({NUM})%\s+({NUM})%\s+({NUM})\s+(\d+)\s*$")
_ROW_CSV = re.compile(rf"([A-Za-z_][\w/:.\- ]*?),\s*(\d+),\s*({NUM}),\s*({NUM})%,\s*({NUM})%,\s*({NUM}),\s*(\d+)\s*$")


def parse_op_summary(text: str) -> list[dict]:
    """The last "Summary by node type" table (the regular runs, after the init one) as ops."""
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if "Summary by node type" in ln]
    if not starts:
        return []
    ops = []
    for line in lines[starts[-1] + 1:]:
        body = line.split("] ", 1)[1] if re.match(r"^\S.*\.cc:\d+\] ", line) else line
        if not body.strip():
            if ops:
                break
            continue
        if "Timings (microseconds)" in body or "=====" in body:
            break
        m = _ROW_CSV.search(body) or _ROW_TAB.search(body)
        if not m:
            continue
        op = m.group(1).strip()
        ops.append({"op": op, "ms": float(m.group(3)), "count": int(m.group(2)),
                    "delegated": "delegate" in op.lower(), "percent": float(m.group(4))})
    return sorted(ops, key=lambda r: -r["ms"])


def parse_executor_runner(text: str) -> dict:
    """Figures from ExecuTorch ``executor_runner``: mean latency and planned buffers."""
    m = re.search(rf"Model executed successfully (\d+) time\(s\) in ({NUM}) ms", text)
    if not m:
        last = [ln.strip() for ln in text.splitlines() if ln.strip()]
        raise UserError("found no timing in executor_runner's output (it needs --num_executions "
                        "support, ExecuTorch 0.4 or later)"
                        + (f"; its last line: {last[-1][:200]}" if last else ""))
    n, total = int(m.group(1)), float(m.group(2))
    buffers = [int(s) for s in re.findall(r"Setting up planned buffer \d+, size (\d+)", text)]
    t = re.search(r"Resetting threadpool with num threads = (\d+)", text)
    return {"runs": n, "total_ms": total,
            "latency_ms": {"min": None, "median": None, "p90": None, "p99": None,
                           "mean": total / max(n, 1), "std": None, "p95": None, "max": None},
            "planned_memory_bytes": sum(buffers) if buffers else None,
            "planned_buffers": buffers, "threads": int(t.group(1)) if t else None}


# -- adb ------------------------------------------------------------------------------------------
def find_adb() -> str:
    adb = shutil.which("adb")
    if adb is None:
        raise UserError("adb not found on PATH: install Android platform-tools "
                        "(https://developer.android.com/tools/releases/platform-tools) or drop --remote adb://")
    return adb


def attached_devices(adb: str) -> list[tuple[str, str]]:
    """(serial, state) pairs from ``adb devices``."""
    try:
        out = subprocess.run([adb, "devices"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"`adb devices` failed: {exc}") from None
    if out.returncode != 0:
        raise UserError(f"`adb devices` failed: {(out.stderr or out.stdout).strip()[:200]}")
    found = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith(("List of devices", "*")):
            found.append((parts[0], parts[1]))
    return found


def pick_device(adb: str, serial: str | None) -> str:
    import os

    serial = serial or os.environ.get("ANDROID_SERIAL")
    devices = attached_devices(adb)
    ready = [s for s, state in devices if state == "device"]
    if serial:
        states = dict(devices)
        if serial not in states:
            raise UserError(f"Android device {serial} is not attached (adb devices lists "
                            f"{', '.join(states) or 'none'})")
        if states[serial] != "device":
            raise UserError(f"Android device {serial} is {states[serial]}; authorize USB debugging on it")
        return serial
    if not ready:
        if devices:
            raise UserError(f"no usable Android device: adb lists {', '.join(f'{s} ({st})' for s, st in devices)}; "
                            f"unlock the phone and accept the USB debugging prompt")
        raise UserError("no Android device attached (adb devices lists none); connect a phone "
                        "with USB debugging enabled")
    if len(ready) > 1:
        raise UserError(f"{len(ready)} Android devices attached ({', '.join(ready)}); choose one "
                        f"with --serial or ANDROID_SERIAL")
    return ready[0]


class Adb:
    def __init__(self, adb: str, serial: str, timeout: float | None):
        self.adb, self.serial, self.timeout = adb, serial, timeout

    def _run(self, args: list[str], what: str, check: bool = True) -> str:
        try:
            out = subprocess.run([self.adb, "-s", self.serial, *args], capture_output=True,
                                 text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"{what} on {self.serial} did not finish within {self.timeout:g} s") from None
        text = (out.stdout or "") + (out.stderr or "")
        if check and out.returncode != 0:
            last = [ln.strip() for ln in text.splitlines() if ln.strip()]
            raise UserError(f"{what} on {self.serial} failed (exit {out.returncode})"
                            + (f": {last[-1][:200]}" if last else ""))
        return text

    def shell(self, command: str, what: str, check: bool = True) -> str:
        return self._run(["shell", command], what, check)

    def push(self, local: Path, remote: str) -> None:
        self._run(["push", str(local), remote], f"adb push {local.name}")

    def prop(self, name: str) -> str | None:
        v = self.shell(f"getprop {name}", f"getprop {name}", check=False).strip()
        return v or None


def runner_kind(runner: Path, backend: str) -> str:
    name = runner.name.lower()
    for key, kind_backend in RUNNERS.items():
        if key in name:
            if kind_backend != backend:
                raise UserError(f"{runner.name} runs {kind_backend} artifacts, this artifact is {backend}")
            return key
    for key, kind_backend in RUNNERS.items():
        if kind_backend == backend:
            return key   # a renamed binary: trust the backend
    raise UserError(f"--adb profiles tflite (LiteRT benchmark_model) and executorch "
                    f"(executor_runner) artifacts; this one is {backend}")


def profile_over_adb(artifact: Path, manifest, profile, runner, threads, runs, warmup, op_runs,
                     serial, timeout, base: dict, timing=None):
    from lkca_edge.budgets import make_verdict
    from lkca_edge.profiles.schema import LatencyStats, ProfileResult

    if profile.os != "android":
        raise UserError(f"--remote adb:// profiles Android phones; {profile.name} is {profile.os} "
                        f"(choose --device pixel-8 or android-low-end)")
    if not runner:
        raise UserError("--remote adb:// needs --runner PATH: LiteRT's benchmark_model or ExecuTorch's "
                        "executor_runner, built for the phone (android_arm64)")
    runner = Path(runner)
    if not runner.is_file():
        raise UserError(f"runner not found: {runner}")
    adb = find_adb()
    serial = pick_device(adb, serial)
    kind = runner_kind(runner, manifest.backend)
    dev = Adb(adb, serial, timeout)

    cores = None
    nproc = dev.shell("nproc", "nproc", check=False).strip()
    if nproc.isdigit():
        cores = int(nproc)
    used = threads if threads is not None else profile.resolve_threads(cores or 4)
    remote_model = f"{REMOTE_DIR}/{artifact.name}"
    remote_runner = f"{REMOTE_DIR}/{kind}"
    dev.shell(f"mkdir -p {REMOTE_DIR}", "mkdir")
    notes = []
    try:
        dev.push(artifact, remote_model)
        dev.push(runner, remote_runner)
        dev.shell(f"chmod 755 {remote_runner}", "chmod")
        if kind == "benchmark_model":
            cmd = (f"{remote_runner} --graph={remote_model} --num_threads={used} --num_runs={runs} "
                   f"--warmup_runs={warmup} --min_secs=0 --warmup_min_secs=0")
            parsed = parse_benchmark_model(dev.shell(cmd, "benchmark_model"))
            if op_runs > 0:
                prof = dev.shell(f"{remote_runner} --graph={remote_model} --num_threads={used} "
                                 f"--num_runs={op_runs} --warmup_runs=1 --min_secs=0 "
                                 f"--warmup_min_secs=0 --enable_op_profiling=true",
                                 "benchmark_model --enable_op_profiling")
                parsed["ops"] = parse_op_summary(prof)
            notes.append("inputs: benchmark_model's own random inputs (latency of this model does not "
                         "depend on pixel values); p90/p99 are not printed by benchmark_model")
        else:
            cmd = (f"{remote_runner} --model_path={remote_model} --num_executions={runs} "
                   f"--cpu_threads={used}")
            input_note = "inputs: executor_runner's default (all ones)"
            if timing is not None and manifest.inputs and manifest.inputs[0].get("dtype") == "float32":
                with temporary_directory("adb") as tmp:
                    import numpy as np

                    x = timing.images
                    raw = Path(tmp) / "input0.bin"
                    raw.write_bytes(np.ascontiguousarray(x[:1], np.float32).tobytes())
                    dev.push(raw, f"{REMOTE_DIR}/input0.bin")
                cmd += f" --inputs={REMOTE_DIR}/input0.bin"
                input_note = f"inputs: one real image (raw float32): {timing.description}"
            parsed = parse_executor_runner(dev.shell(cmd, "executor_runner"))
            parsed.setdefault("ops", [])
            notes.append(f"{input_note}; executor_runner reports only the mean over all "
                         f"{runs} executions (no warm-up, no percentiles)")
        model = dev.prop("ro.product.model")
        soc = dev.prop("ro.soc.model") or dev.prop("ro.board.platform")
        android = dev.prop("ro.build.version.release")
    finally:
        dev.shell(f"rm -rf {REMOTE_DIR}", "cleanup", check=False)

    latency = LatencyStats(**parsed["latency_ms"]) if parsed["latency_ms"].get("mean") is not None else None
    where = f"measured on {model or 'an Android device'} ({serial}) over adb with {kind}"
    mem = parsed.get("memory_footprint_mb") or {}
    peak = parsed.get("peak_memory_mb")
    base = dict(base, threads=parsed.get("threads") or used, runs=parsed.get("runs") or runs)
    base["details"].update(runner=str(runner), runner_kind=kind, command=cmd,
                           delegation=parsed.get("delegation"),
                           memory_footprint_mb=parsed.get("memory_footprint_mb"),
                           warmup_avg_ms=parsed.get("warmup_avg_ms"),
                           planned_buffers=parsed.get("planned_buffers"), notes=notes,
                           peak_rss_source="benchmark_model's own peak memory footprint (the whole tool)"
                           if peak is not None else None)
    return ProfileResult(
        **base, latency_ms=latency,
        throughput_ips=(1000.0 / latency.mean) if latency and latency.mean else None,
        load_ms=parsed.get("init_ms"), first_inference_ms=parsed.get("first_inference_ms"),
        peak_rss_mb=peak, rss_growth_mb=mem.get("overall"),
        planned_memory_bytes=parsed.get("planned_memory_bytes"),
        planned_memory_label="ExecuTorch planned buffers (executor_runner)" if parsed.get("planned_memory_bytes") else None,
        ops=parsed.get("ops") or [], verdict=make_verdict(profile, manifest, latency, peak, where),
        memory={"runtime_rss_mb": peak, "activation_arena_bytes": parsed.get("planned_memory_bytes"),
                "device_memory_mb": peak,
                "basis": ("benchmark_model's own peak memory footprint on the phone (the whole tool)"
                          if peak is not None else f"{kind} reports no resident memory")},
        host={"device": serial, "model": model, "soc": soc, "android": android, "cores": cores,
              "emulated_threads": False, "threads_label": "device"},
        versions={}, note="; ".join(notes), mode="adb")
