"""Run untrusted work (loading an artifact into a native runtime) in a child process, so a crash
of the runtime becomes an error message instead of a dead CLI."""

from __future__ import annotations

import multiprocessing as mp
import signal
import traceback

from lkca_edge.errors import UserError


def _child(conn, fn, args, kwargs):
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
    proc = ctx.Process(target=_child, args=(child, fn, args, kwargs), daemon=True)
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
