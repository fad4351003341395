"""Bootstrap confidence intervals: refit on points resampled with replacement (seeded).

A replicate is a small perturbation of the data, so its optimum sits next to the full-data fit: every
refit starts from the full-data fit (a warm start) plus a coarse 2^5 corner grid of Hoffmann's start
grid, which would catch a replicate whose best fit jumped to another basin (on the Chinchilla points it
never does: benchmarks/fit_speed.py counts it). Replicates and starts run as one batched L-BFGS to a
relative decrease of 1e-6; each replicate's best end point is then refined to 1e-14.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from datawall.laws.fit import Fit, fit_weighted_chinchilla, fit_weighted_repetition, single_epoch
from datawall.laws.forms import DataConstrainedLaw
from datawall.laws.objective import HUBER_DELTA, law_theta

# a, b in {5, 20}, e in {0, 1}, alpha, beta in {0.5, 1.5}: the corners of Hoffmann's grid, pulled inward
CORNER_GRID = np.array(list(itertools.product([5.0, 20.0], [5.0, 20.0], [0.0, 1.0], [0.5, 1.5], [0.5, 1.5])))
# R_D*, R_N* in {0.5, 256}: the corners of the repetition start grid (log scale)
REPETITION_CORNERS = np.log(np.array(list(itertools.product([0.5, 256.0], repeat=2))))
CHUNK = 100  # replicates per batch: bounds memory (~rows x points floats) and paces the progress bar
CHUNK_CELLS = 1 << 24  # at most this many replicate x point weights at once (128 MB): fewer replicates per
# batch when there are many points

Progress = Callable[[int], None]


def resample_counts(n: int, K: int, seed: int) -> np.ndarray:
    """K bootstrap resamples of n points as multiplicity counts (K x n), reproducible from seed."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=K).astype(np.float64)


def resample_chunks(n: int, K: int, seed: int):
    """resample_counts(n, K, seed) in row blocks of at most CHUNK replicates and CHUNK_CELLS counts.

    The rows are the same as resample_counts' (one generator draws them in order), only never all at once.
    """
    rng, p = np.random.default_rng(seed), np.full(n, 1.0 / n)
    step = max(1, min(CHUNK, CHUNK_CELLS // max(n, 1)))
    for lo in range(0, K, step):
        yield rng.multinomial(n, p, size=min(step, K - lo)).astype(np.float64)


def bootstrap_chinchilla(N, D, L, fit: Fit, K: int, seed: int = 0, starts: np.ndarray | None = None,
                         delta: float = HUBER_DELTA, progress: Progress | None = None) -> np.ndarray:
    """K refits of the Chinchilla form on resampled points: rows (E, A, B, alpha, beta)."""
    starts = np.vstack([fit.theta, CORNER_GRID if starts is None else starts])
    thetas = []
    for W in resample_chunks(len(np.asarray(L)), K, seed):
        theta, _ = fit_weighted_chinchilla(N, D, L, W, starts, delta)
        thetas.append(theta)
        if progress:
            progress(len(theta))
    theta = np.vstack(thetas)
    a, b, e, alpha, beta = theta.T
    return np.column_stack([np.exp(e), np.exp(a), np.exp(b), alpha, beta])


def bootstrap_data_constrained(N, D, U, L, fit: Fit, K: int, seed: int = 0, delta: float = HUBER_DELTA,
                               progress: Progress | None = None) -> np.ndarray:
    """K refits of both stages on resampled runs: rows (E, A, B, alpha, beta, R_D*, R_N*).

    A stage-1 base fitted from the single-epoch rows is refitted on each replicate's single-epoch rows;
    a base that was given is held fixed.
    """
    N, D, U, L = (np.asarray(x, dtype=np.float64) for x in (N, D, U, L))
    law: DataConstrainedLaw = fit.law  # type: ignore[assignment]
    single = single_epoch(D, U)
    rep_starts = np.vstack([fit.theta, REPETITION_CORNERS])
    rows = []
    for Wc in resample_chunks(len(L), K, seed):
        if fit.base is not None:
            b_starts = np.vstack([fit.base.theta, CORNER_GRID])
            theta, _ = fit_weighted_chinchilla(N[single], D[single], L[single], Wc[:, single], b_starts, delta)
        else:
            theta = np.tile(law_theta(law.base), (len(Wc), 1))
        phi, _ = fit_weighted_repetition(theta, N, D, U, L, Wc, rep_starts, delta)
        a, b, e, alpha, beta = theta.T
        rows.append(np.column_stack([np.exp(e), np.exp(a), np.exp(b), alpha, beta, np.exp(phi)]))
        if progress:
            progress(len(Wc))
    return np.vstack(rows)


def intervals(samples: np.ndarray, keys: tuple[str, ...], level: float = 0.95) -> dict[str, list[float]]:
    """Percentile intervals [low, high] per constant."""
    q = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(samples, q, axis=0), np.nanquantile(samples, 1.0 - q, axis=0)
    return {k: [float(a), float(b)] for k, a, b in zip(keys, lo, hi, strict=True)}


def standard_errors(samples: np.ndarray, keys: tuple[str, ...]) -> dict[str, float]:
    """Bootstrap standard deviation per constant."""
    return {k: float(s) for k, s in zip(keys, np.nanstd(samples, axis=0, ddof=1), strict=True)}
