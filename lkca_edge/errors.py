"""Errors a user can act on: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations

import difflib


class UserError(Exception):
    """A problem with the user's input or environment, shown as one line (exit code 2)."""

    exit_code = 2


class BackendUnavailable(UserError):
    """A backend's runtime or converter is not installed (or cannot run on this OS)."""


class DiskFull(UserError):
    """A write failed for lack of space (ENOSPC, or EFBIG past a file-size limit)."""


class GateFailed(UserError):
    """An artifact was converted but failed its validation gate (exit code 3)."""

    exit_code = 3


def unknown_name(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> UserError:
    """'unknown backend 'tflte'; did you mean: tflite? valid: ...'"""
    close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.5)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    return UserError(f"unknown {kind} {name!r}{hint} (valid: {', '.join(valid)})")


def printable(text: str, limit: int | None = None) -> str:
    """``text`` with every non-printable character (ESC, newline, NUL, ...) shown as '?'."""
    out = "".join(c if c.isprintable() else "?" for c in str(text))
    return out if limit is None else out[:limit]


def brief(value, limit: int = 80) -> str:
    """A short, printable repr of an untrusted value for a message (bounded even for a value
    nested a million levels deep or shared a billion times)."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, limit, limit
    return printable(short.repr(value), limit)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """One printable line of an exception (parsers quote the random bytes they choked on)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return printable(line, limit)


def describe_exception(exc: BaseException, limit: int = 500) -> str:
    """One line for an error report: a UserError's own message, else 'TypeName: first line'."""
    if isinstance(exc, UserError):
        return first_line(exc, limit)
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return printable(f"{type(exc).__name__}: {line}" if line else type(exc).__name__, limit)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: handled like Ctrl-C. The CLI prints ``message`` (one line) and exits
    128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int = 2, message: str = ""):
        super().__init__(message or "interrupted")
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        self.message = message


def raise_interrupted(signum, frame) -> None:
    """A signal handler: SIGTERM (or any signal) becomes a KeyboardInterrupt in the main thread."""
    raise Interrupted(signum)
