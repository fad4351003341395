"""`datawall ARGS` invoked in this process for the CLI tests: the result, its JSON, or its one-line error."""

from __future__ import annotations

import json

from tiny_arith import one_thread
from typer.testing import CliRunner

from datawall.cli import app
from datawall.errors import DatawallError


def run(*args: str):
    """click's Result of `datawall ARGS` (a DatawallError is in .exception)."""
    return CliRunner().invoke(app, list(args))


def invoke(*args: str) -> tuple[int, str]:
    """(exit code, output) of `datawall ARGS` on one torch thread; an expected error comes back as exit code 2 and
    its one line, as `main` prints it."""
    try:
        with one_thread():
            result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    except DatawallError as e:
        return 2, f"error: {e}"
    return result.exit_code, result.output


def run_json(*args: str) -> dict:
    """The JSON object `datawall ARGS --json` prints (asserting it succeeded)."""
    result = run(*args, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])


def one_line_error(result, *words: str) -> str:
    """The error of a failed command, asserted to be one line without a traceback holding every word."""
    assert result.exit_code != 0
    text = str(result.exception) if result.exception is not None else result.output
    assert "Traceback" not in result.output and "\n" not in text.strip(), text
    for w in words:
        assert w in text, text
    return text
