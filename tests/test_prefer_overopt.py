"""Over-optimisation (Gao et al. 2022): the best-of-n KL, both functional forms fitted on synthetic curves (exact
parameters and peaks back), and the best-of-n curve read from a think directory, checked against a direct
computation and through the CLI."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from datawall.cli import app
from datawall.errors import DatawallError
from datawall.prefer.overopt import (
    best_of_n_curve,
    bon_kl,
    fit_bon,
    fit_rl,
    n_for_kl,
    r_bon,
    r_rl,
)


def test_best_of_n_kl_and_its_inverse():
    assert bon_kl(1) == 0.0
    assert bon_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert bon_kl(64) == pytest.approx(math.log(64) - 63 / 64)
    for n in (2, 7, 100, 5000):
        assert n_for_kl(float(bon_kl(n))) == pytest.approx(n, rel=1e-6)
    assert n_for_kl(0.0) == 1.0 and n_for_kl(1e3) == math.inf


def test_bon_fit_recovers_the_parameters_and_the_peak():
    d = np.sqrt(bon_kl(np.array([1, 2, 4, 8, 16, 32, 64, 128, 256])))
    fit = fit_bon(d, r_bon(d, 0.3, 0.12))
    assert fit["alpha"] == pytest.approx(0.3, abs=1e-9) and fit["beta"] == pytest.approx(0.12, abs=1e-9)
    assert fit["peak_d"] == pytest.approx(0.3 / 0.24) and fit["peak_r"] == pytest.approx(0.09 / 0.48)
    assert bon_kl(fit["peak_n"]) == pytest.approx(fit["peak_d"] ** 2)
    rng = np.random.default_rng(0)
    noisy = fit_bon(d, r_bon(d, 0.3, 0.12) + rng.normal(0, 0.005, len(d)))
    assert noisy["alpha"] == pytest.approx(0.3, abs=0.03) and noisy["peak_d"] == pytest.approx(1.25, abs=0.2)
    rising = fit_bon(d, 0.2 * d)  # no turn: no peak
    assert "peak_d" not in rising and rising["beta"] == pytest.approx(0.0, abs=1e-9)
    falling = fit_bon(d, -0.1 * d - 0.05 * d * d)  # worse from the first step: the best is n = 1
    assert falling["peak_d"] == 0.0 and falling["peak_n"] == 1.0


def test_rl_fit_recovers_the_parameters_and_the_peak():
    d = np.linspace(0.0, 12.0, 25)  # RL's d = sqrt(KL) is measured, not a function of n
    r = r_rl(d, 1.0, 0.4)
    assert r[0] == 0.0
    fit = fit_rl(d, r)
    assert fit["alpha"] == pytest.approx(1.0, abs=1e-9) and fit["beta"] == pytest.approx(0.4, abs=1e-9)
    peak = math.exp(1.0 / 0.4 - 1)
    assert fit["peak_d"] == pytest.approx(peak) and fit["peak_r"] == pytest.approx(0.4 * peak)
    grid = np.linspace(0.01, 12, 5000)
    assert grid[np.argmax(r_rl(grid, 1.0, 0.4))] == pytest.approx(peak, abs=0.01)  # the closed form is the max
    rng = np.random.default_rng(1)
    noisy = fit_rl(d, r + rng.normal(0, 0.01, len(d)))
    assert noisy["peak_d"] == pytest.approx(peak, rel=0.1)


@pytest.mark.parametrize("d,r,msg", [([1.0], [0.1], "two or more"), ([-1.0, 1.0], [0.0, 0.1], "d must be >= 0"),
                                     ([0.0, 1.0], [0.0, 0.1], "d > 0"), ([1.0, 2.0], [0.1, math.nan], "finite")])
def test_fits_refuse_what_they_cannot_fit(d, r, msg):
    with pytest.raises(DatawallError, match=msg):
        fit_bon(d, r)


def _think_dir(tmp_path, rewards: np.ndarray, scores: np.ndarray):
    """samples.jsonl and scores.jsonl as `datawall think --orm` writes them."""
    lines, score_lines = [], []
    for q, (rs, ss) in enumerate(zip(rewards, scores, strict=True)):
        for j, (r, s) in enumerate(zip(rs, ss, strict=True)):
            lines.append({"problem": q, "sample": j, "completion": f"c{q}-{j}", "answer": None, "reward": float(r),
                          "tokens": 3})
            score_lines.append({"problem": q, "sample": j, "score": float(s), "reward_model": "rm"})
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (tmp_path / "scores.jsonl").write_text("".join(json.dumps(x) + "\n" for x in score_lines))
    return tmp_path


def test_best_of_n_curve_from_a_think_directory(tmp_path):
    rng = np.random.default_rng(0)
    problems, n = 60, 16
    rewards = (rng.random((problems, n)) < 0.4).astype(float)
    # a proxy that likes right answers a little and a nuisance feature a lot: picking harder overfits the nuisance
    nuisance = rng.random((problems, n))
    scores = 1 / (1 + np.exp(-(0.3 * rewards + 3 * nuisance - 1.5)))
    c = best_of_n_curve(_think_dir(tmp_path, rewards, scores), n_boot=50)
    assert c["n"] == [1, 2, 4, 8, 16] and c["problems"] == problems and c["n_max"] == n
    assert c["gold"][0] == pytest.approx(rewards.mean())  # k = 1: a random sample
    # k = n: the proxy's top pick per problem, exactly
    top = rewards[np.arange(problems), scores.argmax(1)].mean()
    assert c["gold"][-1] == pytest.approx(top)
    logit = np.log(scores / (1 - scores))
    assert c["proxy"][-1] == pytest.approx(logit.max(1).mean())
    assert all(a < b for a, b in zip(c["proxy"], c["proxy"][1:], strict=False))  # the proxy always climbs
    assert c["d"] == pytest.approx(np.sqrt(bon_kl(np.array(c["n"]))).tolist())
    assert c["gold_gain"][0] == 0.0 and "alpha" in c["gold_fit"]

    out = CliRunner().invoke(app, ["prefer", "overopt", str(tmp_path), "--json", "--plot", str(tmp_path / "o.png")])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["gold"] == pytest.approx(c["gold"])
    assert (tmp_path / "o.png").read_bytes()[:4] == b"\x89PNG"


def test_a_think_directory_without_scores_is_one_clear_line(tmp_path):
    rewards = np.zeros((3, 4))
    _think_dir(tmp_path, rewards, rewards + 0.5)
    (tmp_path / "scores.jsonl").unlink()
    with pytest.raises(DatawallError, match="scores.jsonl: missing"):
        best_of_n_curve(tmp_path)
