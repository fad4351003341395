"""ThinkConfig and the strategy registry: one model validates `datawall think`'s flags and a study's think jobs,
its descriptions are the flags' help, and every strategy is known once (name, aliases, needs, oracle)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from datawall.testtime.curves import POOL_STRATEGIES
from datawall.testtime.strategies import (
    ALIASES,
    DEFAULT_STRATEGIES,
    STRATEGIES,
    VERIFIER_ONLY,
    resolve_strategies,
    step_phrase,
)
from datawall.testtime.think_config import ThinkConfig


def test_registry_is_consistent():
    assert not set(ALIASES) & set(STRATEGIES)  # an alias never shadows a name
    assert set(DEFAULT_STRATEGIES) <= set(VERIFIER_ONLY)
    assert VERIFIER_ONLY == ("greedy", "pass@k", "majority")
    assert POOL_STRATEGIES == ("pass@k", "majority", "best-of-n", "weighted-majority")
    assert [s.name for s in STRATEGIES.values() if s.oracle] == ["pass@k"]
    for s in STRATEGIES.values():
        assert s.summary and "{n}" in s.phrase or not s.pool
    assert step_phrase("majority", 4) == "sampling 4 answers and voting"
    assert resolve_strategies("maj, pass ,greedy,majority") == ["majority", "pass@k", "greedy"]
    with pytest.raises(ValueError, match="unknown strategy 'vibes'"):
        resolve_strategies(["vibes"])
    with pytest.raises(ValueError, match="'beam' needs a process reward model"):
        resolve_strategies(["beam"], allowed=VERIFIER_ONLY)
    with pytest.raises(ValueError, match="give at least one"):
        resolve_strategies(" , ")


def test_config_checks_types_ranges_and_cross_field_rules():
    cfg = ThinkConfig(task="arith", strategies="greedy,maj", thinking_budgets=[32, 8, 8], beam_n=[8, 4])
    assert cfg.strategies == ["greedy", "majority"] and cfg.thinking_budgets == [8, 32] and cfg.beam_n == [4, 8]
    for bad in ({"n_max": True}, {"problems": 2.5}, {"seed": "1"}, {"difficulty_bins": 0}, {"thinking_extend": -1},
                {"n_maxx": 3}, {"beam_n": [4, 6]}, {"beam_expand": 3, "beam_n": [6, 8]}):
        with pytest.raises(ValidationError):
            ThinkConfig(task="arith", **bad)
    assert ThinkConfig(task="arith", beam_expand=3, beam_n=[3, 9]).beam_n == [3, 9]


def _think_help() -> str:
    import typer

    from datawall.commands.think import register

    app = typer.Typer(add_completion=False)
    app.callback()(lambda: None)
    register(app)
    return CliRunner().invoke(app, ["think", "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"}).stdout


@pytest.mark.parametrize("field", ["problems", "n_max", "temperature", "top_p", "max_tokens", "seed",
                                   "beam_expand", "beam_aggregate", "thinking_extend", "difficulty_bins"])
def test_flag_help_is_the_field_description(field):
    help_text = " ".join(_think_help().split())
    description = " ".join(ThinkConfig.help(field).split())
    assert description and description in help_text, field
