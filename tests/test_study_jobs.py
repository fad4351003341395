"""Think jobs validate through ThinkConfig: the resolved config (hence the run key) is every setting spelled
out, and a bad key or value is one line naming it."""

from __future__ import annotations

import pytest

from datawall.errors import DatawallError
from datawall.study.jobs import Job

PRETRAIN = "0123456789abcdef"

# what a think job resolves to; a change here changes the key of every think run (and recomputes them)
RESOLVED = {"model": PRETRAIN, "device": "cpu", "price": None, "task": "arith", "task_args": {"digits": "1"},
            "problems": 50, "n_max": 16, "strategies": ["greedy", "majority", "pass@k"], "temperature": 1.0,
            "top_p": None, "max_tokens": None, "seed": 0, "split": "test", "n_boot": 1000, "beam_n": None,
            "beam_expand": 4, "beam_aggregate": "last", "thinking_budgets": [], "thinking_extend": 0,
            "difficulty_bins": 5}


def think(**config) -> Job:
    return Job("think", {"model": PRETRAIN, "task": "arith", "task_args": {"digits": "1"}, **config},
               deps=(PRETRAIN,))


def test_resolved_config_spells_out_every_setting_and_keys_ignore_spelling():
    job = think()
    assert job.config == RESOLVED
    assert list(job.config) == list(RESOLVED)  # job.json lists them in this order
    # aliases, a comma-separated string and defaults spelled out name the same run
    same = think(strategies="greedy,maj,pass", n_max=16, device="cpu", price=None)
    assert same.key == job.key
    assert think(temperature=0.7).key != job.key


def test_prompting_settings_keep_old_keys_at_their_defaults_and_change_them_otherwise():
    job = think()
    assert think(chat=False, fewshot=0, fewshot_seed=1234, stop=[]).key == job.key  # the runs made before them
    shots = think(fewshot=2)
    assert shots.key != job.key and shots.config["fewshot"] == 2 and "chat" not in shots.config
    assert think(stop=["END"]).config["stop"] == ["END"]


@pytest.mark.parametrize(("config", "message"), [
    ({"n_maxx": 4}, "think job config: n_maxx: unknown key"),
    ({"n_max": 0}, "think job config: n_max: Input should be greater than or equal to 1"),
    ({"problems": True}, "think job config: problems: Input should be a valid integer"),
    ({"temperature": -1}, "think job config: temperature: Input should be greater than or equal to 0"),
    ({"top_p": 1.5}, "think job config: top_p: Input should be less than or equal to 1"),
    ({"strategies": ["greedy", "vibes"]}, "think job config: strategies: unknown strategy 'vibes'"),
    ({"strategies": ["best-of-n"]}, "think job config: strategies: 'best-of-n' needs a reward model"),
    ({"split": "dev"}, "think job config: split: Input should be 'train' or 'test'"),
    ({"device": "tpu"}, "think job config: device: unknown device 'tpu'"),
    ({"beam_n": [6]}, "think job config: beam_n: 6 is not a multiple of beam_expand (4)"),
    ({"thinking_budgets": [8, 0]}, "think job config: thinking_budgets: every value must be >= 1"),
    ({"model": ""}, "think job config: model: String should have at least 1 character"),
])
def test_bad_think_configs_are_one_line(config, message):
    with pytest.raises(DatawallError) as e:
        think(**config)
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


def test_missing_task_and_unknown_task_setting():
    with pytest.raises(DatawallError, match="think job config: task: Field required"):
        Job("think", {"model": PRETRAIN}, deps=(PRETRAIN,))
    with pytest.raises(DatawallError, match="digitz"):
        think(task_args={"digitz": "1"})
    with pytest.raises(DatawallError, match="not in its deps"):
        Job("think", {"model": PRETRAIN, "task": "arith"})
