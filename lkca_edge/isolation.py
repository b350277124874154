"""Run untrusted work (loading an artifact into a native runtime) in a child process, so a crash
of the runtime becomes an error message instead of a dead CLI. Children die with their parent
(``die_with_parent``) and are killed at their timeout, wherever they are stuck."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
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


def _child(conn, parent_pid):
    # The work arrives after this process has asked to die with its parent: a parent killed
    # while handing over a large input never leaves a child behind (or a traceback).
    die_with_parent(parent_pid)
    try:
        fn, args, kwargs = conn.recv()
    except (EOFError, OSError):
        return
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
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=_child, args=(child, os.getpid()), daemon=True)
    proc.start()
    child.close()
    def hand_over():
        try:
            parent.send((fn, args, kwargs))
        except (BrokenPipeError, EOFError, OSError, ValueError):
            pass  # the child is gone: reported below from its exit code

    # In a thread: a large input fills the pipe, and the timeout must hold even while the
    # child has not read it yet.
    threading.Thread(target=hand_over, daemon=True).start()
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
