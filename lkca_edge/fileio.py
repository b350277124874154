"""Atomic file writes: write to a temporary name in the same directory, then rename into place.

An interrupted write never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from lkca_edge.errors import DiskFull, UserError


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


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Works for files and for directories (e.g. a .mlpackage) written at the temporary path.
    """
    path = Path(path)
    ensure_dir(path.parent)
    # The suffix stays last: some writers and loaders insist on it (.mlpackage, .pte).
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}",
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the writer creates it (as a file or a directory)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to {tmp}")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise describe_os_error(exc, path) from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


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
