"""A progress bar on stderr for long screens (rich), or nothing: on a terminal, or when asked."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn


class Steps(Protocol):
    """What a screen tells about its progress: a step begins (with its size when known), and advances."""

    def step(self, name: str, total: int | None = None) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class Silent:
    def step(self, name: str, total: int | None = None) -> None:
        return None

    def advance(self, n: int = 1) -> None:
        return None


class Bar:
    """One line per step: its name while its size is unknown (a DuckDB pass), then a bar."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def step(self, name: str, total: int | None = None) -> None:
        self._finish()
        self.task = self.progress.add_task(name, total=total)
        self.progress.refresh()

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)
            self.progress.refresh()

    def _finish(self) -> None:
        if self.task is not None:
            done = self.progress.tasks[self.task].total or 1
            self.progress.update(self.task, total=done, completed=done)


@contextmanager
def steps(show: bool | None) -> Iterator[Steps]:
    """A bar when `show`, or when None and stderr is a terminal; else nothing at all."""
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        yield Silent()
        return
    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    # no refresh thread: the screen forks its workers with a bar on the screen (a thread would not follow)
    with Progress(*columns, console=console, transient=False, auto_refresh=False) as progress:
        bar = Bar(progress)
        yield bar
        bar._finish()
