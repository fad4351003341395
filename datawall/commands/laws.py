"""`datawall laws` commands (placeholder until its module lands)."""

import typer

app = typer.Typer(help="laws", no_args_is_help=True)
