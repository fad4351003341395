"""Plots of fitted laws and measured points.

Each `draw_*` function draws into a matplotlib Axes, so fits, the IsoFLOP ladder and reports can
compose them. Figures are built without pyplot (no global state, no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm

from datawall.counts import format_count
from datawall.laws.forms import Law, predict_interval
from datawall.laws.plan import compute_optimal

LOSS_LABEL = "loss (nats/token)"
CMAP = "viridis"


def _groups(N: np.ndarray, max_groups: int = 8) -> list[np.ndarray]:
    """Index groups of similar model size: exact sizes when few, else equal-count bins in log N."""
    sizes = np.unique(N)
    if len(sizes) <= max_groups:
        return [np.flatnonzero(N == s) for s in sizes]
    edges = np.quantile(np.log(N), np.linspace(0, 1, max_groups + 1))
    bins = np.clip(np.searchsorted(edges, np.log(N), side="right") - 1, 0, max_groups - 1)
    return [np.flatnonzero(bins == b) for b in range(max_groups) if np.any(bins == b)]


def compute_budgets(C, gap: float = 0.1, max_budgets: int = 10) -> tuple[np.ndarray, bool]:
    """IsoFLOP budgets of a set of runs and whether the runs really sit on them.

    Runs cluster on budgets when log10 C splits at gaps > `gap` decades into at most `max_budgets` tight
    groups (budgets = geometric means); otherwise 5 evenly spaced budgets across the runs' range.
    """
    lc = np.sort(np.log10(np.asarray(C, dtype=np.float64)))
    groups = np.split(lc, np.flatnonzero(np.diff(lc) > gap) + 1)
    if len(groups) > max_budgets or any(g[-1] - g[0] > 2 * gap for g in groups):
        return np.geomspace(10 ** lc[0], 10 ** lc[-1], 5), False
    return np.array([10 ** g.mean() for g in groups]), True


def draw_law_vs_points(ax: Axes, law: Law, N, D, L, U=None, title: str = "fitted law vs runs") -> None:
    """Loss against training tokens, runs coloured by model size, the law drawn at each size group."""
    N, D, L = (np.asarray(x, dtype=np.float64) for x in (N, D, L))
    U = None if U is None else np.asarray(U, dtype=np.float64)
    norm = LogNorm(N.min(), N.max() * 1.0001)
    sc = ax.scatter(D, L, c=N, cmap=CMAP, norm=norm, s=14, edgecolors="none", label="runs")
    for idx in _groups(N):
        n = float(np.exp(np.log(N[idx]).mean()))
        d = np.geomspace(D[idx].min() / 1.5, D[idx].max() * 1.5, 100)
        u = None if U is None else float(np.exp(np.log(U[idx]).mean()))
        ax.plot(d, law.predict(n, d, u), color=sc.cmap(norm(n)), lw=1.2)
    ax.set_xscale("log")
    ax.set_xlabel("training tokens D (tokens)")
    ax.set_ylabel(LOSS_LABEL)
    ax.set_title(title)
    ax.figure.colorbar(sc, ax=ax, label="parameters N")


def draw_isoflop(ax: Axes, law: Law, budgets: Sequence[float], U: float | None = None,
                 points: tuple | None = None, title: str = "IsoFLOP curves") -> list[dict]:
    """Loss against N along C = 6 N D for each budget, minima starred; points = (N, L, C) runs to overlay.

    Returns the law's optimum per budget (compute_optimal dicts).
    """
    budgets = sorted(float(c) for c in budgets)
    norm = LogNorm(budgets[0], budgets[-1] * 1.0001)
    cmap = ax.figure.colorbar(_mappable(norm), ax=ax, label="training compute C (FLOPs)").mappable.cmap
    optima = []
    for C in budgets:
        opt = compute_optimal(law, C, U)
        n = np.geomspace(opt["params"] / 30, opt["params"] * 30, 200)
        ax.plot(n, law.predict(n, C / (6 * n), U), color=cmap(norm(C)), lw=1.2)
        ax.plot([opt["params"]], [opt["loss"]], marker="*", ms=11, color=cmap(norm(C)), mec="black", mew=0.6)
        optima.append(opt)
    if points is not None:
        pn, pl, pc = (np.asarray(x, dtype=np.float64) for x in points)
        ax.scatter(pn, pl, c=pc, cmap=cmap, norm=norm, s=16, edgecolors="black", linewidths=0.3, zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel(LOSS_LABEL)
    ax.set_title(title + ("" if U is None else f" (U = {format_count(U)} unique tokens)"))
    return optima


def _mappable(norm):
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=CMAP)


def draw_epochs(ax: Axes, law: Law, params: Sequence[float], U: float, max_epochs: float = 100.0,
                points: tuple | None = None, title: str = "repeating data") -> None:
    """Loss against epochs D / U at fixed unique tokens U, one curve per model size; points = (N, epochs, L)."""
    from datawall.laws.plan import with_repetition

    dc = with_repetition(law)
    params = sorted(float(n) for n in params)
    norm = LogNorm(params[0], params[-1] * 1.0001)
    cmap = ax.figure.colorbar(_mappable(norm), ax=ax, label="parameters N").mappable.cmap
    epochs = np.geomspace(1.0, max_epochs, 200)
    for n in params:
        ax.plot(epochs, dc.predict(n, epochs * U, U), color=cmap(norm(n)), lw=1.2, label=format_count(n))
    if points is not None:
        pn, pe, pl = (np.asarray(x, dtype=np.float64) for x in points)
        ax.scatter(pe, pl, c=pn, cmap=cmap, norm=norm, s=16, edgecolors="black", linewidths=0.3, zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("epochs D / U")
    ax.set_ylabel(LOSS_LABEL)
    ax.set_title(f"{title} (U = {format_count(U)} unique tokens)")


def draw_extrapolation(ax: Axes, law: Law, compute_range: tuple[float, float], U: float | None = None,
                       points: tuple | None = None, level: float = 0.95,
                       title: str = "compute-optimal loss") -> None:
    """The law's compute-optimal loss against C, with the bootstrap interval band; points = (C, L)."""
    Cs = np.geomspace(*compute_range, 60)
    opts = [compute_optimal(law, C, U) for C in Cs]
    loss = np.array([o["loss"] for o in opts])
    ax.plot(Cs, loss, color="C3", lw=1.6, label="law at the optimum")
    band = [predict_interval(law, o["params"], o["tokens"], U, level) for o in opts]
    if band[0] is not None:
        lo = np.array([b[0] for b in band], dtype=np.float64)
        hi = np.array([b[1] for b in band], dtype=np.float64)
        ax.fill_between(Cs, lo, hi, color="C3", alpha=0.2, label=f"{level:.0%} bootstrap interval")
    if points is not None:
        pc, pl = (np.asarray(x, dtype=np.float64) for x in points)
        ax.scatter(pc, pl, s=10, color="0.4", alpha=0.6, label="runs")
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel(LOSS_LABEL)
    ax.set_title(title + ("" if U is None else f" (U = {format_count(U)})"))
    ax.legend(fontsize=8)


def draw_residuals(ax: Axes, law: Law, N, D, L, U=None, title: str = "predicted vs observed") -> None:
    """Observed loss against the law's prediction (the diagonal is a perfect fit)."""
    pred = law.predict(N, D, U)
    L = np.asarray(L, dtype=np.float64)
    ax.scatter(pred, L, s=12, color="C0", alpha=0.7)
    lims = [min(pred.min(), L.min()), max(pred.max(), L.max())]
    ax.plot(lims, lims, color="black", lw=0.8)
    ax.set_xlabel("predicted " + LOSS_LABEL)
    ax.set_ylabel("observed " + LOSS_LABEL)
    ax.set_title(title)
