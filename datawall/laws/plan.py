"""Compute-optimal allocation under a unique-data cap, marginal returns, and the inference-aware optimum.

Training costs 6 N D FLOPs and serving T tokens costs 2 N T (Kaplan et al.; Sardana et al. 2024).
A Chinchilla-form law says nothing about repeated tokens, so under a data cap it is extended with
Muennighoff et al.'s published decay constants R_D*, R_N* (and the plan says so).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from datawall.errors import DatawallError
from datawall.laws.forms import ChinchillaLaw, DataConstrainedLaw, Law, predict_interval
from datawall.laws.published import MUENNIGHOFF2023

SPAN = 12.0  # search ln N within +-SPAN of the uncapped optimum (a factor e^12 ~ 1.6e5 either way)


def with_repetition(law: Law) -> DataConstrainedLaw:
    """A data-constrained law: the law itself, or a Chinchilla law with Muennighoff et al.'s R_D*, R_N*."""
    if isinstance(law, DataConstrainedLaw):
        return law
    rd, rn = MUENNIGHOFF2023.R_D_star, MUENNIGHOFF2023.R_N_star
    samples = None
    if law.samples is not None:
        samples = np.column_stack([law.samples, np.full(len(law.samples), rd), np.full(len(law.samples), rn)])
    return DataConstrainedLaw.from_base(law, rd, rn, name=law.name, samples=samples)


def _base(law: Law) -> ChinchillaLaw:
    return law.base if isinstance(law, DataConstrainedLaw) else law


def chinchilla_optimal(law: Law, C: float) -> tuple[float, float]:
    """Closed-form compute-optimal (N, D) of the law's Chinchilla part for C = 6 N D (Hoffmann et al. eq. 4)."""
    b = _base(law)
    N = b.G * (C / 6.0) ** (b.beta / (b.alpha + b.beta))
    return float(N), float(C / (6.0 * N))


def _minimise_log(f, lo: float, hi: float, points: int = 2001) -> float:
    """Global minimiser of a 1-D function on [lo, hi]: dense vectorised scan, then bounded Brent refinement."""
    x = np.linspace(lo, hi, points)
    with np.errstate(all="ignore"):
        y = f(x)
    if not np.isfinite(y).any():
        raise DatawallError("no feasible allocation found (the target loss is out of reach of this law)")
    i = int(np.nanargmin(np.where(np.isfinite(y), y, np.nan)))
    a, b = x[max(i - 1, 0)], x[min(i + 1, points - 1)]
    res = minimize_scalar(lambda t: float(f(np.array([t]))[0]), bounds=(a, b), method="bounded",
                          options={"xatol": 1e-10})
    return float(res.x) if res.fun <= y[i] else float(x[i])


def compute_optimal(law: Law, C: float, U: float | None = None) -> dict:
    """Loss-minimising N, D = C / (6 N) for C FLOPs, with at most U unique tokens (repeated as needed)."""
    if not (np.isfinite(C) and C > 0):
        raise DatawallError(f"compute must be positive and finite, got {C!r}")
    N0, D0 = chinchilla_optimal(law, C)
    if U is None:
        N, D = N0, D0
        loss = float(law.predict(N, D))
    else:
        dc = with_repetition(law)

        def loss_at(logN):
            N = np.exp(logN)
            return dc.predict(N, C / (6.0 * N), U)

        N = float(np.exp(_minimise_log(loss_at, np.log(N0) - SPAN, np.log(N0) + SPAN)))
        D = C / (6.0 * N)
        loss = float(dc.predict(N, D, U))
    return {"compute": float(C), "params": N, "tokens": D, "tokens_per_param": D / N,
            "epochs": None if U is None else D / U, "loss": loss}


def marginal_return(law: Law, N: float, D: float, U: float | None = None, h: float = 1e-4) -> float:
    """dL*/dln C at a compute-optimal (N, D): by the envelope theorem, dL/dln D at fixed N."""
    target = law if U is None else with_repetition(law)
    up, down = target.predict(N, D * np.exp(h), U), target.predict(N, D * np.exp(-h), U)
    return float((up - down) / (2.0 * h))


def tokens_for_loss(law: Law, N, target: float, U: float | None = None, iters: int = 90) -> np.ndarray:
    """Fewest training tokens that bring N parameters down to the target loss (inf where out of reach)."""
    dc = law if U is None else with_repetition(law)
    N = np.asarray(N, dtype=np.float64)
    lo, hi = np.zeros_like(N), np.full_like(N, 120.0)  # ln D in [0, 120]; loss is non-increasing in D
    with np.errstate(all="ignore"):
        reachable = dc.predict(N, np.exp(hi), U) <= target
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            ok = dc.predict(N, np.exp(mid), U) <= target
            hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
    return np.where(reachable, np.exp(hi), np.inf)


def inference_optimal(law: Law, loss: float, T: float, U: float | None = None, around: float | None = None) -> dict:
    """Sardana et al. 2024: the (N, D) reaching `loss` at least total cost 6 N D + 2 N T.

    `around` (e.g. the compute-optimal N) centres the search; without it N spans 1e3 to 1e16.
    """
    lo, hi = (np.log(around) - SPAN, np.log(around) + SPAN) if around else (np.log(1e3), np.log(1e16))

    def cost(logN):
        N = np.exp(logN)
        return 6.0 * N * tokens_for_loss(law, N, loss, U) + 2.0 * N * T

    N = float(np.exp(_minimise_log(cost, lo, hi)))
    D = float(tokens_for_loss(law, np.array([N]), loss, U)[0])
    return {"params": N, "tokens": D, "tokens_per_param": D / N, "epochs": None if U is None else D / U,
            "loss": loss, "train_flops": 6.0 * N * D, "inference_flops": 2.0 * N * T,
            "total_flops": 6.0 * N * D + 2.0 * N * T}


def plan(law: Law, C: float, U: float | None, T: float = 0.0, level: float = 0.95) -> dict:
    """Everything `laws plan` reports: capped and uncapped optima, marginal returns, inference-aware optimum."""
    if T < 0 or not np.isfinite(T):
        raise DatawallError(f"inference tokens must be a non-negative finite number, got {T!r}")
    capped = compute_optimal(law, C, U)
    free = compute_optimal(law, C, None)
    target = law if U is None else with_repetition(law)
    interval = predict_interval(target, capped["params"], capped["tokens"], U, level)
    capped["loss_interval"] = None if interval is None else [float(interval[0]), float(interval[1])]
    inf = inference_optimal(law, capped["loss"], T, U, around=capped["params"])
    co_total = C + 2.0 * capped["params"] * T
    inf["compute_optimal_total_flops"] = co_total
    inf["savings"] = 1.0 - inf["total_flops"] / co_total
    repetition = "none (no cap)"
    if U is not None:
        repetition = "law" if isinstance(law, DataConstrainedLaw) else "muennighoff2023 R_D*, R_N* (law has none)"
    return {
        "law": law.name,
        "form": law.form,
        "compute": float(C),
        "unique_tokens": None if U is None else float(U),
        "inference_tokens": float(T),
        "repetition": repetition,
        "optimal": capped,
        "unconstrained": free,
        "marginal": {
            "dloss_dlnC": marginal_return(law, capped["params"], capped["tokens"], U),
            "dloss_dlnC_no_cap": marginal_return(law, free["params"], free["tokens"], None),
        },
        "inference_aware": inf,
    }
