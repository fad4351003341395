"""The live view of a running study on stderr: runs done / running / queued / reused / failed, one bar per
running run, and an ETA from the plan's FLOP estimates (the work left divided by the FLOP rate so far).
"""

from __future__ import annotations

import time

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.text import Text

from datawall.progress import stderr
from datawall.study.executors import Event
from datawall.study.plan import Plan


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


class StudyView:
    """Call it with each executor Event (on_event=view); use it as a context manager around the run."""

    def __init__(self, plan: Plan, disable: bool = False):
        self.plan = plan
        self.status: dict[str, str] = {}
        self.progress: dict[str, float] = {}
        self.started = time.monotonic()
        self.bars = Progress(TextColumn("  {task.description}"), BarColumn(bar_width=30),
                             TextColumn("{task.percentage:>3.0f}%"), console=stderr)
        self.tasks: dict[str, int] = {}
        self.live = None if disable else Live(Group(Text(""), self.bars), console=stderr, refresh_per_second=4,
                                              transient=False)

    def __enter__(self) -> StudyView:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(*exc)

    def __call__(self, event: Event) -> None:
        """Record one event and redraw."""
        self.status[event.key] = event.status
        if event.status == "running":
            self.progress[event.key] = event.progress or 0.0
            if event.key not in self.tasks:
                self.tasks[event.key] = self.bars.add_task(self.plan.label(event.key), total=1.0)
            self.bars.update(self.tasks[event.key], completed=self.progress[event.key])
        elif event.key in self.tasks:
            self.bars.remove_task(self.tasks.pop(event.key))
        if event.status in ("done", "reused"):
            self.progress[event.key] = 1.0
        if self.live is not None:
            self.live.update(self._render())

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        out = {s: 0 for s in ("done", "running", "queued", "reused", "failed")}
        for s in self.status.values():
            out[s if s in out else "queued"] += 1
        return out

    def eta(self) -> float | None:
        """Seconds left: estimated FLOPs left over the FLOP rate of the work done so far (None before any)."""
        todo = [k for k, s in self.status.items() if s != "reused"]
        total = sum(self.plan.est_flops.get(k, 0.0) for k in todo)
        done = sum(self.plan.est_flops.get(k, 0.0) * self.progress.get(k, 0.0) for k in todo)
        elapsed = time.monotonic() - self.started
        if done <= 0 or elapsed < 1:
            return None
        return (total - done) / (done / elapsed)

    def line(self) -> str:
        """One line: the counts, elapsed time and ETA."""
        c = self.counts()
        eta = self.eta()
        left = "eta -" if eta is None else f"eta ~{_clock(eta)}"
        if c["running"] == 0 and c["queued"] == 0:
            left = "finished"
        return (f"study {self.plan.spec.name}: {c['done']} done, {c['running']} running, {c['queued']} queued, "
                f"{c['reused']} reused, {c['failed']} failed of {len(self.plan.jobs)} runs | "
                f"{_clock(time.monotonic() - self.started)} elapsed, {left}")

    def _render(self) -> Group:
        return Group(Text(self.line(), style="bold"), self.bars)
