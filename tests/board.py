"""A real board for the tests: Debian's OpenSSH server on 127.0.0.1 (a free port, a host key and
a client key made for the test) in front of a board venv with lkca-edge and only runtime extras
(no torch, no scikit-learn).

The board venv's third-party packages are cached in ``.lkca-edge-cache/board-<hash>`` (the hash
of pyproject.toml and the extras), so only the first run pays for them; lkca-edge itself is
installed afresh from a wheel of this tree each session (seconds). A fresh clone builds it all
from nothing.

Also usable by hand: ``python -m tests.board DIR`` builds the venv, starts the server and prints
the ``--remote`` URL and the ``LKCA_EDGE_SSH_CONFIG`` to use, until Ctrl-C.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".lkca-edge-cache"
EXTRAS = ("runtime-litert", "runtime-onnx")
SSHD = "/usr/sbin/sshd"


def sshd_missing() -> str | None:
    """Why no test sshd can run here, or None."""
    if not Path(SSHD).is_file():
        return "Debian's openssh-server is not installed (.ci/run installs it as root)"
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "Debian's openssh-client is not installed (.ci/run installs it as root)"
    if os.geteuid() != 0:
        return "a private sshd that logs in a user needs root here (CI runs as root)"
    return None


@dataclass
class BoardVenv:
    path: Path
    lkca_edge: Path          # its lkca-edge entry point
    python: Path
    built_s: float | None    # seconds to install the third-party packages (None: from the cache)
    lkca_edge_s: float       # seconds to install lkca-edge itself from the wheel
    size_mb: float


def _du_mb(path: Path) -> float:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            pass
    return total / (1024 * 1024)


def build_wheel(into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(into), str(ROOT)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"building the lkca-edge wheel failed: {out.stderr[-2000:]}")
    return next(into.glob("lkca_edge-*.whl"))


def board_venv(wheel: Path, extras=EXTRAS) -> BoardVenv:
    """The cached board venv with ``extras``' packages, and this tree's lkca-edge in it."""
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + ",".join(extras).encode()
                         + sys.version.encode()).hexdigest()[:12]
    path = CACHE / f"board-{key}"
    py = path / "bin" / "python"
    built_s = None
    if not (path / ".complete").exists():
        shutil.rmtree(path, ignore_errors=True)
        CACHE.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        base = getattr(sys, "_base_executable", None) or shutil.which("python3")
        subprocess.run([base, "-m", "venv", str(path)], check=True, capture_output=True)
        # the wheel with its extras: exactly what a user's `pip install 'lkca-edge[...]'` pulls
        spec = f"{wheel}[{','.join(extras)}]"
        out = subprocess.run([str(py), "-m", "pip", "install", "-q", spec],
                             capture_output=True, text=True)
        if out.returncode != 0:
            shutil.rmtree(path, ignore_errors=True)
            raise RuntimeError(f"the board install failed: {out.stderr[-2000:]}")
        built_s = time.perf_counter() - t0
        (path / ".complete").write_text(f"{built_s:.1f}\n")
    t0 = time.perf_counter()
    out = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                          str(wheel)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"installing lkca-edge on the board failed: {out.stderr[-2000:]}")
    return BoardVenv(path, path / "bin" / "lkca-edge", py, built_s, time.perf_counter() - t0,
                     _du_mb(path))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    process: subprocess.Popen
    port: int
    user: str
    client_config: Path      # for LKCA_EDGE_SSH_CONFIG (ssh -F)
    directory: Path

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lkca-edge-test",
                    "-f", str(path)], check=True, capture_output=True)


def _die_with_parent() -> None:
    from lkca_edge.isolation import die_with_parent

    die_with_parent()


def start_sshd(directory: Path, path_dirs: list[str]) -> Sshd:
    """A private sshd on 127.0.0.1 that lets this user in with a new key, its remote commands
    getting ``path_dirs`` first on PATH; dies with this process."""
    import pwd

    directory.mkdir(parents=True, exist_ok=True)
    host_key, client_key = directory / "host_ed25519", directory / "client_ed25519"
    _keygen(host_key)
    _keygen(client_key)
    (directory / "authorized_keys").write_text((directory / "client_ed25519.pub").read_text())
    user = pwd.getpwuid(os.geteuid()).pw_name
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation directory
    port = free_port()
    path = ":".join([*path_dirs, "/usr/local/bin", "/usr/bin", "/bin"])
    (directory / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
        f"PidFile {directory / 'sshd.pid'}", f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no", f"AllowUsers {user}",
        f"SetEnv PATH={path}", "LogLevel ERROR", ""]))
    host_pub = (directory / "host_ed25519.pub").read_text().split()
    (directory / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    config = directory / "ssh_config"
    config.write_text("\n".join([
        "Host *", f"  IdentityFile {client_key}", "  IdentitiesOnly yes", "  IdentityAgent none",
        f"  UserKnownHostsFile {directory / 'known_hosts'}", "  StrictHostKeyChecking yes",
        "  LogLevel ERROR", ""]))
    log = open(directory / "sshd.log", "wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(directory / "sshd_config")],
                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {(directory / 'sshd.log').read_text()[-1000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return Sshd(proc, port, user, config, directory)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("sshd did not start listening within 20 s")


if __name__ == "__main__":
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/lkca-board")
    venv = board_venv(build_wheel(work / "wheel"))
    print(f"board venv {venv.path}: {venv.size_mb:.0f} MB, packages "
          f"{'cached' if venv.built_s is None else f'installed in {venv.built_s:.0f} s'}, "
          f"lkca-edge in {venv.lkca_edge_s:.1f} s")
    server = start_sshd(work / "sshd", [str(venv.path / "bin")])
    print(f"--remote {server.url}\nLKCA_EDGE_SSH_CONFIG={server.client_config}", flush=True)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()
