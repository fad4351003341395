"""Task names -> task classes; `get_task` validates settings given as values or as CLI strings."""

from __future__ import annotations

from typing import Any

from datawall.errors import DatawallError
from datawall.tasks.arith import ArithTask
from datawall.tasks.base import Task
from datawall.tasks.countdown import CountdownTask
from datawall.tasks.jsonl import JsonlTask
from datawall.tasks.lab import LabTask
from datawall.tasks.reasoning_gym import PREFIX as RG_PREFIX
from datawall.tasks.reasoning_gym import ReasoningGymTask
from datawall.tasks.trace import TraceTask

TASKS: dict[str, type[Task]] = {"arith": ArithTask, "trace": TraceTask, "countdown": CountdownTask, "lab": LabTask}
JSONL_PREFIX = "jsonl:"


def known_names() -> list[str]:
    """Every name get_task accepts (jsonl takes a path, rg a reasoning-gym dataset)."""
    return [*TASKS, JSONL_PREFIX + "PATH", RG_PREFIX + "NAME"]


def task_class(name: str) -> type[Task]:
    """The class behind a task name (jsonl:PATH -> JsonlTask), or DatawallError listing the known names."""
    name = name.strip()
    if name in TASKS:
        return TASKS[name]
    if name == "jsonl" or name.startswith(JSONL_PREFIX):
        return JsonlTask
    if name == "rg" or name.startswith(RG_PREFIX):
        return ReasoningGymTask
    raise DatawallError(f"unknown task {name!r} (known: {', '.join(known_names())})")


def get_task(name: str, **settings: Any) -> Task:
    """A task by name with validated settings: get_task('arith', digits=5), get_task('jsonl:gsm8k.jsonl')."""
    cls = task_class(name)
    name = name.strip()
    if cls is JsonlTask and name != "jsonl":
        path = name[len(JSONL_PREFIX):]
        if not path:
            raise DatawallError("jsonl task needs a file: jsonl:PATH")
        if "path" in settings and settings["path"] != path:
            raise DatawallError(f"jsonl: the name gives path {path!r} but the settings give {settings['path']!r}")
        settings = {**settings, "path": path}
    elif cls is JsonlTask and "path" not in settings:
        raise DatawallError("jsonl task needs a file: jsonl:PATH")
    elif cls is ReasoningGymTask:
        dataset = name[len(RG_PREFIX):] if name != "rg" else settings.get("dataset", "")
        if not dataset:
            raise DatawallError("rg task needs a reasoning-gym dataset: rg:NAME (e.g. rg:gsm_symbolic)")
        if "dataset" in settings and settings["dataset"] != dataset:
            raise DatawallError(f"rg: the name gives dataset {dataset!r} but the settings give {settings['dataset']!r}")
        settings = {**settings, "dataset": dataset}
    return cls.create(**settings)


def list_tasks() -> list[tuple[str, str]]:
    """(name, one-line description) of every task family."""
    return [(name, cls.summary) for name, cls in TASKS.items()] + [(JSONL_PREFIX + "PATH", JsonlTask.summary),
                                                                   (RG_PREFIX + "NAME", ReasoningGymTask.summary)]


def parse_task_args(text: str) -> dict[str, str]:
    """Parse 'k=v,k=v' into a dict; a comma-separated piece without '=' continues the previous value
    ('digits=3,ops=add,sub' -> {'digits': '3', 'ops': 'add,sub'})."""
    out: dict[str, str] = {}
    last = None
    for piece in (text or "").split(","):
        if "=" in piece:
            key, value = (s.strip() for s in piece.split("=", 1))
            if not key:
                raise DatawallError(f"task args: missing name before '=' in {piece.strip()!r}")
            if key in out:
                raise DatawallError(f"task args: {key!r} is given twice")
            out[key], last = value, key
        elif piece.strip():
            if last is None:
                raise DatawallError(f"task args: expected name=value, got {piece.strip()!r}")
            out[last] += "," + piece.strip()
    return out
