"""SIGINT and SIGTERM during a bench: stop between cells, never inside one's bookkeeping."""

from __future__ import annotations

import contextlib

class Signals:
    """SIGINT and SIGTERM raise ``Interrupted`` in the main thread (130 / 143), except inside
    ``held()``, which finishes first (so a finished cell is always recorded before stopping)."""

    def __init__(self):
        self.saved: dict = {}
        self.depth = 0
        self.pending: int | None = None

    def __enter__(self) -> "_Signals":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous = signal.getsignal(sig)
                if previous is signal.SIG_IGN or previous is None:
                    continue  # e.g. started with nohup or as a background job: keep ignoring it
                self.saved[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        self.saved.clear()

    def _handler(self, signum, frame) -> None:
        from lkca_edge.errors import Interrupted

        if self.depth:
            self.pending = self.pending or signum
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def held(self):
        from lkca_edge.errors import Interrupted

        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if not self.depth and self.pending:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)
