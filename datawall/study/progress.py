"""The live view of runs going through an executor, on stderr: runs done / running / queued / reused / failed,
the share of FLOPs done and the FLOP rate, one bar per running run, and an ETA from FLOP estimates (the work
left divided by the FLOP rate so far). Studies and IsoFLOP ladders both use it. When stderr is not a terminal (a
log, a pipe, CI) it prints that summary as plain lines instead: whenever a run starts, ends or fails, and every
DATAWALL_PROGRESS_INTERVAL seconds (5 by default) while runs progress.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.text import Text

from datawall.progress import progress_interval, stderr
from datawall.study.executors import Event

if TYPE_CHECKING:
    from datawall.study.plan import Plan


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


class RunsView:
    """Call it with each executor Event (on_event=view); use it as a context manager around the run.

    `labels` and `est_flops` map each job key to its name in the view and its estimated FLOPs.
    """

    def __init__(self, title: str, labels: dict[str, str], est_flops: dict[str, float], disable: bool = False):
        self.title, self.labels, self.est_flops = title, labels, est_flops
        self.status: dict[str, str] = {}
        self.progress: dict[str, float] = {}
        self.started = time.monotonic()
        self.bars = Progress(TextColumn("  {task.description}"), BarColumn(bar_width=30),
                             TextColumn("{task.percentage:>3.0f}%"), console=stderr)
        self.tasks: dict[str, int] = {}
        # rich's Live draws nothing on a console that is not a terminal until it stops: plain lines there
        self.plain = not disable and not stderr.is_terminal
        self.interval, self.printed = (progress_interval() if self.plain else 0.0), float("-inf")
        self.live = None if disable or self.plain else Live(Group(Text(""), self.bars), console=stderr,
                                                            refresh_per_second=4, transient=False)

    def __enter__(self) -> RunsView:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.plain:
            self._print_line()
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(*exc)
            if not stderr.is_terminal:  # rich ends its last frame without a newline there; what follows (an
                stderr.line()  # error, the report's path) must start on its own line

    def __call__(self, event: Event) -> None:
        """Record one event and redraw."""
        changed = self.status.get(event.key) != event.status
        self.status[event.key] = event.status
        if event.status == "running":
            self.progress[event.key] = event.progress or 0.0
            if event.key not in self.tasks:
                self.tasks[event.key] = self.bars.add_task(self.labels.get(event.key, event.key), total=1.0)
            self.bars.update(self.tasks[event.key], completed=self.progress[event.key])
        elif event.key in self.tasks:
            self.bars.remove_task(self.tasks.pop(event.key))
        if event.status in ("done", "reused"):
            self.progress[event.key] = 1.0
        if self.live is not None:
            self.live.update(self._render())
        elif self.plain and (changed or time.monotonic() - self.printed >= self.interval):
            self._print_line()

    def _print_line(self) -> None:
        self.printed = time.monotonic()
        stderr.print(self.line(), markup=False, highlight=False, soft_wrap=True)

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        out = {s: 0 for s in ("done", "running", "queued", "reused", "failed")}
        for key in self.labels:  # a job the executor has not announced yet is queued
            s = self.status.get(key, "queued")
            out[s if s in out else "queued"] += 1
        return out

    def flops_done(self) -> float:
        """The share of all estimated FLOPs done, reused runs included (0 to 1)."""
        total = sum(self.est_flops.get(k, 0.0) for k in self.labels)
        done = sum(self.est_flops.get(k, 0.0) * self.progress.get(k, 0.0) for k in self.labels)
        return done / total if total > 0 else 0.0

    def _todo(self) -> tuple[float, float]:
        """(estimated FLOPs of the runs this call computes, how many of them are done so far)."""
        todo = [k for k, s in self.status.items() if s != "reused"]
        total = sum(self.est_flops.get(k, 0.0) for k in todo)
        return total, sum(self.est_flops.get(k, 0.0) * self.progress.get(k, 0.0) for k in todo)

    def rate(self) -> float | None:
        """FLOPs per second computed so far (estimated FLOPs of the work done over elapsed time)."""
        elapsed = time.monotonic() - self.started
        done = self._todo()[1]
        return done / elapsed if done > 0 and elapsed >= 1 else None

    def eta(self) -> float | None:
        """Seconds left: estimated FLOPs left over the FLOP rate of the work done so far (None before any)."""
        total, done = self._todo()
        rate = self.rate()
        return None if rate is None else (total - done) / rate

    def line(self) -> str:
        """One line: the counts, the share of FLOPs done, elapsed time and ETA."""
        c = self.counts()
        eta = self.eta()
        left = "eta -" if eta is None else f"eta ~{_clock(eta)}"
        if c["running"] == 0 and c["queued"] == 0:
            left = "finished"
        rate = self.rate()
        speed = "" if rate is None else f", {rate:.2g} FLOP/s".replace("e+", "e")
        return (f"{self.title}: {c['done']} done, {c['running']} running, {c['queued']} queued, "
                f"{c['reused']} reused, {c['failed']} failed of {len(self.labels)} runs | "
                f"{self.flops_done():.0%} of FLOPs{speed} | {_clock(time.monotonic() - self.started)} elapsed, {left}")

    def _render(self) -> Group:
        return Group(Text(self.line(), style="bold"), self.bars)


class StudyView(RunsView):
    """The live view of a study: its plan's jobs, labels and FLOP estimates."""

    def __init__(self, plan: Plan, disable: bool = False):
        self.plan = plan
        super().__init__(f"study {plan.spec.name}", {j.key: plan.label(j.key) for j in plan.jobs}, plan.est_flops,
                         disable)
