"""`datawall pretrain`, `eval` and `sample` (placeholder)."""

import typer


def register(app: typer.Typer) -> None:
    """Add the model commands to the root app."""
