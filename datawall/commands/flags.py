"""A typed config built from a command's flags, its validation errors written as those flags (`--n-max: ...`)."""

from __future__ import annotations

import re
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from datawall.errors import validation_error

Config = TypeVar("Config", bound=BaseModel)


def config_from_flags(cls: type[Config], **flags) -> Config:
    """cls(**flags); a bad value is one DatawallError line naming its flag."""
    try:
        return cls(**flags)
    except ValidationError as e:
        raise validation_error(e, describe=lambda err: as_flags(cls, err)) from None


def as_flags(cls: type[BaseModel], err: dict) -> str:
    """`--flag: reason`, with the settings a cross-field reason names written as their flags (a quoted word is a
    value, not a setting: "filter 'orm'" reads "--filter 'orm'")."""
    msg = err["msg"].removeprefix("Value error, ")
    if err["loc"]:
        return f"--{str(err['loc'][0]).replace('_', '-')}: {msg}"
    names = r"(?<!')\b(" + "|".join(cls.model_fields) + r")\b(?!')"
    return re.sub(names, lambda m: "--" + m.group(1).replace("_", "-"), msg)
