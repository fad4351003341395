"""A fit's summary (the `laws fit --json` object and fit.json) and its report: fit.png + report.html."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datawall.atomic import atomic_write_text
from datawall.counts import format_count
from datawall.laws.bootstrap import intervals, standard_errors
from datawall.laws.fit import Fit
from datawall.laws.forms import DataConstrainedLaw
from datawall.laws.io import Points, law_to_json, save_json
from datawall.laws.plan import compute_optimal
from datawall.report.figures import new_figure, save_png
from datawall.report.html import html_page
from datawall.report.law_plots import (
    compute_budgets,
    draw_epochs,
    draw_extrapolation,
    draw_isoflop,
    draw_law_vs_points,
    draw_residuals,
)


def fit_summary(fit: Fit, points: Points | None = None, compute: float | None = None,
                level: float = 0.95, seed: int | None = None) -> dict:
    """The fit as one JSON-ready dict: constants, intervals, objective, points, optimum at `compute`."""
    law = fit.law
    keys = law.keys
    samples = law.samples
    ok = None if samples is None else samples[np.isfinite(samples).all(1)]
    out: dict = {"form": law.form, "name": law.name, **law.params()}
    out["intervals"] = intervals(ok, keys, level) if ok is not None and len(ok) else {k: None for k in keys}
    out["standard_errors"] = standard_errors(ok, keys) if ok is not None and len(ok) > 1 else None
    if ok is not None and len(ok) > 1:  # geometric standard deviation: the x/ factor of one SE in log space
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            geo = {k: float(np.exp(np.nanstd(np.log(ok[:, i]), ddof=1)))
                   for i, k in enumerate(keys) if k in ("A", "B", "R_D_star", "R_N_star")}
        out["geometric_errors"] = {k: (v if np.isfinite(v) else None) for k, v in geo.items()}  # JSON has no inf
    out["bootstrap"] = {"replicates": 0 if samples is None else int(len(samples)),
                        "failed": 0 if samples is None else int(len(samples) - len(ok)),
                        "seed": seed, "level": level}
    out["objective"] = fit.objective
    out["points"] = fit.points
    out["huber_delta"] = fit.delta
    out["starts"] = fit.starts
    out["starts_at_best"] = fit.starts_at_best
    if fit.base is not None:
        out["base"] = {"points": fit.base.points, "objective": fit.base.objective, "starts": fit.base.starts,
                       "starts_at_best": fit.base.starts_at_best}
    if points is not None:
        out["source"] = points.source
        out["columns"] = points.columns
        out["excluded_lines"] = points.excluded_lines
    if compute is not None:
        opt = compute_optimal(law, compute)
        out["optimal"] = {k: opt[k] for k in ("compute", "params", "tokens", "tokens_per_param", "loss")}
    return out


def fit_figure(fit: Fit, points: Points):
    """The fit's panels: law vs runs, predicted vs observed, IsoFLOP curves, extrapolation (+ epochs)."""
    law = fit.law
    dc = isinstance(law, DataConstrainedLaw)
    fig, axes = new_figure(2, 3 if dc else 2)
    U = points.U if dc else None
    draw_law_vs_points(axes[0], law, points.N, points.D, points.L, U)
    draw_residuals(axes[1], law, points.N, points.D, points.L, U)
    C = points.C
    budgets, on_budgets = compute_budgets(C)
    draw_isoflop(axes[2], law, budgets, None, (points.N, points.L, C) if on_budgets else None)
    draw_extrapolation(axes[3], law, (C.min(), C.max() * 1e3), None, (C, points.L))
    if dc:
        repeated = points.D > points.U * (1 + 1e-9)
        Us = points.U[repeated] if repeated.any() else points.U
        u = float(np.median(Us))
        near = np.isclose(points.U, u, rtol=0.05)
        draw_epochs(axes[4], law, np.geomspace(points.N.min(), points.N.max(), 4), u,
                    max_epochs=max(100.0, float((points.D / points.U).max())),
                    points=(points.N[near], points.D[near] / points.U[near], points.L[near]))
        axes[5].set_visible(False)
    return fig


def write_fit_report(out_dir: str | Path, fit: Fit, points: Points, summary: dict) -> dict[str, str]:
    """Write fit.png, report.html (self-contained) and fit.json (loadable with --law) into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = save_png(fit_figure(fit, points), out / "fit.png")
    saved = {**summary, **law_to_json(fit.law)}
    save_json(out / "fit.json", saved)
    law = fit.law
    rows = []
    for k in law.keys:
        iv = summary["intervals"].get(k)
        rows.append([k, f"{getattr(law, k):.6g}", "" if iv is None else f"[{iv[0]:.4g}, {iv[1]:.4g}]"])
    blocks: list[tuple] = [
        ("p", f"{law.form} law fitted to {summary['points']} points from {points.source} "
              f"(Huber delta {fit.delta:g} on log-loss, L-BFGS from {fit.starts} starts, "
              f"{fit.starts_at_best} ended at the best fit)."),
        ("table", ["constant", "estimate", f"{summary['bootstrap']['level']:.0%} bootstrap interval"], rows),
        ("p", f"Huber objective {summary['objective']:.6g}; excluded CSV lines: "
              f"{points.excluded_lines or 'none'}."),
    ]
    if "optimal" in summary:
        o = summary["optimal"]
        blocks.append(("p", f"Compute-optimal at C = {o['compute']:.3g} FLOPs: N = {format_count(o['params'])}, "
                            f"D = {format_count(o['tokens'])} ({o['tokens_per_param']:.1f} tokens/parameter), "
                            f"loss {o['loss']:.4f}."))
    blocks.append(("img", png, "Fitted law against the runs; IsoFLOP curves (stars: optima); "
                               "compute-optimal loss with its bootstrap interval."))
    atomic_write_text(out / "report.html", html_page(f"datawall laws fit: {law.name}", blocks))
    return {"png": str(out / "fit.png"), "html": str(out / "report.html"), "json": str(out / "fit.json")}
