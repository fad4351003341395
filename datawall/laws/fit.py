"""Robust fits of the laws: Huber loss on log-loss, L-BFGS from a grid of starts, best fit kept."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from datawall.errors import DatawallError
from datawall.laws.forms import ChinchillaLaw, DataConstrainedLaw, Law
from datawall.laws.lbfgs import minimize_batch
from datawall.laws.objective import (
    HUBER_DELTA,
    RowWeights,
    chinchilla_objective,
    huber_sum,
    repetition_objective,
)

# Hoffmann et al. 2022's grid of starts, also used by Besiroglu et al. 2024: 6 * 6 * 6 * 5 * 5 = 5400 starts,
# rows (a, b, e, alpha, beta) with A = exp(a), B = exp(b), E = exp(e).
HOFFMANN_GRID = np.array(
    list(itertools.product(np.arange(0, 30, 5), np.arange(0, 30, 5), np.arange(-1.0, 2.0, 0.5),
                           np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))),
    dtype=np.float64,
)
# Muennighoff et al. 2023 started R_N*, R_D* from {0, 4, ..., 20}. The objective has several local minima
# along a long valley in (R_D*, R_N*) (their published pair is one of them), so we start wider, from
# R* in {0.5, 1, 2, ..., 256} (log R* is optimised, so R* = 0 is out), and keep the best.
REPETITION_GRID = np.log(np.array(list(itertools.product(2.0 ** np.arange(-1, 9), repeat=2)), dtype=np.float64))


@dataclass
class Fit:
    """A fitted law with what it took: the Huber objective, the point count, and how many starts reached it."""

    law: Law
    objective: float  # sum of Huber losses on log-loss (unscaled, as papers report it)
    points: int
    theta: np.ndarray  # optimiser coordinates of the best fit
    starts: int
    starts_at_best: int  # starts whose run ended at the best objective (to 1e-6 relative)
    base: Fit | None = None  # data-constrained fits: the stage-1 (single-epoch) Chinchilla fit
    delta: float = HUBER_DELTA


def _check_arrays(n_params: int, what: str, **arrays) -> int:
    n = None
    for name, x in arrays.items():
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise DatawallError(f"{name}: expected a 1-D array of values, got shape {x.shape}")
        if not np.all(np.isfinite(x) & (x > 0)):
            i = int(np.flatnonzero(~(np.isfinite(x) & (x > 0)))[0])
            raise DatawallError(f"{name}[{i}] = {float(x[i])}: values must be positive and finite")
        if n is not None and len(x) != n:
            raise DatawallError(f"{name}: length {len(x)} differs from the other columns ({n})")
        n = len(x)
    if n is None or n < n_params:
        raise DatawallError(f"{what}: {n or 0} points cannot determine {n_params} free parameters")
    return n


def _distinct_minima(x: np.ndarray, f: np.ndarray, keep: int = 16, tol: float = 0.05) -> np.ndarray:
    """The best end point of each distinct minimum, best first (closer than tol in every coordinate = same)."""
    order = np.argsort(f, kind="stable")
    cand = order[np.isfinite(f[order])]
    out = []
    while len(cand) and len(out) < keep:
        best = x[cand[0]]
        out.append(best)
        cand = cand[np.abs(x[cand] - best).max(1) > tol]
    return np.array(out)


def _minimise(fg, starts: np.ndarray, what: str, polish: int = 8):
    """Run every start, then refine the best few distinct end points to full precision; keep the lowest.

    The first pass stops at a relative decrease of 1e-6, about where scipy's default ftol (2.2e-9 on an
    objective near 1e-3) stopped Besiroglu et al.'s runs; the refinement runs to ~1e-14 relative.
    (scipy's L-BFGS-B would do for the refinement, but its tiny BLAS calls go multi-threaded and stall
    for seconds when the cores are shared.) Returns (best x, best scaled objective, each start's end objective).
    """
    res = minimize_batch(fg, starts, ftol=1e-6)
    f = np.where(res.converged, res.f, np.inf)
    if not np.isfinite(f).any():
        raise DatawallError(f"{what}: the fit did not converge from any of {len(starts)} starts")
    # a refinement that runs out of iterations still only went downhill from a converged start: keep it
    fine = minimize_batch(fg, _distinct_minima(res.x, f, keep=polish), ftol=1e-14, max_iter=5000)
    ok = np.isfinite(fine.f) & np.isfinite(fine.x).all(1)
    if not ok.any():
        raise DatawallError(f"{what}: the fit did not converge (refinement of the best starts failed)")
    best = int(np.argmin(np.where(ok, fine.f, np.inf)))
    return fine.x[best], float(fine.f[best]), f


def fit_chinchilla(N, D, L, grid: np.ndarray | None = None, delta: float = HUBER_DELTA,
                   name: str = "fit") -> Fit:
    """Fit L = E + A/N^alpha + B/D^beta as Besiroglu et al. 2024: Huber(delta) on log-loss from a grid of starts."""
    n = _check_arrays(5, "chinchilla fit", N=N, D=D, loss=L)
    starts = HOFFMANN_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    fg = chinchilla_objective(N, D, L, delta)
    theta, fbest, f = _minimise(fg, starts, "chinchilla fit")
    law = ChinchillaLaw.from_log(*theta, name=name)
    if not all(np.isfinite(list(law.params().values()))):
        raise DatawallError(f"chinchilla fit: the best fit has non-finite constants {law.params()}")
    resid = np.log(law.predict(N, D)) - np.log(np.asarray(L, dtype=np.float64))
    return Fit(
        law=law,
        objective=huber_sum(resid, delta),
        points=n,
        theta=theta,
        starts=len(starts),
        starts_at_best=int(np.sum(f <= fbest * (1 + 1e-6) + 1e-12)),
        delta=delta,
    )


def single_epoch(D, U) -> np.ndarray:
    """Mask of single-epoch rows (D <= U): the ones a stage-1 base fit uses."""
    return np.asarray(D, dtype=np.float64) <= np.asarray(U, dtype=np.float64) * (1 + 1e-9)


def fit_data_constrained(N, D, U, L, base: ChinchillaLaw | None = None, grid: np.ndarray | None = None,
                         delta: float = HUBER_DELTA, name: str = "fit") -> Fit:
    """Fit Muennighoff et al.'s data-constrained law in two stages.

    Stage 1 fits the Chinchilla constants on the single-epoch rows (D <= U), unless `base` is given.
    Stage 2 holds them fixed and fits R_D*, R_N* on all rows (Huber on log-loss, grid of starts).
    """
    n = _check_arrays(2, "data-constrained fit", N=N, D=D, U=U, loss=L)
    N, D, U, L = (np.asarray(x, dtype=np.float64) for x in (N, D, U, L))
    stage1 = None
    if base is None:
        single = single_epoch(D, U)
        if single.sum() < 5:
            raise DatawallError(
                f"data-constrained fit: stage 1 needs at least 5 single-epoch rows (tokens <= unique tokens) "
                f"to fit the base law, found {int(single.sum())}; pass a base law instead"
            )
        stage1 = fit_chinchilla(N[single], D[single], L[single], delta=delta, name=name)
        base = stage1.law
    starts = REPETITION_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    fg = repetition_objective(base, N, D, U, L, delta)
    phi, fbest, f = _minimise(fg, starts, "data-constrained fit")
    law = DataConstrainedLaw.from_base(base, float(np.exp(phi[0])), float(np.exp(phi[1])), name=name)
    resid = np.log(law.predict(N, D, U)) - np.log(L)
    return Fit(
        law=law,
        objective=huber_sum(resid, delta),
        points=n,
        theta=phi,
        starts=len(starts),
        starts_at_best=int(np.sum(f <= fbest * (1 + 1e-6) + 1e-12)),
        base=stage1,
        delta=delta,
    )


def fit_weighted_chinchilla(N, D, L, W: np.ndarray, starts: np.ndarray, delta: float = HUBER_DELTA):
    """Best (a, b, e, alpha, beta) per row of observation weights W (replicates x points), all starts batched."""
    S = len(starts)
    fg = chinchilla_objective(N, D, L, delta, RowWeights(W, S))
    return _best_per_replicate(fg, starts, len(W))


def fit_weighted_repetition(base, N, D, U, L, W: np.ndarray, starts: np.ndarray, delta: float = HUBER_DELTA):
    """Best (log R_D*, log R_N*) per replicate; base is one law or a (replicates, 5) array of base thetas."""
    fg = repetition_objective(base, N, D, U, L, delta, RowWeights(W, len(starts)))
    return _best_per_replicate(fg, starts, len(W))


def _best_per_replicate(fg, starts: np.ndarray, R: int):
    """Every start of every replicate to 1e-6, then each replicate's best end point refined to 1e-14."""
    S = len(starts)
    res = minimize_batch(fg, np.tile(starts, (R, 1)), ftol=1e-6)
    f = np.where(res.converged & np.isfinite(res.f), res.f, np.inf).reshape(R, S)
    rows = np.arange(R) * S + np.argmin(f, axis=1)  # batch row of each replicate's best start
    fine = minimize_batch(lambda X, idx: fg(X, rows[idx]), res.x[rows], ftol=1e-14, max_iter=5000)
    fb = np.where(np.isfinite(f.min(axis=1)) & np.isfinite(fine.f), fine.f, np.inf)
    x = fine.x.copy()
    x[~np.isfinite(fb)] = np.nan  # a replicate no start could fit
    return x, fb
