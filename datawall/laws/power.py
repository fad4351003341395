"""One-variable power law with a floor, L(C) = E + A (C / C0)^-alpha, and its robust fit.

The fit is the Chinchilla fit in one variable (Hoffmann et al. 2022; Besiroglu et al. 2024): Huber loss on
log L with log L_hat = logsumexp(e, a - alpha log(C / C0)), E = exp(e), A = exp(a), minimised by the batched
L-BFGS from a grid of starts, best end point polished to full precision. C0 (the geometric mean of C by
default) keeps A in the units of the loss.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from datawall.errors import DatawallError
from datawall.laws.lbfgs import minimize_batch
from datawall.laws.objective import HUBER_DELTA, blocked, huber_sum

POWER_KEYS = ("E", "A", "alpha", "C0")


@dataclass(frozen=True)
class PowerLaw:
    """L(C) = E + A (C / C0)^-alpha: a floor E and a power-law excess that shrinks with C."""

    E: float
    A: float
    alpha: float
    C0: float = 1.0
    name: str = "fit"

    form = "power"
    keys = POWER_KEYS

    def predict(self, C) -> np.ndarray:
        """L at C (vectorised)."""
        return self.E + self.A * (np.asarray(C, dtype=np.float64) / self.C0) ** (-self.alpha)

    def params(self) -> dict[str, float]:
        """The constants as a dict keyed by POWER_KEYS."""
        return {k: float(getattr(self, k)) for k in self.keys}


@dataclass
class PowerFit:
    """A fitted power law, its Huber objective (unscaled) and how many starts reached the best fit."""

    law: PowerLaw
    objective: float
    points: int
    starts: int
    starts_at_best: int
    delta: float = HUBER_DELTA

    def rmse(self, C, L) -> float:
        """Root mean squared error of the law on (C, L), in the units of L."""
        resid = np.asarray(L, dtype=np.float64) - self.law.predict(C)
        return float(np.sqrt(np.mean(resid ** 2)))


def power_grid(L: np.ndarray) -> np.ndarray:
    """Starts (e, a, alpha) spread around the data: floors below the lowest L, excesses of its scale."""
    low, scale = float(L.min()), float(L.mean())
    floors = np.log(low * np.array([0.02, 0.25, 0.5, 0.75, 0.95]))
    excesses = np.log(scale * np.array([0.01, 0.1, 0.5, 1.0, 2.0]))
    alphas = np.array([0.05, 0.1, 0.25, 0.5, 1.0, 2.0])
    return np.array(list(itertools.product(floors, excesses, alphas)), dtype=np.float64)


def power_objective(C, L, C0: float, delta: float = HUBER_DELTA):
    """fg(theta_rows, row_ids) -> (Huber objective / delta, gradient) for theta = (e, a, alpha)."""
    x = np.log(np.asarray(C, dtype=np.float64) / C0)
    lL = np.log(np.asarray(L, dtype=np.float64))

    def fg(X: np.ndarray, idx: np.ndarray, sl: slice):
        xs, ls = x[sl], lL[sl]
        e, a, alpha = (X[:, i, None] for i in range(3))
        t0, t1 = np.broadcast_to(e, (len(X), len(xs))), a - alpha * xs
        m = np.maximum(t0, t1)
        w0, w1 = np.exp(t0 - m), np.exp(t1 - m)
        tot = w0 + w1
        r = m + np.log(tot) - ls
        c = np.clip(r, -delta, delta)
        f = (c * (r - 0.5 * c)).sum(1) / delta  # r^2/2 inside [-delta, delta], delta (|r| - delta/2) outside
        s = c / delta / tot
        # einsum, not @: tiny BLAS calls go multi-threaded and stall when the cores are shared
        G = np.stack([(s * w0).sum(1), (s * w1).sum(1), -np.einsum("sn,n->s", s * w1, xs)], axis=1)
        return f, G

    return blocked(fg, len(x))


def fit_power_law(C, L, C0: float | None = None, grid: np.ndarray | None = None, delta: float = HUBER_DELTA,
                  name: str = "fit") -> PowerFit:
    """Fit L = E + A (C / C0)^-alpha by Huber on log L from a grid of starts; C0 defaults to C's geometric mean."""
    C, L = np.asarray(C, dtype=np.float64), np.asarray(L, dtype=np.float64)
    if C.ndim != 1 or C.shape != L.shape:
        raise DatawallError(f"power-law fit: C and L must be 1-D and of one length, got {C.shape} and {L.shape}")
    bad = ~(np.isfinite(C) & (C > 0) & np.isfinite(L) & (L > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DatawallError(f"power-law fit: point {i} (C = {C[i]}, L = {L[i]}): values must be positive and finite")
    if len(np.unique(C)) < 3:
        raise DatawallError(f"power-law fit: {len(np.unique(C))} distinct C cannot determine 3 free parameters")
    C0 = float(np.exp(np.log(C).mean())) if C0 is None else float(C0)
    starts = power_grid(L) if grid is None else np.asarray(grid, dtype=np.float64)
    fg = power_objective(C, L, C0, delta)
    first = minimize_batch(fg, starts, ftol=1e-6)
    f = np.where(first.converged & np.isfinite(first.f), first.f, np.inf)
    if not np.isfinite(f).any():
        raise DatawallError(f"power-law fit: did not converge from any of {len(starts)} starts")
    order = np.argsort(f, kind="stable")
    best = order[np.isfinite(f[order])][:8]  # polish the best few end points to full precision
    fine = minimize_batch(fg, first.x[best], ftol=1e-14, max_iter=5000)
    ok = np.isfinite(fine.f) & np.isfinite(fine.x).all(1)
    if not ok.any():
        raise DatawallError("power-law fit: did not converge (refinement of the best starts failed)")
    e, a, alpha = fine.x[int(np.argmin(np.where(ok, fine.f, np.inf)))]
    law = PowerLaw(E=float(np.exp(e)), A=float(np.exp(a)), alpha=float(alpha), C0=C0, name=name)
    resid = np.log(law.predict(C)) - np.log(L)
    fbest = float(np.min(np.where(ok, fine.f, np.inf)))
    return PowerFit(law=law, objective=huber_sum(resid, delta), points=len(C), starts=len(starts),
                    starts_at_best=int(np.sum(f <= fbest * (1 + 1e-6) + 1e-12)), delta=delta)
