"""Progress of the long commands (``train``, ``bench``): on a terminal, rich's bar with the rate, the time spent
and the time left; on a pipe, in a log file or under CI (``CI`` set), one plain line per finished task and no
control characters. rich comes with the ``torch`` extra, which both commands need."""
from __future__ import annotations

import os
import sys


def live() -> bool:
    """Draw a bar (stderr is a terminal, and not under CI)?"""
    return sys.stderr.isatty() and not os.environ.get("CI")


class Bar:
    """One task of ``total`` steps: ``update(done, info)`` as it goes, ``close(info)`` when it ends (the plain
    line then, where no bar is drawn)."""

    def __init__(self, what: str, total: int):
        self.what, self.total, self._rich = what, max(int(total), 1), None
        if live():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._rich = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("left"),
                                  TimeRemainingColumn(), console=Console(file=sys.stderr))
            self._rich.start()
            self._task = self._rich.add_task(what, total=self.total, info="")

    def update(self, done: int, info: str = "") -> None:
        if self._rich is not None:
            self._rich.update(self._task, completed=done, info=info)

    def close(self, info: str = "") -> None:
        if self._rich is not None:
            self._rich.update(self._task, completed=self.total, info=info)
            self._rich.stop()
            self._rich = None
        else:
            sys.stderr.write(f"{self.what}: {info}\n" if info else f"{self.what}: done\n")
            sys.stderr.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._rich is not None:  # an error or Ctrl-C: the bar stops where it was, the terminal is left clean
            self._rich.stop()
            self._rich = None
        return False
