"""The datawall command line: one command, one subcommand group per lever."""

import os

# numpy's OpenBLAS threads stall beside torch's on a 2-core machine; set before numpy loads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys  # noqa: E402

import typer  # noqa: E402

from datawall.commands import (  # noqa: E402
    imports,
    laws,
    models,
    prefer,
    reward,
    rl,
    runs,
    safety,
    serve,
    study,
    synth,
    tasks,
    think,
)
from datawall.errors import DatawallError  # noqa: E402

HELP = """Measure where the next FLOP (or dollar) buys the most model quality when unique data runs out.

Long commands show progress on stderr: a bar on a terminal, else (a log, a pipe, nohup, a notebook) a plain \
line per task every DATAWALL_PROGRESS_INTERVAL seconds (default 5) with done/total, rate, elapsed and ETA. \
With --json, stdout holds exactly one JSON object; progress and logs stay on stderr."""

app = typer.Typer(
    name="datawall",
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def version() -> str:
    """The installed package's version (its metadata), or the source tree's when it is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("datawall")
    except PackageNotFoundError:
        from datawall import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        print(f"datawall {version()}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: bool = typer.Option(False, "--version", "-V", callback=_print_version, is_eager=True,
                                      help="Print 'datawall X.Y.Z' and exit."),
) -> None:
    pass
app.add_typer(tasks.app, name="tasks")
app.add_typer(laws.app, name="laws")
app.add_typer(runs.app, name="runs")
app.add_typer(study.app, name="study")
app.add_typer(synth.app, name="synth")
app.add_typer(safety.app, name="safety")
models.register(app)  # pretrain, eval, sample
serve.register(app)
think.register(app)
reward.register(app)  # reward train
imports.register(app)  # import FILE.gguf OUT
prefer.register(app)  # prefer pairs | train | reward | overopt
rl.register(app)  # rl --model DIR --task NAME --out DIR


def main() -> None:
    """Entry point: run the app; expected mistakes become one line on stderr and exit code 2."""
    try:
        app()
    except DatawallError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
