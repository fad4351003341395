"""collapse.png: held-out loss, accuracy, tail accuracy, the samples' share in the tail, answer entropy and distinct
4-grams by generation, one colour per mode (thick: the mean over seeds; thin: each seed)."""

from __future__ import annotations

from pathlib import Path

PANELS = (("heldout_loss", "held-out loss (real reference solutions, nats/token)", None),
          ("accuracy", "held-out accuracy (greedy)", None),
          ("tail_accuracy", "accuracy on the tail classes", None),
          ("tail_share", "samples whose answer is in the tail", None),
          ("diversity", "answer entropy of samples (bits)", "answer_entropy"),
          ("diversity", "distinct 4-grams of samples", "distinct_4"))
COLORS = {"replace": "C3", "accumulate": "C0", "mix": "C2"}


def _value(row: dict, key: str, inner: str | None):
    v = row[key]
    return v[inner] if inner is not None and v is not None else v


def plot_collapse(result: dict, path: str | Path) -> bytes:
    """Draw the four panels of a collapse.json object and write them as a PNG; the bytes."""
    from datawall.report.figures import new_figure, save_png

    cfg = result["config"]
    fig, axes = new_figure(2, 3, size=(4.4, 3.4))
    for ax, (key, label, inner) in zip(axes, PANELS, strict=True):
        for mode in cfg["modes"]:
            color = COLORS.get(mode, "C4")
            mine = [r for r in result["runs"] if r["mode"] == mode]
            gens = sorted({r["generation"] for r in mine})
            for seed in cfg["seeds"]:
                pts = sorted((r for r in mine if r["seed"] == seed), key=lambda r: r["generation"])
                ax.plot([r["generation"] for r in pts], [_value(r, key, inner) for r in pts], color=color, lw=0.6,
                        alpha=0.4)
            means = []
            for g in gens:
                vals = [_value(r, key, inner) for r in mine if r["generation"] == g]
                vals = [v for v in vals if v is not None]
                means.append(sum(vals) / len(vals) if vals else float("nan"))
            name = f"mix ({cfg['real_frac']:.0%} real)" if mode == "mix" else mode
            ax.plot(gens, means, "o-", color=color, lw=2, label=name)
        if key == "tail_share" and result["runs"]:
            ax.axhline(result["runs"][0]["tail_share_real"], color="0.5", ls="--", lw=1, label="real problems")
        ax.set_xlabel("generation")
        ax.set_ylabel(label, fontsize=8)
        ax.set_xticks(range(cfg["generations"] + 1))
    axes[0].legend(fontsize=8)
    args = ",".join(f"{k}={v}" for k, v in cfg["task_args"].items())
    seeds = len(cfg["seeds"])
    fig.suptitle(f"Model collapse: {cfg['task']}({args}), {cfg['size']} models, U = {cfg['real_examples']}, "
                 f"{seeds} seed{'s' if seeds > 1 else ''}", fontsize=10)
    return save_png(fig, path)
