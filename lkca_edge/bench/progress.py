"""The bench's progress: a rich bar over the cells on a terminal, else one line per cell."""

from __future__ import annotations

import os
import sys

class Progress:
    """A rich bar over the cells on stderr (a terminal), else plain log lines."""

    def __init__(self, total: int, enabled: bool):
        from rich.console import Console

        # A private copy of stderr: converters.base.quiet() points fd 2 at a sink while native
        # runtimes log, and the bar must keep drawing meanwhile.
        self._stream = None
        try:
            self._stream = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1,
                                     encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                                     errors="replace")
        except (AttributeError, OSError, ValueError):  # no real fd (e.g. captured output)
            self._stream = None
        self.out = self._stream or sys.stderr
        self.console = Console(file=self.out)
        self.live = enabled and self.console.is_terminal
        self.enabled = enabled
        self._p = None
        if self.live:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                       TextColumn, TimeElapsedColumn)

            self._p = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                               MofNCompleteColumn(), TimeElapsedColumn(), console=self.console)
            self._task = self._p.add_task("bench", total=total)

    def __enter__(self):
        if self._p is not None:
            self._p.start()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.stop()
        if self._stream is not None:
            self._stream.close()

    def describe(self, text: str) -> None:
        if self._p is not None:
            from rich.markup import escape

            from lkca_edge.errors import printable

            self._p.update(self._task, description=escape(printable(text)))

    def advance(self) -> None:
        if self._p is not None:
            self._p.advance(self._task)

    def log(self, text: str) -> None:
        from lkca_edge.errors import printable

        if not self.enabled:
            return
        text = printable(text)  # cell lines quote errors and names read from files
        if self._p is not None:
            self._p.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=self.out, flush=True)


def cell_line(cell: dict) -> str:
    name = f"{cell['model']} {cell['backend']} {cell['precision']}"
    if cell["status"] != "ok":
        return f"✗ {name}: {cell['failed_step']} failed: {cell['error']}"
    m = cell["metrics"]
    parts = [f"converted in {m.get('conversion_s', 0):.1f} s", f"{(m.get('size_bytes') or 0) / 1024:.0f} KB"]
    if m.get("latency_median_ms") is not None:
        parts.append(f"median {m['latency_median_ms']:.3g} ms")
    if m.get("accuracy") is not None:
        parts.append(f"accuracy {m['accuracy']:.2%}")
    if cell["mode"] == "static":
        parts.append("static only: " + (cell.get("note") or "not runnable here"))
    return f"✓ {name}: {', '.join(parts)}"
