"""Study specs: presets load, typos and bad values are one error naming the key, init writes a loadable file."""

from __future__ import annotations

import tomllib

import pytest

from datawall.errors import DatawallError
from datawall.study.spec import PRESETS, load_preset, load_spec, parse_spec, preset_text


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_are_commented(name):
    spec = load_preset(name)
    assert spec.name == name
    assert spec.levers.scale.enabled and spec.levers.repetition.enabled and spec.levers.test_time.enabled
    assert spec.baseline.size in [s.lower() for s in spec.levers.scale.sizes]
    assert not (spec.levers.synthetic.enabled or spec.levers.rl.enabled or spec.levers.preference.enabled)
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
    ({"levers": {"test_time": {"strategies": ["beam"]}}}, "study.toml: levers.test_time.strategies: unknown strategy"),
    ({"levers": {"repetition": {"epochs": [0]}}}, "study.toml: levers.repetition.epochs.0:"),
    ({"levers": {"rl": {"enabled": True}}}, "study.toml: levers.rl: not available yet"),
    ({"levers": {"synthetic": {"enabled": True, "teacher": "x"}}}, "study.toml: levers.synthetic: not available yet"),
    ({"budget": {"max_train_flops": "-1"}}, "study.toml: budget.max_train_flops: must be a positive"),
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
                       "budget": {"max_train_flops": "3e12"}, "queries": {"expected": "1M"},
                       "levers": {"rl": {"enabled": False, "steps": 10}}}, "s.toml")
    assert spec.world.unique_examples == 2000
    assert spec.world.task_args == {"digits": "2", "ops": "add"}  # tasks read settings as strings
    assert spec.budget.max_train_flops == 3e12 and spec.queries.expected == 1e6
    assert spec.test_problems == spec.world.eval_problems


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
