"""A tiny real study shared by the study tests: run once per test session through the CLI, in-process."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

WORLD = '{ digits = 1, ops = "add,sub,mul" }'  # 237 distinct training problems, 63 held out
# the same problems, 30% hazardous: 21 of the 63 held-out problems
HAZARD_WORLD = '{ digits = 1, ops = "add,sub,mul", hazard_rate = 0.3 }'


def lever_spec(name: str, levers: str, epochs: int = 2, queries: float | None = None, task_args: str = WORLD,
               unique_examples: int = 200, eval_problems: int = 40) -> str:
    """A tiny-world spec (1-digit arith by default, one seed, 100k baseline) with every lever off except the
    sections written in `levers` (TOML text)."""
    from datawall.study.levers import LEVERS

    off = "".join(f"\n[levers.{lv}]\nenabled = false\n" for lv in LEVERS if f"[levers.{lv}]" not in levers)
    queries_section = f"\n[queries]\nexpected = {queries:g}\n" if queries is not None else ""
    return f"""
name = "{name}"

[world]
task = "arith"
task_args = {task_args}
unique_examples = {unique_examples}
eval_problems = {eval_problems}
seeds = [0]

[train]
batch_size = 16
seq_len = 32
{queries_section}
[baseline]
size = "100k"
epochs = {epochs}
{off}
{levers}"""


TINY_SPEC = lever_spec("tiny", """
[levers.scale]
sizes = ["100k", "1m"]

[levers.repetition]
epochs = [1, 2]

[levers.test_time]
strategies = ["majority", "pass@k"]
n = [1, 2, 4]
""", queries=1e5)  # synthetic, preference and rl run on tiny studies of their own (test_synth_study.py, ...)


_CACHE: dict[str, tuple[Path, dict]] = {}


def cli_app():
    from datawall.cli import app

    return app


def run_study(*args: str):
    """Invoke `datawall study ARGS` in this process; returns click's Result (a DatawallError is in .exception)."""
    return CliRunner().invoke(cli_app(), ["study", *args])


def tiny_study(tmp_path_factory) -> tuple[Path, dict]:
    """(out dir, summary printed by --json) of the tiny study, computed once per session."""
    if "tiny" not in _CACHE:
        root = tmp_path_factory.mktemp("tiny_study")
        spec = root / "tiny.toml"
        spec.write_text(TINY_SPEC)
        result = run_study(str(spec), "--store", str(root / "store"), "--out", str(root / "out"), "--workers", "0",
                           "--json")
        assert result.exit_code == 0, (result.stderr, result.exception)
        _CACHE["tiny"] = (root, json.loads(result.stdout))
    return _CACHE["tiny"]
