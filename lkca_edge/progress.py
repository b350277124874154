"""Progress bars for long steps (rich), silent when disabled or when output is not a terminal."""

from __future__ import annotations

import contextlib
import sys


class _Bar:
    def __init__(self, progress, task):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)


@contextlib.contextmanager
def progress(total: int, description: str, enabled: bool = True):
    """``with progress(n, 'train') as bar: bar.advance()``; rich bar on stderr."""
    if not enabled:
        yield _Bar(None, None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=sys.stderr)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False,
                  disable=not console.is_terminal) as p:
        yield _Bar(p, p.add_task(description, total=total))
