"""Study plans: one job per distinct (size, epochs, seed), the baseline once, think jobs on it, budget caps."""

from __future__ import annotations

import tomllib

import pytest

from datawall.data import Tokenizer, task_docs
from datawall.errors import DatawallError
from datawall.study.plan import make_plan, measure_world
from datawall.study.spec import parse_spec
from datawall.tasks import get_task

BASE = {"world": {"task": "arith", "task_args": {"digits": 1, "ops": "add,sub"}, "unique_examples": 150,
                  "eval_problems": 20, "seeds": [0, 1]},
        "train": {"seq_len": 32},
        "baseline": {"size": "100k", "epochs": 2},
        "levers": {"scale": {"sizes": ["100k", "1m"]}, "repetition": {"epochs": [1, 2, 4]},
                   "test_time": {"n": [1, 4]}, "synthetic": {"enabled": False}, "preference": {"enabled": False}}}


def spec(**over):
    data = {k: dict(v) for k, v in BASE.items()}
    for section, values in over.items():
        data[section] = {**data.get(section, {}), **values}
    return parse_spec(data, "study.toml")


def test_baseline_appears_once_and_seeds_multiply():
    plan = make_plan(spec())
    pre = [j for j in plan.jobs if j.kind == "pretrain"]
    # distinct settings: (100k, 2) baseline = scale's 100k = repetition's 2 epochs; (1m, 2); (100k, 1); (100k, 4)
    assert len(pre) == 4 * 2
    assert len({j.key for j in plan.jobs}) == len(plan.jobs)
    settings = {(j.config["size"], j.config["train"]["tokens"], j.config["train"]["seed"]) for j in pre}
    assert len(settings) == len(pre)
    base = next(p for p in plan.points if p.lever == "baseline")
    for p in plan.points:
        if p.setting == base.setting:
            assert p.pretrain == base.pretrain
    thinks = [j for j in plan.jobs if j.kind == "think"]
    assert [j.deps for j in thinks] == [(k,) for k in base.pretrain]
    assert {j.config["n_max"] for j in thinks} == {4}
    assert all(j.config["strategies"][0] == "greedy" for j in thinks)


def test_unique_examples_become_unique_tokens_and_epochs_become_tokens():
    s = spec()
    world = measure_world(s)
    task = get_task("arith", digits="1", ops="add,sub")  # 164 distinct training problems
    tok = Tokenizer.for_chars(task.alphabet)
    # the training run's own loader draws exactly U examples from that many unique tokens
    assert len(task_docs(task, tok, "train", unique_tokens=world.unique_tokens)) == 150
    plan = make_plan(s, world)
    for p in plan.points:
        job = plan.job(p.pretrain[0])
        assert job.config["data"]["unique_tokens"] == world.unique_tokens
        assert job.config["train"]["tokens"] == round(p.setting.epochs * world.tokens_per_epoch)
        assert plan.est_flops[job.key] > 0
    big = [plan.est_flops[j.key] for j in plan.jobs if j.kind == "pretrain" and j.config["size"] == "1m"]
    small = [plan.est_flops[j.key] for j in plan.jobs if j.kind == "pretrain" and j.config["size"] == "100k"
             and j.config["train"]["tokens"] == plan.job(plan.points[0].pretrain[0]).config["train"]["tokens"]]
    assert min(big) > 5 * max(small)
    assert plan.infer_flops["1m"] > plan.infer_flops["100k"]


def test_same_spec_same_keys_and_a_changed_setting_changes_only_its_runs():
    a, b = make_plan(spec()), make_plan(spec())
    assert [j.key for j in a.jobs] == [j.key for j in b.jobs]
    c = make_plan(spec(levers={"scale": {"sizes": ["100k", "5m"]}}))
    assert len({j.key for j in a.jobs} & {j.key for j in c.jobs}) == len(a.jobs) - 2  # only the 1m runs differ


def test_a_size_of_its_own_lr_changes_only_that_sizes_runs():
    a = make_plan(spec())
    c = make_plan(spec(train={"seq_len": 32, "lr_by_size": {"1M": 1e-3}}))
    assert len({j.key for j in a.jobs} & {j.key for j in c.jobs}) == len(a.jobs) - 2  # only the 1m runs differ
    lrs = {(j.config["size"], j.config["train"]["optim"]["lr"]) for j in c.jobs if j.kind == "pretrain"}
    assert lrs == {("100k", 3e-3), ("1m", 1e-3)}
    with pytest.raises(DatawallError, match="train.lr_by_size.2m.*unknown model size"):
        spec(train={"lr_by_size": {"2m": 1e-3}})
    with pytest.raises(DatawallError, match="train.lr_by_size.1m"):
        spec(train={"lr_by_size": {"1m": 0}})


def test_disabled_levers_plan_no_runs():
    plan = make_plan(spec(levers={"scale": {"enabled": False}, "repetition": {"enabled": False},
                                  "test_time": {"enabled": False}}))
    assert [p.lever for p in plan.points] == ["baseline"]
    assert len(plan.jobs) == 2  # the baseline, per seed


def test_budget_caps_name_the_key():
    with pytest.raises(DatawallError, match=r"budget.max_train_flops: the plan needs ~.* training FLOPs over 8 runs"):
        make_plan(spec(budget={"max_train_flops": 1e9}))
    with pytest.raises(DatawallError, match="budget.max_train_tokens: the plan trains"):
        make_plan(spec(budget={"max_train_tokens": 1000}))


def test_every_job_has_a_flop_estimate_charged_to_the_lever_that_added_it():
    s = spec()
    plan = make_plan(s)
    by = plan.flops_by_lever()
    assert list(by) == ["baseline", "scale", "repetition", "test_time"]
    assert sum(by.values()) == pytest.approx(plan.flops) and plan.flops > plan.train_flops
    # the baseline's runs are shared with scale (100k) and repetition (2 epochs): charged to the baseline once
    base = plan.points[0]
    assert all(plan.lever_of[k] == "baseline" for k in base.pretrain)
    assert {plan.job(k).config["size"] for k, lv in plan.lever_of.items() if lv == "scale"} == {"1m"}
    # a think run samples max(n) answers plus a greedy one per problem, each a greedy query's FLOPs
    think = next(j for j in plan.jobs if j.kind == "think")
    assert plan.est_flops[think.key] == pytest.approx(20 * (4 + 1) * plan.infer_flops["100k"])
    assert by["test_time"] == pytest.approx(2 * plan.est_flops[think.key])


def test_budget_covers_sampling_and_names_the_lever():
    # a million samples per query: far more than training, which the training caps alone let through
    huge = make_plan(spec(levers={"test_time": {"n": [1, 1_000_000]}}, budget={"max_train_flops": 1e15}))
    assert huge.flops > 1000 * huge.train_flops
    with pytest.raises(DatawallError) as e:
        make_plan(spec(levers={"test_time": {"n": [1, "1M"]}}, budget={"max_flops": 1e13}))
    msg = str(e.value)
    assert msg.startswith("budget.max_flops: the plan needs ~") and "levers.test_time alone needs" in msg, msg
    assert " pretrain + " in msg and " think)" in msg and "\n" not in msg
    with pytest.raises(DatawallError, match="levers.scale alone needs"):
        make_plan(spec(levers={"scale": {"sizes": ["100k", "25m"]}}, budget={"max_flops": 1e12}))
    plan = make_plan(spec())
    assert make_plan(spec(budget={"max_flops": plan.flops * 1.01})).flops == plan.flops  # under the cap: runs


def test_the_preset_with_a_billion_samples_is_refused_by_its_own_budget():
    from datawall.study.spec import preset_text

    data = tomllib.loads(preset_text("quick"))
    data["levers"]["test_time"]["n"] = [1_000_000_000]
    with pytest.raises(DatawallError, match=r"budget.max_flops: .* levers.test_time alone needs ~\d\.\d+e\+18"):
        make_plan(parse_spec(data, "quick.toml"))


def test_context_too_short_is_named():
    with pytest.raises(DatawallError, match="train.seq_len: 8 is shorter than the longest training example"):
        make_plan(spec(train={"seq_len": 8}))


def test_job_labels():
    plan = make_plan(spec())
    labels = [plan.label(j.key) for j in plan.jobs]
    assert "pretrain 1m, 2 epochs, seed 1" in labels
    assert "think 100k, n 4, seed 0" in labels
