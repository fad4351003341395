"""The one exception type for expected mistakes (bad flags, configs, data rows, checkpoints), and the one
conversion of a pydantic ValidationError into it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class DatawallError(Exception):
    """An expected, user-facing error: the CLI prints its message on one line and exits non-zero."""


def _where(err: dict, flags: bool) -> str:
    loc = [str(p) for p in err["loc"]]
    if flags and loc:
        return "--" + loc[-1].replace("_", "-")
    return ".".join(loc) or "(top level)"


def _message(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg


def validation_error(e: ValidationError, source: str = "", flags: bool = False,
                     describe: Callable[[dict], str] | None = None) -> DatawallError:
    """One line for a pydantic ValidationError: `source: where: message (and N more)`.

    A misspelt key also makes the right one "missing", so unknown keys are named first. `flags` names a field
    as its command-line flag (`--head-lr`); a validator's message that already starts with its own key path
    (`levers.rl: ...`) is not prefixed with its parent's; `describe(err)` replaces the default `where: message`.
    """
    errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")
    first = errors[0]
    if describe is not None:
        text = describe(first)
    else:
        where, msg = _where(first, flags), _message(first)
        own = msg.split(": ", 1)[0] if ": " in msg else None
        located = own is not None and ("." in own or where == "(top level)") \
            and own.startswith(where.replace("(top level)", ""))
        text = msg if located else f"{where}: {msg}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more)"
    return DatawallError(f"{source}: {text}" if source else text)
