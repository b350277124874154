"""Reading untrusted files in bounded time and memory: every reader of lkca-edge comes here.

* Only regular files are read. A path is opened with ``O_NONBLOCK`` and checked with ``fstat``
  before a byte is read, so a FIFO never blocks and a device (``/dev/zero``) is never read.
* Every read is capped at a size that fits its kind of file (``SIZE_LIMITS``), and the message
  names the kind and the cap.
* JSON and YAML are parsed with bounded nesting; YAML anchors and aliases (the "billion laughs"
  expansion) are refused.
* ``check_expansion`` bounds what a parsed object expands to when shared references (pickle
  memo entries, YAML aliases) are followed, before anything walks it.

Standard library only (PyYAML imported lazily by ``read_yaml``).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

from lkca_edge.errors import UserError

MB = 1 << 20
# The largest file of each kind lkca-edge reads. Far above any real one (the shipped lkca-1m
# checkpoint is 4 MB, a manifest 3 KB, a device profile 2 KB), far below what would hurt.
SIZE_LIMITS: dict[str, int] = {
    "image": 64 * MB,
    "checkpoint": 1024 * MB,
    "manifest": 4 * MB,
    "device profile": 1 * MB,
    "CIFAR batch": 256 * MB,
    "results file": 256 * MB,
    "bench run record": 256 * MB,
    "JSON file": 64 * MB,
}
MAX_NESTING = 64            # JSON / YAML containers inside containers
MAX_EXPANDED_ITEMS = 10_000_000  # objects a parsed value may expand to through shared references

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def human_size(n: int) -> str:
    if n >= MB:
        return f"{n / MB:.0f} MB" if n % MB == 0 else f"{n / MB:.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n} bytes"


def file_type(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def not_regular(kind: str, path, mode: int) -> UserError:
    return UserError(f"{kind} {path} is not a regular file (it is {file_type(mode)}); "
                     f"give a regular file")


def too_large(kind: str, path, size: int, limit: int) -> UserError:
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    return UserError(f"{kind} {path} is {human_size(size)}, over the {human_size(limit)} limit "
                     f"for {article} {kind}")


def limit_for(kind: str) -> int:
    return SIZE_LIMITS.get(kind, SIZE_LIMITS["JSON file"])


def check_regular(path: str | Path, kind: str, limit: int | None = None) -> int:
    """Refuse ``path`` unless it is a regular file (symlinks followed) of at most ``limit``
    bytes (default: the kind's limit); returns its size. Opens nothing (no FIFO can block):
    for paths handed to a third-party loader that opens them itself."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{kind} not found: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read {kind} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise not_regular(kind, path, st.st_mode)
    limit = limit_for(kind) if limit is None else limit
    if st.st_size > limit:
        raise too_large(kind, path, st.st_size, limit)
    return st.st_size


def open_regular(path: str | Path, kind: str, limit: int | None = None):
    """A binary file object for reading ``path``, opened without blocking and checked to be a
    regular file of at most ``limit`` bytes (default: the kind's limit) before any read."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UserError(f"{kind} not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{kind} {path} is not a regular file (it is a directory); "
                        f"give a regular file") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a FIFO with O_NONBLOCK on some systems
            raise UserError(f"{kind} {path} is not a regular file; give a regular file") from None
        raise UserError(f"cannot read {kind} {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise not_regular(kind, path, st.st_mode)
        limit = limit_for(kind) if limit is None else limit
        if st.st_size > limit:
            raise too_large(kind, path, st.st_size, limit)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    fh.limit, fh.size = limit, st.st_size  # type: ignore[attr-defined]
    return fh


def read_bytes(path: str | Path, kind: str, limit: int | None = None) -> bytes:
    """The bytes of a regular file, never more than ``limit`` (a file growing while read is
    refused too)."""
    with open_regular(path, kind, limit) as fh:
        chunks, total = [], 0
        want = fh.size + 1  # the size fstat saw, and one byte more to notice growth
        try:
            while True:
                chunk = fh.read(min(want, fh.limit + 1 - total, 1 << 26))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > fh.limit:
                    raise too_large(kind, path, total, fh.limit)
                want = 1 << 20
        except OSError as exc:
            raise UserError(f"cannot read {kind} {path}: {exc.strerror or exc}") from None
    return b"".join(chunks)


def read_text(path: str | Path, kind: str, limit: int | None = None) -> str:
    data = read_bytes(path, kind, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{kind} {path} is not UTF-8 text") from None


def nesting_depth(obj) -> int:
    """How deep containers nest in ``obj`` (iterative: safe on any depth)."""
    try:
        return expansion(obj)[1]
    except ValueError:  # a parser never builds a cycle; count it as too deep
        return 1 << 30


def parse_json(text: str | bytes, kind: str, source, max_depth: int = MAX_NESTING):
    """JSON of at most ``max_depth`` nested containers; one UserError line otherwise."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise UserError(f"{kind} {source} nests deeper than {max_depth} levels") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise UserError(f"{kind} {source} is not valid JSON ({str(exc).splitlines()[0][:200]})") from None
    if nesting_depth(value) > max_depth:
        raise UserError(f"{kind} {source} nests deeper than {max_depth} levels")
    return value


def read_json(path: str | Path, kind: str = "JSON file", limit: int | None = None,
              max_depth: int = MAX_NESTING):
    """A regular file's JSON value, bounded in size and nesting."""
    return parse_json(read_text(path, kind, limit), kind, path, max_depth)


def parse_yaml(text: str, kind: str, source, max_depth: int = MAX_NESTING):
    """YAML through PyYAML's safe loader, with anchors and aliases refused and nesting bounded."""
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader without aliases: a document is a tree, never a graph that expands."""

        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                mark = event.start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"YAML anchors and aliases (&name, *name) are not allowed in a "
                                f"{kind}", mark)
            return super().compose_node(parent, index)

    try:
        value = yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise UserError(f"{kind} {source} nests deeper than {max_depth} levels") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise UserError(f"{source}: not valid YAML{at} ({getattr(exc, 'problem', None) or exc})") from None
    if nesting_depth(value) > max_depth:
        raise UserError(f"{kind} {source} nests deeper than {max_depth} levels")
    return value


def read_yaml(path: str | Path, kind: str, limit: int | None = None):
    return parse_yaml(read_text(path, kind, limit), kind, path)


def _children(value):
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    if isinstance(value, (list, tuple, set, frozenset)):
        return value
    return None


def expansion(obj) -> tuple[int, int]:
    """(objects, depth) that ``obj`` expands to when every reference is followed as often as it
    occurs, as ``str()``, ``np.asarray`` or a loop over it would. Computed once per distinct
    container (shared references are summed, not walked), so a 200-byte pickle that expands to
    2**60 objects is measured in 60 steps. A container that contains itself raises ValueError."""
    done: dict[int, tuple[int, int]] = {}
    on_path: set[int] = set()
    stack = [(obj, False)]
    while stack:
        value, finished = stack.pop()
        children = _children(value)
        if children is None:
            continue
        key = id(value)
        if finished:
            on_path.discard(key)
            size, height = 1, 1
            for child in children:
                s, h = done.get(id(child), (1, 0)) if _children(child) is not None else (1, 0)
                size += s
                height = max(height, h + 1)
            done[key] = (size, height)
            continue
        if key in done:
            continue
        if key in on_path:
            raise ValueError("a container that contains itself")
        on_path.add(key)
        stack.append((value, True))
        stack.extend((child, False) for child in children
                     if _children(child) is not None and id(child) not in done)
    return done.get(id(obj), (1, 0))


def check_expansion(obj, kind: str, source, max_items: int = MAX_EXPANDED_ITEMS,
                    max_depth: int = MAX_NESTING) -> None:
    """Refuse a parsed object (an unpickled CIFAR batch, say) that expands to more than
    ``max_items`` objects or nests deeper than ``max_depth`` through shared references."""
    try:
        size, depth = expansion(obj)
    except ValueError:
        raise UserError(f"{kind} {source} holds a container that contains itself (refused)") from None
    if depth > max_depth:
        raise UserError(f"{kind} {source} nests deeper than {max_depth} levels")
    if size > max_items:
        raise UserError(f"{kind} {source} expands to {size:.3g} objects through repeated "
                        f"references, over the limit of {max_items:,} (refused)")


__all__ = ["SIZE_LIMITS", "MAX_NESTING", "check_expansion", "check_regular", "open_regular",
           "parse_json", "parse_yaml", "read_bytes", "read_json", "read_text", "read_yaml"]
