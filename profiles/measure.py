"""The measuring child process: ``python -m lkca_edge.profiles.measure REQUEST.json RESULT.json``.

It runs in a fresh interpreter so that its peak RSS is its own, it pins itself to the first N
cores before any runtime starts a thread pool, and it imports only numpy, the backend module and
that backend's runtime: never torch unless the runtime itself pulls it in (the executorch 1.5.1
pybindings do; that is reported, not hidden).

Protocol: the parent writes a JSON request (artifact, backend, threads, cpus, runs, warmup,
op_runs, inputs .npy); the child writes one JSON object: the figures, or ``{"error": ...}``.
Exit codes: 0 ok, 2 a user-facing error, 1 an internal error; a native crash kills the process
with a signal, which the parent reports as one line.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time


def _status_kb(key: str) -> int | None:
    """A ``/proc/self/status`` field in kB (VmRSS, VmHWM), None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024.0


def peak_rss_mb() -> tuple[float | None, str]:
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024.0, "VmHWM (/proc/self/status)"
    try:
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None, "unavailable"
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    return (maxrss / (1024.0 * 1024.0) if sys.platform == "darwin" else maxrss / 1024.0), "ru_maxrss"


def pin_cpus(cpus: list[int]) -> list[int] | None:
    """Restrict this process to ``cpus``; returns the set in force (None where unsupported)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    os.sched_setaffinity(0, set(cpus))
    return sorted(os.sched_getaffinity(0))


def _versions(backend, runtime_module: str | None) -> dict:
    from lkca_edge.versions import package_version, tool_versions

    out = tool_versions(("lkca-edge", "numpy"), python=True)
    if runtime_module:
        top = runtime_module.split(".")[0]
        dist = backend.runtime_distributions.get(top, top)
        out[dist] = package_version(dist) or getattr(sys.modules.get(top), "__version__", None)
    return out


HEAVY = ("torch", "tensorflow", "executorch", "onnx", "onnxruntime", "ai_edge_litert",
         "tflite_runtime", "coremltools", "sklearn", "scipy")


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _import_runtime(backend) -> tuple[str | None, float]:
    """Import the runtime the Runner will use; returns (module, milliseconds)."""
    import importlib

    groups = backend.runtime_preload or (tuple(backend.runtime_modules),)
    first, t0 = None, time.perf_counter()
    for group in groups:
        for name in group:
            if _importable(name):
                importlib.import_module(name)
                first = first or name
                break
    return first, (time.perf_counter() - t0) * 1000.0


def heavy_modules() -> list[str]:
    return sorted(m for m in HEAVY if m in sys.modules)


def latency_stats(times_ms) -> dict:
    import numpy as np

    t = np.asarray(times_ms, np.float64)
    return {"min": float(t.min()), "median": float(np.median(t)),
            "p90": float(np.percentile(t, 90)), "p99": float(np.percentile(t, 99)),
            "mean": float(t.mean()), "std": float(t.std()),
            "p95": float(np.percentile(t, 95)), "max": float(t.max())}


def measure(req: dict) -> dict:
    cpus = pin_cpus(req["cpus"]) if req.get("cpus") else None
    threads = int(req["threads"])

    import numpy as np

    from lkca_edge.converters import get_backend
    from lkca_edge.errors import UserError

    backend = get_backend(req["backend"])
    reason = backend.runnable()
    if reason:
        raise UserError(reason)
    runtime_module, import_ms = _import_runtime(backend)

    images = np.load(req["inputs"])
    labels = np.load(req["labels"]) if req.get("labels") else None
    batches = [np.ascontiguousarray(images[i:i + 1]) for i in range(len(images))]  # float or uint8
    runs, warmup = int(req["runs"]), int(req["warmup"])
    gc.collect()

    rss_before = current_rss_mb()
    modules_before = set(heavy_modules())
    t0 = time.perf_counter()
    runner = backend.load(req["artifact"], threads=threads)
    load_ms = (time.perf_counter() - t0) * 1000.0
    imported_during_load = sorted(set(heavy_modules()) - modules_before)

    t0 = time.perf_counter()
    first_out = runner(batches[0])
    first_ms = (time.perf_counter() - t0) * 1000.0
    first_out = np.asarray(first_out)
    expected = req.get("output_shape")
    if expected and list(first_out.shape) != list(expected):
        raise UserError(f"the artifact returned logits of shape {list(first_out.shape)}, its "
                        f"manifest says {list(expected)}")
    if not np.all(np.isfinite(first_out)):
        raise UserError("the artifact returned non-finite logits on a real test image")

    n = len(batches)
    for i in range(warmup):
        runner(batches[(i + 1) % n])
    times = np.empty(runs, np.float64)
    clock = time.perf_counter_ns
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        wall0 = clock()
        for i in range(runs):
            x = batches[i % n]
            t = clock()
            runner(x)
            times[i] = clock() - t
        wall_ms = (clock() - wall0) / 1e6
    finally:
        if gc_was_enabled:
            gc.enable()
    times /= 1e6  # ns -> ms
    measured_modules = heavy_modules()   # the measurement path itself, before the profile hooks
    rss_after = current_rss_mb()
    peak, peak_source = peak_rss_mb()

    # After the figures above: the op profiler may build a second session and allocate.
    planned = runner.planned_memory_bytes()
    planned_label = getattr(runner, "planned_memory_label", None)
    memory_facts, memory_error = {}, None
    try:
        memory_facts = runner.memory_facts() or {}
    except Exception as exc:  # noqa: BLE001 - a static reader failing must not lose the figures
        from lkca_edge.errors import describe_exception

        memory_error = describe_exception(exc)
    sanity = None
    if labels is not None:
        preds = np.asarray(runner.run_many(images)).argmax(1)
        sanity = float((preds == labels).mean())
    ops, ops_error = [], None
    if int(req.get("op_runs", 0)) > 0:
        try:
            dims = tuple(req["dims"]) if req.get("dims") else None
            ops = runner.operator_profile(batches[0], runs=int(req["op_runs"]), dims=dims) or []
        except Exception as exc:  # an op profiler failing must not lose the latency figures
            from lkca_edge.errors import describe_exception

            ops_error = describe_exception(exc)

    return {
        "latency_ms": latency_stats(times),
        "throughput_ips": runs / (wall_ms / 1000.0) if wall_ms > 0 else None,
        "load_ms": load_ms,
        "first_inference_ms": first_ms,
        "runtime_import_ms": import_ms,
        "runtime_module": runtime_module,
        "rss_before_load_mb": rss_before,
        "rss_after_runs_mb": rss_after,
        "rss_growth_mb": (rss_after - rss_before) if rss_before is not None and rss_after is not None else None,
        "peak_rss_mb": peak,
        "peak_rss_source": peak_source,
        "planned_memory_bytes": planned,
        "planned_memory_label": planned_label,
        "memory_facts": memory_facts,
        "memory_facts_error": memory_error,
        "ops": ops,
        "ops_error": ops_error,
        "ops_method": getattr(runner, "ops_method", "") or None,
        "ops_note": getattr(runner, "ops_note", "") or None,
        "sanity_top1": sanity,
        "n_images": n,
        "cpus": cpus,
        "threads": threads,
        "torch_imported": "torch" in measured_modules,
        "heavy_modules": measured_modules,
        "modules_after_hooks": heavy_modules(),
        "imported_during_load": imported_during_load,
        "versions": _versions(backend, runtime_module),
        "pid": os.getpid(),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m lkca_edge.profiles.measure REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    req_path, out_path = argv
    parent = os.environ.get("LKCA_EDGE_PARENT_PID", "")
    if parent.isdigit():  # never outlive the profiling command, even a SIGKILLed one
        from lkca_edge.isolation import die_with_parent

        die_with_parent(int(parent))
    with open(req_path, encoding="utf-8") as fh:
        req = json.load(fh)
    from lkca_edge.errors import UserError, describe_exception

    try:
        result, code = measure(req), 0
    except UserError as exc:
        result, code = {"error": str(exc), "kind": "user"}, 2
    except Exception as exc:  # reported by the parent as one line
        result, code = {"error": describe_exception(exc), "kind": "internal"}, 1
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    os.replace(tmp, out_path)
    return code


if __name__ == "__main__":
    sys.exit(main())
