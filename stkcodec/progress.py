"""Progress on stderr, shared by every long command: rich bars on a terminal, and plain lines
every few seconds when stderr is a file or a pipe (as ffmpeg and rsync do in a log)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

stderr_console = Console(stderr=True)
PLAIN_EVERY_S = 5.0  # seconds between two plain progress lines


def make_progress(*, disable: bool = False):
    """A progress display whose tasks may carry an `info` field (loss, speed...)."""
    if not disable and not stderr_console.is_terminal:
        return PlainProgress()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=stderr_console,
        disable=disable,
        transient=False,
    )


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0
    info: str = ""
    visible: bool = True
    unit: str = ""  # "s": the task counts seconds (a training run by minutes)
    started: float = field(default_factory=lambda: time.monotonic())


class PlainProgress:
    """The part of rich's Progress that stkc uses, as a line per task every PLAIN_EVERY_S seconds
    (and one when a task that ran that long completes), and each task's last state at the end, as
    rich leaves its bars: `compress: 40/100 (40%), 0:01:05, 0:01:38 left`."""

    def __init__(self, stream=None, every_s: float = PLAIN_EVERY_S) -> None:
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.tasks: list[_Task] = []
        self.last = time.monotonic()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        for entry in self.tasks:  # each task's last state, once (as rich leaves its bars)
            if entry.visible and not getattr(entry, "_said_done", False):
                self._print(entry)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, info: str = "",
                 visible: bool = True, unit: str = "", **_) -> int:
        self.tasks.append(_Task(description, total, completed, info, visible, unit))
        return len(self.tasks) - 1

    def update(self, task: int, *, total=None, completed=None, description=None, info=None, visible=None,
               advance=None, **_) -> None:
        entry = self.tasks[task]
        for name, value in (("total", total), ("completed", completed), ("description", description),
                            ("info", info), ("visible", visible)):
            if value is not None:
                setattr(entry, name, value)
        if advance:
            entry.completed += advance
        self._maybe_print(entry)

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def _maybe_print(self, entry: _Task) -> None:
        now = time.monotonic()
        finished = entry.total is not None and entry.completed >= entry.total
        if not entry.visible or now - entry.started < self.every_s or (now - self.last < self.every_s and not finished):
            return
        if finished and getattr(entry, "_said_done", False):
            return
        self.last = now
        self._print(entry)

    def _print(self, entry: _Task) -> None:
        now = time.monotonic()
        finished = entry.total is not None and entry.completed >= entry.total
        elapsed = now - entry.started
        count = _clock if entry.unit == "s" else (lambda n: f"{n:g}")
        parts = [f"{entry.description}: {count(entry.completed)}"]
        if entry.total:
            done = entry.completed / entry.total
            parts[0] += f"/{count(entry.total)} ({100 * done:.0f}%)"
            clock = [_clock(elapsed)]
            if 0 < done < 1:
                clock.append(f"{_clock(elapsed * (1 - done) / done)} left")
            parts.append(", ".join(clock))
        else:
            parts.append(_clock(elapsed))
        if entry.info:
            parts.append(str(entry.info))
        print(", ".join(parts), file=self.stream, flush=True)
        if finished:
            entry._said_done = True


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
