"""The study's fitted laws come from datawall.laws: the power law with a floor (robust Huber fit) and the
log-linear accuracy law, and the study's wrappers that say when there are too few points."""

from __future__ import annotations

import numpy as np
import pytest

from datawall.errors import DatawallError
from datawall.laws import PowerLaw, fit_log_linear, fit_power_law
from datawall.study.analysis import fit_accuracy_vs_compute
from datawall.study.levers.measure import fit_loss_vs_compute

C = np.geomspace(1e10, 1e13, 6)
C0 = float(np.exp(np.log(C).mean()))
TRUE = PowerLaw(E=0.4, A=0.8, alpha=0.35, C0=C0)


def test_power_law_recovers_its_constants():
    fit = fit_power_law(C, TRUE.predict(C))
    assert fit.law.params() == pytest.approx(TRUE.params(), rel=1e-6)
    assert fit.rmse(C, TRUE.predict(C)) < 1e-9 and fit.points == 6 and fit.starts_at_best >= 1


def test_power_law_fit_is_robust_to_one_outlier():
    L = TRUE.predict(C)
    L[2] *= 1.5  # one broken run
    robust = fit_power_law(C, L).law
    assert robust.E == pytest.approx(0.4, rel=0.05) and robust.alpha == pytest.approx(0.35, rel=0.05)
    # least squares (what the study used before) is pulled away by the same point
    from scipy.optimize import curve_fit

    (E, _, alpha), _ = curve_fit(lambda c, E, A, a: E + A * (c / C0) ** (-a), C, L, p0=[0.2, 1.0, 0.3],
                                 bounds=([0, 0, 0], [np.inf, np.inf, 5]), maxfev=20000)
    assert abs(alpha - 0.35) > 5 * abs(robust.alpha - 0.35)


def test_power_law_refuses_bad_input():
    with pytest.raises(DatawallError, match="point 1"):
        fit_power_law([1.0, -2.0, 3.0], [1.0, 1.0, 1.0])
    with pytest.raises(DatawallError, match="2 distinct C"):
        fit_power_law([1.0, 1.0, 2.0], [1.0, 0.9, 0.8])


def test_log_linear_is_least_squares():
    rng = np.random.default_rng(0)
    y = 0.1 + 0.02 * np.log10(C) + rng.normal(0, 0.005, len(C))
    fit = fit_log_linear(C, y)
    b, a = np.polyfit(np.log10(C), y, 1)
    assert (fit.law.a, fit.law.b) == (a, b)
    assert 0.5 < fit.r2 <= 1 and fit.law.predict(1e11) == pytest.approx(a + 11 * b)
    with pytest.raises(DatawallError, match="two or more distinct C"):
        fit_log_linear([5.0, 5.0], [0.1, 0.2])


def _points(compute, acc=None, loss=None):
    return [{"compute": c, "train_flops": c, "accuracy": a, "eval_loss": x, "oracle": False}
            for c, a, x in zip(compute, acc or [0.5] * len(compute), loss or [None] * len(compute), strict=True)]


def test_study_fits_say_why_not_and_keep_their_keys():
    law = fit_loss_vs_compute(_points(C[:3], loss=list(TRUE.predict(C[:3]))))
    assert law["fit"] is None and law["reason"].startswith("3 distinct training budgets")
    law = fit_loss_vs_compute(_points(C, loss=list(TRUE.predict(C))))
    assert set(law["fit"]) == {"E", "A", "alpha", "C0", "rmse", "points"}
    assert law["fit"]["alpha"] == pytest.approx(0.35, rel=1e-6)
    acc = fit_accuracy_vs_compute(_points(C, acc=list(0.1 + 0.02 * np.log10(C))))
    assert set(acc["fit"]) == {"a", "b", "r2", "points", "points_per_decade"}
    assert acc["fit"]["points_per_decade"] == pytest.approx(2.0)
    narrow = fit_accuracy_vs_compute(_points([1e12, 1.01e12, 1.02e12]))
    assert narrow["fit"] is None and "too narrow" in narrow["reason"]
