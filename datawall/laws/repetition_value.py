"""How much a repeated pass over the same data is worth: R_D* of Muennighoff et al. (2023) from one repetition series.

Their data-constrained law replaces the tokens D by the effective data D' = U (1 + R_D* (1 - exp(-R / R_D*))), with
R = D/U - 1 the repetitions: the first few repeats are worth almost as much as fresh data, and no number of them is
worth more than R_D* fresh passes. Their full fit needs single-epoch runs at many sizes
(datawall.laws.fit_data_constrained); a study's repetition lever trains one size at several epoch counts, which is
enough to fit R_D* on its own with held-out accuracy linear in log D' (the form the study fits against compute):

    accuracy = a + b log10(D' / U)

Each seed's accuracy is one point, so the fit sees the seed spread. R_D* at the upper bound means the series shows no
diminishing value yet (every repeat still counted as fresh data).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import curve_fit

FORM = "accuracy = a + b log10(D'/U), D'/U = 1 + R_D* (1 - exp(-R/R_D*)), R = epochs - 1"
R_MAX = 1e4


def effective_epochs(epochs, r_d_star: float):
    """D'/U: what `epochs` passes over the same data are worth in fresh passes."""
    r = np.asarray(epochs, dtype=float) - 1.0
    return 1.0 + r_d_star * (1.0 - np.exp(-r / r_d_star))


def _model(epochs, a, b, log_r):
    return a + b * np.log10(effective_epochs(epochs, math.exp(log_r)))


def fit_repetition_value(epochs: list[float], accuracy: list[float]) -> dict:
    """Fit R_D* (with a, b) to per-seed accuracies at each epochs value; `fit` is None with a `reason` if it cannot."""
    e, acc = np.asarray(epochs, dtype=float), np.asarray(accuracy, dtype=float)
    distinct = len(np.unique(e))
    if distinct < 4:
        return {"form": FORM, "fit": None, "reason": f"{distinct} distinct epoch counts: too few (need 4)"}
    if e.min() < 1:
        return {"form": FORM, "fit": None, "reason": "an epochs value below 1 is not a repetition"}
    best = None
    for r0 in (2.0, 10.0, 50.0, 300.0):  # the objective has a flat valley along R_D*: start along it
        try:
            theta, cov = curve_fit(_model, e, acc, p0=(acc.min(), 0.3, math.log(r0)),
                                   bounds=([-1.0, 0.0, math.log(0.05)], [2.0, 10.0, math.log(R_MAX)]), maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        rss = float(np.sum((_model(e, *theta) - acc) ** 2))
        if best is None or rss < best[2]:
            best = (theta, cov, rss)
    if best is None:
        return {"form": FORM, "fit": None, "reason": "did not converge"}
    (a, b, log_r), cov, rss = best
    r = math.exp(log_r)
    se_log = math.sqrt(cov[2, 2]) if np.all(np.isfinite(cov)) and cov[2, 2] >= 0 else math.inf
    # a 95% interval from the fit's covariance in log R_D*; None when the covariance is not finite (JSON has no inf)
    ci = [math.exp(log_r - 1.96 * se_log), math.exp(log_r + 1.96 * se_log)] if math.isfinite(se_log) else None
    top = float(e.max())
    return {"form": FORM, "fit": {
        "a": float(a), "b": float(b), "r_d_star": r, "r_d_star_ci": ci,
        "at_bound": r >= 0.99 * R_MAX, "rmse": math.sqrt(rss / len(e)), "points": int(len(e)),
        "max_epochs": top, "effective_epochs_at_max": float(effective_epochs(top, r)),
        "ceiling": float(a + b * math.log10(1 + r)),  # accuracy with endless repeats under the fit
    }}


def describe(law: dict) -> str:
    """The fit in one line for the report."""
    f = law.get("fit")
    if f is None:
        return f"repetition value, {law['form']}: not fitted: {law['reason']}"
    if f["at_bound"]:
        return (f"repetition value, {law['form']}: R_D* at its bound ({R_MAX:g}): no diminishing value of repeats "
                f"within {f['max_epochs']:g} epochs ({f['points']} points)")
    ci = f"[{f['r_d_star_ci'][0]:.3g}, {f['r_d_star_ci'][1]:.3g}]" if f["r_d_star_ci"] else "(no interval)"
    return (f"repetition value, {law['form']}: R_D* = {f['r_d_star']:.3g} {ci}: "
            f"{f['max_epochs']:g} epochs are worth {f['effective_epochs_at_max']:.3g} fresh ones, and endless repeats "
            f"would reach {100 * f['ceiling']:.1f}% (rmse {100 * f['rmse']:.1f} points, {f['points']} points)")
