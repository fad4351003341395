"""Report sections of `datawall think` beyond the strategy curves: thinking budgets and the compute-optimal policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def thinking_blocks(out: Path, results: dict) -> tuple[list[tuple], list[str]]:
    """Accuracy vs mean thinking tokens (PNG) and a table per budget; nothing when no budgets were run."""
    tb = results.get("thinking_budget")
    if not tb:
        return [], []
    from datawall.report.figures import new_figure, save_png

    pts = tb["points"]
    x = np.array([p["thinking_tokens"] for p in pts], dtype=float)
    acc = np.array([p["accuracy"] for p in pts], dtype=float)
    lo = np.array([p["ci_low"] for p in pts], dtype=float)
    hi = np.array([p["ci_high"] for p in pts], dtype=float)
    fig, (ax,) = new_figure()
    ax.errorbar(np.maximum(x, 0.5), acc, yerr=[acc - lo, hi - acc], marker="o", capsize=3, label="budget forcing")
    for p, xi, a in zip(pts, x, acc, strict=True):
        ax.annotate(f"B={p['budget']}", (max(xi, 0.5), a), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("mean thinking tokens per query")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"accuracy vs thinking tokens ({tb['decoding']}, extend {tb['extend']})")
    ax.legend()
    name = "accuracy_vs_thinking_tokens.png"
    header = ["budget", "accuracy", "ci", "thinking tokens", "forced", "tokens/query", "FLOPs/query", "$/query"]
    rows = [[p["budget"], _fmt(p["accuracy"]), f"[{_fmt(p['ci_low'])}, {_fmt(p['ci_high'])}]",
             _fmt(p["thinking_tokens"]), f"{p['forced']:.0%}", _fmt(p["tokens_per_query"]),
             _fmt(p["flops_per_query"]), _fmt(p["dollars_per_query"])] for p in pts]
    blocks = [("h2", "thinking budget (budget forcing)"),
              ("img", save_png(fig, out / name), "accuracy vs mean thinking tokens (95% bootstrap intervals)"),
              ("table", header, rows)]
    return blocks, [name]


def policy_blocks(results: dict) -> list[tuple]:
    """The compute-optimal policy as a table: per difficulty bin and budget, the best strategy and its gain."""
    pol = results.get("policy")
    if not pol:
        return []
    if "error" in pol:
        return [("h2", "compute-optimal policy"), ("p", pol["error"])]
    axis = {"flops": "FLOPs", "tokens": "tokens"}.get(pol["axis"], pol["axis"])
    header = ["bin (0 = easiest)", "problems", "pass@1", *(f"{_fmt(b)} {axis}" for b in pol["budgets"])]

    def cell(best, acc, gain) -> str:
        return "-" if best is None else f"{best}: {_fmt(acc)} ({_gain(gain)})"

    rows = []
    for b, size in enumerate(pol["bin_sizes"]):
        if size == 0:
            continue
        rows.append([b, size, _fmt(pol["bin_pass1"][b]),
                     *(cell(best, a, g) for best, a, g in zip(pol["best"][b], pol["accuracy"][b], pol["gain"][b],
                                                              strict=True))])
    rows.append(["all", sum(pol["bin_sizes"]), "", *(f"{_fmt(a)} ({_gain(g)})" if a is not None else "-"
                                                    for a, g in zip(pol["overall"], pol["overall_gain"],
                                                                    strict=True))])
    note = (f"Best strategy@k per difficulty bin within each budget per query ({axis}), its accuracy and its "
            f"gain over the baseline at the same budget. Baseline: {pol['baseline_note']}. Difficulty: "
            f"{pol['difficulty']}; gains are in-sample.")
    return [("h2", "compute-optimal policy"), ("p", note), ("table", header, rows)]


def _gain(g: float | None) -> str:
    """Gain over the baseline; 'no baseline' where the baseline has no configuration within the budget."""
    return "no baseline" if g is None else f"{g:+.2f}"


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"
