"""Facts about the machine lkca-edge runs on: CPU, cores, OS, load (standard library only)."""

from __future__ import annotations

import os
import platform
import socket


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask), in order."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cap_threads(threads: int) -> int:
    """A thread count no larger than the CPUs this process may use (more only oversubscribe)."""
    return max(1, min(int(threads), len(usable_cpus())))


def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo; platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            info = fh.read(1 << 20)
    except OSError:
        info = ""
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        for line in info.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                value = line.split(":", 1)[1].strip()
                if value:
                    return value
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def host_info() -> dict:
    """{name, cpu, cores, usable_cores, os, machine, python, loadavg} of this machine."""
    return {"name": socket.gethostname(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "usable_cores": len(usable_cpus()), "os": f"{platform.system()} {platform.release()}",
            "machine": platform.machine(), "python": platform.python_version(),
            "loadavg": load_average()}
