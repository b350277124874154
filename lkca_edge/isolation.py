"""Run untrusted work (loading an artifact into a native runtime) in a child process, so a crash
of the runtime becomes an error message instead of a dead CLI. Children die with their parent
(``die_with_parent``) and are killed at their timeout, wherever they are stuck."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import traceback

from lkca_edge.errors import UserError

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux ``prctl
    PR_SET_PDEATHSIG``), so a SIGKILLed CLI never leaves a measuring or runtime child running
    on without a limit. ``parent_pid``: exit at once if the parent is already gone. A no-op
    elsewhere. Safe as a ``preexec_fn`` (async-signal-safe calls only)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the request took effect


def _child(conn, parent_pid, fn, args, kwargs):
    die_with_parent(parent_pid)
    try:
        conn.send(("ok", fn(*args, **kwargs)))
    except UserError as exc:
        conn.send(("user", str(exc)))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", f"{type(exc).__name__}: {str(exc).strip()[:300]}",
                   traceback.format_exc()))
    finally:
        conn.close()


def run_isolated(fn, *args, what: str = "the runtime", timeout: float | None = 600, **kwargs):
    """``fn(*args, **kwargs)`` in a spawned child; its result, or one clear UserError.

    ``fn`` must be a module-level function; its result must pickle.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, os.getpid(), fn, args, kwargs), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            proc.kill()
            raise UserError(f"{what} did not finish within {timeout:.0f} s")
        try:
            message = parent.recv()
        except EOFError:
            message = None
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    if message is None:
        code = proc.exitcode
        how = (f"signal {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exit code {code}")
        raise UserError(f"{what} crashed ({how}); the file is probably corrupt or not made for it")
    status, *payload = message
    if status == "ok":
        return payload[0]
    if status == "user":
        raise UserError(payload[0])
    raise UserError(f"{what} failed: {payload[0]}")
