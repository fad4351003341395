"""Human-friendly counts on the command line: 200k, 3M, 1.5B, 1e9."""

from __future__ import annotations

import math

from datawall.errors import DatawallError

_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(text: str | int | float, what: str = "count") -> int:
    """Parse '200k', '3M', '1.5B', '1e9' or a plain number into a positive int."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().replace("_", "").replace(",", "")
        scale = 1.0
        if s and s[-1].lower() in _SUFFIXES:
            scale = _SUFFIXES[s[-1].lower()]
            s = s[:-1]
        try:
            value = float(s) * scale
        except ValueError:
            raise DatawallError(f"{what}: cannot read {text!r} as a count (examples: 200k, 3M, 1.5B, 1e9)") from None
    if not math.isfinite(value) or value <= 0:
        raise DatawallError(f"{what}: must be a positive finite number, got {text!r}")
    return int(round(value))


def format_count(n: float) -> str:
    """Format a count compactly: 1234567 -> '1.23M'."""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        # compare after rounding so 999,936 reads '1M', not '1e+03k'
        if abs(float(f"{n:.3g}")) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"
