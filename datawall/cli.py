"""The datawall command line: one command, one subcommand group per lever."""

from __future__ import annotations

import sys

import typer

from datawall.commands import laws, models, tasks
from datawall.errors import DatawallError

app = typer.Typer(
    name="datawall",
    help="Measure where the next FLOP (or dollar) buys the most model quality when unique data runs out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(tasks.app, name="tasks")
app.add_typer(laws.app, name="laws")
models.register(app)  # pretrain, eval, sample


def main() -> None:
    """Entry point: run the app; expected mistakes become one line on stderr and exit code 2."""
    try:
        app()
    except DatawallError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
