"""Batched L-BFGS in numpy: many independent small problems (one per row) minimised in lock-step.

scipy's L-BFGS-B handles one start per call, and at ~240 points the Python overhead per iteration
dominates; evaluating thousands of starts as one (starts x points) array is ~10-50x faster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# fg(X, idx) -> (f, G): objective (S,) and gradient (S, P) for parameter rows X (S, P), which are rows idx
# of the batch (so an objective can give each row its own data weights)
BatchObjective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class BatchResult:
    """Final parameters, objectives, iteration counts and convergence flags, one per row."""

    x: np.ndarray
    f: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray


def _direction(G, Sh, Yh, rho, k: int, m: int) -> np.ndarray:
    """L-BFGS two-loop recursion for every row at once."""
    q = G.copy()
    n = min(k, m)
    alphas = np.zeros((G.shape[0], m))
    for j in range(n):
        i = (k - 1 - j) % m
        alphas[:, i] = rho[:, i] * np.einsum("sp,sp->s", Sh[:, i], q)
        q -= alphas[:, i, None] * Yh[:, i]
    if n:
        i = (k - 1) % m
        yy = np.einsum("sp,sp->s", Yh[:, i], Yh[:, i])
        gamma = np.where((rho[:, i] > 0) & (yy > 0), 1.0 / np.maximum(rho[:, i] * yy, 1e-300), 0.0)
        fresh = gamma == 0.0  # no usable curvature pair yet: fall back to a unit-length gradient step
        gamma[fresh] = 1.0 / np.maximum(np.linalg.norm(G[fresh], axis=1), 1e-12)
        q *= gamma[:, None]
    else:
        q /= np.maximum(np.linalg.norm(G, axis=1), 1e-12)[:, None]
    for j in range(n):
        i = (k - n + j) % m
        b = rho[:, i] * np.einsum("sp,sp->s", Yh[:, i], q)
        q += Sh[:, i] * (alphas[:, i] - b)[:, None]
    return -q


def minimize_batch(
    fg: BatchObjective,
    x0: np.ndarray,
    max_iter: int = 1000,
    memory: int = 10,
    ftol: float = 1e-12,
    gtol: float = 1e-9,
    max_backtracks: int = 30,
    on_iteration: Callable[[int, np.ndarray], None] | None = None,
    first_step: float = 1.0,
) -> BatchResult:
    """Minimise every row of x0 independently with L-BFGS and an Armijo backtracking line search.

    A row stops when its relative decrease falls below ftol (as scipy's L-BFGS-B) twice in a row, its
    largest gradient component below gtol, or no step along its search direction decreases it.
    `on_iteration(k, f)` is called after iteration k with every row's current objective (for progress).
    `first_step` is the length of the first (steepest-descent) step: small when x0 is near a minimum already,
    so that the line search does not spend evaluations shrinking a unit step.
    """
    X = np.array(x0, dtype=np.float64)
    S, P = X.shape
    f, G = fg(X, np.arange(S))
    iters = np.zeros(S, dtype=int)
    converged = np.zeros(S, dtype=bool)
    rows = np.flatnonzero(np.isfinite(f) & np.isfinite(G).all(1))
    Sh, Yh = np.zeros((len(rows), memory, P)), np.zeros((len(rows), memory, P))
    rho = np.zeros((len(rows), memory))
    small = np.zeros(len(rows), dtype=int)
    for k in range(max_iter):
        if len(rows) == 0:
            break
        x, fx, gx = X[rows], f[rows], G[rows]
        d = _direction(gx, Sh, Yh, rho, k, memory)
        slope = np.einsum("sp,sp->s", gx, d)
        uphill = ~(slope < 0)  # lost curvature: restart from steepest descent
        d[uphill] = -gx[uphill] / np.maximum(np.linalg.norm(gx[uphill], axis=1), 1e-12)[:, None]
        slope[uphill] = np.einsum("sp,sp->s", gx[uphill], d[uphill])
        step = np.full(len(rows), first_step if k == 0 else 1.0)
        xn, fn, gn = x.copy(), fx.copy(), gx.copy()
        todo = np.arange(len(rows))
        for _ in range(max_backtracks):
            t, f0, sl = step[todo], fx[todo], slope[todo]
            xt = x[todo] + t[:, None] * d[todo]
            ft, gt = fg(xt, rows[todo])
            finite = np.isfinite(ft) & np.isfinite(gt).all(1)
            ok = finite & (ft <= f0 + 1e-4 * t * sl)
            xn[todo[ok]], fn[todo[ok]], gn[todo[ok]] = xt[ok], ft[ok], gt[ok]
            # shrink to the minimum of the quadratic through f0, slope and ft, within [0.1 t, 0.5 t]
            with np.errstate(all="ignore"):
                curv = 2.0 * (ft - f0 - sl * t)
                tq = np.where(finite & (curv > 0), -sl * t * t / curv, 0.1 * t)
            step[todo] = np.clip(tq, 0.1 * t, 0.5 * t)
            todo = todo[~ok]
            if len(todo) == 0:
                break
        stuck = np.zeros(len(rows), dtype=bool)
        stuck[todo] = True  # no decrease along a descent direction: numerically stationary
        s, y = xn - x, gn - gx
        sy = np.einsum("sp,sp->s", s, y)
        i = k % memory
        Sh[:, i], Yh[:, i] = s, y
        rho[:, i] = np.where(sy > 1e-16, 1.0 / np.where(sy > 1e-16, sy, 1.0), 0.0)
        X[rows], f[rows], G[rows] = xn, fn, gn
        iters[rows] += 1
        rel = (fx - fn) / np.maximum(np.maximum(np.abs(fx), np.abs(fn)), 1.0)
        small = np.where(rel <= ftol, small + 1, 0)
        # two small decreases in a row: one can come from a line search that had to shorten the step
        done = stuck | (small >= 2) | (np.abs(gn).max(1) <= gtol)
        converged[rows[done]] = True
        keep = ~done
        rows, Sh, Yh, rho, small = rows[keep], Sh[keep], Yh[keep], rho[keep], small[keep]
        if on_iteration is not None:
            on_iteration(k + 1, f)
    return BatchResult(X, f, iters, converged)
