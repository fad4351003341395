"""`datawall study [SPEC.toml | --preset NAME]`: run every lever of a study and report where the next FLOP goes;
`datawall study init [PATH]` writes a commented spec to start from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from datawall.errors import DatawallError
from datawall.progress import stderr


class _DefaultRun(TyperGroup):
    """`datawall study ARGS` means `datawall study run ARGS` unless ARGS starts with a subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultRun,
    help="Run a study: train the baseline, pull each lever (scale, repetition, test-time compute, synthetic data, "
    "preference tuning, RL with verifiable rewards), keep every run "
    "in the run store and write OUT/report.html, summary.md and summary.json with the recommendation. "
    "`datawall study SPEC.toml` and `datawall study --preset quick` are short for `datawall study run ...`.",
)


@app.command()
def run(
    spec: Annotated[Path | None, typer.Argument(metavar="[SPEC.toml]", help="Study spec (see `datawall study init`).",
                                                show_default=False)] = None,
    preset: Annotated[str | None, typer.Option(help="Embedded spec instead of a file: quick (~10 min on 2 CPU "
                                               "cores), standard (~1 h) or gpu (one CUDA device).")] = None,
    store: Annotated[Path | None, typer.Option(help="Run store (default: $DATAWALL_HOME or ~/.datawall); "
                                               "finished runs in it are reused, unfinished ones resumed.")] = None,
    out: Annotated[Path | None, typer.Option(help="Report directory (default: ./study-<name>).")] = None,
    executor: Annotated[str, typer.Option(help="local (a process pool) or ray.")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (with --executor ray).")] = None,
    workers: Annotated[int | None, typer.Option(help="Runs at once (default: cores // threads; 0 = one at a time "
                                                "in this process).", min=0)] = None,
    threads: Annotated[int, typer.Option(help="Torch threads per run.", min=1)] = 1,
    keep_going: Annotated[bool, typer.Option(help="After a failed run, still run everything that does not "
                                             "depend on it.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the plan (runs and estimated FLOPs) and stop.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print summary.json on stdout (no live view).")] = False,
) -> None:
    """Run a study (SPEC.toml or --preset) and write its report."""
    from datawall.study.executors import get_executor
    from datawall.study.plan import make_plan
    from datawall.study.progress import StudyView
    from datawall.study.report import write_report
    from datawall.study.spec import load_preset, load_spec
    from datawall.study.store import RunStore

    if (spec is None) == (preset is None):
        raise DatawallError("give a study spec file or --preset quick|standard|gpu (not both); "
                            "`datawall study init` writes a spec to edit")
    study = load_spec(spec) if spec is not None else load_preset(preset)
    plan = make_plan(study)
    out = out or Path(f"study-{study.name}")
    if dry_run:  # a plan can be read anywhere: the device only has to exist where the runs run
        _print_plan(plan, as_json)
        return
    if executor == "local":
        from datawall.device import require_device

        require_device(study.train.device, "train.device")
    runner = get_executor(executor, workers=workers, address=address, threads=threads)
    runs = RunStore(store)
    if not as_json:
        stderr.print(f"study {study.name}: {len(plan.jobs)} runs, ~{plan.flops:.2g} FLOPs ({plan.train_flops:.2g} "
                     f"training; estimated), store {runs.root}, report in {out}")
    try:
        with StudyView(plan, disable=as_json) as view:
            results = runner.run(plan.jobs, runs, on_event=view, quiet=True, study=study.name,
                                 keep_going=keep_going)
    except KeyboardInterrupt:
        stderr.print("interrupted: finished runs are kept and unfinished ones resume from their checkpoints "
                     "when you rerun the same command")
        raise typer.Exit(130) from None
    finally:
        runner.close()
    summary = write_report(plan, results, out)
    if as_json:
        print(json.dumps(summary))
        return
    stderr.print(f"\n[bold]{summary['recommendation']['sentence']}[/bold]\n", highlight=False)
    stderr.print(f"report: {out / 'report.html'}  (also summary.md, summary.json)")


def _print_plan(plan, as_json: bool) -> None:
    rows = [{"key": j.key, "kind": j.kind, "label": plan.label(j.key), "lever": plan.lever_of.get(j.key, "baseline"),
             "est_flops": plan.est_flops[j.key], "deps": list(j.deps)} for j in plan.jobs]
    by_lever = plan.flops_by_lever()
    if as_json:
        print(json.dumps({"study": plan.spec.name, "flops": plan.flops, "train_flops": plan.train_flops,
                          "levers": by_lever, "runs": rows}))
        return
    for r in rows:
        print(f"{r['kind']}-{r['key']}  {r['label']:<40} {r['lever']:<11} ~{r['est_flops']:.2g} FLOPs")
    print(f"{len(rows)} runs, ~{plan.flops:.2g} FLOPs estimated ({plan.train_flops:.2g} training); by lever: "
          + ", ".join(f"{lever} {flops:.2g}" for lever, flops in by_lever.items()))


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the spec.")] = Path("study.toml"),
    preset: Annotated[str, typer.Option(help="Preset to start from: quick, standard or gpu.")] = "quick",
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented study spec (a copy of a preset) to edit and run with `datawall study PATH`."""
    from datawall.atomic import atomic_write_text
    from datawall.study.spec import preset_text

    text = preset_text(preset)
    if path.exists() and not force:
        raise DatawallError(f"{path} exists; pass --force to overwrite it")
    atomic_write_text(path, text)
    print(f"wrote {path}; edit it, then run: datawall study {path}", file=sys.stderr)
