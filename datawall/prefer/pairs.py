"""Preference pairs: (prompt, chosen, rejected) rows in a JSONL file, read with one clear line per bad row.

A row needs `prompt`, `chosen` and `rejected` (strings; chosen and rejected must differ) and may name its
`grader`. Pairs that `datawall prefer pairs` samples and grades carry more, kept as they are: `problem` (the
train-split index), `chosen_reward` and `rejected_reward` (the verifier's, for analysis only; training never reads
them), `chosen_tokens`, `rejected_tokens` and `votes`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datawall.atomic import atomic_write_text
from datawall.errors import DatawallError

REQUIRED = ("prompt", "chosen", "rejected")


@dataclass
class Pair:
    """One judged comparison: the prompt, the answer preferred and the one passed over."""

    prompt: str
    chosen: str
    rejected: str
    grader: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # everything else the row holds
    where: str | None = None  # "FILE line N" of a pair read from a file, for errors found later

    @property
    def problem(self) -> int | None:
        """The train-split problem index of a sampled pair (None for a pair from elsewhere)."""
        return self.extra.get("problem")

    def to_dict(self) -> dict:
        row = {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}
        if self.grader is not None:
            row["grader"] = self.grader
        return row | self.extra


def parse_pair(obj: Any, where: str) -> Pair:
    """A Pair from one decoded row; DatawallError naming `where` (file and line) if it is not one."""
    if not isinstance(obj, dict):
        raise DatawallError(f"{where}: expected a JSON object with {', '.join(REQUIRED)}")
    for key in REQUIRED:
        if key not in obj:
            raise DatawallError(f"{where}: missing field {key!r}")
        if not isinstance(obj[key], str):
            raise DatawallError(f"{where}: field {key!r} must be a string, got {type(obj[key]).__name__}")
    if not obj["chosen"]:
        raise DatawallError(f"{where}: field 'chosen' is empty")
    if obj["chosen"] == obj["rejected"]:
        raise DatawallError(f"{where}: chosen and rejected are identical (a pair must prefer one answer to "
                            "another)")
    grader = obj.get("grader")
    if grader is not None and not isinstance(grader, str):
        raise DatawallError(f"{where}: field 'grader' must be a string, got {type(grader).__name__}")
    extra = {k: v for k, v in obj.items() if k not in (*REQUIRED, "grader")}
    return Pair(obj["prompt"], obj["chosen"], obj["rejected"], grader, extra, where)


def read_pairs(path: str | Path) -> list[Pair]:
    """Every pair of a JSONL file (blank lines skipped); one DatawallError naming the line of the first bad row."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatawallError(f"{path}: no such pairs file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatawallError(f"{path}: cannot read pairs ({e})") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatawallError(f"{where}: not JSON ({e.msg})") from None
        pairs.append(parse_pair(obj, where))
    if not pairs:
        raise DatawallError(f"{path}: no pairs (expected one JSON object a line with {', '.join(REQUIRED)})")
    return pairs


def write_pairs(path: str | Path, pairs: list[Pair]) -> None:
    """Write pairs as JSONL, atomically."""
    atomic_write_text(path, "".join(json.dumps(p.to_dict()) + "\n" for p in pairs))


def metadata_path(pairs_path: str | Path) -> Path:
    """Where `prefer pairs` describes a pairs file it wrote: PAIRS.json beside PAIRS.jsonl."""
    p = Path(pairs_path)
    return p.with_suffix(".json") if p.suffix == ".jsonl" else p.with_name(p.name + ".json")


def read_metadata(pairs_path: str | Path) -> dict | None:
    """The description `prefer pairs` wrote beside a pairs file (task, graders, cost), or None."""
    path = metadata_path(pairs_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DatawallError(f"{path}: not a valid pairs description ({e})") from None
    if not isinstance(data, dict):
        raise DatawallError(f"{path}: not a valid pairs description (expected a JSON object)")
    return data
