"""`datawall tasks list|show|export`: the verifiable task worlds, their problems, and a split as a benchmark file."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from datawall.atomic import atomic_write_text
from datawall.errors import DatawallError
from datawall.tasks import get_task, list_tasks, parse_task_args
from datawall.tasks.registry import task_class
from datawall.tasks.splits import SPLITS

app = typer.Typer(
    help="Verifiable task worlds: list them, show problems with their worked solutions and answers, or export a "
    "split as a JSONL benchmark file.",
    no_args_is_help=True,
)

JSON_HELP = "Print one JSON object on stdout instead of a table."


def _settings_schema(name: str) -> dict[str, dict[str, object]]:
    """name -> {default, description} for a task family's settings."""
    fields = task_class(name.split(":")[0]).Settings.model_fields
    return {k: {"default": None if f.is_required() else f.default, "description": f.description or ""}
            for k, f in fields.items()}


@app.command("list")
def list_command(json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the task families, what they contain, and the settings each accepts."""
    rows = [{"name": name, "description": desc, "settings": _settings_schema(name)} for name, desc in list_tasks()]
    if json_out:
        typer.echo(json.dumps({"tasks": rows}))
        return
    table = Table(title="datawall tasks", show_lines=True)
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("description")
    table.add_column("settings (default)")
    for row in rows:
        settings = "\n".join(f"{k}={v['default']}  {v['description']}" for k, v in row["settings"].items())
        table.add_row(Text(row["name"]), Text(row["description"]), Text(settings))
    Console().print(table)
    Console().print("Show problems: datawall tasks show arith --n 3 --task-args 'digits=5,ops=add,sub'")


@app.command("show")
def show_command(
    name: str = typer.Argument(..., help="Task name: arith, trace, countdown, or jsonl:PATH."),
    n: int = typer.Option(3, "--n", help="How many problems to show."),
    split: str = typer.Option("train", "--split", help="Which split: train or test (held out)."),
    start: int = typer.Option(0, "--start", help="Index of the first problem shown."),
    task_args: str = typer.Option(
        "", "--task-args", help="Task settings as 'k=v,k=v', e.g. 'digits=5,ops=add,sub' (see `tasks list`)."
    ),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show problems of a task: the prompt, the worked reference solution, and the answer."""
    if n < 1:
        raise DatawallError(f"--n must be at least 1, got {n}")
    if start < 0:
        raise DatawallError(f"--start must be >= 0, got {start}")
    if split not in SPLITS:
        raise DatawallError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    task = get_task(name, **parse_task_args(task_args))
    size = task.size(split)
    if size is not None:
        n = min(n, size - start)
        if n < 1:
            raise DatawallError(f"{task.name}: --start {start} is past the end of the {split} split ({size} problems)")
    problems = task.problems(split, n, start)
    if json_out:
        out = {
            "task": task.name,
            "settings": task.settings.model_dump(),
            "description": task.describe(),
            "split": split,
            "size": size,
            "alphabet": task.alphabet,
            "problems": [
                {"index": p.index, "prompt": p.prompt, "solution": task.solution(p), "answer": p.answer,
                 "meta": p.meta}
                for p in problems
            ],
        }
        typer.echo(json.dumps(out))
        return
    console = Console()
    console.print(Text(task.describe(), style="bold"))
    for p in problems:
        body = Text()
        body.append(p.prompt, style="bold cyan")
        body.append(task.solution(p))
        body.append("\n\nanswer: ", style="dim")
        body.append(p.answer, style="bold green")
        console.print(Panel(body, title=f"{split} #{p.index}", title_align="left", expand=False))


@app.command("export")
def export_command(
    name: str = typer.Argument(..., help="Task name: arith, trace, countdown, rg:NAME, or jsonl:PATH."),
    out: Path = typer.Option(..., "--out", help="JSONL file to write (replaced atomically)."),
    n: int = typer.Option(100, "--n", help="How many problems (fewer if the split is smaller)."),
    split: str = typer.Option("test", "--split", help="Which split: train or test (held out)."),
    start: int = typer.Option(0, "--start", help="Index of the first problem exported."),
    task_args: str = typer.Option("", "--task-args", help="Task settings as 'k=v,k=v' (see `tasks list`)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Write problems as {question, answer, solution} JSON lines: a fixed benchmark file that `jsonl:PATH` with
    `split=all` scores whole, and that lm-eval or any other harness reads."""
    if n < 1:
        raise DatawallError(f"--n must be at least 1, got {n}")
    if start < 0:
        raise DatawallError(f"--start must be >= 0, got {start}")
    if split not in SPLITS:
        raise DatawallError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    task = get_task(name, **parse_task_args(task_args))
    size = task.size(split)
    if size is not None:
        n = min(n, size - start)
        if n < 1:
            raise DatawallError(f"{task.name}: --start {start} is past the end of the {split} split ({size} problems)")
    rows = [{"question": p.meta.get("question", p.prompt), "answer": p.answer, "solution": task.solution(p)}
            for p in task.problems(split, n, start)]
    atomic_write_text(out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    summary = {"task": task.name, "split": split, "start": start, "problems": len(rows), "out": str(out)}
    if json_out:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(f"wrote {len(rows)} {split} problems of {task.name} to {out}; "
                   f"score them whole with --task jsonl:{out} --task-args split=all")
