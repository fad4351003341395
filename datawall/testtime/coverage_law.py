"""The coverage law of repeated sampling (Brown et al. 2024, "Large Language Monkeys", Sec. 3).

Coverage c(k) (pass@k averaged over problems) follows an exponentiated power law c(k) ~ exp(a k^b) with
a < 0 and b < 0, i.e. -log c(k) = -a k^b is a power law in k (Schaeffer et al. 2025 write it A k^-beta).
Taking logs twice makes it a line, log(-log c) = log(-a) + b log k, fitted by least squares in that space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datawall.errors import DatawallError


@dataclass(frozen=True)
class CoverageLaw:
    """c(k) = exp(a k^b); r2 and rmse_log are in the fitted log(-log c) space, rmse in coverage."""

    a: float
    b: float
    r2: float
    rmse_log: float
    rmse: float
    points: int

    def predict(self, k: float | np.ndarray) -> np.ndarray:
        """Coverage at k samples."""
        return np.exp(self.a * np.asarray(k, dtype=np.float64) ** self.b)

    def samples_for(self, coverage: float) -> float:
        """Samples k at which the law reaches `coverage` (inf when b >= 0 and it never does)."""
        if not 0 < coverage < 1:
            raise DatawallError(f"target coverage must be in (0, 1), got {coverage}")
        if self.b >= 0:
            return float("inf")
        return float((np.log(coverage) / self.a) ** (1.0 / self.b))

    def to_dict(self) -> dict:
        """JSON-ready parameters and fit quality."""
        return {"form": "coverage = exp(a * k**b)", "a": self.a, "b": self.b, "r2": self.r2,
                "rmse_log": self.rmse_log, "rmse": self.rmse, "points": self.points}


def fit_coverage_law(ks: Sequence[float], coverage: Sequence[float],
                     weights: Sequence[float] | None = None) -> CoverageLaw:
    """Fit c(k) = exp(a k^b) to coverage points by (weighted) least squares on log(-log c) vs log k.

    Points with coverage 0 or 1 carry no information in that space and are dropped.
    """
    k, c = np.asarray(ks, dtype=np.float64), np.asarray(coverage, dtype=np.float64)
    w = np.ones_like(k) if weights is None else np.asarray(weights, dtype=np.float64)
    if not k.shape == c.shape == w.shape or k.ndim != 1:
        raise DatawallError("ks, coverage (and weights) must be 1-D arrays of equal length")
    if (k <= 0).any():
        raise DatawallError("sample counts k must be positive")
    keep = (c > 0) & (c < 1) & np.isfinite(c)
    if keep.sum() < 2:
        raise DatawallError(f"the coverage law needs at least 2 points with 0 < coverage < 1, got {int(keep.sum())}")
    x, y, w = np.log(k[keep]), np.log(-np.log(c[keep])), w[keep]
    X = np.column_stack([np.ones_like(x), x])
    sw = np.sqrt(w)
    (log_neg_a, b), *_ = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)
    resid = y - X @ np.array([log_neg_a, b])
    total = np.sum(w * (y - np.average(y, weights=w)) ** 2)
    r2 = 1.0 - np.sum(w * resid**2) / total if total > 0 else 1.0
    law = CoverageLaw(a=-float(np.exp(log_neg_a)), b=float(b), r2=float(r2),
                      rmse_log=float(np.sqrt(np.average(resid**2, weights=w))), rmse=0.0, points=int(keep.sum()))
    rmse = float(np.sqrt(np.mean((law.predict(k) - c) ** 2)))
    return CoverageLaw(law.a, law.b, law.r2, law.rmse_log, rmse, law.points)
