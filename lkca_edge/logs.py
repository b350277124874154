"""Keeping third-party noise off the terminal: ``quiet()`` around converters and runtimes."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings

DEBUG_ENV = "LKCA_EDGE_DEBUG"                 # "1": tracebacks, native logs, progress bars
NATIVE_LOG_ENV = "LKCA_EDGE_SHOW_NATIVE_LOG"  # "1": replay a failed block's native log


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV) == "1"


@contextlib.contextmanager
def quiet():
    """Silence converters' warnings and native log spam (absl, torch) unless LKCA_EDGE_DEBUG=1.

    Native libraries log to file descriptor 2 directly, so fd 2 is pointed at a temporary file
    for the duration; it is replayed to stderr if the block fails and LKCA_EDGE_SHOW_NATIVE_LOG=1.
    """
    if debug_enabled():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed and os.environ.get(NATIVE_LOG_ENV) == "1":
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace")[-4000:])
