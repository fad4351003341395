"""Robust fits of the laws: Huber loss on log-loss, L-BFGS from a grid of starts, best fit kept.

Up to SCREEN_POINTS points every start runs on every point (how the published fits were made). Beyond
that the grid is screened on a seeded sample of SCREEN_POINTS points, and the best distinct minima are
refined on samples STAGE_GROWTH times larger until the last stage refines the best two on every point:
a grid of 5,400 starts is never evaluated over a million points, and memory stays bounded.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
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
SCREEN_POINTS = 256  # larger fits screen the grid of starts on a sample of this many points
STAGE_GROWTH = 16  # each refinement stage uses this many times more points, up to all of them
SAMPLE_SEED = 0
FINAL_CLOSE = 1e-3  # the last stage refines the runner-up too when its objective is within this of the best

Progress = Callable[[str], None]


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
    screen_points: int | None = None  # points the starts were screened on, when fewer than `points`


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


def _distinct(x: np.ndarray, f: np.ndarray, keep: int = 16, tol: float = 0.05) -> np.ndarray:
    """Indices of the best end point of each distinct minimum, best first (closer than tol in every coordinate
    = the same minimum); non-finite objectives are left out."""
    order = np.argsort(f, kind="stable")
    cand = order[np.isfinite(f[order]) & np.isfinite(x[order]).all(1)]
    out = []
    while len(cand) and len(out) < keep:
        out.append(cand[0])
        cand = cand[np.abs(x[cand] - x[cand[0]]).max(1) > tol]
    return np.array(out, dtype=int)


def _distinct_minima(x: np.ndarray, f: np.ndarray, keep: int = 16, tol: float = 0.05) -> np.ndarray:
    """The best end point of each distinct minimum, best first (closer than tol in every coordinate = same)."""
    return x[_distinct(x, f, keep, tol)]


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


def _stage_sizes(n: int) -> list[int]:
    """Sample sizes of the refinement stages after the screen: x STAGE_GROWTH while well short of n, then n."""
    sizes, size = [], SCREEN_POINTS * STAGE_GROWTH
    while size * 8 <= n:
        sizes.append(size)
        size *= STAGE_GROWTH
    return [*sizes, n]


def _ticker(say: Progress, what: str, every: float = 2.0):
    """An on_iteration callback that reports the iteration and best objective every `every` seconds."""
    last = [time.monotonic()]

    def tick(k: int, f: np.ndarray) -> None:
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            say(f"{what}:   iteration {k}, objective {float(np.nanmin(f)) * HUBER_DELTA:.10g}")

    return tick


def _screened(make_fg, n: int, starts: np.ndarray, what: str, polish: int = 8, progress: Progress | None = None):
    """_minimise for many points: screen the starts on a sample, refine the best minima on ever larger samples.

    The samples are nested prefixes of one seeded permutation. The screen's best `polish` distinct minima are
    refined on the screen sample; the best 4 of them on each larger sample (to 1e-10), and the best 2 on every
    point (to 1e-14), the runner-up only while it is within FINAL_CLOSE of the best.
    Returns (best x, the screen-sample objective of its basin, each start's screen objective).
    """
    say = progress or (lambda message: None)
    order = np.random.default_rng(SAMPLE_SEED).permutation(n)
    say(f"{what}: {n:,} points: screening {len(starts):,} starts on a sample of {SCREEN_POINTS:,}")
    fg = make_fg(np.sort(order[:SCREEN_POINTS]))
    res = minimize_batch(fg, starts, ftol=1e-6)
    f = np.where(res.converged, res.f, np.inf)
    if not np.isfinite(f).any():
        raise DatawallError(f"{what}: the fit did not converge from any of {len(starts)} starts")
    fine = minimize_batch(fg, _distinct_minima(res.x, f, keep=polish), ftol=1e-14, max_iter=5000)
    rank = _distinct(fine.x, fine.f, keep=polish)
    if not len(rank):
        raise DatawallError(f"{what}: the fit did not converge (refinement of the best starts failed)")
    x, screen_f = fine.x[rank], fine.f[rank]  # candidates, best first, and their screen-sample objectives
    origin, fx, ranked_on = np.arange(len(x)), screen_f, SCREEN_POINTS
    for size in _stage_sizes(n):
        last = size == n
        keep = np.arange(min(2 if last else 4, len(x)))
        if last and ranked_on > SCREEN_POINTS:  # ranked on a large sample: a clearly worse runner-up is dropped
            keep = keep[fx[keep] <= fx[0] * (1 + FINAL_CLOSE)]
        x, origin = x[keep], origin[keep]
        which = "the best minimum" if len(x) == 1 else f"the best {len(x)} minima"
        say(f"{what}: refining {which} on {'all ' if last else ''}{size:,} points")
        fg = make_fg(None if last else np.sort(order[:size]))
        stage = minimize_batch(fg, x, ftol=1e-14 if last else 1e-10, max_iter=5000 if last else 2000,
                               on_iteration=_ticker(say, what) if progress else None, first_step=1e-2)
        rank = _distinct(stage.x, stage.f, keep=len(x))  # candidates that met are one candidate now
        if not len(rank):
            raise DatawallError(f"{what}: the fit did not converge (refinement on {size:,} points failed)")
        x, origin, fx, ranked_on = stage.x[rank], origin[rank], stage.f[rank], size
    return x[0], float(screen_f[origin[0]]), f


def _minimise_points(make_fg, n: int, starts: np.ndarray, what: str, progress: Progress | None = None):
    """(best x, its objective on the points `f` was measured on, each start's end objective f, screen size).

    `make_fg(idx)` is the objective on the points idx (None: all of them).
    """
    if n <= SCREEN_POINTS:
        x, fbest, f = _minimise(make_fg(None), starts, what)
        return x, fbest, f, None
    x, fbest, f = _screened(make_fg, n, starts, what, progress=progress)
    return x, fbest, f, SCREEN_POINTS


def _check_spread(what: str, **arrays) -> None:
    """Refuse points that all share one N (or one D): the power law in it is then not determined at all."""
    for name, x in arrays.items():
        x = np.asarray(x, dtype=np.float64)
        if x.max() <= x.min() * (1 + 1e-9):
            raise DatawallError(f"{what}: every point has {name} = {x[0]:.6g}; with no spread in {name} the fit "
                                f"cannot tell its power law from the constant E (vary {name} across runs)")


def fit_chinchilla(N, D, L, grid: np.ndarray | None = None, delta: float = HUBER_DELTA,
                   name: str = "fit", progress: Progress | None = None) -> Fit:
    """Fit L = E + A/N^alpha + B/D^beta as Besiroglu et al. 2024: Huber(delta) on log-loss from a grid of starts.

    `progress(message)` hears about the stages of a fit of more than SCREEN_POINTS points.
    """
    n = _check_arrays(5, "chinchilla fit", N=N, D=D, loss=L)
    N, D, L = (np.asarray(x, dtype=np.float64) for x in (N, D, L))
    _check_spread("chinchilla fit", N=N, D=D)
    starts = HOFFMANN_GRID if grid is None else np.asarray(grid, dtype=np.float64)

    def make_fg(idx):  # the objective on the points idx (None: all of them)
        at = slice(None) if idx is None else idx
        return chinchilla_objective(N[at], D[at], L[at], delta)

    theta, fbest, f, screen = _minimise_points(make_fg, n, starts, "chinchilla fit", progress)
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
        screen_points=screen,
    )


def single_epoch(D, U) -> np.ndarray:
    """Mask of single-epoch rows (D <= U): the ones a stage-1 base fit uses."""
    return np.asarray(D, dtype=np.float64) <= np.asarray(U, dtype=np.float64) * (1 + 1e-9)


def fit_data_constrained(N, D, U, L, base: ChinchillaLaw | None = None, grid: np.ndarray | None = None,
                         delta: float = HUBER_DELTA, name: str = "fit", progress: Progress | None = None) -> Fit:
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
        stage1 = fit_chinchilla(N[single], D[single], L[single], delta=delta, name=name, progress=progress)
        base = stage1.law
    starts = REPETITION_GRID if grid is None else np.asarray(grid, dtype=np.float64)

    def make_fg(idx):  # the objective on the points idx (None: all of them)
        at = slice(None) if idx is None else idx
        return repetition_objective(base, N[at], D[at], U[at], L[at], delta)

    phi, fbest, f, screen = _minimise_points(make_fg, n, starts, "data-constrained fit", progress)
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
        screen_points=screen,
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


def fit_notes(fit: Fit, N, D, U=None) -> list[str]:
    """What a reader of the fit must know: exponents that are not positive, constants the points leave open,
    and how the starts were screened."""
    law, notes = fit.law, []
    for name, value, what in (("alpha", law.alpha, "N"), ("beta", law.beta, "D")):
        if not value > 0:
            notes.append(f"{name} = {value:.4g} is not positive: in this fit loss does not fall as {what} grows, "
                         f"so the law does not describe scaling in {what} here (check the runs)")
    N, D = np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)
    dc = isinstance(law, DataConstrainedLaw)
    with np.errstate(all="ignore"):
        Np, Dp = (law.effective_params(N, D, U), law.effective_data(D, U)) if dc else (N, D)
        loss = law.predict(N, D, U)
        terms = {"N": (law.alpha, law.A / Np**law.alpha, "A/N^alpha"), "D": (law.beta, law.B / Dp**law.beta,
                                                                          "B/D^beta")}
    for name, (exponent, term, label) in terms.items():
        if exponent > 0 and np.all(term < 1e-6 * loss):
            notes.append(f"the term {label} is below 1e-6 of the loss at every point (exponent {exponent:.4g}): "
                         f"these runs show no effect of {name}, and the fitted {label} means nothing")
    for name, x, constants in (("N", N, "A and alpha"), ("D", D, "B and beta")):
        distinct = len(np.unique(x))
        if distinct < 3:
            notes.append(f"only {distinct} distinct values of {name}: {constants} are not determined separately "
                         f"(vary {name} over at least 3 values)")
    if U is not None and isinstance(law, DataConstrainedLaw):
        if not np.any(~single_epoch(D, U)):
            notes.append("no run repeats its data (tokens <= unique tokens everywhere): R_D* and R_N* are not "
                         "determined by these runs")
    for stage, f in (("", fit), ("stage 1: ", fit.base)):
        if f is not None and f.screen_points is not None:
            notes.append(f"{stage}the {f.starts:,} starts were screened on a seeded sample of {f.screen_points:,} "
                         f"of the {f.points:,} points; the best minima were refined on all of them")
    return notes
