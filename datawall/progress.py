"""Progress on stderr (stdout stays clean for --json): a rich bar on a terminal, plain lines anywhere else.

A bar redrawn in place is useless in a CI log, under nohup or in a notebook, so when stderr is not a terminal
`progress_bar` returns `PlainProgress`, which has the same interface (`add_task`, `update`, `advance`, `tasks`,
the `rate` and `info` fields) and prints one line per task at most every DATAWALL_PROGRESS_INTERVAL seconds
(default 5), plus a last line when the task completes or the block ends::

    train: 1,200/5,000 (24%)  8.1k tok/s  loss 2.315  elapsed 0:01:05  eta 0:03:26
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from datawall.errors import DatawallError

stderr = Console(stderr=True)
INTERVAL_ENV = "DATAWALL_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 5.0
_PLACEHOLDERS = ("", "-")  # rate values that mean "not measured yet": the line shows its own items/s instead


def progress_bar(rate_unit: str = "tok/s", disable: bool = False) -> Progress | PlainProgress:
    """Progress with count, a rate field (`rate`), an `info` field and ETA on stderr: a bar or plain lines."""
    if disable or not stderr.is_terminal:
        return PlainProgress(rate_unit=rate_unit, disable=disable)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8} " + rate_unit),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=stderr,
        disable=disable,
        transient=False,
    )


def progress_interval() -> float:
    """Seconds between two lines of one task (DATAWALL_PROGRESS_INTERVAL; 0 prints every update)."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects nan
        raise DatawallError(f"{INTERVAL_ENV}={text!r}: give seconds between progress lines, a number >= 0")
    return value


@dataclass
class PlainTask:
    """One task's state, as rich's Task exposes it (`completed`, `total`, `description`, `fields`)."""

    id: int
    description: str
    total: float | None
    completed: float
    fields: dict[str, Any]
    visible: bool = True
    start_completed: float = 0.0  # progress already made when the task was added (a resumed run)
    started: float = field(default_factory=time.monotonic)
    printed: float | None = None  # when its last line was printed
    printed_state: tuple | None = None  # (completed, info) of that line: an unchanged state is not repeated

    @property
    def finished(self) -> bool:
        return self.total is not None and self.completed >= self.total

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def speed(self) -> float | None:
        """Items per second since the task was added (None before any progress)."""
        done, elapsed = self.completed - self.start_completed, self.elapsed
        return done / elapsed if done > 0 and elapsed > 0 else None


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _amount(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,.3g}"


class PlainProgress:
    """rich.progress.Progress's interface, printing plain lines to stderr (for logs, pipes and notebooks)."""

    def __init__(self, rate_unit: str = "tok/s", disable: bool = False, interval: float | None = None,
                 file=None):
        self.rate_unit = rate_unit
        self.disable = disable
        self.interval = progress_interval() if interval is None else interval
        self._file = file  # None: sys.stderr at the time of writing (pytest and CliRunner swap it)
        self._tasks: dict[int, PlainTask] = {}
        self._lock = threading.RLock()

    # --- rich's interface ---------------------------------------------------------------------------------

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Nothing to start: lines are printed as tasks progress."""

    def stop(self) -> None:
        """Print the last state of every task whose last line is out of date."""
        with self._lock:
            for task in self._tasks.values():
                self._emit(task, force=True)

    @property
    def tasks(self) -> list[PlainTask]:
        with self._lock:
            return list(self._tasks.values())

    @property
    def task_ids(self) -> list[int]:
        with self._lock:
            return list(self._tasks)

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: float = 0,
                 visible: bool = True, **fields: Any) -> int:
        with self._lock:
            task_id = len(self._tasks)
            self._tasks[task_id] = PlainTask(task_id, description, total, completed, dict(fields), visible,
                                             start_completed=completed)
            return task_id

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, visible: bool | None = None,
               refresh: bool = False, **fields: Any) -> None:
        with self._lock:
            task = self._tasks[task_id]
            if total is not None:
                task.total = total
            if completed is not None:
                task.completed = completed
            if advance is not None:
                task.completed += advance
            if description is not None:
                task.description = description
            if visible is not None:
                task.visible = visible
            task.fields.update(fields)
            self._emit(task, force=refresh or task.finished)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def refresh(self) -> None:
        """Print a line for every task now."""
        with self._lock:
            for task in self._tasks.values():
                self._emit(task, force=True)

    def remove_task(self, task_id: int) -> None:
        with self._lock:
            self._tasks.pop(task_id, None)

    # --- lines --------------------------------------------------------------------------------------------

    def line(self, task: PlainTask) -> str:
        """One line: description, done/total (percent), rate, info, elapsed and ETA."""
        parts = [f"{task.description}: {_amount(task.completed)}"]
        if task.total:
            parts[0] += f"/{_amount(task.total)} ({min(100.0, 100 * task.completed / task.total):.0f}%)"
        speed = task.speed()
        rate = str(task.fields.get("rate", ""))
        if rate.strip() not in _PLACEHOLDERS:
            parts.append(f"{rate.strip()} {self.rate_unit}".rstrip())
        elif speed is not None:
            parts.append(f"{speed:,.3g}/s" if speed < 1000 else f"{speed:,.0f}/s")
        info = str(task.fields.get("info", "")).strip()
        if info:
            parts.append(info)
        parts.append(f"elapsed {_clock(task.elapsed)}")
        if task.finished:
            parts.append("done")
        elif task.total and speed:
            parts.append(f"eta {_clock((task.total - task.completed) / speed)}")
        return "  ".join(parts)

    def _emit(self, task: PlainTask, force: bool = False) -> None:
        if self.disable or not task.visible:
            return
        now = time.monotonic()
        state = (task.completed, task.total, task.description, str(task.fields.get("info", "")))
        if state == task.printed_state:
            return  # nothing new since its last line (the final line is printed once)
        if not force and task.printed is not None and now - task.printed < self.interval:
            return
        if not force and task.printed is None and now - task.started < self.interval:
            return  # a task that ends within one interval prints only its last line
        task.printed, task.printed_state = now, state
        file = self._file or sys.stderr
        print(self.line(task), file=file, flush=True)
