"""`datawall tasks` commands (placeholder until its module lands)."""

import typer

app = typer.Typer(help="tasks", no_args_is_help=True)
