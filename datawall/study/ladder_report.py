"""What an IsoFLOP ladder says: per-budget minima, both law fits, four figures, ladder.csv and report.html.

Fits use N = all parameters (the tied embedding is also the lm_head, a real matmul), D = training tokens and
L = held-out loss. The laws count compute as C = 6 N D; the runs' C, as the training loop counts it, also
includes attention (4-10% more at these sizes and 128-token contexts), so run markers sit slightly right of
the law's curves on compute axes.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm

from datawall.atomic import atomic_write_json, atomic_write_text
from datawall.counts import format_count
from datawall.errors import DatawallError
from datawall.laws.forms import DataConstrainedLaw, Law
from datawall.laws.io import law_to_json
from datawall.laws.plan import compute_optimal
from datawall.report.figures import new_figure, save_png
from datawall.report.html import html_page
from datawall.report.law_plots import (
    CMAP,
    LOSS_LABEL,
    draw_epochs,
    draw_extrapolation,
    draw_isoflop,
    draw_law_vs_points,
    draw_residuals,
)
from datawall.report.law_report import fit_summary
from datawall.study.ladder import CSV_COLUMNS, LadderResult, series_tokens
from datawall.study.ladder_fit import fit_ladder

BOOTSTRAP = 200  # replicates behind every interval in the ladder report (seed 0)


def write_csv(path: Path, rows: list[dict]) -> None:
    """ladder.csv: one row per run, columns CSV_COLUMNS (readable by `datawall laws fit`)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r[k]) for k in CSV_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def _cell(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def _budget_runs(rows: list[dict], C: float) -> list[dict]:
    return sorted((r for r in rows if r["series"] == "isoflop" and r["budget"] == C), key=lambda r: r["params"])


def parabola(runs: list[dict]) -> tuple[np.ndarray, list[dict]] | None:
    """Quadratic in log N through the lowest-loss run and up to two neighbours each side; None unless convex.

    A window around the minimum, not every size: far from it the curve is not a parabola, and one noisy run
    at an end would drag the vertex.
    """
    i = int(np.argmin([r["eval_loss"] for r in runs]))
    window = runs[max(0, i - 2): i + 3]
    if len(window) < 3:
        return None
    coef = np.polyfit(np.log([r["params"] for r in window]), [r["eval_loss"] for r in window], 2)
    return (coef, window) if coef[0] > 0 else None


def budget_optima(rows: list[dict]) -> list[dict]:
    """Per IsoFLOP budget: the lowest-loss run (interior or at an end) and the vertex of a parabola in log N."""
    out = []
    for C in sorted({r["budget"] for r in rows if r["series"] == "isoflop"}):
        runs = _budget_runs(rows, C)
        losses = [r["eval_loss"] for r in runs]
        i = int(np.argmin(losses))
        best = runs[i]
        entry = {"compute": C, "runs": len(runs),
                 "best_run": {"name": best["name"], "params": best["params"], "tokens": best["tokens"],
                              "loss": best["eval_loss"], "interior": 0 < i < len(runs) - 1},
                 "parabola": None}
        fit = parabola(runs)
        if fit is not None:
            (a, b, c), window = fit
            xv = -b / (2 * a)
            if math.log(window[0]["params"]) <= xv <= math.log(window[-1]["params"]):  # inside the sizes run
                entry["parabola"] = {"params": float(math.exp(xv)), "loss": float(c - b * b / (4 * a))}
        out.append(entry)
    return out


def approach2_exponent(optima: list[dict]) -> float | None:
    """Slope of log N_opt against log C over the budgets whose parabola has a vertex (Hoffmann's approach 2)."""
    pts = [(math.log(o["compute"]), math.log(o["parabola"]["params"])) for o in optima if o["parabola"]]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def _points(rows: list[dict], series: str | None = None):
    sel = [r for r in rows if series is None or r["series"] == series]
    return tuple(np.array([r[k] for r in sel], dtype=np.float64)
                 for k in ("params", "tokens", "eval_loss", "flops", "unique_tokens", "epochs"))


def isoflop_figure(rows: list[dict], optima: list[dict], law: Law | None, U: float | None):
    """Loss against N per budget: runs joined by lines, parabola vertices (diamonds), the law's curves (stars)."""
    fig, (ax,) = new_figure(1, 1, size=(7.0, 5.0))
    budgets = [o["compute"] for o in optima]
    N, _, L, C, _, _ = _points(rows, "isoflop")
    norm = LogNorm(budgets[0], budgets[-1] * 1.0001)
    cmap = colormaps[CMAP]
    if law is not None:
        draw_isoflop(ax, law, budgets, U, points=(N, L, C),
                     title="IsoFLOP curves: runs, parabola minima (diamonds), law (stars)")
    else:
        from matplotlib.cm import ScalarMappable

        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="training compute C (FLOPs)")
        ax.set_xscale("log")
        ax.set_xlabel("parameters N")
        ax.set_ylabel(LOSS_LABEL)
        ax.set_title("IsoFLOP curves: runs and parabola minima (no law fitted)")
    for o in optima:
        runs = _budget_runs(rows, o["compute"])
        n = np.array([r["params"] for r in runs], dtype=np.float64)
        colour = cmap(norm(o["compute"]))
        ax.plot(n, [r["eval_loss"] for r in runs], color=colour, lw=0.8, ls=":", marker="o", ms=4)
        if o["parabola"]:
            (a, b, c), window = parabola(runs)
            xs = np.linspace(math.log(window[0]["params"]), math.log(window[-1]["params"]), 100)
            ax.plot(np.exp(xs), a * xs * xs + b * xs + c, color=colour, lw=1.0, ls="--")
            ax.plot([o["parabola"]["params"]], [o["parabola"]["loss"]], marker="D", ms=7, color=colour, mec="black")
    lo, hi = float(np.min(L)), float(np.max(L))
    ax.set_ylim(lo - 0.08 * (hi - lo), hi + 0.08 * (hi - lo))
    ax.set_xlim(N.min() / 1.6, N.max() * 1.6)
    return fig


def law_figure(rows: list[dict], law: Law, series: str | None):
    """The fitted law against the runs of `series` (None: all), and predicted vs observed."""
    N, D, L, _, U, _ = _points(rows, series)
    fig, axes = new_figure(1, 2)
    u = U if isinstance(law, DataConstrainedLaw) else None
    draw_law_vs_points(axes[0], law, N, D, L, u, title=f"{law.form} law vs runs")
    lo, hi = float(L.min()), float(L.max())
    axes[0].set_ylim(lo - 0.15 * (hi - lo), hi + 0.15 * (hi - lo))  # the curves run past the runs' range
    draw_residuals(axes[1], law, N, D, L, u)
    return fig


def epochs_figure(rows: list[dict], law: Law, U: float):
    """Loss against epochs over U at the repetition series' size: the runs, the law, and fresh data for contrast.

    Runs of the same size on fresh tokens (the IsoFLOP grid) are drawn hollow at D / U, where they would sit had
    their tokens been U repeated; the dashed line is the law's loss for fresh tokens.
    """
    series = [r for r in rows if r["series"] == "epochs"]
    n = float(series[0]["params"])
    fig, (ax,) = new_figure(1, 1, size=(6.5, 4.5))
    E = np.array([r["epochs"] for r in series], dtype=np.float64)
    L = np.array([r["eval_loss"] for r in series], dtype=np.float64)
    max_epochs = max(4.0, float(E.max()) * 2)
    draw_epochs(ax, law, [n], U, max_epochs=max_epochs, points=(np.full(len(E), n), E, L),
                title=f"repeating data at N = {format_count(n)}")
    for extra in fig.axes[1:]:  # a colour bar for a single model size says nothing
        extra.remove()
    ax.get_lines()[0].set_label(f"law, repeating U (N = {format_count(n)})")
    e = np.geomspace(1.0, max_epochs, 100)
    base = law.base if isinstance(law, DataConstrainedLaw) else law
    ax.plot(e, base.predict(n, e * U), color="0.4", lw=1.0, ls="--", label="fresh tokens (law)")
    fresh = [r for r in rows if r["series"] == "isoflop" and r["params"] == n and r["epochs"] <= 1]
    if fresh:
        ax.scatter([r["tokens"] / U for r in fresh], [r["eval_loss"] for r in fresh], s=30, facecolors="none",
                   edgecolors="0.3", zorder=3, label="same size, fresh tokens (runs)")
    shown = list(L) + [r["eval_loss"] for r in fresh]
    lo, hi = min(shown), max(shown)
    ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))  # the law far outside its runs is not the story
    ax.legend(fontsize=8)
    return fig


def extrapolation_figure(rows: list[dict], law: Law, U: float | None):
    """The law's compute-optimal loss from half the smallest budget to 1000x the largest, with its bootstrap band."""
    _, _, L, C, _, _ = _points(rows, "isoflop")
    fig, (ax,) = new_figure(1, 1, size=(6.5, 4.5))
    draw_extrapolation(ax, law, (float(C.min()) / 2, float(C.max()) * 1e3), U, points=(C, L))
    return fig


def law_optima(law: Law, budgets: list[float], U: float | None) -> list[dict]:
    """The law's compute-optimal N, D and loss at each budget (with the cap U when given)."""
    return [{k: v for k, v in compute_optimal(law, C, U).items() if k != "epochs"} for C in budgets]


def write_report(result: LadderResult) -> dict:
    """Write ladder.csv, the figures, ladder.json and report.html into OUT; return the --json summary."""
    # bootstrap replicates can run off (and an interval of replicates that all failed is all-NaN): the
    # intervals then say so, and the notes say why; numpy's warnings would only add noise to stderr
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        return _write_report(result)


def _write_report(result: LadderResult) -> dict:
    out, spec, rows = result.out, result.spec, result.rows
    U = float(spec.unique_tokens) if spec.unique_tokens is not None else None
    U_series = series_tokens(spec)
    notes: list[str] = []
    write_csv(out / "ladder.csv", rows)
    optima = budget_optima(rows)
    fits = fit_ladder(rows, notes, BOOTSTRAP)
    chinchilla = fits["chinchilla"].law if fits["chinchilla"] else None
    dc = fits["data_constrained"].law if fits["data_constrained"] else None
    law = dc or chinchilla  # for the repetition series
    # the grid: fresh tokens -> the Chinchilla law; capped at U -> the data-constrained law, with U
    grid_law, grid_U = (dc, U) if U is not None and dc is not None else (chinchilla, None)
    files = {"csv": str(out / "ladder.csv"), "html": str(out / "report.html"), "json": str(out / "ladder.json")}
    images: list[tuple[str, bytes, str]] = []

    def figure(name: str, draw, caption: str) -> None:
        try:
            fig = draw()
        except (DatawallError, ValueError, FloatingPointError) as e:  # a degenerate law: say so, keep going
            notes.append(f"Figure {name} not drawn: {e}.")
            return
        images.append((name, save_png(fig, out / f"{name}.png"), caption))
        files[name] = str(out / f"{name}.png")

    budgets = [o["compute"] for o in optima]
    if grid_law is not None:
        try:
            for o, best in zip(optima, law_optima(grid_law, budgets, grid_U), strict=True):
                o["law"] = best
        except DatawallError as e:
            notes.append(f"The fitted law has no compute-optimal allocation at these budgets ({e}).")
            grid_law = None
    figure("isoflop", lambda: isoflop_figure(rows, optima, grid_law, grid_U),
           "Held-out loss against parameters at each compute budget (dotted: runs; dashed: parabola in log N, "
           "diamond: its minimum" + (f"; solid: the {grid_law.form} law along C = 6ND, star: its optimum"
                                     if grid_law else "") + ").")
    if chinchilla is not None:  # against the runs it was fitted on; the repetition series has its own figure
        figure("law", lambda: law_figure(rows, chinchilla, "isoflop"),
               "The fitted Chinchilla law against the IsoFLOP runs, and predicted against observed loss.")
    if law is not None and U_series is not None and any(r["series"] == "epochs" for r in rows):
        figure("epochs", lambda: epochs_figure(rows, law, float(U_series)),
               f"Loss against epochs over U = {format_count(U_series)} unique tokens at one model size: where "
               "the runs leave the fresh-token line and flatten, repeating stops paying.")
    elif U_series is None:
        notes.append("No loss-vs-epochs figure: no repetition series (set a cap U or repeat_tokens).")
    if grid_law is not None:
        figure("extrapolation", lambda: extrapolation_figure(rows, grid_law, grid_U),
               f"The {grid_law.form} law's compute-optimal loss three decades past the largest budget, with its "
               f"95% bootstrap interval ({BOOTSTRAP} replicates).")
    summary = {
        "out": str(out),
        "store": None if result.store is None else str(result.store),
        "files": files,
        "preset": spec.preset,
        "corpus": spec.corpus,
        "unique_tokens": spec.unique_tokens,
        "repeat_tokens": U_series,
        "runs": len(rows),
        "computed": len(result.computed),
        "reused": len(result.reused),
        "wall_seconds": result.wall_seconds,
        "fits": {k: (None if f is None else fit_summary(f, level=0.95, seed=0)) for k, f in fits.items()},
        "optima": optima,
        "interior_minimum": any(o["best_run"]["interior"] for o in optima),
        "approach2_exponent": approach2_exponent(optima),
        "notes": notes,
    }
    if chinchilla is not None:
        summary["law_exponent"] = chinchilla.beta / (chinchilla.alpha + chinchilla.beta)  # N* ~ C^this
    for key, f in fits.items():  # each law with its bootstrap samples, usable as `laws predict --law FILE`
        if f is not None:
            files[f"law_{key}"] = str(out / f"law_{key}.json")
            atomic_write_json(out / f"law_{key}.json", {**summary["fits"][key], **law_to_json(f.law)})
    atomic_write_json(out / "ladder.json", {"spec": spec.model_dump(mode="json"), **summary})
    atomic_write_text(out / "report.html", html_page(f"datawall laws ladder ({spec.preset or 'custom'}, "
                                                     f"{spec.corpus})", _blocks(summary, rows, images)))
    return summary


def _blocks(s: dict, rows: list[dict], images: list) -> list[tuple]:
    cap = "no cap" if s["unique_tokens"] is None else f"U = {format_count(s['unique_tokens'])} unique tokens"
    store = f" Runs are kept in the run store {s['store']} (OUT/runs/NAME links to each)." if s["store"] else ""
    blocks: list[tuple] = [("p", f"{s['runs']} pretraining runs on {s['corpus']} ({cap}); {s['computed']} trained "
                                 f"by the last call, {s['reused']} read back; {s['wall_seconds']:.0f} s.{store}")]
    head = ["budget C", "runs", "lowest-loss run", "N", "loss", "interior", "parabola N*", "law N*", "law loss"]
    table = []
    for o in s["optima"]:
        b, p, lo = o["best_run"], o["parabola"], o.get("law")
        table.append([f"{o['compute']:.3g}", o["runs"], b["name"], format_count(b["params"]), f"{b['loss']:.4f}",
                      "yes" if b["interior"] else "no", format_count(p["params"]) if p else "-",
                      format_count(lo["params"]) if lo else "-", f"{lo['loss']:.4f}" if lo else "-"])
    blocks += [("h2", "IsoFLOP minima"), ("table", head, table)]
    if s["approach2_exponent"] is not None:
        blocks.append(("p", f"Parabola minima scale as N* ~ C^{s['approach2_exponent']:.2f} (Hoffmann's approach "
                            "2); the fitted law says C^" + (f"{s['law_exponent']:.2f}" if "law_exponent" in s
                                                            else "?") + "."))
    for key, f in s["fits"].items():
        if f is None:
            continue
        keys = ["E", "A", "B", "alpha", "beta"] + (["R_D_star", "R_N_star"] if "R_D_star" in f else [])
        body = [[k, f"{f[k]:.5g}", "-" if f["intervals"].get(k) is None else
                 f"[{f['intervals'][k][0]:.4g}, {f['intervals'][k][1]:.4g}]"] for k in keys]
        blocks += [("h2", f"{key.replace('_', '-')} fit ({f['points']} runs)"),
                   ("table", ["constant", "estimate", "95% bootstrap interval"], body),
                   ("p", f"Huber objective {f['objective']:.4g}; {f['starts_at_best']} of {f['starts']} starts "
                         "ended at the best fit.")]
    if s["notes"]:
        blocks += [("h2", "Notes")] + [("p", n) for n in s["notes"]]
    blocks.append(("h2", "Figures"))
    blocks += [("img", png, caption) for _, png, caption in images]
    blocks += [("h2", "Runs (ladder.csv)"),
               ("table", list(CSV_COLUMNS), [[_cell(r[k]) for k in CSV_COLUMNS] for r in rows])]
    return blocks
