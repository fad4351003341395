"""Parametric loss laws: Chinchilla L = E + A/N^alpha + B/D^beta and its data-constrained extension."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

CHINCHILLA_KEYS = ("E", "A", "B", "alpha", "beta")
DATA_CONSTRAINED_KEYS = (*CHINCHILLA_KEYS, "R_D_star", "R_N_star")


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
    preds = np.stack([r.predict(N, D, U) for r in reps])
    q = (1.0 - level) / 2.0
    return np.nanquantile(preds, q, axis=0), np.nanquantile(preds, 1.0 - q, axis=0)
