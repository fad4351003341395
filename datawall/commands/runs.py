"""`datawall runs list | show | gc`: what the run store holds, one run in full, and cleaning up."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

app = typer.Typer(
    help="The run store: every pretraining and think run a study computed, named by the hash of its config "
    "(default store: $DATAWALL_HOME or ~/.datawall).",
    no_args_is_help=True,
)

StoreOpt = Annotated[Path | None, typer.Option("--store", help="Run store directory (default: $DATAWALL_HOME "
                                                "or ~/.datawall).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of a table.")]

STATUS_STYLE = {"done": "green", "running": "cyan", "queued": "dim", "failed": "red", "interrupted": "yellow"}


def _store(path: Path | None):
    """The store at path (or the default), which must exist: reading commands never create one."""
    from datawall.errors import DatawallError
    from datawall.study.store import RunStore, default_root

    root = (path or default_root()).expanduser()
    if not (root / "runs").is_dir():
        raise DatawallError(f"no run store at {root} (a study creates it; pick another with --store DIR)")
    return RunStore(root)


def _ago(t: float | None) -> str:
    if not t:
        return "-"
    s = max(0.0, time.time() - t)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.0f}{unit} ago"
    return f"{s:.0f}s ago"


def _describe(row: dict) -> str:
    """A few words on what the run computes: size, data and tokens; or what a think run samples."""
    from datawall.counts import format_count

    c = row["config"]
    if row["kind"] == "pretrain":
        data = c["data"]
        source = data.get("task") or Path(str(data.get("corpus"))).name
        shape = c.get("model_overrides") or {}
        size = f"{shape['dim']}x{shape.get('n_layers', '?')}" if "dim" in shape else c["size"]  # e.g. a ladder's
        words = f"{size} {source} D={format_count(c['train']['tokens'])}"
        return words + (f" U={format_count(data['unique_tokens'])}" if data.get("unique_tokens") else "")
    if row["kind"] == "think":
        return f"{c['task']} K={c['problems']} n={c['n_max']} on {c['model'][:8]}"
    return ""


def _metrics(row: dict) -> str:
    """The headline numbers: held-out loss and accuracy, or each strategy's accuracy at its largest n."""
    m = row["metrics"]
    if row["kind"] == "think":
        shown = {k: v for k, v in m.items() if "@" in k}
    else:
        shown = {label: m[k] for k, label in (("eval_loss", "loss"), ("accuracy", "acc")) if m.get(k) is not None}
    return " ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())


@app.command("list")
def list_command(
    store: StoreOpt = None,
    kind: Annotated[str | None, typer.Option(help="Only runs of this kind: pretrain or think.")] = None,
    status: Annotated[str | None, typer.Option(help="Only runs with this status: queued, running, done, failed "
                                               "or interrupted.")] = None,
    study: Annotated[str | None, typer.Option(help="Only runs used by this study.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the store's runs: key, kind, status, what each computes and its final metrics."""
    from datawall.errors import DatawallError
    from datawall.study.store import STATUSES

    if status is not None and status not in STATUSES:
        raise DatawallError(f"--status: unknown status {status!r}; choose {', '.join(STATUSES)}")
    s = _store(store)
    rows = s.list(kind=kind, status=status, study=study)
    if as_json:
        typer.echo(json.dumps({"store": str(s.root), "runs": rows}))
        return
    console = Console()
    if not rows:
        console.print(f"no runs in {s.root}" + (" matching the filters" if kind or status or study else ""))
        return
    table = Table(title=f"runs in {s.root}")
    with_studies = any(r["studies"] for r in rows)
    for col in ("key", "kind", "status", "what", "metrics", *(["studies"] if with_studies else []), "updated"):
        table.add_column(col, no_wrap=col in ("key", "kind", "status", "updated"),
                         min_width=20 if col == "metrics" else None)
    for r in rows:
        cells = [Text(r["key"][:12], style="bold"), r["kind"], Text(r["status"], style=STATUS_STYLE.get(r["status"])),
                 Text(_describe(r)), Text(_metrics(r))]
        table.add_row(*cells, *([Text(", ".join(r["studies"]))] if with_studies else []), _ago(r["updated"]))
    console.print(table)
    counts = {st: sum(r["status"] == st for r in rows) for st in STATUSES}
    console.print(", ".join(f"{n} {st}" for st, n in counts.items() if n) + "  (details: datawall runs show KEY)")


@app.command("show")
def show_command(
    run: Annotated[str, typer.Argument(help="Run key (or a unique prefix of 4+ characters) or directory name "
                                       "<kind>-<key>.")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one run: its config, status, directory, dependencies, result and files."""
    row = _store(store).show(run)
    if as_json:
        typer.echo(json.dumps(row))
        return
    console = Console()
    console.print(f"[bold]{row['name']}[/bold]  {row['kind']} (kind version {row['version']})  "
                  f"[{STATUS_STYLE.get(row['status'], '')}]{row['status']}[/]")
    console.print(f"dir:      {row['dir']}")
    console.print(f"studies:  {', '.join(row['studies']) or '-'}")
    if row["deps"]:
        console.print(f"deps:     {', '.join(row['deps'])}")
    if row["holder"]:
        h = row["holder"]
        console.print(f"held by:  pid {h.get('pid')} on {h.get('host')} since {_ago(h.get('since'))}")
    if row["progress"] is not None:
        console.print(f"progress: {row['progress']:.0%}")
    if row["error"]:
        console.print(f"[red]error:[/red]    {row['error']}")
    console.print("config:")
    console.print_json(json.dumps(row["config"]))
    if row["result"] is not None:
        console.print("result:")
        shown = {k: v for k, v in row["result"].items() if not isinstance(v, dict | list)}
        console.print_json(json.dumps(shown))
    console.print(f"files:    {'  '.join(row['files']) or '-'}")


@app.command("gc")
def gc_command(
    store: StoreOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be removed.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove unfinished runs no live process holds, stale locks and index rows whose directories are gone.

    Unfinished means interrupted or failed: their checkpoints go too, so such a run restarts from scratch.
    Finished runs are never removed (only their leftover temporary files).
    """
    out = _store(store).gc(dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps(out))
        return
    verb = "would remove" if dry_run else "removed"
    console = Console(stderr=False)
    console.print(f"{verb} {len(out['removed_dirs'])} unfinished run dir(s), {len(out['removed_rows'])} index "
                  f"row(s), {len(out['removed_locks'])} stale lock(s); {out['freed_bytes'] / 1e6:.1f} MB")
    for name in out["removed_dirs"]:
        console.print(f"  {name}")
    if out["running"]:
        console.print(f"kept {len(out['running'])} run(s) held by a live process: {', '.join(out['running'])}")
