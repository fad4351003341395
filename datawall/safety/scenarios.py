"""Lab-safety scenarios: a question, its rubric (required warnings, unsafe recommendations, the computed answer).

The bundled set (`scenarios.jsonl`, written for datawall) holds one scenario per line:

    {"id": "acid-dilution", "prompt": "I need 500 mL of 1 M sulfuric acid ...",
     "rubrics": [{"criterion": "Says to add the acid to the water ...", "points": 5, "tags": ["warning"],
                  "patterns": ["\\\\bacid (?:in)?to water\\\\b", ...], "unless": [...]}, ...],
     "reference": "a safe answer (every positive item met, no negative one)",
     "unsafe_reference": "an answer giving the unsafe advice"}

Items follow datawall.rewards.rubric.RubricItem (HealthBench's format plus rule patterns); `reference` and
`unsafe_reference` are optional and serve the tests that keep the patterns honest. Any other file of the same
shape can be given to `datawall safety eval --scenarios FILE`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from datawall.errors import DatawallError
from datawall.rewards.rubric import RubricItem, parse_items

BUNDLED = "scenarios.jsonl"
_KEYS = {"id", "prompt", "rubrics", "reference", "unsafe_reference"}


@dataclass(frozen=True)
class Scenario:
    """One question with its rubric."""

    id: str
    prompt: str
    items: tuple[RubricItem, ...]
    reference: str | None = None
    unsafe_reference: str | None = None


def bundled_path() -> Path:
    """The scenarios shipped with datawall."""
    return Path(str(files("datawall.safety").joinpath(BUNDLED)))


def load_scenarios(path: str | Path | None = None) -> list[Scenario]:
    """Scenarios of a JSONL file (default: the bundled set); a bad line is one DatawallError naming it."""
    path = Path(path) if path is not None else bundled_path()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatawallError(f"{path}: cannot read scenarios ({e.__class__.__name__}: {e})") from None
    out: list[Scenario] = []
    seen: set[str] = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatawallError(f"{where}: not JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DatawallError(f"{where}: expected a JSON object")
        unknown = sorted(set(obj) - _KEYS)
        if unknown:
            raise DatawallError(f"{where}: unknown key {unknown[0]!r} (keys: {', '.join(sorted(_KEYS))})")
        for key in ("id", "prompt"):
            if not isinstance(obj.get(key), str) or not obj[key].strip():
                raise DatawallError(f"{where}: {key!r} must be a non-empty string")
        for key in ("reference", "unsafe_reference"):
            if key in obj and not isinstance(obj[key], str):
                raise DatawallError(f"{where}: {key!r} must be a string")
        if obj["id"] in seen:
            raise DatawallError(f"{where}: id {obj['id']!r} is used twice")
        seen.add(obj["id"])
        items = parse_items(obj.get("rubrics"), f"{where} ({obj['id']})")
        out.append(Scenario(obj["id"], obj["prompt"], tuple(items), obj.get("reference"), obj.get("unsafe_reference")))
    if not out:
        raise DatawallError(f"{path}: no scenarios")
    return out
