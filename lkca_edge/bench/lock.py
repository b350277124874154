"""A PID lock file: one process at a time may use a directory.

Created atomically with ``O_CREAT | O_EXCL``; it holds the PID, host, start time, boot id and
command of its holder. A lock whose process is gone (same host, PID not running, or running but
started at another time, i.e. a reused PID, or written before the last reboot) is stale and is
taken over with a one-line notice. A lock from another host is never taken over automatically.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from lkca_edge.errors import UserError
from lkca_edge.fileio import describe_os_error


def read_json(path: Path):
    """A JSON file's value; None when missing, ``ValueError`` (the class) when unreadable (not
    a regular file, too large, too deeply nested, not JSON)."""
    from lkca_edge.safeio import read_json as read_bounded

    if not path.exists() and not path.is_symlink():
        return None
    try:
        return read_bounded(path, "bench run record")
    except UserError:
        return ValueError


def proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def proc_start(pid: int) -> str | None:
    """The kernel's start time of a process (clock ticks since boot), to tell a reused PID."""
    fields = proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def pid_state(pid: int) -> str | None:
    fields = proc_stat(pid)
    return fields[0] if fields else None


def boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


class PidLock:
    """The lock file ``path``, held by this process between ``acquire()`` and ``release()``.

    ``holder`` names what holds such locks and ``advice`` what a user whose lock is busy can do,
    for the one-line refusal."""

    def __init__(self, path: Path, command: str = "", holder: str = "lkca-edge process",
                 advice: str = "wait for it to finish"):
        self.path = Path(path)
        self.command = command
        self.holder, self.advice = holder, advice
        self.info: dict | None = None

    def __enter__(self) -> "PidLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _stale_reason(self, holder) -> str | None:
        """Why the lock ``holder`` is stale, or None when it may be live."""
        if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
            try:
                age = time.time() - self.path.stat().st_mtime
            except OSError:
                return "it is gone"
            # a lock being written right now looks empty for a moment
            return f"it is unreadable and {age:.0f} s old" if age > 10 else None
        pid, host = holder["pid"], holder.get("host")
        if host and host != socket.gethostname():
            return None
        if holder.get("boot_id") and boot_id() and holder["boot_id"] != boot_id():
            return f"PID {pid} ran before this host last rebooted"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return f"PID {pid} is not running"
        except PermissionError:
            pass  # alive, another user's
        except OSError:
            return None
        if pid_state(pid) == "Z":
            return f"PID {pid} has exited"
        start = proc_start(pid)
        if holder.get("proc_start") and start and holder["proc_start"] != start:
            return f"PID {pid} now belongs to another process"
        return None

    def acquire(self, notice=lambda text: None) -> "PidLock":
        from lkca_edge.manifest import now_iso

        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": now_iso(),
                "proc_start": proc_start(os.getpid()), "boot_id": boot_id(),
                "command": self.command}
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_json(self.path)
                reason = self._stale_reason(holder)
                if reason is None:
                    h = holder if isinstance(holder, dict) else {}
                    who = (f"PID {h.get('pid')} on {h.get('host') or 'an unknown host'}, started "
                           f"{h.get('started') or 'at an unknown time'}") if h else "being created"
                    raise UserError(f"another {self.holder} is using {self.path.parent} (lock "
                                    f"{self.path}: {who}); {self.advice}, and delete the lock "
                                    f"only if no {self.holder} is running")
                notice(f"taking over the stale lock {self.path} ({reason})")
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            except OSError as exc:
                raise describe_os_error(exc, self.path) from None
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(json.dumps(info) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                self.path.unlink(missing_ok=True)
                raise describe_os_error(exc, self.path) from None
            self.info = info
            return self
        raise UserError(f"cannot take the lock {self.path}: other processes keep replacing it")

    def release(self) -> None:
        """Remove the lock if it is still this process's."""
        if self.info is None:
            return
        holder = read_json(self.path)
        if isinstance(holder, dict) and holder.get("pid") == self.info["pid"] \
                and holder.get("started") == self.info["started"]:
            try:
                self.path.unlink()
            except OSError:
                pass
        self.info = None
