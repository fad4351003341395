"""Log-linear law y = a + b log10(C): how much a metric (held-out accuracy) moves per decade of compute."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datawall.errors import DatawallError


@dataclass(frozen=True)
class LogLinearLaw:
    """y(C) = a + b log10(C); b is the change of y per 10x C."""

    a: float
    b: float
    name: str = "fit"

    form = "log-linear"
    keys = ("a", "b")

    def predict(self, C) -> np.ndarray:
        """y at C (vectorised)."""
        return self.a + self.b * np.log10(np.asarray(C, dtype=np.float64))

    def params(self) -> dict[str, float]:
        """The constants as a dict keyed by `keys`."""
        return {k: float(getattr(self, k)) for k in self.keys}


@dataclass
class LogLinearFit:
    """A least-squares log-linear fit and its coefficient of determination."""

    law: LogLinearLaw
    r2: float  # 1 when y is constant (nothing left to explain)
    points: int


def fit_log_linear(C, y, name: str = "fit") -> LogLinearFit:
    """Least-squares y = a + b log10(C); needs two or more distinct positive C."""
    C, y = np.asarray(C, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if C.ndim != 1 or C.shape != y.shape:
        raise DatawallError(f"log-linear fit: C and y must be 1-D and of one length, got {C.shape} and {y.shape}")
    if not (np.all(np.isfinite(C) & (C > 0)) and np.all(np.isfinite(y))):
        raise DatawallError("log-linear fit: C must be positive and finite, y finite")
    xs = np.log10(C)
    if len(np.unique(xs)) < 2:
        raise DatawallError("log-linear fit: needs two or more distinct C")
    b, a = np.polyfit(xs, y, 1)
    pred = a + b * xs
    ss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1 - float(np.sum((y - pred) ** 2)) / ss if ss > 0 else 1.0
    return LogLinearFit(LogLinearLaw(float(a), float(b), name=name), r2, len(C))
