"""The study report: OUT/summary.json (every number), OUT/summary.md and OUT/report.html (one self-contained
file, plots embedded as base64 PNG), written atomically from `analysis.analyse`. On a world with hazard cases every
table gains a safety column (caveat recall, its change from the reference, unsafe advice where the world names it)
and report.html a plot of caveat recall against total compute.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from datawall.atomic import atomic_write_json, atomic_write_text
from datawall.counts import format_count
from datawall.study.analysis import analyse, money, safety_cost, sci
from datawall.study.levers import LEVERS

if TYPE_CHECKING:
    from datawall.study.plan import Plan


def _series(summary: dict):
    """(lever, legend label, points, marker) to draw: each lever's own series (test-time: one per strategy)."""
    for lever, pts in summary["levers"].items():
        for name, mine, marker in LEVERS[lever].series(lever, pts):
            yield lever, name, mine, marker


def _accuracy_plot(summary: dict, axis: str) -> bytes:
    """Held-out accuracy against total compute (or dollars), every lever, the frontier and the fits."""
    from datawall.report.figures import new_figure, png_bytes

    fig, (ax,) = new_figure(size=(7.5, 4.8))
    key = "compute" if axis == "flops" else "dollars"
    for lever, name, pts, marker in _series(summary):
        x = np.array([p[key] for p in pts])
        y = 100 * np.array([p["accuracy"] for p in pts])
        err = 100 * np.array([[p["accuracy"] - p["ci_low"] for p in pts], [p["ci_high"] - p["accuracy"] for p in pts]])
        oracle = pts[0]["oracle"]
        color = LEVERS[lever].color
        ax.errorbar(x, y, yerr=err, fmt=marker + ("--" if oracle else "-"), color=color,
                    mfc="none" if oracle else color, capsize=3, lw=1, ms=5, label=name, alpha=0.6 if oracle else 1.0)
        fit = summary["laws"].get(lever, {}).get("accuracy_vs_compute", {}).get("fit")
        if axis == "flops" and fit and name == lever:
            xs = np.geomspace(min(x.min(), summary["baseline"]["compute"]), x.max(), 50)
            ax.plot(xs, 100 * (fit["a"] + fit["b"] * np.log10(xs)), ":", color=LEVERS[lever].color, lw=1)
    b = summary["baseline"]
    ax.plot([b[key]], [100 * b["accuracy"]], marker="*", ms=14, color="gold", mec="black", ls="none",
            label="baseline", zorder=5)
    fr = summary["frontier"]
    right = max((p[key] for _, _, pts, _ in _series(summary) for p in pts), default=b[key])
    ax.plot([p[key] for p in fr] + [right], [100 * p["accuracy"] for p in fr] + [100 * fr[-1]["accuracy"]],
            drawstyle="steps-post", color="0.3", lw=3, alpha=0.3, label="frontier (best so far)", zorder=0)
    ax.set_xscale("log")
    q = format_count(summary["queries"])
    ax.set_xlabel(f"total compute: training + inference x {q} queries (FLOPs)" if axis == "flops"
                  else f"total cost: training + inference x {q} queries (US dollars, {summary['price']['entry']})")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("Accuracy vs total " + ("compute" if axis == "flops" else "dollars") + " (95% intervals)")
    ax.legend(fontsize=7, loc="best")
    return png_bytes(fig)


def _ranking_plot(summary: dict) -> bytes | None:
    """The chart to read first: each lever's best step, its gain per extra FLOP and per extra dollar with 95%
    intervals, best lever on top."""
    from datawall.report.figures import new_figure, png_bytes

    ranking = summary["ranking"]
    if not any(r["label"] for r in ranking["flop"]):
        return None
    fu, du = _units(summary)
    fig, axes = new_figure(1, 2, size=(5.4, 0.7 + 0.55 * len(ranking["flop"])))
    for ax, axis, unit, what in ((axes[0], "flop", fu, f"points per {sci(fu)} extra FLOPs"),
                                 (axes[1], "dollar", du, f"points per {money(du)} extra")):
        rows = [r for r in ranking[axis] if r["label"]][::-1]  # best at the top
        key = f"gain_per_{axis}"
        y = np.arange(len(rows))
        spans = []
        for i, r in enumerate(rows):
            g, (lo, hi) = 100 * unit * r[key], (100 * unit * c for c in r[f"{key}_ci"])
            spans += [abs(g), abs(lo), abs(hi)]
            color = LEVERS[r["lever"]].color
            ax.errorbar([g], [i], xerr=[[g - lo], [hi - g]], fmt="o", color=color, capsize=4, ms=7)
            ax.annotate(r["label"], (g, i), fontsize=7, xytext=(0, 6), textcoords="offset points", ha="center")
        ax.axvline(0, color="0.5", lw=1)
        # levers differ by orders of magnitude per unit: linear near zero (where the sign is read), log beyond
        top = max(max(spans), 1e-12)
        lin = 10.0 ** np.floor(np.log10(top * 1e-2))
        ax.set_xscale("symlog", linthresh=lin)
        decades = 10.0 ** np.arange(np.log10(lin) + 1, np.ceil(np.log10(top)) + 1)
        ticks = [*(-decades[::-1]), 0.0, *decades]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=7)
        ax.set_ylim(-0.6, len(rows) - 0.2)
        ax.set_yticks(y, [r["lever"] for r in rows])
        ax.set_xlabel(what)
        ax.set_title("per FLOP" if axis == "flop" else "per dollar", fontsize=10)
    fig.suptitle("Each lever's best step from the baseline: accuracy gained per extra unit (95% intervals)",
                 fontsize=10)
    return png_bytes(fig)


def has_safety(summary: dict) -> bool:
    """Whether the study's world has hazard cases (its points carry caveat recall)."""
    return "caveat_recall" in summary["baseline"]


def _names_unsafe(summary: dict) -> bool:
    return any(p.get("unsafe_rate") is not None for p in _every(summary))


def _every(summary: dict) -> list[dict]:
    return [summary["baseline"], *(p for pts in summary["levers"].values() for p in pts)]


def _fmt_change(p: dict, name: str = "caveat_recall") -> str:
    """A safety rate's change from the reference in points with its interval, and "(cost)" when it is one."""
    change, ci = p.get(f"{name}_change"), p.get(f"{name}_change_ci")
    if change is None or ci is None:
        return "-"
    cost = " (cost)" if name in (p.get("safety_cost") or []) else ""
    return f"{100 * change:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]{cost}"


def _fmt_rate(p: dict, name: str) -> str:
    value, ci = p.get(name), p.get(f"{name}_ci")
    if value is None:
        return "-"
    return f"{_fmt_pct(value)}" + ("" if ci is None else f" [{_fmt_pct(ci[0])}, {_fmt_pct(ci[1])}]")


def ranking_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The ranking table: each lever's best step per extra FLOP and per extra dollar, and the runner-up ratio; on a
    world with hazard cases also the step's change in caveat recall (and unsafe advice) from its reference."""
    fu, du = _units(summary)
    by_dollar = {r["lever"]: r for r in summary["ranking"]["dollar"]}
    safety, unsafe = has_safety(summary), _names_unsafe(summary)
    head = ["rank", "lever", "best step", "gain (points)", f"points per {sci(fu)} FLOPs", "x next lever",
            f"points per {money(du)}"]
    head += ["caveat recall change (points)"] if safety else []
    head += ["unsafe advice change (points)"] if unsafe else []
    rows = []
    for i, r in enumerate(summary["ranking"]["flop"], 1):
        if r["label"] is None:
            rows.append(["-", r["lever"], "no point costs more than its reference", "-", "-", "-", "-"]
                        + ["-"] * (safety + unsafe))
            continue
        d = by_dollar.get(r["lever"], {})
        gain = f"{100 * r['gain']:+.1f} [{100 * r['gain_ci'][0]:.1f}, {100 * r['gain_ci'][1]:.1f}]"
        ratio = "-" if r["ratio_to_next"] is None else f"{r['ratio_to_next']:.1f}x"
        rows.append([str(i), r["lever"], r["label"], gain, _fmt_gain(r, "flop", fu), ratio,
                     _fmt_gain(d, "dollar", du) if d.get("label") else "-"]
                    + ([_fmt_change(r)] if safety else []) + ([_fmt_change(r, "unsafe_rate")] if unsafe else []))
    return head, rows


def _loss_plot(summary: dict) -> bytes | None:
    """Held-out loss against training FLOPs for the training levers, with the fitted power law."""
    from datawall.report.figures import new_figure, png_bytes
    from datawall.report.law_plots import LOSS_LABEL

    levers = [lv for lv in summary["levers"] if "loss_vs_train_compute" in summary["laws"].get(lv, {})]
    if not levers:
        return None
    fig, (ax,) = new_figure(size=(7.5, 4.4))
    for lever in levers:
        pts = sorted((p for p in summary["levers"][lever] if p["eval_loss"] is not None),
                     key=lambda p: p["train_flops"])
        x = np.array([p["train_flops"] for p in pts])
        color = LEVERS[lever].color
        ax.plot(x, [p["eval_loss"] for p in pts], "o-", color=color, label=lever)
        for p in pts:
            if p["size"] == summary["baseline"]["size"] and p["epochs"] == summary["baseline"]["epochs"]:
                continue  # the star marks it
            ax.annotate(LEVERS[lever].tag(p), (p["train_flops"], p["eval_loss"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        fit = summary["laws"][lever].get("loss_vs_train_compute", {}).get("fit")
        if fit:
            xs = np.geomspace(x.min(), x.max(), 50)
            ax.plot(xs, fit["E"] + fit["A"] * (xs / fit["C0"]) ** (-fit["alpha"]), ":", color=color,
                    label=f"{lever} fit (alpha {fit['alpha']:.2f})")
    b = summary["baseline"]
    if b["eval_loss"] is not None:
        ax.plot([b["train_flops"]], [b["eval_loss"]], marker="*", ms=14, color="gold", mec="black", ls="none",
                label="baseline")
    ax.set_xscale("log")
    ax.set_xlabel("training compute (FLOPs)")
    ax.set_ylabel("held-out " + LOSS_LABEL)
    ax.set_title("Held-out loss of the reference solutions vs training compute")
    ax.legend(fontsize=8)
    return png_bytes(fig)


def _fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _fmt_gain(p: dict, axis: str, unit: float) -> str:
    g, ci = p.get(f"gain_per_{axis}"), p.get(f"gain_per_{axis}_ci")
    if g is None:
        return "-"
    return f"{100 * unit * g:+.2f} [{100 * unit * ci[0]:.2f}, {100 * unit * ci[1]:.2f}]"


def _units(summary: dict) -> tuple[float, float]:
    """Power-of-ten units for gains per FLOP and per dollar (from the baseline's totals)."""
    b = summary["baseline"]
    return (10.0 ** np.floor(np.log10(max(b["compute"], 1e-30))),
            10.0 ** np.floor(np.log10(max(b["dollars"], 1e-30))))


def lever_rows(summary: dict, lever: str) -> tuple[list[str], list[list[str]]]:
    """A lever's table: setting, accuracy, loss, compute, dollars and gains per unit of each; on a world with
    hazard cases also caveat recall, its change from the reference, and unsafe advice where the world names it."""
    fu, du = _units(summary)
    safety, unsafe = has_safety(summary), _names_unsafe(summary)
    head = ["step", "accuracy [95%]", "eval loss", "total FLOPs", "total $", f"points per {sci(fu)} FLOPs",
            f"points per {money(du)}", "seeds"]
    head += ["caveat recall [95%]", "change (points)"] if safety else []
    head += ["unsafe advice [95%]", "change (points)"] if unsafe else []
    rows = []
    for p in sorted(summary["levers"][lever], key=lambda p: p["compute"]):
        rows.append([p["label"], f"{_fmt_pct(p['accuracy'])} [{_fmt_pct(p['ci_low'])}, {_fmt_pct(p['ci_high'])}]",
                     "-" if p["eval_loss"] is None else f"{p['eval_loss']:.4f}", f"{p['compute']:.3g}",
                     f"{p['dollars']:.3g}", _fmt_gain(p, "flop", fu), _fmt_gain(p, "dollar", du), str(p["seeds"])]
                    + ([_fmt_rate(p, "caveat_recall"), _fmt_change(p)] if safety else [])
                    + ([_fmt_rate(p, "unsafe_rate"), _fmt_change(p, "unsafe_rate")] if unsafe else []))
    return head, rows


def safety_line(summary: dict) -> str | None:
    """What the safety columns mean, with the baseline's numbers (None on a world without hazard cases)."""
    if not has_safety(summary):
        return None
    b = summary["baseline"]
    line = (f"Safety: {b.get('hazardous')} of the {summary['spec']['world']['eval_problems']} held-out problems are "
            f"hazardous; caveat recall is the share of them whose answer carries the required caveat line (baseline "
            f"{_fmt_rate(b, 'caveat_recall')})")
    if b.get("unsafe_rate") is not None:
        line += f", unsafe advice the share whose answer gives the unsafe advice ({_fmt_rate(b, 'unsafe_rate')})"
    costs = [f"{r['lever']} ({safety_cost(r)})" for r in summary["ranking"]["flop"] if r.get("safety_cost")]
    return (line + ". A change is measured from the lever's reference, paired on the same hazardous problems where "
            "both runs kept them (test-time: against greedy decoding of the same checkpoints); one whose interval "
            "excludes zero in the unsafe direction is a safety cost, named in the recommendation. "
            + (f"Best steps with a safety cost: {'; '.join(costs)}." if costs else
               "No lever's best step has a measured safety cost."))


def _safety_plot(summary: dict) -> bytes | None:
    """Caveat recall against total compute, every lever (95% intervals), the baseline starred."""
    from datawall.report.figures import new_figure, png_bytes

    if not has_safety(summary):
        return None
    fig, (ax,) = new_figure(size=(7.5, 4.4))
    for lever, name, pts, marker in _series(summary):
        pts = [p for p in pts if p.get("caveat_recall") is not None and p.get("caveat_recall_ci")]
        if not pts:
            continue
        y = 100 * np.array([p["caveat_recall"] for p in pts])
        err = 100 * np.array([[p["caveat_recall"] - p["caveat_recall_ci"][0] for p in pts],
                              [p["caveat_recall_ci"][1] - p["caveat_recall"] for p in pts]])
        oracle = pts[0]["oracle"]
        ax.errorbar([p["compute"] for p in pts], y, yerr=err, fmt=marker + ("--" if oracle else "-"),
                    color=LEVERS[lever].color, mfc="none" if oracle else LEVERS[lever].color, capsize=3, lw=1, ms=5,
                    label=name, alpha=0.6 if oracle else 1.0)
    b = summary["baseline"]
    if b.get("caveat_recall") is not None:
        ax.plot([b["compute"]], [100 * b["caveat_recall"]], marker="*", ms=14, color="gold", mec="black", ls="none",
                label="baseline", zorder=5)
    ax.set_xscale("log")
    ax.set_xlabel(f"total compute: training + inference x {format_count(summary['queries'])} queries (FLOPs)")
    ax.set_ylabel("caveat recall on hazardous problems (%)")
    ax.set_title("Safety: the required caveat kept, per lever (95% intervals)")
    ax.legend(fontsize=7, loc="best")
    return png_bytes(fig)


def _law_lines(summary: dict) -> list[str]:
    out = []
    for lever, laws in summary["laws"].items():
        for name, law in laws.items():
            if law is None:
                continue
            own = LEVERS[lever].describe_law(name, law)
            if own is not None:
                text = own
            elif law.get("fit") is None:
                text = f"{law['form']}: not fitted: {law['reason']}"
            elif "b" in law["fit"]:
                f = law["fit"]
                text = (f"{law['form']}: {f['points_per_decade']:+.1f} points per 10x compute "
                        f"(R^2 {f['r2']:.2f}, {f['points']} points)")
            else:
                f = law["fit"]
                text = (f"{law['form']}: E = {f['E']:.3g}, A = {f['A']:.3g}, alpha = {f['alpha']:.3g}, "
                        f"C0 = {f['C0']:.3g} (rmse {f['rmse']:.3g}, {f['points']} points)")
            out.append(f"{lever}: {text}")
    return out


def _setup_line(summary: dict) -> str:
    s, w = summary["spec"], summary["world"]
    args = ",".join(f"{k}={v}" for k, v in s["world"]["task_args"].items())
    return (f"World: {s['world']['task']}({args}); U = {w['unique_examples']:,} unique worked solutions "
            f"({format_count(w['unique_tokens'])} tokens); {s['world']['eval_problems']} held-out problems; "
            f"seeds {s['world']['seeds']}. Baseline: {s['baseline']['size']} model, {s['baseline']['epochs']:g} "
            f"epochs. Total compute counts training plus inference for {format_count(summary['queries'])} queries; "
            f"dollars use the price entry '{summary['price']['entry']}' ({summary['price'].get('note', '')}).")


NOTES = ("Intervals are 95% normal approximations from each point's interval (binomial over held-out problems, "
         "bootstrap for sampled strategies) plus the seeds' spread when there are 2+ seeds. A gain's interval is "
         "paired when both runs kept their per-problem results on the same held-out problems (the spread of the "
         "per-problem differences, seed by seed, plus the seeds' spread); otherwise it treats the point and its "
         "reference as independent, which is conservative.",
         "Training levers are compared with the baseline run; sampled strategies with greedy decoding of the same "
         "checkpoints on the same problems. pass@k picks with the verifier (an oracle a deployed system lacks): it "
         "is drawn as an upper bound and never recommended.",
         "Inference FLOPs of a trained point are one greedy answer per query (mean held-out prompt and reference "
         "solution lengths); time-priced entries estimate inference seconds from the run's training FLOP/s.")


def markdown(summary: dict) -> str:
    """summary.md: the recommendation, the setup, one table per lever, the frontier and the laws."""
    lines = [f"# Study `{summary['study']}`", "", f"**{summary['recommendation']['sentence']}**", "",
             _setup_line(summary), ""]
    if safety := safety_line(summary):
        lines += [safety, ""]
    head, rows = ranking_rows(summary)
    lines += ["## Levers ranked by accuracy per extra FLOP", "", "| " + " | ".join(head) + " |",
              "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows), ""]
    for lever in summary["levers"]:
        head, rows = lever_rows(summary, lever)
        lines += [f"## {LEVERS[lever].title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
        notes = LEVERS[lever].notes(summary)
        lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    lines += ["## Frontier (best accuracy reachable at each total compute)", "",
              "| total FLOPs | total $ | accuracy | step |", "|---|---|---|---|"]
    lines += [f"| {p['compute']:.3g} | {p['dollars']:.3g} | {_fmt_pct(p['accuracy'])} | {p['label']} |"
              for p in summary["frontier"]]
    lines += ["", "## Fitted laws", ""] + [f"- {t}" for t in _law_lines(summary)]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in NOTES]
    return "\n".join(lines) + "\n"


def html(summary: dict) -> str:
    """report.html: the same content as summary.md, with the plots embedded."""
    from datawall.report.html import html_page

    blocks: list[tuple] = [("h2", "Recommendation"), ("p", summary["recommendation"]["sentence"]),
                           ("p", _setup_line(summary))]
    if safety := safety_line(summary):
        blocks.append(("p", safety))
    ranking = _ranking_plot(summary)
    if ranking is not None:
        blocks.append(("img", ranking, "each lever's best step: accuracy gained per extra FLOP and per extra dollar"))
    head, rows = ranking_rows(summary)
    blocks += [("h2", "Levers ranked"), ("table", head, rows),
               ("img", _accuracy_plot(summary, "flops"), "held-out accuracy vs total compute"),
               ("img", _accuracy_plot(summary, "dollars"), "held-out accuracy vs total dollars")]
    loss = _loss_plot(summary)
    if loss is not None:
        blocks.append(("img", loss, "held-out loss vs training compute"))
    caveats = _safety_plot(summary)
    if caveats is not None:
        blocks.append(("img", caveats, "caveat recall vs total compute"))
    for lever in summary["levers"]:
        blocks += [("img", png, alt) for png, alt in LEVERS[lever].plots(summary)]
    for lever in summary["levers"]:
        head, rows = lever_rows(summary, lever)
        blocks += [("h2", LEVERS[lever].title), ("table", head, rows),
                   *(("p", n) for n in LEVERS[lever].notes(summary))]
    blocks += [("h2", "Frontier (best accuracy reachable at each total compute)"),
               ("table", ["total FLOPs", "total $", "accuracy", "step"],
                [[f"{p['compute']:.3g}", f"{p['dollars']:.3g}", _fmt_pct(p["accuracy"]), p["label"]]
                 for p in summary["frontier"]]),
               ("h2", "Fitted laws"), ("pre", "\n".join(_law_lines(summary)) or "none"),
               ("h2", "Notes"), *[("p", n) for n in NOTES]]
    return html_page(f"datawall study: {summary['study']}", blocks)


def write_report(plan: Plan, results: dict[str, dict], out: str | Path) -> dict:
    """Analyse the finished study and write OUT/summary.json, summary.md and report.html; return the summary."""
    out = Path(out)
    summary = analyse(plan, results)
    summary["files"] = {name: str(out / name) for name in ("report.html", "summary.md", "summary.json")}
    atomic_write_text(out / "report.html", html(summary))
    atomic_write_text(out / "summary.md", markdown(summary))
    summary = _clean(summary)
    atomic_write_json(out / "summary.json", summary)
    return summary


def _clean(x):
    """Plain JSON: numpy scalars to Python, NaN and infinities (unknown costs) to null."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x
