"""Both law forms fitted to a ladder's runs, with what had to be held fixed (and why) written as notes.

A ladder is small: a few budgets, one repetition series at one model size. The Chinchilla form is fitted on
the runs that see each token at most once. The data-constrained form (Muennighoff et al. 2023) needs repeated
runs; its R_N* (how fast excess parameters lose value) is only identified when repeated runs come in at least
two sizes, one of them larger than the compute-optimal size for its unique tokens. Otherwise R_N* is held at
1e9 -- excess parameters keep their value, N' = N -- and only R_D* is fitted, in the fit and in every bootstrap
replicate. (Holding Muennighoff et al.'s 5.31 instead charges a single-size series a constant parameter
penalty that the base law, fitted on other sizes, cannot check; on the quick ladder R_D* then runs off to
infinity, while with N' = N it lands at ~22, near their 15.4.)
"""

from __future__ import annotations

import numpy as np

from datawall.errors import DatawallError
from datawall.laws.bootstrap import (
    CORNER_GRID,
    bootstrap_chinchilla,
    bootstrap_data_constrained,
    resample_counts,
)
from datawall.laws.fit import (
    REPETITION_GRID,
    Fit,
    _best_per_replicate,
    _minimise,
    fit_chinchilla,
    fit_data_constrained,
    fit_weighted_chinchilla,
    single_epoch,
)
from datawall.laws.forms import ChinchillaLaw, DataConstrainedLaw
from datawall.laws.objective import HUBER_DELTA, RowWeights, huber_sum, repetition_objective

R_N_HELD = 1e9  # no decay: N' = N (see the module docstring)
RUNAWAY = 1e6  # a fitted R* beyond this means "no decay seen": the runs do not determine it


def _hold_r_n(fg):
    """The repetition objective with log R_N* frozen: its gradient component is zeroed, so L-BFGS never moves it."""

    def held(X: np.ndarray, idx: np.ndarray):
        f, G = fg(X, idx)
        G = np.array(G, copy=True)
        G[:, 1] = 0.0
        return f, G

    return held


def _held_starts(log_rd: np.ndarray) -> np.ndarray:
    return np.column_stack([log_rd, np.full(len(log_rd), np.log(R_N_HELD))])


def fit_r_d_only(base: ChinchillaLaw, N, D, U, L, stage1: Fit | None, name: str = "ladder") -> Fit:
    """Stage 2 of the data-constrained fit with R_N* held at Muennighoff et al.'s value: R_D* alone."""
    starts = _held_starts(np.unique(REPETITION_GRID[:, 0]))
    fg = _hold_r_n(repetition_objective(base, N, D, U, L))
    phi, fbest, f = _minimise(fg, starts, "data-constrained fit (R_N* held)")
    law = DataConstrainedLaw.from_base(base, float(np.exp(phi[0])), R_N_HELD, name=name)
    resid = np.log(law.predict(N, D, U)) - np.log(L)
    return Fit(law=law, objective=huber_sum(resid), points=len(L), theta=phi, starts=len(starts),
               starts_at_best=int(np.sum(f <= fbest * (1 + 1e-6) + 1e-12)), base=stage1)


def bootstrap_r_d_only(N, D, U, L, fit: Fit, K: int, seed: int = 0) -> np.ndarray:
    """K replicates refitting stage 1 and R_D* (R_N* held): rows (E, A, B, alpha, beta, R_D*, R_N*)."""
    W = resample_counts(len(L), K, seed)
    single = single_epoch(D, U)
    theta, _ = fit_weighted_chinchilla(N[single], D[single], L[single], W[:, single],
                                       np.vstack([fit.base.theta, CORNER_GRID]))
    starts = _held_starts(np.array([fit.theta[0], np.log(0.5), np.log(256.0)]))
    fg = _hold_r_n(repetition_objective(theta, N, D, U, L, HUBER_DELTA, RowWeights(W, len(starts))))
    phi, _ = _best_per_replicate(fg, starts, K)
    a, b, e, alpha, beta = theta.T
    return np.column_stack([np.exp(e), np.exp(a), np.exp(b), alpha, beta, np.exp(phi[:, 0]),
                            np.full(K, R_N_HELD)])


def fit_ladder(rows: list[dict], notes: list[str], bootstrap: int = 200) -> dict[str, Fit | None]:
    """Both forms where the runs allow them, with bootstrap replicates; what cannot be fitted becomes a note."""
    N, D, U, L = (np.array([r[k] for r in rows], dtype=np.float64)
                  for k in ("params", "tokens", "unique_tokens", "eval_loss"))
    fresh = single_epoch(D, U)
    grid = np.array([r["series"] == "isoflop" for r in rows])
    fits: dict[str, Fit | None] = {"chinchilla": None, "data_constrained": None}
    # The IsoFLOP grid's single-epoch runs: the repetition series' first runs are single-epoch too, but they
    # are a few hundred steps long, still on the initial plateau where no power law in D holds. With too few,
    # all single-epoch runs, then all runs (repetition folded into the constants, and said so).
    use = next((m for m in (fresh & grid, fresh) if m.sum() >= 5), np.ones(len(L), dtype=bool))
    try:
        fit = fit_chinchilla(N[use], D[use], L[use], name="ladder")
        fit.law = fit.law.with_samples(bootstrap_chinchilla(N[use], D[use], L[use], fit, bootstrap, seed=0))
        fits["chinchilla"] = fit
        if (use & ~fresh).sum() == 0:
            which = "IsoFLOP runs" if (use & ~grid).sum() == 0 else "runs"
            notes.append(f"Chinchilla form fitted on the {int(use.sum())} {which} that see each token at most once"
                         + (" (few runs for 5 constants: see the bootstrap intervals)." if use.sum() <= 8 else "."))
        else:
            notes.append(f"Chinchilla form fitted on all {len(L)} runs, repeated ones included: only "
                         f"{int(fresh.sum())} see each token at most once, fewer than its 5 constants, so "
                         "repetition is folded into them.")
    except DatawallError as e:
        notes.append(f"Chinchilla fit not made: {e}.")
    if fresh.all():
        notes.append("No run repeats data, so the data-constrained form has nothing to fit "
                     "(set a cap with --unique-tokens, or repeat_tokens in --spec).")
        return fits
    repeated = ~fresh
    try:
        if fits["chinchilla"] is None or fresh.sum() < 5:
            raise DatawallError(f"its stage 1 needs a Chinchilla fit on at least 5 single-epoch runs, and "
                                f"{int(fresh.sum())} runs see each token at most once")
        base = fits["chinchilla"].law
        excess = N[repeated] > base.optimal_params_for_tokens(np.minimum(U, D)[repeated]) * (1 + 1e-9)
        if len(np.unique(N[repeated])) >= 2 and excess.any():
            fit = fit_data_constrained(N, D, U, L, base=base, name="ladder")
            fit.base = fits["chinchilla"]
            samples = bootstrap_data_constrained(N, D, U, L, fit, bootstrap, seed=0)
            notes.append(f"Data-constrained form: stage 1 is the Chinchilla fit; R_D* and R_N* fitted on all "
                         f"{len(rows)} runs ({int(repeated.sum())} repeat data).")
        else:
            fit = fit_r_d_only(base, N, D, U, L, fits["chinchilla"])
            samples = bootstrap_r_d_only(N, D, U, L, fit, bootstrap, seed=0)
            why = ("all repeated runs have one model size" if len(np.unique(N[repeated])) < 2 else
                   "no repeated run is larger than the compute-optimal size for its unique tokens")
            notes.append(f"Data-constrained form: R_N* is not identified ({why}), so it is held at {R_N_HELD:.0e} "
                         f"(excess parameters keep their value, N' = N) and only R_D* is fitted, on all {len(rows)} "
                         f"runs ({int(repeated.sum())} repeat data); stage 1 is the Chinchilla fit.")
        fit.law = fit.law.with_samples(samples)
        for key in ("R_D_star", "R_N_star"):
            value = getattr(fit.law, key)
            if value > RUNAWAY and not (key == "R_N_star" and value == R_N_HELD):
                notes.append(f"{key} = {value:.3g} ran off: within these runs the fit sees no decay, so the runs "
                             "do not determine it (treat it as unidentified).")
        fits["data_constrained"] = fit
    except DatawallError as e:
        notes.append(f"Data-constrained fit not made: {e}.")
    return fits
