"""Fits of many points (issue 17 item 7): the grid of starts is screened on a sample and the best minima are
refined on every point; objectives run over blocks of points, so memory stays bounded at any size."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from datawall.errors import DatawallError
from datawall.laws import ChinchillaLaw, fit_chinchilla, fit_data_constrained, get_law, objective, read_points
from datawall.laws import bootstrap as bs
from datawall.laws import fit as fit_module
from datawall.laws.fit import HOFFMANN_GRID, fit_notes
from datawall.laws.lbfgs import minimize_batch
from datawall.laws.objective import chinchilla_objective, law_theta
from datawall.laws.published import BESIROGLU2024_LBFGS

TRUE = ChinchillaLaw(**BESIROGLU2024_LBFGS)


def synthetic(n: int, noise: float = 0.01, seed: int = 0):
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e12), n))
    return N, D, TRUE.predict(N, D) * np.exp(rng.normal(0.0, noise, n))


def test_a_screened_fit_of_the_anchor_points_lands_on_the_full_grid_fit(chinchilla_csv, monkeypatch):
    p = read_points(chinchilla_csv, c_col="Training FLOP", exclude_top_loss=5)
    monkeypatch.setattr(fit_module, "SCREEN_POINTS", 64)  # screen on a quarter of the 240 points
    messages: list[str] = []
    fit = fit_chinchilla(p.N, p.D, p.L, progress=messages.append)
    assert fit.screen_points == 64 and fit.starts == 5400 and fit.points == 240
    assert messages[0] == "chinchilla fit: 240 points: screening 5,400 starts on a sample of 64"
    assert messages[-1].startswith("chinchilla fit: refining the best") and messages[-1].endswith("on all 240 points")
    # the same minimum as every start on every point (test_laws_fit): Besiroglu et al.'s estimates
    assert fit.objective == pytest.approx(1.0182740178e-3, rel=1e-8)
    for k, want in BESIROGLU2024_LBFGS.items():
        assert fit.law.params()[k] == pytest.approx(want, rel=5e-4), k


def test_a_large_fit_is_staged_and_reaches_the_minimum_on_every_point():
    N, D, L = synthetic(40_000)
    messages: list[str] = []
    fit = fit_chinchilla(N, D, L, grid=HOFFMANN_GRID[::10], progress=messages.append)
    assert fit.points == 40_000 and fit.screen_points == fit_module.SCREEN_POINTS == 256
    assert messages[0] == "chinchilla fit: 40,000 points: screening 540 starts on a sample of 256"
    assert any("on 4,096 points" in m for m in messages) and "on all 40,000 points" in messages[-1]
    # no lower minimum nearby: L-BFGS on every point from the true constants ends no lower
    fg = chinchilla_objective(N, D, L)
    from_truth = minimize_batch(fg, law_theta(TRUE)[None, :], ftol=1e-14, max_iter=5000)
    assert fit.objective <= from_truth.f[0] * objective.HUBER_DELTA * (1 + 1e-9)
    for k, want in TRUE.params().items():
        assert fit.law.params()[k] == pytest.approx(want, rel=0.05), k
    assert any("screened on a seeded sample of 256 of the 40,000 points" in n for n in fit_notes(fit, N, D))
    again = fit_chinchilla(N, D, L, grid=HOFFMANN_GRID[::10])
    assert again.law == fit.law  # the sample is seeded: the same points give the same fit


def test_point_blocks_give_the_same_objective_in_bounded_memory(monkeypatch):
    N, D, L = synthetic(300_000)
    X = np.vstack([law_theta(TRUE), law_theta(TRUE) + 0.1, HOFFMANN_GRID[100], HOFFMANN_GRID[4000]])
    idx = np.arange(len(X))

    def evaluate(block: int):
        monkeypatch.setattr(objective, "POINT_BLOCK", block)
        fg = chinchilla_objective(N, D, L)
        tracemalloc.start()
        f, G = fg(X, idx)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return f, G, peak

    f1, G1, one_pass = evaluate(1 << 40)  # one row at a time over all points
    fb, Gb, blocked = evaluate(16384)
    np.testing.assert_allclose(fb, f1, rtol=1e-11)
    np.testing.assert_allclose(Gb, G1, rtol=1e-9, atol=1e-12 * np.abs(G1).max())
    assert one_pass > 4 * len(N) * 8  # several temporaries of every point at once
    # temporaries of at most 4 rows x 16384 points: a few MB whatever the number of points
    assert blocked < 10e6 and blocked < one_pass / 2, (blocked, one_pass)


def test_bootstrap_weights_come_in_bounded_chunks_with_the_same_rows(monkeypatch):
    monkeypatch.setattr(bs, "CHUNK_CELLS", 120)  # 50 points: 2 replicates per chunk
    chunks = list(bs.resample_chunks(50, 7, seed=3))
    assert [len(c) for c in chunks] == [2, 2, 2, 1]
    np.testing.assert_array_equal(np.vstack(chunks), bs.resample_counts(50, 7, seed=3))


def test_a_large_data_constrained_fit_is_staged_in_both_stages(monkeypatch):
    published = get_law("datablations-muennighoff2023")
    rng = np.random.default_rng(1)
    n = 1500
    U = np.exp(rng.uniform(np.log(1e9), np.log(1e12), n))
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = U * np.exp(rng.uniform(np.log(0.01), np.log(40.0), n))  # a hundredth of an epoch to 40 epochs
    L = published.predict(N, D, U) * np.exp(rng.normal(0.0, 0.003, n))
    messages: list[str] = []
    fit = fit_data_constrained(N, D, U, L, progress=messages.append)
    assert fit.base is not None and fit.base.points > 256 and fit.base.screen_points == 256
    assert fit.screen_points == 256 and sum("screening" in m for m in messages) == 2
    # stage 2 with every start on every point, from the same base, ends at the same minimum
    monkeypatch.setattr(fit_module, "SCREEN_POINTS", 1 << 40)
    full = fit_data_constrained(N, D, U, L, base=fit.base.law)
    assert full.screen_points is None and fit.objective == pytest.approx(full.objective, rel=1e-9)
    assert fit.law.R_D_star == pytest.approx(full.law.R_D_star, rel=1e-4)
    assert 1 < fit.law.R_D_star < 100


@pytest.mark.parametrize("N,D,name", [([1e8] * 20, list(np.geomspace(1e9, 1e11, 20)), "N"),
                                      (list(np.geomspace(1e7, 1e9, 20)), [2e10] * 20, "D"),
                                      ([1e8] * 20, [1e9] * 20, "N")])
def test_data_without_spread_in_n_or_d_is_refused(N, D, name):
    L = np.linspace(3.0, 2.5, 20)
    with pytest.raises(DatawallError, match=f"every point has {name} = .*no spread in {name}"):
        fit_chinchilla(N, D, L)


def test_notes_flag_non_positive_exponents_and_undetermined_constants():
    N = np.repeat([1e8, 2e8], 6)
    D = np.tile(np.geomspace(1e9, 1e11, 6), 2)
    L = 2.0 + 1e-3 * N**0.1 + 300.0 / D**0.3  # loss rises with N
    fit = fit_chinchilla(N, D, L)
    notes = fit_notes(fit, N, D)
    assert fit.law.alpha <= 0 and any(n.startswith(f"alpha = {fit.law.alpha:.4g} is not positive") for n in notes)
    assert any(n.startswith("only 2 distinct values of N") for n in notes)
