"""The RLHF route's proxy reward: a Bradley-Terry reward model fitted to pairs, written as an ORM directory that
`think --orm` reads, resumable and reused like every run."""

import json

import pytest
from typer.testing import CliRunner

from datawall.cli import app
from datawall.errors import DatawallError
from datawall.model.reward_head import RewardModel
from datawall.prefer.config import RewardPairsConfig
from datawall.prefer.reward import BradleyTerryObjective, train_pair_reward_model
from datawall.rewards.scorers import RewardScorer
from tests.tiny_arith import TASK, trained_policy


def write_pairs(path, count: int) -> list[dict]:
    """A worked solution (chosen) against the same work with another final answer (rejected)."""
    rows = []
    for i in range(count):
        p = TASK.problem("train", i)
        good = TASK.solution(p)
        body, answer = good.rsplit("#### ", 1)
        rows.append({"prompt": p.prompt, "chosen": good, "rejected": body + "#### " + str(int(answer) + 1 + i % 9)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    # the 800-step policy (shared with other modules): its states tell sums apart well enough for a reward head to
    # learn; on the 200-step one val pair accuracy was 0.53-0.77 on an AVX-512 Xeon by pairs, epochs and seed, too
    # close to chance
    return trained_policy(tmp_path_factory.getbasetemp(), steps=800)


@pytest.mark.learned
def test_a_bradley_terry_model_ranks_held_out_pairs_and_think_reads_it(policy, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(pairs, 480)
    cfg = RewardPairsConfig(pairs=str(pairs), model=str(policy), epochs=4, lr=1e-3, val_frac=0.25)
    res = train_pair_reward_model(cfg, tmp_path / "rm", quiet=True)
    assert not res["reused"] and res["val_pairs"] == 120 and res["train_pairs"] == 360
    # prompts it never saw: the right answer ranked above the wrong one, in the median of three seeds (of the
    # split and the pair order; measured 0.74-0.83 on an AVX-512 Xeon, and it passes under AVX2 kernels there too),
    # not one lucky trajectory
    others = [train_pair_reward_model(cfg.model_copy(update={"seed": s}), tmp_path / f"rm{s}", quiet=True)
              for s in (1, 2)]
    assert sorted(r["val_pair_accuracy"] for r in [res, *others])[1] > 0.65
    rm = RewardModel.load(tmp_path / "rm")
    assert rm.kind == "orm" and rm.info["label"] == "bradley-terry" and rm.info["base_model"] == str(policy.resolve())
    run = tmp_path / "rm.run"
    assert {"config.json", "metrics.jsonl", "best", "result.json", "DONE"} <= {f.name for f in run.iterdir()}
    scorer = RewardScorer(tmp_path / "rm")
    held = [TASK.problem("train", i) for i in range(240, 260)]
    better = 0
    for p in held:
        good = TASK.solution(p)
        body, answer = good.rsplit("#### ", 1)
        right, wrong = scorer(p, [good, body + "#### " + str(int(answer) + 3)])
        better += right > wrong
    assert better >= 12

    assert train_pair_reward_model(cfg, tmp_path / "rm", quiet=True)["reused"]
    with pytest.raises(DatawallError, match="holds a different run"):
        train_pair_reward_model(cfg.model_copy(update={"lr": 3e-3}), tmp_path / "rm", quiet=True)


def test_the_loss_is_the_pairwise_term_alone(policy, tmp_path, monkeypatch):
    """No BCE: a pair says which answer is better, not that the chosen one is right."""
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(pairs, 8)
    seen = []
    original = BradleyTerryObjective.loss

    def spy(self, model, batch, step):
        loss, parts = original(self, model, batch, step)
        seen.append((loss.item(), parts))
        return loss, parts

    monkeypatch.setattr(BradleyTerryObjective, "loss", spy)
    cfg = RewardPairsConfig(pairs=str(pairs), model=str(policy), epochs=1, batch_size=4, val_frac=0.0)
    train_pair_reward_model(cfg, tmp_path / "rm", quiet=True)
    first_loss, parts = seen[0]
    assert set(parts) == {"bt"} and first_loss == pytest.approx(0.693147, abs=1e-5)  # zero head: log 2 per pair


def test_prefer_reward_cli_and_bad_pairs(policy, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    rows = write_pairs(pairs, 12)
    args = ["prefer", "reward", "--model", str(policy), "--epochs", "1", "--out", str(tmp_path / "rm")]
    ok = CliRunner().invoke(app, [*args, "--pairs", str(pairs), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["train_pairs"] + json.loads(ok.stdout)["val_pairs"] == 12
    rows[5]["rejected"] = rows[5]["chosen"]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "rm2"), "--pairs", str(pairs)])
    assert bad.exit_code != 0 and str(bad.exception).startswith(f"{pairs} line 6: chosen and rejected are identical")
