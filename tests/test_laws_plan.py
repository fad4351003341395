"""Compute-optimal allocation with a data cap, marginal returns, and the inference-aware optimum."""

from __future__ import annotations

import numpy as np
import pytest

from datawall.laws import ChinchillaLaw, compute_optimal, get_law, inference_optimal, marginal_return, plan
from datawall.laws.plan import tokens_for_loss, with_repetition


@pytest.mark.parametrize("name", ["chinchilla-hoffmann2022", "chinchilla-besiroglu2024",
                                  "datablations-muennighoff2023"])
@pytest.mark.parametrize("U", [None, 20e9, 1e15])
def test_compute_optimal_spends_exactly_the_budget(name, U):
    law = get_law(name)
    for C in (1e19, 5.76e23):
        opt = compute_optimal(law, C, U)
        assert 6 * opt["params"] * opt["tokens"] == pytest.approx(C, rel=1e-9)
        assert opt["tokens_per_param"] == pytest.approx(opt["tokens"] / opt["params"])


def test_unconstrained_optimum_is_hoffmanns_closed_form_and_a_minimum():
    law = get_law("chinchilla-hoffmann2022")
    C = 5.76e23
    opt = compute_optimal(law, C)
    a, b = law.alpha, law.beta
    G = (a * law.A / (b * law.B)) ** (1 / (a + b))
    assert opt["params"] == pytest.approx(G * (C / 6) ** (b / (a + b)))
    for f in (0.8, 1.25):
        N = opt["params"] * f
        assert law.predict(N, C / (6 * N)) > opt["loss"]
    # a huge data cap changes nothing; a numerical search agrees with the closed form
    capped = compute_optimal(law, C, 1e18)
    assert capped["params"] == pytest.approx(opt["params"], rel=1e-4)


def test_a_tight_data_cap_means_more_epochs_and_a_higher_loss():
    law = get_law("datablations-muennighoff2023")
    C = 1e22
    free, capped = compute_optimal(law, C), compute_optimal(law, C, 20e9)
    assert capped["epochs"] > 1 and capped["loss"] > free["loss"]
    assert capped["tokens"] > 20e9  # it does repeat the data


def test_marginal_return_is_the_slope_of_the_optimal_loss():
    law = get_law("datablations-muennighoff2023")
    C, U, h = 1e22, 20e9, 0.01
    opt = compute_optimal(law, C, U)
    slope = marginal_return(law, opt["params"], opt["tokens"], U)
    fd = (compute_optimal(law, C * np.exp(h), U)["loss"] - compute_optimal(law, C * np.exp(-h), U)["loss"]) / (2 * h)
    assert slope < 0 and slope == pytest.approx(fd, rel=1e-3)
    free = compute_optimal(law, C)
    assert marginal_return(law, free["params"], free["tokens"]) < slope  # the cap lowers the return on compute


@pytest.mark.parametrize("name", ["chinchilla-besiroglu2024", "datablations-muennighoff2023"])
def test_inference_aware_optimum_is_smaller_and_trained_longer(name):
    law = get_law(name)
    C, U, T = 1e22, 100e9, 2e12
    p = plan(law, C, U, T)
    opt, inf = p["optimal"], p["inference_aware"]
    assert inf["params"] < opt["params"] and inf["tokens"] > opt["tokens"]
    assert inf["total_flops"] < inf["compute_optimal_total_flops"] and 0 < inf["savings"] < 1
    target = with_repetition(law)
    assert float(target.predict(inf["params"], inf["tokens"], U)) == pytest.approx(opt["loss"], abs=1e-9)
    # without inference the cheapest way to reach the loss is the compute-optimal model itself
    zero = inference_optimal(law, opt["loss"], 0.0, U, around=opt["params"])
    assert zero["params"] == pytest.approx(opt["params"], rel=1e-3)
    assert zero["train_flops"] == pytest.approx(C, rel=1e-6)


def test_tokens_for_loss_inverts_the_law():
    law = ChinchillaLaw(1.8, 480.0, 2100.0, 0.35, 0.37)
    N = np.array([1e8, 1e9, 1e10])
    D = tokens_for_loss(law, N, 2.7)
    np.testing.assert_allclose(law.predict(N, D), 2.7, atol=1e-12)
    assert np.isinf(tokens_for_loss(law, np.array([1e6]), 1.9))[0]  # out of reach at that size


def test_plan_reports_an_interval_when_the_law_has_samples():
    base = get_law("chinchilla-besiroglu2024")
    rng = np.random.default_rng(0)
    samples = np.array([[base.E, base.A, base.B, base.alpha, base.beta]]) * rng.normal(1, 0.01, (50, 5))
    p = plan(base.with_samples(samples), 1e22, 50e9, 0)
    lo, hi = p["optimal"]["loss_interval"]
    assert lo < p["optimal"]["loss"] < hi
    assert p["repetition"].startswith("muennighoff2023")
