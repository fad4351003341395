"""Study specs: presets load, typos and bad values are one error naming the key, init writes a loadable file."""

from __future__ import annotations

import tomllib

import pytest

from datawall.errors import DatawallError
from datawall.study.levers import test_time
from datawall.study.spec import PRESETS, load_preset, load_spec, parse_spec, preset_text


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_are_commented(name):
    spec = load_preset(name)
    assert spec.name == name
    # every lever in every preset (issue 16): the study compares all of them on one world
    assert all(getattr(spec.levers, lever).enabled for lever in type(spec.levers).model_fields)
    assert spec.baseline.size in [s.lower() for s in spec.levers.scale.sizes]
    assert spec.baseline.epochs in spec.levers.repetition.epochs
    assert max(spec.levers.repetition.epochs) > spec.baseline.epochs  # a point past the baseline shows the plateau
    text = preset_text(name)
    assert text.count("#") > 20  # a spec to read and edit, not just values
    assert tomllib.loads(text)["name"] == name


def test_gpu_preset_targets_cuda():
    assert load_preset("gpu").train.device == "cuda"
    assert load_preset("quick").train.device == "cpu"


@pytest.mark.parametrize(("data", "message"), [
    ({"levers": {"scale": {"sizs": ["1m"]}}}, "study.toml: levers.scale.sizs: unknown key"),
    ({"levers": {"scale": {"sizes": ["100k", "2m"]}}}, "study.toml: levers.scale.sizes.1: unknown model size '2m'"),
    ({"baseline": {"size": "3m"}}, "study.toml: baseline.size: unknown model size '3m'"),
    ({"world": {"unique_examples": "lots"}}, "study.toml: world.unique_examples: cannot read 'lots'"),
    ({"world": {"seeds": [1, 1]}}, "study.toml: world.seeds: seeds must be distinct"),
    ({"world": {"seeds": []}}, "study.toml: world.seeds:"),
    ({"levers": {"test_time": {"strategies": ["vibes"]}}}, "study.toml: levers.test_time.strategies: unknown strategy "
                                                           "'vibes'"),
    ({"levers": {"test_time": {"strategies": ["beam"]}}}, "study.toml: levers.test_time.strategies: 'beam' needs a "
                                                          "process reward model"),
    ({"levers": {"test_time": {"strategies": ["best-of-n"]}}}, "study.toml: levers.test_time.strategies: "
                                                               "'best-of-n' needs a reward model"),
    ({"levers": {"test_time": {"n": []}}}, "study.toml: levers.test_time.n: give at least one sample count"),
    ({"levers": {"repetition": {"epochs": [0]}}}, "study.toml: levers.repetition.epochs.0:"),
    ({"levers": {"rl": {"group": 1}}}, "study.toml: levers.rl.group: Input should be greater than or equal to 2"),
    ({"levers": {"synthetic": {"enabled": True, "teacher": "x"}}}, "study.toml: levers.synthetic.teacher: teacher "
                                                                   "'x': give 'baseline' or a model size"),
    ({"levers": {"synthetic": {"strategy": "best-of-4"}}}, "study.toml: levers.synthetic.strategy: best-of-K needs "
                                                           "a reward model"),
    ({"levers": {"synthetic": {"examples": []}}}, "study.toml: levers.synthetic.examples: give at least one S"),
    ({"budget": {"max_train_flops": "-1"}}, "study.toml: budget.max_train_flops: must be a positive"),
    ({"budget": {"max_flops": 0}}, "study.toml: budget.max_flops: Input should be greater than 0"),
    # booleans are not counts (pydantic alone would read true as 1)
    ({"world": {"unique_examples": True}}, "study.toml: world.unique_examples: expected a count, got the boolean "
                                           "true"),
    ({"world": {"seeds": [0, True]}}, "study.toml: world.seeds.1: expected a number, got the boolean true"),
    ({"train": {"batch_size": True}}, "study.toml: train.batch_size: expected a number"),
    ({"train": {"lr": False}}, "study.toml: train.lr: expected a number, got the boolean false"),
    ({"baseline": {"epochs": True}}, "study.toml: baseline.epochs: expected a number"),
    ({"levers": {"repetition": {"epochs": [1, True]}}}, "study.toml: levers.repetition.epochs.1: expected a number"),
    ({"levers": {"test_time": {"n": [True, 4]}}}, "study.toml: levers.test_time.n.0: expected a count"),
    ({"levers": {"test_time": {"problems": True}}}, "study.toml: levers.test_time.problems: expected a count"),
    ({"budget": {"max_flops": True}}, "study.toml: budget.max_flops: expected a count"),
    ({"queries": {"expected": True}}, "study.toml: queries.expected: expected a count"),
    ({"train": {"device": "tpu"}}, "study.toml: train.device: unknown device 'tpu'; use cpu, cuda or cuda:N"),
    ({"train": {"device": "cuda:x"}}, "study.toml: train.device: unknown device 'cuda:x'"),
    ({"prices": {"entry": "gpt-4o"}}, "study.toml: prices.entry: 'gpt-4o' is an api price"),
    ({"prices": {"entry": "nope"}}, "study.toml: prices: no price for backend 'nope'"),
    ({"nmae": "x"}, "study.toml: nmae: unknown key"),
])
def test_errors_name_the_key(data, message):
    with pytest.raises(DatawallError) as e:
        parse_spec(data, "study.toml")
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


def test_counts_and_reserved_levers_switched_off_are_accepted():
    spec = parse_spec({"world": {"unique_examples": "2k", "task_args": {"digits": 2, "ops": "add"}},
                       "budget": {"max_train_flops": "3e12", "max_flops": "1e13"}, "queries": {"expected": "1M"},
                       "train": {"device": "cuda:1"},  # a valid name: whether it exists is checked when runs run
                       "levers": {"rl": {"enabled": False, "steps": 10},
                                  "test_time": {"strategies": ["maj", "pass", "majority"], "n": ["1k", 4, 4]}}},
                      "s.toml")
    assert spec.world.unique_examples == 2000
    assert spec.world.task_args == {"digits": "2", "ops": "add"}  # tasks read settings as strings
    assert spec.budget.max_train_flops == 3e12 and spec.budget.max_flops == 1e13 and spec.queries.expected == 1e6
    assert spec.train.device == "cuda:1"
    assert spec.levers.test_time.strategies == ["majority", "pass@k"]  # aliases resolved, repeats dropped
    assert spec.levers.test_time.n == [4, 1000]
    assert test_time.problems(spec) == spec.world.eval_problems


def test_load_spec_file_errors_and_relative_price_file(tmp_path):
    bad = tmp_path / "study.toml"
    bad.write_text("[world\n")
    with pytest.raises(DatawallError, match="study.toml: not valid TOML"):
        load_spec(bad)
    with pytest.raises(DatawallError, match="cannot read study spec"):
        load_spec(tmp_path / "missing.toml")
    (tmp_path / "prices.toml").write_text('[backends.mine]\nkind = "flops"\ndollars_per_hour = 1.0\n'
                                          'sustained_flops = 1e9\n')
    bad.write_text('[prices]\nentry = "mine"\nfile = "prices.toml"\n')
    spec = load_spec(bad)
    assert spec.prices.file == str(tmp_path / "prices.toml")


def test_unknown_preset():
    with pytest.raises(DatawallError, match="unknown preset 'huge'"):
        load_preset("huge")
