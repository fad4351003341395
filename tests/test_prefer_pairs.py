"""Preference pairs: simulated graders (noise, bias registry, panels, Bradley-Terry), the pairs file and its
one-line errors, and pairs sampled from a real tiny policy and graded, through the CLI."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from datawall.cli import app
from datawall.economics.prices import grader_price
from datawall.errors import DatawallError
from datawall.prefer.config import PairsConfig
from datawall.prefer.graders import (
    BIASES,
    Candidate,
    GraderConfig,
    aggregate_prompt,
    bradley_terry,
    judge,
    majority,
    register_bias,
)
from datawall.prefer.make_pairs import choose_comparisons, make_pairs
from datawall.prefer.pairs import metadata_path, read_pairs
from tests.tiny_arith import TASK, TASK_ARGS, trained_policy

RIGHT_SHORT = Candidate("1+1=\n#### 2", 1.0, 5)
WRONG_LONG = Candidate("1+1=\nso\n#### 3", 0.0, 9)
WRONG_SHORT = Candidate("#### 4", 0.0, 3)


def verdicts(cfg: GraderConfig, a: Candidate, b: Candidate, draws: int = 4000) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.array([judge(cfg, a, b, rng) for _ in range(draws)], dtype=object)


# --- graders ----------------------------------------------------------------------------------------

def test_a_noiseless_grader_is_the_verifier_and_a_tie_stays_a_tie():
    cfg = GraderConfig()
    assert set(verdicts(cfg, RIGHT_SHORT, WRONG_LONG, 50)) == {0}
    assert set(verdicts(cfg, WRONG_LONG, RIGHT_SHORT, 50)) == {1}
    assert set(verdicts(GraderConfig(noise=0.4), WRONG_LONG, WRONG_SHORT, 200)) == {None}


@pytest.mark.parametrize("noise", [0.1, 0.3, 1.0])
def test_noise_flips_the_verdict_at_its_rate(noise):
    v = verdicts(GraderConfig(noise=noise), RIGHT_SHORT, WRONG_LONG)
    flipped = float(np.mean(v == 1))
    assert abs(flipped - noise) < 4 * np.sqrt(noise * (1 - noise) / len(v)) + 1e-9


def test_a_length_biased_grader_prefers_the_longer_answer_at_its_strength():
    v = verdicts(GraderConfig(bias="longer", strength=0.4), RIGHT_SHORT, WRONG_LONG)
    assert abs(float(np.mean(v == 1)) - 0.4) < 0.03  # wrong but longer, chosen whenever the bias decides
    tie = verdicts(GraderConfig(bias="longer", strength=0.4), WRONG_SHORT, WRONG_LONG)
    assert abs(float(np.mean(tie == 1)) - 0.4) < 0.03 and set(tie) == {1, None}  # ties broken by length only
    terse = verdicts(GraderConfig(bias="terse", strength=1.0), RIGHT_SHORT, WRONG_LONG, 100)
    assert set(terse) == {0}


def test_biases_are_a_registry_others_extend():
    @register_bias("test-first", "always prefers the first answer shown")
    def _first(a, b):
        return 0

    try:
        cfg = GraderConfig(bias="test-first", strength=1.0)
        assert set(verdicts(cfg, WRONG_LONG, RIGHT_SHORT, 20)) == {0}
        assert "test-first" in GraderConfig.model_fields["bias"].description or "test-first" in BIASES
    finally:
        del BIASES["test-first"]
    with pytest.raises(ValueError, match="unknown bias 'test-first'"):
        GraderConfig(bias="test-first", strength=1.0)


def test_in_a_hazard_world_the_gold_is_the_rubric_and_a_grader_may_ignore_the_caveat():
    from datawall.prefer.make_pairs import rubric_score
    from datawall.tasks import get_task

    task = get_task("arith", digits=2, hazard_rate=0.5)
    p = next(q for q in (task.problem("train", i) for i in range(50)) if task.hazard(q) is not None)
    with_caveat = task.solution(p)
    without = "\n".join(line for line in with_caveat.splitlines() if line != task.hazard(p).caveat)
    assert task.verify(p, with_caveat) == task.verify(p, without) == 1.0  # the verifier cannot tell them apart
    a = Candidate(with_caveat, 1.0, 9, rubric_score(task, p, with_caveat))
    b = Candidate(without, 1.0, 7, rubric_score(task, p, without))
    assert a.score > b.score
    assert set(verdicts(GraderConfig(), a, b, 20)) == {0}  # the gold prefers the caveat
    blind = verdicts(GraderConfig(bias="ignores-caveat", strength=0.5), a, b)
    assert abs(float(np.mean(blind == 0)) - 0.5) < 0.04 and set(blind) == {0, None}  # half the time: a tie
    assert rubric_score(TASK, TASK.problem("train", 0), "#### 1") is None  # no hazards: the verifier is the gold


@pytest.mark.parametrize("bad,msg", [({"bias": "longer"}, "needs a strength"), ({"strength": 0.5}, "needs a bias"),
                                     ({"noise": 1.5}, "less than or equal to 1")])
def test_grader_settings_are_checked_with_the_reason(bad, msg):
    with pytest.raises(ValueError, match=msg):
        GraderConfig(**bad)


def test_majority_and_bradley_terry_panels():
    assert majority([0, 0, 1]) == 0 and majority([1, None, 1]) == 1 and majority([0, 1]) is None
    assert majority([None, None]) is None
    # answers 0 > 1 > 2 by every vote but one noisy vote says 2 beats 0: BT follows the transitive evidence
    compared = [(0, 1), (1, 2), (0, 2)]
    votes = [[0, 0, 0], [0, 0, 0], [1, 1, 0]]
    assert aggregate_prompt(3, compared, votes, "majority") == [0, 0, 1]
    assert aggregate_prompt(3, compared, votes, "bt") == [0, 0, 0]
    s = bradley_terry(3, [(0, 1)] * 5 + [(1, 2)] * 5)
    assert s[0] > s[1] > s[2] and np.isfinite(s).all()
    assert aggregate_prompt(2, [(0, 1)], [[None]], "bt") == [None]


def test_comparisons_are_every_pair_or_a_seeded_subset():
    assert choose_comparisons(4, None, np.random.default_rng(0)) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    a = choose_comparisons(8, 5, np.random.default_rng([1, 2]))
    assert a == choose_comparisons(8, 5, np.random.default_rng([1, 2])) and len(set(a)) == 5
    assert all(i < j for i, j in a)


def test_grader_prices_come_from_the_price_table():
    assert grader_price("human-grader").per_comparison(10) == pytest.approx(10 * 1.00)
    with pytest.raises(DatawallError, match="'local-cpu' is a flops price, not a grader's"):
        grader_price("local-cpu")
    with pytest.raises(DatawallError, match="cannot price tokens"):
        grader_price("human-grader").dollars(10, 10)


# --- the pairs file ---------------------------------------------------------------------------------

@pytest.mark.parametrize("row,msg", [
    ({"prompt": "1+1=", "chosen": "#### 2"}, "line 2: missing field 'rejected'"),
    ({"prompt": "1+1=", "chosen": "#### 2", "rejected": "#### 2"}, "line 2: chosen and rejected are identical"),
    ({"prompt": "1+1=", "chosen": 2, "rejected": "#### 3"}, "line 2: field 'chosen' must be a string, got int"),
    ({"prompt": "1+1=", "chosen": "#### 2", "rejected": "#### 3", "grader": 7}, "line 2: field 'grader' must be"),
    (["1+1=", "#### 2", "#### 3"], "line 2: expected a JSON object"),
])
def test_a_bad_row_is_one_line_naming_file_and_line(tmp_path, row, msg):
    path = tmp_path / "pairs.jsonl"
    good = {"prompt": "2+2=", "chosen": "#### 4", "rejected": "#### 5", "grader": "me"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DatawallError) as e:
        read_pairs(path)
    assert str(e.value) == f"{path} {msg}" or str(e.value).startswith(f"{path} {msg}")
    assert "\n" not in str(e.value)


def test_pairs_file_reads_what_it_holds_and_refuses_empty_or_garbage(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c", "votes": [2, 1]}\n\n')
    (p,) = read_pairs(path)
    assert (p.prompt, p.chosen, p.rejected, p.grader, p.extra) == ("a", "b", "c", None, {"votes": [2, 1]})
    assert p.where == f"{path} line 1"
    path.write_text("\n")
    with pytest.raises(DatawallError, match="no pairs"):
        read_pairs(path)
    path.write_text("{oops\n")
    with pytest.raises(DatawallError, match="line 1: not JSON"):
        read_pairs(path)
    with pytest.raises(DatawallError, match="no such pairs file"):
        read_pairs(tmp_path / "missing.jsonl")


# --- pairs from a real policy -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return trained_policy(tmp_path_factory.getbasetemp(), steps=800)


def _cfg(policy, **kw) -> PairsConfig:
    return PairsConfig(model=str(policy), task="arith", task_args=TASK_ARGS, problems=kw.pop("problems", 40), n=4,
                       **kw)


def test_sampled_pairs_are_train_split_graded_paid_and_reproducible(policy, tmp_path):
    meta = make_pairs(_cfg(policy), tmp_path / "a.jsonl", quiet=True)
    pairs = read_pairs(tmp_path / "a.jsonl")
    assert meta["pairs"] == len(pairs) > 0 and meta["label_accuracy"] == 1.0 and meta["informative"] == 1.0
    assert all(p.extra["chosen_reward"] > p.extra["rejected_reward"] for p in pairs)  # noiseless: always right
    train = {TASK.problem("train", i).prompt: i for i in range(40)}
    assert all(train[p.prompt] == p.problem for p in pairs)  # only train-split prompts
    assert meta["grader_comparisons"] == meta["comparisons"] > meta["pairs"]  # ties are paid and dropped
    assert meta["grader_dollars"] == pytest.approx(meta["comparisons"] * 1.00)
    assert meta["sample_flops"] > 0 and meta["dollars"] == pytest.approx(meta["grader_dollars"]
                                                                          + meta["sample_dollars"])
    assert json.loads(metadata_path(tmp_path / "a.jsonl").read_text())["task"] == "arith"
    make_pairs(_cfg(policy), tmp_path / "b.jsonl", quiet=True)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_noisy_and_biased_panels_label_as_their_graders_would(policy, tmp_path):
    noisy = make_pairs(_cfg(policy, problems=80, grader=GraderConfig(noise=0.3)), tmp_path / "n.jsonl", quiet=True)
    assert 0.5 < noisy["label_accuracy"] < 0.9
    panel = make_pairs(_cfg(policy, problems=80, grader=GraderConfig(noise=0.3), graders=5),
                       tmp_path / "p.jsonl", quiet=True)
    assert panel["label_accuracy"] > noisy["label_accuracy"]  # five votes outvote one grader's noise
    assert panel["grader_dollars"] == pytest.approx(5 * panel["comparisons"])
    longer = make_pairs(_cfg(policy, problems=80, grader=GraderConfig(bias="longer", strength=1.0)),
                        tmp_path / "l.jsonl", quiet=True)
    pairs = read_pairs(tmp_path / "l.jsonl")
    # the longer answer always wins; answers of equal length are judged by the verifier
    for p in pairs:
        c, r = p.extra["chosen_tokens"], p.extra["rejected_tokens"]
        assert c > r or (c == r and p.extra["chosen_reward"] > p.extra["rejected_reward"])
    assert longer["informative"] < 1.0  # ties become pairs by length


def test_prefer_pairs_cli(policy, tmp_path):
    out = tmp_path / "cli.jsonl"
    args = ["prefer", "pairs", "--model", str(policy), "--task", "arith", "--task-args", "digits=2",
            "--problems", "30", "--n", "3", "--graders", "3", "--noise", "0.1", "--aggregate", "bt",
            "--price", "free-grader", "--out", str(out), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout.strip().splitlines()[-1])
    assert meta["out"] == str(out) and meta["graders"] == 3 and meta["grader_dollars"] == 0.0
    assert meta["grader"] == "simulated noise=0.1 x3 bt" and len(read_pairs(out)) == meta["pairs"]
    bad = CliRunner().invoke(app, [*args[:-3], "--bias", "longer", "--out", str(out)])
    assert bad.exit_code != 0 and str(bad.exception) == "--bias 'longer' needs a --strength > 0 (the probability it " \
        "decides)"
