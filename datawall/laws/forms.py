"""Parametric loss laws: Chinchilla L = E + A/N^alpha + B/D^beta and its data-constrained extension."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from datawall.errors import DatawallError

CHINCHILLA_KEYS = ("E", "A", "B", "alpha", "beta")
DATA_CONSTRAINED_KEYS = (*CHINCHILLA_KEYS, "R_D_star", "R_N_star")
# Counts a law is evaluated at: at least one parameter or token, and far beyond any model or corpus (1e30)
# while far short of where N^alpha or (D G)^(beta/alpha) overflow a float.
MIN_COUNT, MAX_COUNT = 1.0, 1e30
MAX_COMPUTE = 6.0 * MAX_COUNT**2  # C = 6 N D at the largest N and D


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


@dataclass(frozen=True)
class ChinchillaLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022); unique tokens U are ignored."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    name: str = "fit"
    # bootstrap replicates, one row per replicate, columns in CHINCHILLA_KEYS order
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)

    form = "chinchilla"
    keys = CHINCHILLA_KEYS

    def predict(self, N, D, U=None) -> np.ndarray:
        """Loss at N parameters and D training tokens (vectorised; U has no effect on this form)."""
        N, D = _arr(N), _arr(D)
        with np.errstate(over="ignore"):  # N^alpha overflowing to inf: the term is 0, its limit
            return self.E + self.A / N**self.alpha + self.B / D**self.beta

    def params(self) -> dict[str, float]:
        """The constants as a dict keyed by CHINCHILLA_KEYS."""
        return {k: float(getattr(self, k)) for k in self.keys}

    @property
    def G(self) -> float:
        """Compute-optimal scale: N* = G (C/6)^(beta/(alpha+beta)) (Hoffmann et al. eq. 4)."""
        a, b = self.alpha, self.beta
        return (a * self.A / (b * self.B)) ** (1.0 / (a + b))

    def optimal_params_for_tokens(self, D) -> np.ndarray:
        """The N that is compute-optimal when D tokens are trained on: N = G (D G)^(beta/alpha)."""
        return (_arr(D) * self.G) ** (self.beta / self.alpha) * self.G

    def replicates(self) -> list[ChinchillaLaw]:
        """One law per bootstrap replicate (empty without samples)."""
        if self.samples is None:
            return []
        return [replace(self, **dict(zip(self.keys, row, strict=True)), samples=None) for row in self.samples]

    def with_samples(self, samples: np.ndarray | None) -> ChinchillaLaw:
        """The same law carrying bootstrap replicates."""
        return replace(self, samples=None if samples is None else _arr(samples))

    @classmethod
    def from_log(cls, a: float, b: float, e: float, alpha: float, beta: float, **kw) -> ChinchillaLaw:
        """Build from the log-sum-exp parameterisation A = exp(a), B = exp(b), E = exp(e)."""
        return cls(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha, beta=beta, **kw)


@dataclass(frozen=True)
class DataConstrainedLaw:
    """Muennighoff et al. 2023: Chinchilla form in effective parameters N' and effective data D'.

    D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*)) with U_D = min(U, D) and R_D = max(D / U_D - 1, 0);
    N' likewise with U_N = min(N, (U_D G)^(beta/alpha) G), the compute-optimal size for U_D tokens.
    Without U every token is unique (U_D = D).
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    R_D_star: float
    R_N_star: float
    name: str = "fit"
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)

    form = "data-constrained"
    keys = DATA_CONSTRAINED_KEYS

    @property
    def base(self) -> ChinchillaLaw:
        """The single-epoch Chinchilla law underneath."""
        return ChinchillaLaw(self.E, self.A, self.B, self.alpha, self.beta, name=self.name)

    @property
    def G(self) -> float:
        """Compute-optimal scale of the base law."""
        return self.base.G

    def unique_data(self, D, U=None) -> np.ndarray:
        """U_D = min(U, D): the unique tokens actually seen."""
        D = _arr(D)
        return D if U is None else np.minimum(_arr(U), D)

    def effective_data(self, D, U=None) -> np.ndarray:
        """D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*))."""
        D = _arr(D)
        U_D = self.unique_data(D, U)
        R_D = np.maximum(D / U_D - 1.0, 0.0)
        return U_D + U_D * self.R_D_star * (1.0 - np.exp(-R_D / self.R_D_star))

    def effective_params(self, N, D, U=None) -> np.ndarray:
        """N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)) with U_N the compute-optimal size for U_D."""
        N = _arr(N)
        U_N = np.minimum(N, self.base.optimal_params_for_tokens(self.unique_data(D, U)))
        R_N = np.maximum(N / U_N - 1.0, 0.0)
        return U_N + U_N * self.R_N_star * (1.0 - np.exp(-R_N / self.R_N_star))

    def predict(self, N, D, U=None) -> np.ndarray:
        """Loss at N parameters trained on D tokens drawn (with repetition) from U unique tokens."""
        Np, Dp = self.effective_params(N, D, U), self.effective_data(D, U)
        with np.errstate(over="ignore"):
            return self.E + self.A / Np**self.alpha + self.B / Dp**self.beta

    def params(self) -> dict[str, float]:
        """The constants as a dict keyed by DATA_CONSTRAINED_KEYS."""
        return {k: float(getattr(self, k)) for k in self.keys}

    def optimal_params_for_tokens(self, D) -> np.ndarray:
        """Compute-optimal N for D unique tokens (base law)."""
        return self.base.optimal_params_for_tokens(D)

    def replicates(self) -> list[DataConstrainedLaw]:
        """One law per bootstrap replicate (empty without samples)."""
        if self.samples is None:
            return []
        return [replace(self, **dict(zip(self.keys, row, strict=True)), samples=None) for row in self.samples]

    def with_samples(self, samples: np.ndarray | None) -> DataConstrainedLaw:
        """The same law carrying bootstrap replicates."""
        return replace(self, samples=None if samples is None else _arr(samples))

    @classmethod
    def from_base(cls, base: ChinchillaLaw, R_D_star: float, R_N_star: float, **kw) -> DataConstrainedLaw:
        """Extend a Chinchilla law with repetition decay constants."""
        kw.setdefault("name", base.name)
        return cls(base.E, base.A, base.B, base.alpha, base.beta, R_D_star, R_N_star, **kw)


Law = ChinchillaLaw | DataConstrainedLaw


def predict_interval(law: Law, N, D, U=None, level: float = 0.95) -> tuple[np.ndarray, np.ndarray] | None:
    """Percentile interval of the prediction over the law's bootstrap replicates (None without samples)."""
    reps = law.replicates()
    if not reps:
        return None
    with np.errstate(all="ignore"):
        preds = np.stack([r.predict(N, D, U) for r in reps])
    preds = np.where(np.isfinite(preds), preds, np.nan)  # a failed or runaway replicate says nothing here
    if np.isnan(preds).all(axis=0).any():
        return None
    q = (1.0 - level) / 2.0
    return np.nanquantile(preds, q, axis=0), np.nanquantile(preds, 1.0 - q, axis=0)


def check_count(value: float, what: str, high: float = MAX_COUNT) -> float:
    """`value` if it is a finite count in [MIN_COUNT, high], else a DatawallError naming `what`."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) \
            or not MIN_COUNT <= value <= high:
        raise DatawallError(f"{what}: must be a finite number from {MIN_COUNT:g} to {high:g}, got {value:g}")
    return float(value)


def predict_point(law: Law, N: float, D: float, U: float | None = None,
                  names: tuple[str, str, str] = ("N", "D", "U")) -> float:
    """The law's loss at one point, checked: counts in range (named by `names`), and a finite loss."""
    N, D = check_count(N, names[0]), check_count(D, names[1])
    U = None if U is None else check_count(U, names[2])
    with np.errstate(all="ignore"):
        loss = float(law.predict(N, D, U))
    if not math.isfinite(loss):
        raise DatawallError(f"{law.name}: the law gives no finite loss at N={N:g}, D={D:g}"
                            f"{'' if U is None else f', U={U:g}'} (its constants: {law.params()})")
    return loss
