"""The datawall command line: one command, one subcommand group per lever."""

import os

# numpy's OpenBLAS threads stall beside torch's on a 2-core machine; set before numpy loads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys  # noqa: E402

import typer  # noqa: E402

from datawall.commands import laws, models, reward, runs, serve, study, tasks, think  # noqa: E402
from datawall.errors import DatawallError  # noqa: E402

app = typer.Typer(
    name="datawall",
    help="Measure where the next FLOP (or dollar) buys the most model quality when unique data runs out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(tasks.app, name="tasks")
app.add_typer(laws.app, name="laws")
app.add_typer(runs.app, name="runs")
app.add_typer(study.app, name="study")
models.register(app)  # pretrain, eval, sample
serve.register(app)
think.register(app)
reward.register(app)  # reward train


def main() -> None:
    """Entry point: run the app; expected mistakes become one line on stderr and exit code 2."""
    try:
        app()
    except DatawallError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
