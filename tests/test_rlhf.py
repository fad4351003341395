"""The RLHF route end to end on tiny real checkpoints: a `prefer reward` Bradley-Terry model as the reward of
`datawall rl` (its logit), over-optimisation tracking (`--track-kl`: proxy, gold and the KL to the start measured
on the run's own samples) and `prefer overopt RUN` fitting Gao et al.'s RL form with its peak."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from cli_run import invoke
from tiny_arith import TASK, TASK_ARGS, one_thread, trained_policy

from datawall.errors import DatawallError
from datawall.model import load_checkpoint
from datawall.model.reward_head import RewardModel
from datawall.model.sampler import generate
from datawall.prefer.config import RewardPairsConfig
from datawall.prefer.overopt import r_rl, rl_curve
from datawall.prefer.reward import train_pair_reward_model
from datawall.rl import RLConfig
from datawall.rl.rewards import build_reward, verifier_reward
from datawall.rl.track import OveroptTracker, sequence_logprobs
from datawall.study.jobs import _rl_resolve
from datawall.tasks.prompting import build_prompt
from datawall.train.evaluate import prompt_ids
from datawall.train.objectives.sequences import frozen_copy

ARGS = ",".join(f"{k}={v}" for k, v in TASK_ARGS.items())
TINY = ["--task", "arith", "--task-args", ARGS, "--steps", "4", "--prompts-per-step", "4", "--group", "4",
        "--eval-every", "2", "--val-problems", "8", "--eval-problems", "8", "--pass-problems", "0",
        "--first-problem", "2000", "--warmup-steps", "0", "--lr", "3e-3"]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return trained_policy(tmp_path_factory.getbasetemp(), steps=200)


@pytest.fixture(scope="module")
def bt_model(policy, tmp_path_factory):
    """A Bradley-Terry model of a few pairs (a worked solution against the same work with another answer)."""
    base = tmp_path_factory.mktemp("bt")
    rows = []
    for i in range(24):
        p = TASK.problem("train", i)
        good = TASK.solution(p)
        body, answer = good.rsplit("#### ", 1)
        rows.append({"prompt": p.prompt, "chosen": good, "rejected": body + "#### " + str(int(answer) + 1 + i % 9)})
    (base / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = RewardPairsConfig(pairs=str(base / "pairs.jsonl"), model=str(policy), epochs=1, lr=1e-3, val_frac=0.0)
    with one_thread():
        train_pair_reward_model(cfg, base / "rm", quiet=True)
    return base / "rm"


def test_a_bradley_terry_model_is_an_rl_reward_scored_by_its_logit(bt_model):
    reward = build_reward(str(bt_model), TASK, "strict", 0, "cpu")
    assert reward.name.startswith("bradley-terry ") and not reward.is_verifier
    rm = RewardModel.load(bt_model)
    p = TASK.problem("train", 3000)
    body, answer = TASK.solution(p).rsplit("#### ", 1)
    texts = [TASK.solution(p), body + "#### " + str(int(answer) + 3), "1"]
    got = reward.fn(p, texts)
    with torch.no_grad():
        for text, r in zip(texts, got, strict=True):
            ids, ends = rm.encode(p.prompt, [text])
            logit = float(rm(torch.tensor([ids]))[0, ends[-1]])
            assert r == pytest.approx(logit, abs=1e-5)
    assert reward.flops(p, texts[0]) > 0


def _encode(tok):
    def encode(problem):
        ids = prompt_ids(tok, build_prompt(TASK, problem, 0))
        return tuple(tok.with_bos(tok.encode(ids) if isinstance(ids, str) else ids))
    return encode


def test_the_tracked_kl_is_zero_at_the_start_and_the_samplers_own_log_ratio_after(policy):
    ckpt = load_checkpoint(policy)
    model, tok = ckpt.model, ckpt.tokenizer
    reference = frozen_copy(model)
    problems = [TASK.problem("test", i) for i in range(5)]
    encode = _encode(tok)
    with one_thread():
        tracker = OveroptTracker(TASK, tok, problems, encode, verifier_reward(TASK), reference, 4, 40, 1.0, None,
                                 "strict", 7, "cpu")
        start = tracker(model)
        assert start["track_kl"] == 0.0 and start["track_kl_se"] == 0.0
        assert start["track_proxy"] == start["track_gold"]  # the verifier is both here
        torch.manual_seed(0)
        with torch.no_grad():  # another policy: the reference's weights, perturbed
            for w in model.parameters():
                w.add_(0.02 * torch.randn_like(w))
        after = tracker(model)
        # straightforward: the sampler's own log-probs of what it drew (same seed) minus the reference's
        groups = generate(model, tok, [encode(p) for p in problems], n=4, max_new_tokens=40, temperature=1.0,
                          seed=7, device="cpu", return_logprobs=True)
    policy_lp = [sum(s.logprobs) for g in groups for s in g]
    ref_lp = sequence_logprobs(reference, [encode(p) for p, g in zip(problems, groups, strict=True) for _ in g],
                               [s.token_ids for g in groups for s in g], tok.pad_id)
    per_problem = (torch.tensor(policy_lp, dtype=torch.float64) - ref_lp.double()).view(5, 4).mean(1)
    assert after["track_kl"] == pytest.approx(float(per_problem.mean()), abs=1e-3)
    assert after["track_kl"] > 0.05  # a visibly different policy
    assert after["track_kl_se"] == pytest.approx(float(per_problem.std() / math.sqrt(5)), abs=1e-3)


def test_rl_with_the_bt_reward_tracks_overoptimisation_and_overopt_fits_it(policy, bt_model, tmp_path):
    out = tmp_path / "run"
    code, output = invoke("rl", "--model", str(policy), "--out", str(out), "--reward", str(bt_model),
                          "--track-kl", "4", *TINY, "--json")
    assert code == 0, output
    config = json.loads((out / "config.json").read_text())
    assert config["rl"]["track_kl"] == 4
    start = json.loads((out / "before.json").read_text())["track"]
    assert start["track_kl"] == 0.0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    tracked = [r for r in rows if "track_kl" in r]
    assert [r["step"] for r in tracked] == [2, 4]
    for r in tracked:
        assert {"track_proxy", "track_gold", "track_kl", "track_tokens", "track_gold_se"} <= set(r)
        assert 0.0 <= r["track_gold"] <= 1.0 and math.isfinite(r["track_proxy"])
    assert tracked[-1]["track_kl"] != 0.0  # the weights moved

    plot = tmp_path / "rl.png"
    code, output = invoke("prefer", "overopt", str(out), "--plot", str(plot), "--json")
    assert code == 0, output
    curve = json.loads(output.strip().splitlines()[-1])
    assert curve["step"] == [0, 2, 4] and curve["problems"] == 4 and curve["samples"] == 4
    assert curve["d"][0] == 0.0 and curve["gold_gain"][0] == 0.0 and curve["proxy_gain"][0] == 0.0
    assert curve["d"][2] == pytest.approx(math.sqrt(max(0.0, tracked[-1]["track_kl"])))
    assert curve["gold"][2] == pytest.approx(tracked[-1]["track_gold"])
    assert curve["gold_fit"]["form"] == "R = d (alpha - beta log d)"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, text = invoke("prefer", "overopt", str(out))
    assert code == 0 and "gold gain = d (" in text and "log d)" in text


def test_tracking_is_off_by_default_and_leaves_stored_identities_alone(policy, tmp_path):
    cfg = RLConfig(task="arith")
    assert "track_kl" not in cfg.identity()
    assert RLConfig(task="arith", track_kl=3).identity()["track_kl"] == 3
    assert "track_kl" not in _rl_resolve({"task": "arith", "model": "pretrain-x"})  # a study job's key unchanged
    out = tmp_path / "plain"
    code, output = invoke("rl", "--model", str(policy), "--out", str(out), *TINY[:-4], "--steps", "2", "--json")
    assert code == 0, output
    assert "track_kl" not in json.loads((out / "config.json").read_text())["rl"]
    assert "track" not in json.loads((out / "before.json").read_text())
    assert not any(k.startswith("track_") for line in (out / "metrics.jsonl").read_text().splitlines()
                   for k in json.loads(line))
    code, text = invoke("prefer", "overopt", str(out))
    assert code == 2 and "not tracked" in text and "--track-kl" in text and "\n" not in text.strip()


def _fake_run(path, steps, kl, gold, proxy, se=0.0):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"kind": "rl", "reward": "bradley-terry rm",
                                                  "rl": {"task": "arith", "track_kl": 50, "group": 8}}))

    def point(i):
        return {"track_kl": kl[i], "track_gold": gold[i], "track_proxy": proxy[i], "track_tokens": 20.0,
                "track_kl_se": se, "track_gold_se": se, "track_proxy_se": se}

    (path / "before.json").write_text(json.dumps({"track": point(0)}))
    (path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "train_loss": 0.0}) + "\n" +
                                                json.dumps({"step": s + 1, **point(i)}) + "\n"
                                                for i, s in enumerate(steps) if i))


def test_the_rl_curve_recovers_a_known_peak(tmp_path):
    d = np.linspace(0.0, 6.0, 13)
    gold = 0.3 + r_rl(d, 0.5, 0.4)  # peak at d* = exp(0.5 / 0.4 - 1) = 1.284
    proxy = 1.0 + 0.8 * d
    _fake_run(tmp_path / "run", list(range(0, 130, 10)), (d * d).tolist(), gold.tolist(), proxy.tolist(), se=0.01)
    c = rl_curve(tmp_path / "run")
    assert c["step"] == [0] + [s + 1 for s in range(10, 130, 10)]
    assert c["gold_fit"]["alpha"] == pytest.approx(0.5, abs=1e-9) and c["gold_fit"]["beta"] == pytest.approx(0.4)
    assert c["gold_fit"]["peak_d"] == pytest.approx(math.exp(0.25))
    assert c["peak_d_ci"][0] < math.exp(0.25) < c["peak_d_ci"][1] and c["peak_found_share"] > 0.95
    assert c["proxy_fit"]["beta"] == pytest.approx(0.0, abs=1e-9) and "peak_d" not in c["proxy_fit"]
    assert c["best_measured_d"] == pytest.approx(1.5)  # the best measured point (R(1.5) = 0.507 > R(1) = 0.5)
    _fake_run(tmp_path / "short", [0, 10], [0.0, 1.0], [0.3, 0.4], [0.0, 1.0])
    with pytest.raises(DatawallError, match="1 tracked evaluation"):
        rl_curve(tmp_path / "short")


def test_max_d_fits_the_points_before_the_floor(tmp_path):
    d = np.array([0.0, 0.1, 0.2, 0.4, 0.8, 1.2, 3.0, 6.0, 9.0])
    gold = 0.4 + r_rl(d, -0.03, 0.04)  # peak at exp(-0.75 - 1)
    gold[6:] = 0.0  # a collapsed policy: the verifier's floor, whatever d does
    _fake_run(tmp_path / "run", list(range(0, 90, 10)), (d * d).tolist(), gold.tolist(), (2 * d).tolist())
    whole = rl_curve(tmp_path / "run")
    assert "peak_d" not in whole["gold_fit"] or abs(whole["gold_fit"]["peak_d"] - math.exp(-1.75)) > 0.05
    early = rl_curve(tmp_path / "run", max_d=1.5)
    assert early["fitted_points"] == 6 and len(early["d"]) == 9
    assert early["gold_fit"]["peak_d"] == pytest.approx(math.exp(-1.75), rel=1e-6)
    code, text = invoke("prefer", "overopt", str(tmp_path / "run"), "--max-d", "1.5")
    assert code == 0 and "the 6 points with d <= 1.5" in text
    code, text = invoke("prefer", "overopt", str(tmp_path / "run"), "--max-d", "0.05")
    assert code == 2 and "--max-d 0.05" in text
