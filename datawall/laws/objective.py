"""Huber objectives on log-loss with analytic gradients, vectorised over many parameter rows at once.

Rows are optimiser coordinates: theta = (a, b, e, alpha, beta) for the Chinchilla form, with
log L_hat = logsumexp(a - alpha log N, b - beta log D, e) (Hoffmann et al.; Besiroglu et al.);
phi = (log R_D*, log R_N*) for the repetition stage of the data-constrained form.
Objectives are divided by delta so that they are O(1) and relative stopping tolerances mean something;
`huber_sum` gives the unscaled value that papers report.
"""

from __future__ import annotations

import numpy as np

from datawall.laws.forms import ChinchillaLaw

HUBER_DELTA = 1e-3


def huber_sum(residuals: np.ndarray, delta: float = HUBER_DELTA, weights: np.ndarray | None = None) -> float:
    """Sum of Huber losses (quadratic below delta, linear above), as scipy.special.huber."""
    r = np.abs(np.asarray(residuals, dtype=np.float64))
    h = np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta))
    return float(h.sum() if weights is None else (weights * h).sum())


def _lse3(t0: np.ndarray, t1: np.ndarray, t2: np.ndarray):
    """log(exp t0 + exp t1 + exp t2), the unnormalised softmax terms and their sum."""
    m = np.maximum(np.maximum(t0, t1), t2)
    w0, w1, w2 = np.exp(t0 - m), np.exp(t1 - m), np.exp(t2 - m)
    s = w0 + w1 + w2
    return m + np.log(s), w0, w1, w2, s


def _huber_and_slope(r: np.ndarray, delta: float, weights):
    """Scaled Huber sum per row and d(sum)/d(r) per element (already weighted)."""
    c = np.clip(r, -delta, delta)
    h = c * (r - 0.5 * c)  # = r^2/2 inside [-delta, delta], delta (|r| - delta/2) outside
    if weights is not None:
        h, c = h * weights, c * weights
    return h.sum(1) / delta, c / delta


CHUNK_ROWS = 256  # rows per pass: keeps the (rows x points) temporaries in cache, ~3x faster than one pass
POINT_BLOCK = 16384  # points per pass when there are more: bounds memory (rows x block floats) at any size


def blocked(fg_block, n_points: int):
    """fg(X, idx) from fg_block(X, idx, points) over blocks of rows and (past POINT_BLOCK) of points.

    fg_block returns the objective and gradient summed over the points of one slice; blocks are added up,
    so memory stays at a few (rows x block) arrays however many points there are. Up to POINT_BLOCK points
    the sums are those of one pass over every point.
    """
    block = n_points if n_points <= POINT_BLOCK else POINT_BLOCK
    rows = CHUNK_ROWS if block * CHUNK_ROWS <= 1 << 16 else max(1, (1 << 16) // block)
    slices = [slice(lo, lo + block) for lo in range(0, max(n_points, 1), block)]

    def fg_rows(X: np.ndarray, idx: np.ndarray):
        f, G = fg_block(X, idx, slices[0])
        for sl in slices[1:]:
            fb, Gb = fg_block(X, idx, sl)
            f, G = f + fb, G + Gb
        return f, G

    def fg(X: np.ndarray, idx: np.ndarray):
        if len(X) <= rows:
            return fg_rows(X, idx)
        parts = [fg_rows(X[i : i + rows], idx[i : i + rows]) for i in range(0, len(X), rows)]
        return np.concatenate([p[0] for p in parts]), np.vstack([p[1] for p in parts])

    return fg


class RowWeights:
    """Per-row observation weights: none, or a (replicates, points) matrix with `starts` rows per replicate."""

    def __init__(self, W: np.ndarray | None = None, starts: int = 1):
        self.W, self.starts = W, starts

    def __call__(self, idx: np.ndarray, points: slice = slice(None)) -> np.ndarray | None:
        return None if self.W is None else self.W[idx // self.starts, points]


def chinchilla_objective(N, D, L, delta: float = HUBER_DELTA, weights: RowWeights | None = None):
    """fg(theta_rows, row_ids) -> (objective / delta, gradient) for the Chinchilla form."""
    lN, lD, lL = (np.log(np.asarray(x, dtype=np.float64)) for x in (N, D, L))
    weights = weights or RowWeights()

    def fg(X: np.ndarray, idx: np.ndarray, points: slice):
        ln, ld = lN[points], lD[points]
        a, b, e, al, be = (X[:, i, None] for i in range(5))
        pred, w0, w1, w2, tot = _lse3(a - al * ln, b - be * ld, np.broadcast_to(e, (len(X), len(ln))))
        f, s = _huber_and_slope(pred - lL[points], delta, weights(idx, points))
        s /= tot
        g0, g1 = s * w0, s * w1
        # einsum, not @: tiny BLAS calls go multi-threaded and stall when the cores are shared
        G = np.stack([g0.sum(1), g1.sum(1), np.einsum("sn,sn->s", s, w2), -np.einsum("sn,n->s", g0, ln),
                      -np.einsum("sn,n->s", g1, ld)], axis=1)
        return f, G

    return blocked(fg, len(lN))


def log_optimal_params(theta: np.ndarray, U: np.ndarray) -> np.ndarray:
    """log of the compute-optimal N for U tokens, G (U G)^(beta/alpha), per theta row (replicates, points)."""
    a, b, _, alpha, beta = (theta[:, i, None] for i in range(5))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_G = (np.log(alpha) + a - np.log(beta) - b) / (alpha + beta)
        return log_G + beta / alpha * (np.log(U) + log_G)


def law_theta(law: ChinchillaLaw) -> np.ndarray:
    """Optimiser coordinates (a, b, e, alpha, beta) of a Chinchilla law."""
    return np.array([np.log(law.A), np.log(law.B), np.log(law.E), law.alpha, law.beta])


def repetition_objective(base: ChinchillaLaw | np.ndarray, N, D, U, L, delta: float = HUBER_DELTA,
                         weights: RowWeights | None = None):
    """fg(phi_rows, row_ids) for phi = (log R_D*, log R_N*) with the base law's constants held fixed.

    `base` may be a (replicates, 5) array of base thetas, one per bootstrap replicate; row i then belongs
    to replicate i // weights.starts.
    """
    theta = np.atleast_2d(law_theta(base) if isinstance(base, ChinchillaLaw) else np.asarray(base, float))
    N, D, U, L = (np.asarray(x, dtype=np.float64) for x in (N, D, U, L))
    U_D = np.minimum(U, D)
    R_D = np.maximum(D / U_D - 1.0, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        U_N = np.minimum(N, np.exp(log_optimal_params(theta, U_D)))  # (replicates, points)
        R_N = np.maximum(N / U_N - 1.0, 0.0)
    lL = np.log(L)
    weights = weights or RowWeights()
    per_replicate = max(weights.starts, 1)

    def effective(U0, R, log_star):
        """U0 (1 + R* (1 - exp(-R/R*))) and its derivative in log R*."""
        star = np.exp(np.clip(log_star, -10.0, 30.0))[:, None]  # R* beyond e^30 is "no decay" already
        x = R / star
        gain = -np.expm1(-x)
        value = U0 * (1.0 + star * gain)
        d_value = U0 * star * (gain - x * np.exp(-x))
        return value, d_value

    def fg(X: np.ndarray, idx: np.ndarray, points: slice):
        rep = idx // per_replicate if len(theta) > 1 else np.zeros(len(idx), dtype=int)
        a, b, e, alpha, beta = (theta[rep, i, None] for i in range(5))
        Dp, dDp = effective(U_D[points], R_D[points], X[:, 0])
        Np, dNp = effective(U_N[rep, points], R_N[rep, points], X[:, 1])
        pred, w0, w1, _, tot = _lse3(a - alpha * np.log(Np), b - beta * np.log(Dp), np.broadcast_to(e, Dp.shape))
        f, s = _huber_and_slope(pred - lL[points], delta, weights(idx, points))
        s /= tot
        gD = -(s * w1 * beta * dDp / Dp).sum(1)
        gN = -(s * w0 * alpha * dNp / Np).sum(1)
        return f, np.stack([gD, gN], axis=1)

    return blocked(fg, len(L))
