"""Synthetic training examples: the kept rows of `synth generate` run directories, read and checked once.

A source is a finished `datawall synth generate` run directory (DONE, result.json, synthetic.jsonl; the row schema
is in datawall/synth/generate.py). Its rows with "kept": true are training examples, text = "prompt" followed by
"solution", exactly as a real worked example is [bos] prompt solution [eos] with the prompt masked. Several sources
are read in order (model collapse's "accumulate" trains on every generation so far); the first S kept rows are used.

`SyntheticSpec` is the part of a training run's data that names them (DataSpec.synthetic); its `sha256` is the
digest of the rows used, so a resumed run refuses data that changed under it. The teacher's cost is charged per
kept example used: flops_per_kept x S (the rejected samples a kept one cost are in flops_per_kept).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from datawall.data.budget import Doc
from datawall.data.task_docs import example_docs
from datawall.data.tokenizer import Tokenizer
from datawall.errors import DatawallError

SYNTHETIC_FILE = "synthetic.jsonl"
_ROW_TYPES = {"problem": int, "prompt": str, "solution": str, "kept": bool}


class SyntheticSpec(BaseModel):
    """Synthetic examples of a training run (besides the U real ones) and how they are mixed in."""

    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(default_factory=list, description="`synth generate` run directories whose kept rows are "
                             "the synthetic examples, in order (a study fills this in when the run starts)")
    examples: int | None = Field(None, gt=0, description="S: the first S kept rows (default: all of them)")
    ratio: float | None = Field(None, gt=0, le=1, description="share of training rows that are synthetic "
                                "(default S / (U + S): one pool, the same epochs over each)")
    epochs: float | None = Field(None, gt=0, description="passes over the S synthetic examples within the token "
                                 "budget; the real examples take the rest")
    sha256: str | None = Field(None, description="digest of the rows used (set when the run is made; checked when "
                               "it starts)")

    @model_validator(mode="after")
    def _one_mix(self) -> SyntheticSpec:
        if self.ratio is not None and self.epochs is not None:
            raise ValueError("give the synthetic ratio or its epochs, not both (each decides the mix)")
        return self


@dataclass
class SyntheticRows:
    """Kept synthetic examples and what they cost the teacher."""

    prompts: list[str]
    solutions: list[str]
    problems: list[int]  # train-split index of each row's problem
    sources: list[str]  # the run directories read
    task: str
    task_args: dict
    flops: float  # teacher FLOPs charged to the rows used (flops_per_kept x rows of each source)
    dollars: float | None
    kept: int  # kept rows available in the sources
    per_source: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def digest(self) -> str:
        """sha256 of the rows used (prompt and solution), in order."""
        h = hashlib.sha256()
        for p, s in zip(self.prompts, self.solutions, strict=True):
            h.update(json.dumps([p, s]).encode("utf-8"))
        return h.hexdigest()


def _read_source(path: Path) -> tuple[list[dict], dict]:
    """A finished synth generate run's kept rows and its result.json; one line naming the file when anything is off."""
    if not path.is_dir():
        raise DatawallError(f"{path}: no such synthetic-data directory (a `datawall synth generate` --out)")
    data = path / SYNTHETIC_FILE
    if not data.exists():
        raise DatawallError(f"{data}: missing; {path} is not a `datawall synth generate` run directory")
    if not (path / "DONE").exists():
        raise DatawallError(f"{path}: not a finished synth generate run (no DONE: it was interrupted, or its filter "
                            "kept nothing); rerun `datawall synth generate` with the same --out")
    try:
        result = json.loads((path / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DatawallError(f"{path / 'result.json'}: unreadable ({type(e).__name__}); rerun synth generate") from None
    if not isinstance(result, dict) or not isinstance(result.get("task"), str):
        raise DatawallError(f"{path / 'result.json'}: not a synth generate result (no task)")
    rows = []
    with open(data, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise DatawallError(f"{data}:{n}: not a JSON object") from None
            if not isinstance(row, dict):
                raise DatawallError(f"{data}:{n}: not a JSON object")
            for key, kind in _ROW_TYPES.items():
                if not isinstance(row.get(key), kind) or (kind is int and isinstance(row.get(key), bool)):
                    raise DatawallError(f"{data}:{n}: {key!r} must be a {kind.__name__} (got {row.get(key)!r})")
            if row["kept"]:
                rows.append(row)
    if not rows:
        raise DatawallError(f"{data}: no kept rows (\"kept\": true): nothing to train on")
    return rows, result


def read_synthetic(spec: SyntheticSpec, task: str, task_args: dict) -> SyntheticRows:
    """The first S kept rows of the spec's sources, for the task `task(task_args)` only; one line on any mistake."""
    if not spec.paths:
        raise DatawallError("synthetic data: no source directory given")
    prompts, solutions, problems, per_source = [], [], [], []
    flops, dollars, kept_total = 0.0, 0.0, 0
    want = spec.examples
    for source in spec.paths:
        path = Path(source)
        rows, result = _read_source(path)
        theirs = result.get("task_args") or {}
        if not _same_world(result["task"], theirs, task, task_args):
            raise DatawallError(f"{path}: synthetic data of {result['task']}({_args(theirs)}), but this run trains "
                                f"on {task}({_args(task_args)})")
        kept_total += len(rows)
        take = rows if want is None else rows[:max(0, want - len(prompts))]
        prompts += [r["prompt"] for r in take]
        solutions += [r["solution"] for r in take]
        problems += [r["problem"] for r in take]
        per_kept, per_kept_dollars = result.get("flops_per_kept"), result.get("dollars_per_kept")
        flops += len(take) * (per_kept if _finite(per_kept) else math.nan)
        dollars += len(take) * (per_kept_dollars if _finite(per_kept_dollars) else math.nan)
        per_source.append({"path": str(path), "kept": len(rows), "used": len(take),
                           "flops": len(take) * per_kept if _finite(per_kept) else None})
    if want is not None and want > len(prompts):
        raise DatawallError(f"--synthetic-examples {want:,}: the synthetic data holds only {len(prompts):,} kept "
                            f"rows ({', '.join(spec.paths)})")
    out = SyntheticRows(prompts, solutions, problems, [str(Path(p)) for p in spec.paths], task, dict(task_args),
                        flops, dollars if math.isfinite(dollars) else None, kept_total, per_source)
    if spec.sha256 is not None and spec.sha256 != out.digest:
        raise DatawallError(f"{', '.join(spec.paths)}: the synthetic rows changed since this run was made (sha256 "
                            f"{out.digest[:12]}..., the run's config says {spec.sha256[:12]}...); use another --out")
    return out


def synthetic_docs(rows: SyntheticRows, tokenizer: Tokenizer) -> list[Doc]:
    """[bos] prompt solution [eos] per kept row, the prompt masked; a character the tokenizer lacks names its row."""
    try:
        return example_docs(tokenizer, rows.prompts, rows.solutions)
    except DatawallError as e:
        for i, (p, s) in enumerate(zip(rows.prompts, rows.solutions, strict=True)):  # find the row to name
            try:
                tokenizer.encode(p + s)
            except DatawallError:
                raise DatawallError(f"synthetic row of problem {rows.problems[i]} ({_source_of(rows, i)}): "
                                    f"{str(e).removeprefix('tokenizer: ')}") from None
        raise


def _source_of(rows: SyntheticRows, i: int) -> str:
    for s in rows.per_source:
        if i < s["used"]:
            return s["path"]
        i -= s["used"]
    return rows.sources[-1]


def _same_world(name_a: str, args_a: dict, name_b: str, args_b: dict) -> bool:
    """Whether two task names and settings give the same world (settings compared once validated: 2 == "2")."""
    from datawall.tasks import get_task

    if name_a != name_b:
        return False
    try:
        return get_task(name_a, **args_a).settings == get_task(name_b, **args_b).settings
    except DatawallError:
        return False


def _finite(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _args(d: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in d.items())
