"""Progress where stderr is not a terminal: plain lines with count, rate, info, elapsed and ETA."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress

import datawall.progress as progress
from datawall.errors import DatawallError
from datawall.progress import PlainProgress, progress_bar

DATAWALL = Path(sys.executable).parent / "datawall"
CLOCK = r"\d+:\d\d:\d\d"


def test_every_update_is_a_line_at_interval_zero():
    out = io.StringIO()
    with PlainProgress(rate_unit="tok/s", interval=0, file=out) as bar:
        job = bar.add_task("train", total=4, rate="-", info="")
        bar.update(job, completed=1, rate="8.1k", info="loss 2.315")
        bar.advance(job)
        bar.update(job, advance=2, info="loss 1.500")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert re.fullmatch(rf"train: 1/4 \(25%\)  8\.1k tok/s  loss 2\.315  elapsed {CLOCK}  eta {CLOCK}", lines[0])
    assert lines[1].startswith("train: 2/4 (50%)  8.1k tok/s  loss 2.315")
    assert re.fullmatch(rf"train: 4/4 \(100%\)  8\.1k tok/s  loss 1\.500  elapsed {CLOCK}  done", lines[2])
    assert bar.tasks[0].completed == 4


def test_a_long_interval_prints_only_the_last_line_and_a_stopped_task_its_state():
    out = io.StringIO()
    with PlainProgress(rate_unit="", interval=3600, file=out) as bar:
        done = bar.add_task("sample", total=3, rate="", info="solutions")
        left = bar.add_task("rollouts", total=10, rate="", info="")
        for _ in range(3):
            bar.advance(done)
        bar.update(left, completed=4)
        assert out.getvalue().count("\n") == 1 and out.getvalue().startswith("sample: 3/3")  # the finished one
    first, last = out.getvalue().splitlines()
    # no rate given: the line shows items per second of its own
    assert re.fullmatch(rf"sample: 3/3 \(100%\)  [\d.,e+]+/s  solutions  elapsed {CLOCK}  done", first)
    assert re.fullmatch(rf"rollouts: 4/10 \(40%\)  [\d.,e+]+/s  elapsed {CLOCK}  eta {CLOCK}", last)


def test_disabled_prints_nothing_but_counts():
    out = io.StringIO()
    with PlainProgress(disable=True, interval=0, file=out) as bar:
        job = bar.add_task("fit", total=None, rate="", info="")
        bar.advance(job, 5)
        bar.refresh()
    assert out.getvalue() == "" and bar.tasks[0].completed == 5


def test_bar_on_a_terminal_lines_elsewhere(monkeypatch):
    monkeypatch.setattr(progress, "stderr", Console(stderr=True, force_terminal=True))
    assert isinstance(progress_bar(), Progress)
    monkeypatch.setattr(progress, "stderr", Console(file=io.StringIO()))  # a file is not a terminal
    assert isinstance(progress_bar(), PlainProgress)
    monkeypatch.setenv("DATAWALL_PROGRESS_INTERVAL", "2.5")
    assert progress_bar(rate_unit="prob/s").interval == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("DATAWALL_PROGRESS_INTERVAL", bad)
        with pytest.raises(DatawallError, match="DATAWALL_PROGRESS_INTERVAL"):
            progress_bar()


def test_pretrain_with_stderr_a_pipe_prints_lines_and_json_stays_one_object(tmp_path):
    env = {**os.environ, "DATAWALL_PROGRESS_INTERVAL": "0", "DATAWALL_HOME": str(tmp_path / "home"),
           "DATAWALL_CACHE": str(tmp_path / "cache")}
    cmd = [str(DATAWALL), "pretrain", "--task", "arith", "--task-args", "digits=2", "--size", "100k", "--tokens",
           "2k", "--batch-size", "16", "--eval-problems", "20", "--out", str(tmp_path / "run"), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)  # stderr is a pipe
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # the whole of stdout is one JSON object
    assert result["eval_problems"] == 20
    lines = proc.stderr.splitlines()
    train = [line for line in lines if line.startswith("train: ")]
    steps = re.fullmatch(r"train: (\d+)/(\d+) .*", train[-1]).groups()
    assert steps[0] == steps[1] and train[-1].endswith("done") and " tok/s  loss " in train[-1]
    assert any(line.startswith("eval: 20/20 (100%)") and "acc " in line for line in lines), lines
    assert not any("\x1b[" in line or "\r" in line for line in lines)  # no terminal control codes


def test_the_runs_view_prints_plain_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    """A study or ladder in a log or CI: a line whenever a run starts, ends or fails, and every interval between."""
    from datawall.study.executors import Event
    from datawall.study.progress import RunsView

    monkeypatch.setenv("DATAWALL_PROGRESS_INTERVAL", "3600")
    with RunsView("study quick", {"a": "baseline", "b": "scale 1m"}, {"a": 1.0, "b": 3.0}) as view:
        assert view.plain and view.live is None
        view(Event("a", "pretrain", "running", progress=0.0))
        view(Event("a", "pretrain", "running", progress=0.5))  # progress inside the interval: no line
        view(Event("a", "pretrain", "done", {}))
        view(Event("b", "pretrain", "failed", {}))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" | ")[0] for line in lines] == [
        "study quick: 0 done, 1 running, 1 queued, 0 reused, 0 failed of 2 runs",
        "study quick: 1 done, 0 running, 1 queued, 0 reused, 0 failed of 2 runs",
        "study quick: 1 done, 0 running, 0 queued, 0 reused, 1 failed of 2 runs",
        "study quick: 1 done, 0 running, 0 queued, 0 reused, 1 failed of 2 runs",  # the last state, at the end
    ]
    assert lines[-1].endswith("elapsed, finished")
    monkeypatch.setenv("DATAWALL_PROGRESS_INTERVAL", "0")  # every update once the interval has passed
    with RunsView("ladder", {"a": "c1e9"}, {"a": 1.0}) as view:
        for step in range(3):
            view(Event("a", "pretrain", "running", progress=step / 3))
    assert len(capsys.readouterr().err.splitlines()) == 4


def test_jobs_not_yet_announced_count_as_queued():
    from datawall.study.executors import Event
    from datawall.study.progress import RunsView

    view = RunsView("study quick", {"a": "baseline", "b": "scale 1m", "c": "think"}, {"a": 1, "b": 1, "c": 1},
                    disable=True)
    view(Event("a", "pretrain", "reused", {}))
    assert view.counts() == {"done": 0, "running": 0, "queued": 2, "reused": 1, "failed": 0}
    assert not view.line().endswith("finished")
