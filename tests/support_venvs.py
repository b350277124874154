"""Throw-away virtual environments for readers this project does not write and cannot install
beside its own pins (tflite-support 0.4.4 needs numpy<2 and protobuf<4).

Built from nothing on first use (CI builds them on its fresh machine), kept under
``.lkca-edge-cache/venvs/`` between runs, rebuilt when their requirements change.
"""

from __future__ import annotations

import ctypes.util
import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".lkca-edge-cache" / "venvs"

# tflite-support's native metadata module links libusb-1.0 (Debian: libusb-1.0-0).
TFLITE_SUPPORT = ("numpy<2", "tflite-support==0.4.4")
TFLITE_SUPPORT_LIBS = {"usb-1.0": "libusb-1.0-0"}


def support_venv(name: str, requirements: tuple[str, ...], libraries: dict | None = None,
                 timeout: float = 900) -> Path:
    """The python of venv ``name`` with ``requirements`` installed (built once, then reused)."""
    _system_libraries(libraries or {})
    CACHE.mkdir(parents=True, exist_ok=True)
    venv = CACHE / name
    python = venv / "bin" / "python"
    stamp = venv / ".requirements"
    wanted = "\n".join(requirements) + "\n"
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test processes build it once
        if python.exists() and stamp.exists() and stamp.read_text() == wanted:
            return python
        shutil.rmtree(venv, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=timeout)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *requirements],
                       check=True, timeout=timeout, env=env)
        stamp.write_text(wanted)
    return python


def _system_libraries(libraries: dict) -> None:
    """Install missing shared libraries with apt-get where we can (root, as CI is)."""
    missing = [pkg for lib, pkg in libraries.items() if ctypes.util.find_library(lib) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"this reader needs the system package(s) {', '.join(missing)} "
                           f"(apt-get install {' '.join(missing)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, timeout=600)


def run_python(python: Path, code: str, *args: str, timeout: float = 300) -> str:
    """Run ``code`` in that venv's python (no access to this project's packages); its stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd="/")
    if proc.returncode != 0:
        raise AssertionError(f"the reader failed:\n{proc.stderr[-3000:]}")
    return proc.stdout
