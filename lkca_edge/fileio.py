"""Atomic file writes and temporary files that never outlive their process.

Writes go to a temporary name in the same directory, then are renamed into place: an
interrupted write never leaves a file that looks complete. Temporary names carry their writer's
process (``owner_tag``), so what a SIGKILL left behind is recognised and removed at the next
start; ``private_tempdir`` puts every temporary file of a command (torch's and the converters'
included) under one directory of its own.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from lkca_edge.errors import DiskFull, UserError

TEMP_PREFIX = "lkca-edge-"
# ``.<stem>.<owner tag>.<random>.partial<suffix>``: an atomic write in progress (or cut short)
PARTIAL_PATTERN = r"\..*\.(?P<tag>\d+-\d+)\.[^.]+\.partial(\..*)?"
_private_root: Path | None = None


# -- which process made a temporary file ---------------------------------------------------------
def _pid_namespace() -> str:
    """This process's PID namespace (containers sharing /tmp have different ones)."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def owner_tag(pid: int | None = None) -> str:
    """``<pid namespace>-<pid>``: written into temporary names so leftovers can be told apart."""
    return f"{_pid_namespace()}-{os.getpid() if pid is None else pid}"


def owner_gone(tag: str) -> bool:
    """True when the process of ``tag`` (from this PID namespace) no longer runs; False when it
    may (another namespace, a live PID, no permission to tell)."""
    ns, _, pid = tag.partition("-")
    if ns != _pid_namespace() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _remove_path(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            p.unlink()


def sweep_stale(directory: Path, pattern: str) -> list[Path]:
    """Remove the entries of ``directory`` whose name matches ``pattern`` (a regex with a
    ``tag`` group) and whose owner process is gone; returns what was removed."""
    removed = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = re.fullmatch(pattern, p.name)
        if m and owner_gone(m.group("tag")):
            try:
                if p.lstat().st_uid != os.getuid():
                    continue
            except OSError:
                continue
            _remove_path(p)
            removed.append(p)
    return removed


_STALE_TEMP = rf"{re.escape(TEMP_PREFIX)}(?P<tag>\d+-\d+)-.+"


def temporary_directory(purpose: str) -> tempfile.TemporaryDirectory:
    """A ``TemporaryDirectory`` named after this process (``lkca-edge-<tag>-<purpose>-XXXX``):
    removed when closed, and by the next start of lkca-edge when a SIGKILL stopped its owner."""
    sweep_stale(Path(tempfile.gettempdir()), _STALE_TEMP)
    return tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{owner_tag()}-{purpose}-")


@contextlib.contextmanager
def private_tempdir() -> Iterator[Path]:
    """Point ``tempfile`` (and ``TMPDIR`` for child processes) at a directory of this process's
    own, ``$TMPDIR/lkca-edge-<tag>-XXXX``, and remove it afterwards, also when a signal
    (SIGINT, SIGTERM, SIGHUP) unwinds the command. What a SIGKILL left is removed by the next
    start. Re-entrant: a nested use shares the outer directory."""
    global _private_root
    if _private_root is not None and _private_root.is_dir():
        yield _private_root
        return
    base = Path(tempfile.gettempdir())
    sweep_stale(base, _STALE_TEMP)
    root = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{owner_tag()}-", dir=base))
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir, _private_root = str(root), str(root), root
    try:
        yield root
    finally:
        tempfile.tempdir, _private_root = saved_tempdir, None
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(root, ignore_errors=True)


def describe_os_error(exc: OSError, path: Path) -> UserError:
    """One clear line for an OSError while writing ``path`` (a full disk is ``DiskFull``)."""
    if exc.errno == errno.ENOSPC or exc.errno == errno.EFBIG:
        return DiskFull(f"no space left while writing {path} ({exc.strerror}); free some space and retry")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"cannot write {path}: {exc.strerror}; choose a writable output directory")
    return UserError(f"cannot write {path}: {exc.strerror or exc}")


def ensure_dir(path: str | Path) -> Path:
    """Create a directory (and parents), turning OS errors into one clear line."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise describe_os_error(exc, path) from None
    if not os.access(path, os.W_OK):
        raise UserError(f"output directory {path} is not writable; choose another with --out")
    return path


def final_name(path: str | Path) -> str:
    """The name ``atomic_path`` will give a temporary path it yielded (``.stem.<tag>.<random>
    .partial.ort`` -> ``stem.ort``); any other path keeps its name."""
    name = Path(path).name
    m = re.fullmatch(r"\.(?P<stem>.+)\.\d+-\d+\.[^.]+\.partial(?P<suffix>\..*)?", name)
    return m["stem"] + (m["suffix"] or "") if m else name


@contextlib.contextmanager
def atomic_path(path: str | Path, replace: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Works for files and for directories (e.g. a .mlpackage) written at the temporary path. An
    existing directory at ``path`` is replaced only when ``replace`` allows it (``replace(path)``
    raises UserError to refuse; it is asked before the rename): a user's directory is never
    deleted. Leftovers of earlier writers of ``path`` killed mid-write are removed first.
    """
    path = Path(path)
    ensure_dir(path.parent)
    # The suffix stays last: some writers and loaders insist on it (.mlpackage, .pte).
    prefix = f".{path.stem}."
    sweep_stale(path.parent, PARTIAL_PATTERN)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f"{prefix}{owner_tag()}.",
                                        suffix=f".partial{path.suffix}", dir=path.parent)
    except OSError as exc:
        raise describe_os_error(exc, path) from None
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the writer creates it (as a file or a directory)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to {tmp}")
        if path.exists() or path.is_symlink():
            if replace is not None:
                replace(path)
            if path.is_dir() and not path.is_symlink():
                if replace is None:
                    raise UserError(f"{path} exists and is a directory; not replaced")
                shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as exc:
        _remove_path(tmp)
        raise describe_os_error(exc, path) from None
    except BaseException:
        _remove_path(tmp)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
