"""Measuring an artifact on this host: plan the threads, prepare real input images, start one
child process (``python -m lkca_edge.profiles.measure``) that loads the artifact with only its
runtime, and turn its figures into a ``ProfileResult``. Nothing here imports torch.

A device profile other than ``host`` contributes its thread count (capped by this host's cores),
labelled "host-emulated threads" and never reported as a measurement of that device: its latency
and memory verdicts are null ("measured on host x86_64, not on raspberry-pi-4"). ``on_device``
says this machine is the device (what ``--remote`` asks of a board's lkca-edge).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lkca_edge.budgets import make_verdict, not_on_device_reason
from lkca_edge.errors import UserError
from lkca_edge.fileio import temporary_directory
from lkca_edge.hostinfo import host_info, usable_cpus
from lkca_edge.logs import debug_enabled
from lkca_edge.profiles.schema import MEMORY_FIELDS, LatencyStats, ProfileResult

BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "int8": 1}
DEFAULT_IMAGES = 64


# -- planning ----------------------------------------------------------------------------------------
def plan_threads(device, threads: int | None, cpus: list[int], on_device: bool = False) -> dict:
    """How many threads and which CPUs a run uses, and how to label it honestly."""
    available = len(cpus)
    asked = threads if threads is not None else device.resolve_threads(available)
    if asked < 1:
        raise UserError(f"--threads must be at least 1, got {asked}")
    used = min(asked, available)
    source = "--threads" if threads is not None else f"the {device.name} profile"
    emulated = device.name != "host" and not on_device
    if on_device and device.name != "host":
        label = "device"
        note = (f"{used} thread{'s' if used != 1 else ''} on this {device.name} ({source} asks "
                f"for {asked}" + (f"; capped to its {available} usable cores" if used < asked else "")
                + ")")
    elif emulated:
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


@dataclass
class TimingImages:
    """The real images a profile cycles through, and where they came from."""

    images: object          # (N, C, H, W) float32, preprocessed for the artifact
    labels: object | None   # (N,) model class indices, for a sanity top-1 (None when unknown)
    description: str


def timing_images(artifact: Path, manifest, dataset: str | None = None,
                  n: int = DEFAULT_IMAGES) -> TimingImages:
    """The artifact's validation pack (its own held-out images), or ``dataset``'s test split
    with labels matched to the model's; never a silent stand-in."""
    from lkca_edge.preprocessing import Preprocessing

    prep = Preprocessing.from_dict(manifest.preprocessing)
    if dataset is None and manifest.validation_pack:
        from lkca_edge.validation_pack import read_pack

        pack = read_pack(artifact, manifest.validation_pack)
        k = min(n, len(pack))
        spec = (manifest.data or {}).get("spec") or "the export data"
        return TimingImages(pack.images(prep)[:k], pack.labels[:k],
                            f"{k} real held-out images of {spec} from the artifact's validation "
                            f"pack, cycled through the timed runs")
    from lkca_edge.data import load_for_model, recorded_spec

    spec = recorded_spec(dataset, manifest.data_record(), "--dataset", artifact.name)
    classes = int((manifest.config or {}).get("num_classes") or 0)
    data = load_for_model(spec, prep, prep.labels, classes, manifest.model)
    k = min(n, len(data.test_x))
    return TimingImages(data.test_x[:k], data.test_y[:k],
                        f"{k} real images from the test split of {spec}, preprocessed with the "
                        f"manifest's preprocessing, cycled through the timed runs"
                        + (f" ({data.note})" if data.note else ""))


def save_inputs(manifest, work: Path, timing: TimingImages) -> dict:
    """The images as .npy files for the measuring child, checked against the artifact's input."""
    import numpy as np

    from lkca_edge.preprocessing import Preprocessing

    # what the artifact takes: uint8 RGB pixels for an image input, else the float arrays
    x = Preprocessing.from_dict(manifest.preprocessing).as_input(timing.images, manifest.input_kind)
    shape = (manifest.inputs[0].get("shape") if manifest.inputs else None) or []
    if shape and list(x.shape[1:]) != [int(s) for s in shape[1:]]:
        raise UserError(f"the artifact takes inputs of shape {shape}, but its preprocessing makes "
                        f"{[1, *x.shape[1:]]} images")
    np.save(work / "inputs.npy", x)
    if timing.labels is not None:
        np.save(work / "labels.npy", np.asarray(timing.labels, np.int64))
    return {"inputs": str(work / "inputs.npy"),
            "labels": str(work / "labels.npy") if timing.labels is not None else None,
            "description": timing.description}


def model_dims(manifest) -> list[int] | None:
    """(depth, tokens, dim) of the manifest's model: what a runner needs to charge operators to
    the source layers. None when the config does not say."""
    c = manifest.config or {}
    try:
        return [int(c["depth"]), (int(c["image_size"]) // int(c["patch_size"])) ** 2, int(c["dim"])]
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


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
    """The measuring child's environment: this lkca_edge importable, BLAS pools of ``threads``."""
    import lkca_edge

    env = dict(os.environ)
    root = str(Path(lkca_edge.__file__).resolve().parent.parent)
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
            # Killed at its timeout; it dies with this process too (it asks for that itself:
            # LKCA_EDGE_PARENT_PID, see profiles.measure).
            env = dict(os.environ if env is None else env, LKCA_EDGE_PARENT_PID=str(os.getpid()))
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
    if debug_enabled():
        sys.stderr.write(log.read_text(errors="replace"))
    return result


def memory_figures(backend_name: str, m: dict) -> dict:
    """The labelled memory figures of one measurement (``profiles.schema.MEMORY_FIELDS``) and
    the one the verdict uses: the runtime's own peak RSS, except where the Python runtime
    brought libtorch along (ExecuTorch's pybindings), which no device running the .pte holds:
    there the model's own peak, never below the .pte's constants plus its planned arena."""
    peak, before = m.get("peak_rss_mb"), m.get("rss_before_load_mb")
    facts = m.get("memory_facts") or {}
    model_mb = max(peak - before, 0.0) if peak is not None and before is not None else None
    out = {"runtime_rss_mb": peak, "model_rss_mb": model_mb,
           "activation_arena_bytes": facts.get("activation_arena_bytes"),
           "constant_bytes": facts.get("constant_bytes")}
    if m.get("torch_imported"):
        static = [v for v in (facts.get("activation_arena_bytes"), facts.get("constant_bytes"))
                  if isinstance(v, int)]
        static_mb = sum(static) / (1024.0 * 1024.0) if static else None
        candidates = [v for v in (model_mb, static_mb) if v is not None]
        out["device_memory_mb"] = max(candidates) if candidates else None
        out["basis"] = (f"the {backend_name} Python runtime imported torch, so the process's peak "
                        f"RSS ({'n/a' if peak is None else f'{peak:.1f} MB'}) includes libtorch, "
                        f"which a device running the artifact with its C++ runtime does not hold: "
                        f"the verdict uses the model's own peak"
                        + (" (or, where larger, the constants plus the planned activation arena)"
                           if static_mb is not None else "")
                        + "; the C++ runtime's own code is not counted")
    else:
        out["device_memory_mb"] = peak
        out["basis"] = "the runtime's peak RSS (the whole measuring process)"
    if m.get("memory_facts_error"):
        out["facts_error"] = m["memory_facts_error"]
    out["labels"] = {k: v for k, v in MEMORY_FIELDS.items() if out.get(k) is not None}
    return out


def measure_locally(artifact: Path, manifest, backend, profile, base: dict, *, threads: int | None,
                    runs: int, warmup: int, op_runs: int, timeout: float | None,
                    timing: TimingImages, on_device: bool = False) -> ProfileResult:
    """Time ``artifact`` on this host in a fresh child process; ``base`` holds the fields every
    ProfileResult shares (backend, model, size, ...). ``on_device``: this machine is the
    device profile's device (a board reached with --remote), so its verdicts are real."""
    host = host_info()
    plan = plan_threads(profile, threads, usable_cpus(), on_device)
    host.update(emulated_threads=plan["emulated"], threads_label=plan["label"],
                thread_note=plan["note"])
    with temporary_directory("profile") as tmp:
        work = Path(tmp)
        inputs = save_inputs(manifest, work, timing)
        request = {"artifact": str(artifact.resolve()), "backend": backend.name,
                   "threads": plan["threads"], "cpus": plan["cpus"], "runs": runs, "warmup": warmup,
                   "op_runs": op_runs, "inputs": inputs["inputs"], "labels": inputs["labels"],
                   "dims": model_dims(manifest),
                   "output_shape": (manifest.outputs[0].get("shape") if manifest.outputs else None)}
        (work / "request.json").write_text(json.dumps(request), encoding="utf-8")
        out = work / "result.json"
        m = run_measurement([sys.executable, "-m", "lkca_edge.profiles.measure", str(work / "request.json"),
                             str(out)], out, f"profiling {artifact.name}", timeout=timeout,
                            env=child_env(plan["threads"]), cwd=work)

    latency = LatencyStats(**m["latency_ms"])
    t = plan["threads"]
    not_on_device = None
    if plan["emulated"]:
        measured_on = (f"measured on this host ({host['cpu']}) with {t} host-emulated "
                       f"thread{'s' if t != 1 else ''}, not on a {profile.name}")
        not_on_device = not_on_device_reason(host.get("machine") or "?", profile.name)
    elif on_device and profile.name != "host":
        measured_on = (f"measured on this {profile.name} ({host.get('machine')}, {host['cpu']}, "
                       f"{t} thread{'s' if t != 1 else ''})")
    else:
        measured_on = f"measured on this host ({host['cpu']}, {t} thread{'s' if t != 1 else ''})"
    base = dict(base, threads=plan["threads"], details=dict(base["details"]))
    notes = []
    if plan["emulated"]:
        notes.append(plan["note"])
    memory = memory_figures(backend.name, m)
    if m.get("torch_imported"):
        notes.append(f"the {backend.name} Python runtime imported torch in the measuring process, "
                     f"so peak RSS includes libtorch (an on-device C++ runner would not); the "
                     f"memory verdict uses memory.device_memory_mb")
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
        ops_method=m.get("ops_method"), ops_note=m.get("ops_note"),
        latency_stat_for_budget="p90", notes=notes)
    return ProfileResult(
        **base, latency_ms=latency, throughput_ips=m.get("throughput_ips"), load_ms=m["load_ms"],
        first_inference_ms=m["first_inference_ms"], peak_rss_mb=m.get("peak_rss_mb"),
        rss_growth_mb=m.get("rss_growth_mb"), planned_memory_bytes=m.get("planned_memory_bytes"),
        planned_memory_label=m.get("planned_memory_label") or (
            None if m.get("planned_memory_bytes") is None else f"{backend.name} runtime-planned memory"),
        ops=m.get("ops") or [],
        verdict=make_verdict(profile, manifest, latency, memory["device_memory_mb"], measured_on,
                             not_on_device),
        host=host, versions=m.get("versions", {}), note="; ".join(notes), mode="measured",
        memory=memory)
