"""Run untrusted work (loading an artifact into a native runtime) in a child process, so a crash
of the runtime becomes an error message instead of a dead CLI.

The child is a fresh interpreter, ``python -m lkca_edge.isolation REQUEST RESULT``, that imports
the function by its module and name: it never re-imports the caller's ``__main__``, so a user's
script that calls the API at module level, with no ``if __name__ == "__main__":`` guard, works
(multiprocessing's spawn would run that script again in the child, for ever). On Linux the child
dies with its parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from lkca_edge.errors import UserError, describe_exception, printable


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def child_env() -> dict:
    """The parent's environment with its import path, so the child imports the same code."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p and Path(p).is_dir()]
    if os.getcwd() not in paths:
        paths.insert(0, os.getcwd())
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    return env


def _last_line(path: Path, limit: int = 300) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return printable(lines[-1], limit) if lines else ""


def run_isolated(fn, *args, what: str = "the runtime", timeout: float | None = 600, **kwargs):
    """``fn(*args, **kwargs)`` in a fresh child process; its result, or one clear UserError.

    ``fn`` must be a module-level function of an importable module; arguments and result must
    pickle.
    """
    module, name = fn.__module__, fn.__qualname__
    if module == "__main__" or "<locals>" in name:
        raise TypeError(f"run_isolated needs a module-level function of an importable module, "
                        f"got {module}.{name}")
    with tempfile.TemporaryDirectory(prefix="lkca-isolated-") as tmp:
        work = Path(tmp)
        request, result, log = work / "request.pkl", work / "result.pkl", work / "child.log"
        with open(request, "wb") as fh:
            pickle.dump((module, name, args, kwargs), fh, protocol=pickle.HIGHEST_PROTOCOL)
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "lkca_edge.isolation", str(request),
                                     str(result)], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=child_env(),
                                    preexec_fn=die_with_parent if os.name == "posix" else None)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise UserError(f"{what} did not finish within {timeout:.0f} s") from None
            finally:
                if proc.poll() is None:  # interrupted (Ctrl-C): never leave the child behind
                    proc.kill()
                    proc.wait()
        if os.environ.get("LKCA_EDGE_DEBUG") == "1":
            sys.stderr.write(log.read_text(errors="replace"))
        message = None
        if result.exists():
            try:
                with open(result, "rb") as fh:
                    message = pickle.load(fh)  # written by our own child
            except Exception:  # noqa: BLE001 - a child killed mid-write
                message = None
        code = proc.returncode
        if message is None:
            how = (f"signal {signal.Signals(-code).name}" if code is not None and code < 0
                   else f"exit code {code}")
            last = _last_line(log)
            raise UserError(f"{what} crashed ({how}); the file is probably corrupt or not made for it"
                            + (f" (its last output: {last})" if last else ""))
    status, payload = message
    if status == "ok":
        return payload
    if status == "user":
        raise UserError(payload)
    raise UserError(f"{what} failed: {payload}")


def _child_main(request: str, result: str) -> int:
    die_with_parent()
    status, payload, code = "error", "no result", 1
    try:
        with open(request, "rb") as fh:
            module, name, args, kwargs = pickle.load(fh)
        fn = importlib.import_module(module)
        for part in name.split("."):
            fn = getattr(fn, part)
        status, payload, code = "ok", fn(*args, **kwargs), 0
    except UserError as exc:
        status, payload, code = "user", str(exc), 2
    except BaseException as exc:  # report, never hang the parent
        import traceback

        traceback.print_exc()
        status, payload, code = "error", describe_exception(exc, 300), 1
    tmp = result + ".tmp"
    with open(tmp, "wb") as fh:
        pickle.dump((status, payload), fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, result)
    return code


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python -m lkca_edge.isolation REQUEST RESULT", file=sys.stderr)
        sys.exit(2)
    sys.exit(_child_main(sys.argv[1], sys.argv[2]))
