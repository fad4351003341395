"""The compute-optimal policy in think's results.json and report, and `datawall think-compare` (crossover budget)."""

from __future__ import annotations

import json

import pytest
from tiny_arith import TASK, one_thread, random_checkpoint, trained_policy
from typer.testing import CliRunner

from datawall.cli import app
from datawall.errors import DatawallError
from datawall.testtime.think_policy import TOL, choose_baseline, problem_set


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    with one_thread():
        yield trained_policy(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("untrained") / "ckpt", TASK.alphabet, max_seq_len=48, seed=1)


def think(model, out, *args: str) -> dict:
    result = CliRunner().invoke(app, ["think", "--model", str(model), "--task", "arith", "--task-args", "digits=2",
                                      "--problems", "12", "--n-max", "4", "--out", str(out), "--json", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run(policy, tmp_path_factory):
    out = tmp_path_factory.mktemp("policy") / "run"
    return out, think(policy, out, "--thinking-budgets", "3,40")


def test_policy_bins_baseline_and_report(run):
    out, res = run
    pol = res["policy"]
    assert pol["baseline"] == "majority" and "no reward model" in pol["baseline_note"]
    assert pol["strategies"] == ["greedy", "majority", "thinking-budget"]  # pass@k is an oracle, not a strategy
    assert pol["bins_requested"] == 5 and pol["bins_used"] == 3  # 12 problems: at least 4 per bin
    assert sum(pol["bin_sizes"]) == 12 and pol["axis"] == "flops"
    p1 = [x for x in pol["bin_pass1"] if x is not None]
    assert p1 == sorted(p1, reverse=True)  # bin 0 is the easiest
    for b, size in enumerate(pol["bin_sizes"]):
        for j in range(len(pol["budgets"])):
            best = pol["best"][b][j]
            if size == 0 or best is None:
                continue
            assert best.split("@")[0] in pol["strategies"]
            if pol["baseline_accuracy"][b][j] is not None:
                assert pol["gain"][b][j] == pytest.approx(pol["accuracy"][b][j] - pol["baseline_accuracy"][b][j])
                assert pol["gain"][b][j] >= 0  # the baseline is kept unless another strategy is better
    html = (out / "report.html").read_text()
    assert "compute-optimal policy" in html and "no reward model" in html


def test_single_bin_policy_agrees_with_the_curves(run, policy):
    out, _ = run
    res = think(policy, out, "--thinking-budgets", "3,40", "--difficulty-bins", "1")  # same samples, from files
    assert res["sampling"]["drawn"] == 0
    pol = res["policy"]
    points = [(f"{name}@{r['n']}", r["flops_per_query"], r["accuracy"])
              for name, rows in res["strategies"].items() if name != "pass@k" for r in rows]
    points += [(f"thinking-budget@{p['budget']}", p["flops_per_query"], p["accuracy"])
               for p in res["thinking_budget"]["points"]]
    for j, budget in enumerate(pol["budgets"]):
        fits = [(acc, label) for label, cost, acc in points if cost <= budget * (1 + TOL)]
        assert pol["accuracy"][0][j] == pytest.approx(max(a for a, _ in fits))
        assert pol["overall"][j] == pytest.approx(pol["accuracy"][0][j])
        assert dict((label, a) for a, label in fits)[pol["best"][0][j]] == pytest.approx(pol["accuracy"][0][j])
        maj = [a for a, label in fits if label.startswith("majority@")]
        assert pol["baseline_accuracy"][0][j] == (pytest.approx(max(maj)) if maj else None)


def test_baseline_choice():
    assert choose_baseline({"best-of-n": 1, "majority": 1})[0] == "best-of-n"
    assert choose_baseline({"greedy": 1, "majority": 1})[0] == "majority"
    assert choose_baseline({"greedy": 1})[0] == "greedy"


def write_run(path, strategies, **extra):
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"task": "arith", "task_args": {}, "split": "test", "problems": 10,
                                                   "strategies": strategies, **extra}))
    return path


def rows(accs, flops):
    return [{"n": 2**i, "accuracy": a, "tokens_per_query": 10.0 * 2**i, "flops_per_query": f,
             "dollars_per_query": None if f is None else f * 1e-12}
            for i, (a, f) in enumerate(zip(accs, flops, strict=True))]


def compare(*args: str):
    return CliRunner().invoke(app, ["think-compare", *args])


def test_compare_interpolates_the_crossover(tmp_path):
    # task settings compare after validation: '2' from the command line is the 2 a script passed
    small = write_run(tmp_path / "small", {"majority": rows([0.2, 0.4, 0.6], [10.0, 20.0, 40.0])},
                      task_args={"digits": "2"})
    large = write_run(tmp_path / "large", {"majority": rows([0.5, 0.7], [100.0, 200.0])}, task_args={"digits": 2})
    result = compare(str(small), str(large), "--json")
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    # 0.5 lies halfway between 0.4 (20 FLOPs, 2 samples) and 0.6 (40 FLOPs, 4 samples), in log budget
    assert res["target_accuracy"] == 0.5 and res["large_budget"] == 100.0
    assert res["small_budget"] == pytest.approx(800**0.5) and res["small_samples"] == pytest.approx(8**0.5)
    assert res["ratio"] == pytest.approx(800**0.5 / 100)
    text = compare(str(small), str(large), "--large-k", "2").stdout
    assert "never matches it within n=4 (best 60.0%)" in text
    assert "matches it at 28.28 flops per query" in compare(str(small), str(large)).stdout


def test_compare_errors_are_one_line(tmp_path):
    small = write_run(tmp_path / "small", {"majority": rows([0.2], [10.0])})
    other = write_run(tmp_path / "other", {"majority": rows([0.5], [None])}, task="trace")
    nulls = write_run(tmp_path / "nulls", {"majority": rows([0.5], [None])})
    for args, message in [((small, tmp_path / "nothing"), "no results.json"),
                          ((small, other), "differ in task"),
                          ((small, nulls), "flops per query is unknown"),
                          ((small, small, "--strategy", "beam"), "has no 'beam' curve")]:
        result = compare(*map(str, args))
        assert isinstance(result.exception, DatawallError), result.output
        assert message in str(result.exception) and "\n" not in str(result.exception)


def test_compare_two_real_runs(run, untrained, tmp_path):
    small_dir, small = run
    large = think(untrained, tmp_path / "large")
    result = compare(str(small_dir), str(tmp_path / "large"), "--large-strategy", "greedy", "--json")
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    target = large["strategies"]["greedy"][0]
    assert res["target_accuracy"] == target["accuracy"] and res["large_budget"] == target["flops_per_query"]
    maj = small["strategies"]["majority"]
    hit = [r for r in maj if r["accuracy"] >= target["accuracy"]]
    if hit and hit[0] is maj[0]:
        assert res["small_budget"] == pytest.approx(maj[0]["flops_per_query"])
    elif not hit:
        assert res["small_budget"] is None
    else:
        assert maj[0]["flops_per_query"] < res["small_budget"] <= hit[0]["flops_per_query"]


def test_compared_runs_may_differ_only_in_solution_settings():
    """arith `paths` changes the worked solutions, not the problems: such runs are comparable; other splits are not."""
    four = {"task": "arith", "task_args": {"digits": "2", "paths": "4"}, "split": "test"}
    one = {"task": "arith", "task_args": {"digits": 2}, "split": "test"}
    assert problem_set(four) == problem_set(one)
    assert problem_set({**one, "split": "train"}) != problem_set(one)
