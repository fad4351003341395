"""Scaling laws at the data wall: parametric forms, robust fits, bootstrap intervals, published laws, plans.

    from datawall.laws import get_law, fit_chinchilla, compute_optimal
    law = get_law("datablations-muennighoff2023")
    law.predict(N=1e9, D=100e9, U=10e9)

Plots and HTML reports live in `datawall.report.law_plots` and `datawall.report.law_report` (they import matplotlib).
"""

from datawall.laws.bootstrap import bootstrap_chinchilla, bootstrap_data_constrained, intervals, standard_errors
from datawall.laws.fit import HOFFMANN_GRID, Fit, fit_chinchilla, fit_data_constrained
from datawall.laws.forms import ChinchillaLaw, DataConstrainedLaw, Law, predict_interval
from datawall.laws.io import Points, law_from_json, law_to_json, load_law, read_points
from datawall.laws.loglinear import LogLinearFit, LogLinearLaw, fit_log_linear
from datawall.laws.plan import compute_optimal, inference_optimal, marginal_return, plan, with_repetition
from datawall.laws.power import PowerFit, PowerLaw, fit_power_law
from datawall.laws.published import PUBLISHED_LAWS, get_law

__all__ = [
    "HOFFMANN_GRID",
    "PUBLISHED_LAWS",
    "ChinchillaLaw",
    "DataConstrainedLaw",
    "Fit",
    "Law",
    "LogLinearFit",
    "LogLinearLaw",
    "Points",
    "PowerFit",
    "PowerLaw",
    "bootstrap_chinchilla",
    "bootstrap_data_constrained",
    "compute_optimal",
    "fit_chinchilla",
    "fit_data_constrained",
    "fit_log_linear",
    "fit_power_law",
    "get_law",
    "inference_optimal",
    "intervals",
    "law_from_json",
    "law_to_json",
    "load_law",
    "marginal_return",
    "plan",
    "predict_interval",
    "read_points",
    "standard_errors",
    "with_repetition",
]
