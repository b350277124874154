"""Profile an exported artifact for a device profile: ``profile_artifact(path, device=...)``.

The parent (this module) reads and verifies the manifest, prepares real input images, plans the
thread count, and starts one child process (``python -m profiles.measure``) that loads the
artifact with only its runtime and measures it. Nothing here imports torch.

Three paths, one ``ProfileResult``:

* measured: the artifact runs on this host; a device profile other than ``host`` contributes its
  thread count (capped by this host's cores), labelled "host-emulated threads" and never
  reported as a measurement of that device;
* static: this host cannot run the backend (Core ML on Linux): size, weights, op counts and MACs,
  latency fields null, and the backend's own reason as the note;
* adb: an Android phone runs a user-provided runner (``profiles.adb``).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from lkca_edge.errors import UserError
from profiles.schema import LatencyStats, ProfileResult

BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "int8": 1}
DEFAULT_IMAGES = 64
REPO_ROOT = Path(__file__).resolve().parent.parent


# -- this host -------------------------------------------------------------------------------------
def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask), in order."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            info = fh.read()
    except OSError:
        info = ""
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        for line in info.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                value = line.split(":", 1)[1].strip()
                if value:
                    return value
    return platform.processor() or platform.machine() or "unknown CPU"


def host_info() -> dict:
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        load = None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": len(usable_cpus()),
            "os": f"{platform.system()} {platform.release()}", "machine": platform.machine(),
            "python": platform.python_version(), "loadavg": load}


# -- planning ----------------------------------------------------------------------------------------
def plan_threads(device, threads: int | None, cpus: list[int]) -> dict:
    """How many threads and which CPUs a run uses, and how to label it honestly."""
    available = len(cpus)
    asked = threads if threads is not None else device.resolve_threads(available)
    if asked < 1:
        raise UserError(f"--threads must be at least 1, got {asked}")
    used = min(asked, available)
    source = "--threads" if threads is not None else f"the {device.name} profile"
    emulated = device.name != "host"
    if emulated:
        label = "host-emulated threads"
        note = (f"{used} host-emulated thread{'s' if used != 1 else ''} for {device.name} "
                f"({source} asks for {asked}"
                + (f"; capped to this host's {available} usable cores" if used < asked else "")
                + f"); measured on this host, not on a {device.name}")
    else:
        label = "host"
        note = (f"{used} thread{'s' if used != 1 else ''} on this host ({source} asks for {asked}"
                + (f"; capped to {available} usable cores" if used < asked else "") + ")")
    return {"threads": used, "requested": asked, "cpus": cpus[:used], "emulated": emulated,
            "label": label, "note": note, "capped": used < asked}


def prepare_inputs(manifest, work: Path, n: int = DEFAULT_IMAGES) -> dict:
    """Real digits test images, preprocessed with the manifest's preprocessing, saved as .npy."""
    import numpy as np

    from lkca_edge.data import load_digits
    from lkca_edge.preprocessing import Preprocessing

    prep = Preprocessing.from_dict(manifest.preprocessing)
    data = load_digits(prep)
    x, y = data.test_x[:n], data.test_y[:n]
    shape = (manifest.inputs[0].get("shape") if manifest.inputs else None) or []
    if shape and list(x.shape[1:]) != [int(s) for s in shape[1:]]:
        raise UserError(f"the artifact takes inputs of shape {shape}, but its preprocessing makes "
                        f"{[1, *x.shape[1:]]} images")
    np.save(work / "inputs.npy", np.ascontiguousarray(x, np.float32))
    digit_labels = list(prep.labels) == [str(i) for i in range(10)]
    if digit_labels:
        np.save(work / "labels.npy", y)
    return {"inputs": str(work / "inputs.npy"),
            "labels": str(work / "labels.npy") if digit_labels else None,
            "description": f"{len(x)} real images from the digits test split, preprocessed with the "
                           f"manifest's preprocessing, cycled through the timed runs"}


def param_bytes(manifest) -> tuple[int | None, str]:
    per = BYTES_PER_WEIGHT.get(manifest.precision)
    if not manifest.params or per is None:
        return None, "unknown (no parameter count in the manifest)"
    note = f"manifest params {manifest.params:,} x {per} B ({manifest.precision})"
    if manifest.precision == "int8":
        note += "; approximate: norms and biases usually stay float, scales add a little"
    return manifest.params * per, note


# -- the child process -----------------------------------------------------------------------------
def child_env(threads: int) -> dict:
    env = dict(os.environ)
    root = str(REPO_ROOT)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    return env


def _tail(path: Path, limit: int = 300) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:limit] if lines else ""


def run_measurement(argv: list[str], result_path: Path, what: str, timeout: float | None = None,
                    env: dict | None = None, cwd: str | Path | None = None) -> dict:
    """Run a measuring process and return its JSON result; every failure becomes one line."""
    log = Path(result_path).with_suffix(".log")
    with open(log, "wb") as out:
        try:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise UserError(f"{what} did not finish within {timeout:g} s (raise --timeout or "
                            f"lower --runs)") from None
        except OSError as exc:
            raise UserError(f"cannot start the measuring process for {what}: {exc.strerror or exc}") from None
    rc = proc.returncode
    last = _tail(log)
    if rc < 0:
        try:
            sig = signal.Signals(-rc).name
        except ValueError:
            sig = f"signal {-rc}"
        raise UserError(f"the runtime crashed ({sig}) in the measuring process while {what}"
                        + (f"; its last output: {last}" if last else "")
                        + " (rerun with LKCA_EDGE_DEBUG=1 to see its log)")
    result = None
    if Path(result_path).exists():
        try:
            result = json.loads(Path(result_path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            result = None
    if isinstance(result, dict) and "error" in result:
        prefix = "" if result.get("kind") == "user" else "measuring process failed: "
        raise UserError(f"{prefix}{result['error']}")
    if rc != 0 or not isinstance(result, dict):
        raise UserError(f"the measuring process exited with code {rc} while {what}"
                        + (f": {last}" if last else " and wrote no result"))
    if os.environ.get("LKCA_EDGE_DEBUG") == "1":
        sys.stderr.write(log.read_text(errors="replace"))
    return result


# -- verdicts ----------------------------------------------------------------------------------------
def accuracy_drop_points(manifest) -> float | None:
    v = manifest.validation or {}
    if not v.get("runnable") or v.get("accuracy") is None or v.get("reference_accuracy") is None:
        return None
    return (v["reference_accuracy"] - v["accuracy"]) * 100.0


def make_verdict(device, manifest, latency: LatencyStats | None, peak_rss_mb: float | None,
                 measured_on: str | None) -> dict:
    drop = accuracy_drop_points(manifest)
    # p90 against the budget; where a runner prints no p90, the stricter p95, else the mean.
    lat_stat, lat_value = "p90", None
    if latency is not None:
        for stat in ("p90", "p95", "mean"):
            if getattr(latency, stat) is not None:
                lat_stat, lat_value = stat, getattr(latency, stat)
                break
    verdict = {
        "memory_ok": None if peak_rss_mb is None else peak_rss_mb <= device.ram_budget_mb,
        "latency_ok": None if lat_value is None else lat_value <= device.latency_budget_ms,
        "accuracy_ok": None if drop is None else drop <= device.accuracy_gate,
        "backend_ok": manifest.backend in device.backends,
        "precision_ok": manifest.precision in device.precisions,
        "measured_on": measured_on,
        "budgets": {"ram_mb": device.ram_budget_mb, "latency_ms": device.latency_budget_ms,
                    "latency_stat": lat_stat, "accuracy_drop_pts": device.accuracy_gate},
        "accuracy_drop_pts": None if drop is None else round(drop, 3),
    }
    parts = []
    if measured_on:
        parts.append(f"memory/latency verdicts {measured_on}")
    else:
        parts.append("no memory/latency verdict: nothing was run")
    parts.append("accuracy from the manifest's validation" if drop is not None
                 else "no accuracy verdict (the manifest has no runnable validation)")
    if not verdict["backend_ok"]:
        parts.append(f"{manifest.backend} is not a backend of {device.name} "
                     f"(it lists {', '.join(device.backends)})")
    if not verdict["precision_ok"]:
        parts.append(f"{manifest.precision} is not a precision of {device.name}")
    verdict["note"] = "; ".join(parts)
    return verdict


# -- the entry point --------------------------------------------------------------------------------
def _base_result(manifest, artifact: Path, device, threads: int, runs: int, warmup: int,
                 size: int) -> dict:
    pbytes, pnote = param_bytes(manifest)
    return dict(backend=manifest.backend, precision=manifest.precision,
                recipe=(manifest.recipe or {}).get("name", ""), model=manifest.model, form=manifest.form,
                device=device.name, threads=threads, runs=runs, warmup=warmup, size_bytes=size,
                param_bytes=pbytes, artifact=str(artifact), params=manifest.params or None,
                macs=manifest.macs or None, details={"param_bytes_source": pnote,
                                                     "export_tool_versions": {k: v for k, v in (manifest.tool_versions or {}).items() if v}})


def _check_args(runs: int, warmup: int, threads: int | None, op_runs: int) -> None:
    if runs < 1:
        raise UserError(f"--runs must be at least 1, got {runs}")
    if warmup < 0:
        raise UserError(f"--warmup must be 0 or more, got {warmup}")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    if op_runs < 0:
        raise UserError(f"--op-runs must be 0 or more, got {op_runs}")


def profile_artifact(path, device: str = "host", threads: int | None = None, runs: int = 100,
                     warmup: int = 10, verify: bool = True, profiles_dir=None, *, op_runs: int = 10,
                     timeout: float | None = 600.0, adb: bool = False, runner: str | None = None,
                     serial: str | None = None, images: int = DEFAULT_IMAGES) -> ProfileResult:
    """Profile one artifact (with its manifest beside it) for a device profile."""
    from lkca_edge.manifest import open_artifact, size_of
    from profiles.devices import get_profile

    _check_args(runs, warmup, threads, op_runs)
    artifact, manifest, backend = open_artifact(path, verify)
    profile = get_profile(device, profiles_dir)
    size = size_of(artifact)

    if adb:
        from profiles.adb import profile_over_adb

        return profile_over_adb(artifact, manifest, profile, runner=runner, threads=threads,
                                runs=runs, warmup=warmup, op_runs=op_runs, serial=serial,
                                timeout=timeout, base=_base_result(manifest, artifact, profile,
                                                                   threads or 0, runs, warmup, size))
    if runner:
        raise UserError("--runner needs --adb (it is the on-device benchmark binary)")

    host = host_info()
    reason = backend.runnable()
    if reason is not None:
        return _static_result(artifact, manifest, backend, profile, reason, host, runs, warmup, size)

    plan = plan_threads(profile, threads, usable_cpus())
    host.update(emulated_threads=plan["emulated"], threads_label=plan["label"],
                thread_note=plan["note"])
    with tempfile.TemporaryDirectory(prefix="lkca-profile-") as tmp:
        work = Path(tmp)
        inputs = prepare_inputs(manifest, work, images)
        request = {"artifact": str(artifact.resolve()), "backend": backend.name,
                   "threads": plan["threads"], "cpus": plan["cpus"], "runs": runs, "warmup": warmup,
                   "op_runs": op_runs, "inputs": inputs["inputs"], "labels": inputs["labels"],
                   "output_shape": (manifest.outputs[0].get("shape") if manifest.outputs else None)}
        (work / "request.json").write_text(json.dumps(request), encoding="utf-8")
        out = work / "result.json"
        m = run_measurement([sys.executable, "-m", "profiles.measure", str(work / "request.json"),
                             str(out)], out, f"profiling {artifact.name}", timeout=timeout,
                            env=child_env(plan["threads"]), cwd=work)

    latency = LatencyStats(**m["latency_ms"])
    t = plan["threads"]
    if plan["emulated"]:
        measured_on = (f"measured on this host ({host['cpu']}) with {t} host-emulated "
                       f"thread{'s' if t != 1 else ''}, not on a {profile.name}")
    else:
        measured_on = f"measured on this host ({host['cpu']}, {t} thread{'s' if t != 1 else ''})"
    base = _base_result(manifest, artifact, profile, plan["threads"], runs, warmup, size)
    notes = []
    if plan["emulated"]:
        notes.append(plan["note"])
    if m.get("torch_imported"):
        notes.append(f"the {backend.name} Python runtime imported torch in the measuring process, "
                     f"so peak RSS includes libtorch (an on-device C++ runner would not)")
    load = host.get("loadavg")
    if load and load[0] > len(usable_cpus()):
        notes.append(f"this host was busy (1-min load average {load[0]:g} on "
                     f"{len(usable_cpus())} usable cores): tail percentiles include other processes")
    if m.get("ops_error"):
        notes.append(f"operator profile failed: {m['ops_error']}")
    base["details"].update(
        inputs=inputs["description"], cpus=m.get("cpus"), threads_requested=plan["requested"],
        runtime_module=m.get("runtime_module"), runtime_import_ms=m.get("runtime_import_ms"),
        rss_before_load_mb=m.get("rss_before_load_mb"), rss_after_runs_mb=m.get("rss_after_runs_mb"),
        peak_rss_source=f"{m.get('peak_rss_source')}: the whole measuring process (python, numpy, "
                        f"runtime, model)",
        torch_in_child=m.get("torch_imported"), modules_in_child=m.get("heavy_modules"),
        imported_during_load=m.get("imported_during_load"),
        modules_after_profile_hooks=m.get("modules_after_hooks"),
        sanity_top1=m.get("sanity_top1"), n_images=m.get("n_images"), op_runs=op_runs,
        latency_stat_for_budget="p90", notes=notes)
    return ProfileResult(
        **base, latency_ms=latency, throughput_ips=m.get("throughput_ips"), load_ms=m["load_ms"],
        first_inference_ms=m["first_inference_ms"], peak_rss_mb=m.get("peak_rss_mb"),
        rss_growth_mb=m.get("rss_growth_mb"), planned_memory_bytes=m.get("planned_memory_bytes"),
        planned_memory_label=m.get("planned_memory_label") or (
            None if m.get("planned_memory_bytes") is None else f"{backend.name} runtime-planned memory"),
        ops=m.get("ops") or [],
        verdict=make_verdict(profile, manifest, latency, m.get("peak_rss_mb"), measured_on),
        host=host, versions=m.get("versions", {}), note="; ".join(notes), mode="measured")


def _static_result(artifact: Path, manifest, backend, profile, reason: str, host: dict, runs: int,
                   warmup: int, size: int) -> ProfileResult:
    """No run on this host: static facts only, latency null, the backend's reason as the note."""
    static, static_error = {}, None
    try:
        static = backend.inspect(artifact) or {}
    except ImportError as exc:  # inspection may need a converter package a board lacks
        static_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    except UserError:
        raise  # a file its backend cannot read
    except Exception as exc:  # noqa: BLE001 - parsers of untrusted files raise anything
        from lkca_edge.errors import first_line

        raise UserError(f"{artifact} is not a readable {backend.name} artifact ({first_line(exc)})") from None
    op_counts = static.get("op_counts") or (manifest.details or {}).get("op_counts") or {}
    ops = [{"op": op, "count": int(n), "ms": None, "delegated": None}
           for op, n in sorted(op_counts.items(), key=lambda kv: -kv[1])]
    if backend.name == "coreml" and sys.platform != "darwin" and "macos" not in reason.lower():
        note = f"latency needs macOS: {reason}"
    else:
        note = f"not run on this host: {reason}"
    host.update(emulated_threads=False, threads_label=None, thread_note="nothing was run")
    base = _base_result(manifest, artifact, profile, 0, 0, 0, size)
    if isinstance(static.get("weight_bytes"), int) and static["weight_bytes"] > 0:
        base["param_bytes"] = static["weight_bytes"]
        base["details"]["param_bytes_source"] = f"{backend.name} inspect(): stored weight bytes"
    base["details"].update(static={k: v for k, v in static.items() if k != "op_counts"},
                           op_counts_source="backend.inspect" if static.get("op_counts") else "manifest",
                           static_error=static_error)
    return ProfileResult(
        **base, latency_ms=None, throughput_ips=None, load_ms=None, first_inference_ms=None,
        peak_rss_mb=None, rss_growth_mb=None, planned_memory_bytes=None, planned_memory_label=None,
        ops=ops, verdict=make_verdict(profile, manifest, None, None, None), host=host,
        versions={"python": platform.python_version()}, note=note, mode="static")
