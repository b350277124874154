"""``lkca-edge profile``: one artifact for a device profile, on this host, on a board over SSH, on
a phone over adb, or statically where this host cannot run its backend (Core ML on Linux). One
``ProfileResult``. Where it runs: ``remote`` (``ssh://USER@HOST[:PORT]``, ``adb://SERIAL``,
``local``), else the device profile's ``remote:``, else this host."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from lkca_edge.budgets import make_verdict
from lkca_edge.errors import UserError, describe_exception, first_line
from lkca_edge.hostinfo import host_info
from lkca_edge.profiles.local import DEFAULT_IMAGES, measure_locally, param_bytes, timing_images
from lkca_edge.profiles.schema import ProfileResult


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
                     serial: str | None = None, images: int = DEFAULT_IMAGES,
                     dataset: str | None = None, remote: str | None = None,
                     remote_command: str | None = None, ssh_options=(),
                     on_device: bool = False) -> ProfileResult:
    """Profile one artifact (with its manifest beside it) for a device profile, timing it on
    ``images`` real images: its validation pack's, or ``dataset``'s test split. ``remote``
    measures on the device itself (``profiles.remote``); ``on_device`` says this machine is the
    profile's device, so a profile for it gets real verdicts rather than null ones."""
    from lkca_edge.manifest import size_of
    from lkca_edge.pipelines.artifacts import open_artifact
    from lkca_edge.profiles.devices import get_profile
    from lkca_edge.profiles.remote import AdbTarget, SshTarget, parse_remote

    _check_args(runs, warmup, threads, op_runs)
    target = parse_remote(remote) if remote is not None else None
    artifact, manifest, backend = open_artifact(path, verify)
    profile = get_profile(device, profiles_dir)
    if remote is None and profile.remote:
        target = parse_remote(profile.remote)
        remote_command = remote_command or profile.remote_command
    size = size_of(artifact)

    if isinstance(target, AdbTarget):
        adb, serial = True, serial or target.serial
    if isinstance(target, SshTarget):
        if runner or adb:
            raise UserError("--runner and --adb are for adb:// phones; an ssh:// board runs its "
                            "own lkca-edge")
        if dataset is not None:
            raise UserError("--dataset times on this machine's data; on a board the timing uses "
                            "the artifact's validation pack (drop --dataset)")
        from lkca_edge.profiles.remote import profile_over_ssh

        return profile_over_ssh(target, artifact, manifest, backend, profile,
                                command=remote_command, options=ssh_options, threads=threads,
                                runs=runs, warmup=warmup, op_runs=op_runs, timeout=timeout,
                                verify=verify)
    if remote_command:
        raise UserError("--remote-command names the lkca-edge on an ssh:// board; it needs "
                        "--remote ssh://USER@HOST")

    if adb:
        from lkca_edge.profiles.adb import profile_over_adb

        return profile_over_adb(artifact, manifest, profile, runner=runner, threads=threads,
                                runs=runs, warmup=warmup, op_runs=op_runs, serial=serial,
                                timeout=timeout, base=_base_result(manifest, artifact, profile,
                                                                   threads or 0, runs, warmup, size),
                                timing=timing_images(artifact, manifest, dataset, 1))
    if runner:
        raise UserError("--runner needs --remote adb://SERIAL (it is the on-device benchmark binary)")

    reason = backend.runnable()
    if reason is not None:
        return _static_result(artifact, manifest, backend, profile, reason, host_info(), runs,
                              warmup, size)
    timing = timing_images(artifact, manifest, dataset, images)
    return measure_locally(artifact, manifest, backend, profile,
                           _base_result(manifest, artifact, profile, 0, runs, warmup, size),
                           threads=threads, runs=runs, warmup=warmup, op_runs=op_runs,
                           timeout=timeout, timing=timing, on_device=on_device)


def _static_result(artifact: Path, manifest, backend, profile, reason: str, host: dict, runs: int,
                   warmup: int, size: int) -> ProfileResult:
    """No run on this host: static facts only, latency null, the backend's reason as the note."""
    static, static_error = {}, None
    try:
        static = backend.inspect(artifact) or {}
    except ImportError as exc:  # inspection may need a converter package a board lacks
        static_error = describe_exception(exc)
    except UserError:
        raise  # a file its backend cannot read
    except Exception as exc:  # noqa: BLE001 - parsers of untrusted files raise anything
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
