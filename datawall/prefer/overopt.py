"""Reward-model over-optimisation, as Gao, Schulman & Hilton 2022 (arXiv:2210.10760) measured it.

A policy optimised against a proxy reward (a reward model fitted to graders' pairs) climbs the proxy while the
gold reward (here the verifier, which the graders approximate) first rises, then falls. Both are drawn against
d = sqrt(KL(pi || pi_0)). For best-of-n the KL is known in closed form, KL = log n - (n - 1)/n (Stiennon et al.
2020, appendix), and the gold gain follows R_bon(d) = d (alpha - beta d); for RL the KL is measured and
R_RL(d) = d (alpha - beta log d). Both forms are linear in (alpha, beta), so each fit is one least-squares
solve through the origin; the peaks are d* = alpha / (2 beta) (best-of-n) and d* = exp(alpha / beta - 1) (RL).

`best_of_n_curve` reads a `datawall think --orm RM --strategies best-of-n` directory: the gold reward of the
sample the reward model picks among k (the exact expectation over random k-subsets of the n drawn,
datawall.testtime.estimators.best_of_k) and the proxy reward of the same pick (the reward model's logit), each
as a gain over k = 1, averaged over problems; the peak's interval is a bootstrap over problems.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datawall.errors import DatawallError


def bon_kl(n: float | np.ndarray) -> float | np.ndarray:
    """KL(best-of-n || policy) = log n - (n - 1) / n (Stiennon et al. 2020)."""
    n = np.asarray(n, dtype=np.float64)
    return np.log(n) - (n - 1) / n


def n_for_kl(kl: float, n_max: float = 1e12) -> float:
    """The (real) n at which best-of-n reaches `kl` (inf when past n_max)."""
    from scipy.optimize import brentq

    if kl <= 0:
        return 1.0
    if bon_kl(n_max) < kl:
        return math.inf
    return float(brentq(lambda n: bon_kl(n) - kl, 1.0, n_max))


def r_bon(d: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Gao et al.'s best-of-n form R(d) = d (alpha - beta d)."""
    d = np.asarray(d, dtype=np.float64)
    return d * (alpha - beta * d)


def r_rl(d: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Gao et al.'s RL form R(d) = d (alpha - beta log d) (0 at d = 0)."""
    d = np.asarray(d, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > 0, d * (alpha - beta * np.log(np.where(d > 0, d, 1.0))), 0.0)


def _lstsq(columns: list[np.ndarray], r: np.ndarray) -> tuple[float, float]:
    """Coefficients (alpha, beta) of r ~ alpha columns[0] + beta columns[1]."""
    (alpha, beta), *_ = np.linalg.lstsq(np.stack(columns, axis=1), r, rcond=None)
    return float(alpha), float(beta)


def _check(d: Sequence[float], r: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    d, r = np.asarray(d, dtype=np.float64), np.asarray(r, dtype=np.float64)
    if d.shape != r.shape or d.ndim != 1 or len(d) < 2:
        raise DatawallError(f"a fit needs two or more (d, R) points of equal count, got {d.shape} and {r.shape}")
    if (d < 0).any() or not (np.isfinite(d).all() and np.isfinite(r).all()):
        raise DatawallError("d must be >= 0 and every value finite")
    if (d > 0).sum() < 2:
        raise DatawallError("a fit needs two or more points with d > 0")
    return d, r


def fit_bon(d: Sequence[float], r: Sequence[float]) -> dict:
    """Least-squares alpha, beta of R = d (alpha - beta d), its rmse, and the peak (d*, R*) when beta > 0."""
    d, r = _check(d, r)
    alpha, beta = _lstsq([d, -d * d], r)
    out = {"form": "R = d (alpha - beta d)", "alpha": alpha, "beta": beta,
           "rmse": float(np.sqrt(np.mean((r_bon(d, alpha, beta) - r) ** 2)))}
    if beta > 0:  # turns down: the peak is at alpha / (2 beta), or at d = 0 when the gain falls from the start
        peak = max(0.0, alpha / (2 * beta))
        out |= {"peak_d": peak, "peak_r": float(r_bon(peak, alpha, beta)), "peak_n": n_for_kl(peak * peak)}
    return out


def fit_rl(d: Sequence[float], r: Sequence[float]) -> dict:
    """Least-squares alpha, beta of R = d (alpha - beta log d), its rmse, and the peak (d*, R*) when beta > 0."""
    d, r = _check(d, r)
    pos = d > 0
    logd = np.zeros_like(d)
    logd[pos] = np.log(d[pos])
    alpha, beta = _lstsq([d, -d * logd], r)
    out = {"form": "R = d (alpha - beta log d)", "alpha": alpha, "beta": beta,
           "rmse": float(np.sqrt(np.mean((r_rl(d, alpha, beta) - r) ** 2)))}
    if beta > 0 and alpha / beta - 1 < 700:  # a beta of rounding error puts the peak past any float: none
        peak = math.exp(alpha / beta - 1)
        out |= {"peak_d": peak, "peak_r": beta * peak, "peak_kl": peak * peak}
    return out


# --- best-of-n from a think run ---------------------------------------------------------------------------

def _read_jsonl(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatawallError(f"{path}: missing (run `datawall think --orm RM --strategies best-of-n --out "
                            f"{path.parent}` first)") from None
    return [json.loads(line) for line in lines if line.strip()]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def per_problem_curves(rewards: np.ndarray, scores: np.ndarray, ks: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Gold and proxy reward of the reward model's pick among k, per problem [P, len(ks)] (rewards, scores [P, n];
    the proxy is the reward model's logit of its own pick)."""
    from datawall.testtime.estimators import best_of_k

    proxy = _logit(scores)
    gold = np.stack([best_of_k(r, s, ks) for r, s in zip(rewards, scores, strict=True)])
    prox = np.stack([best_of_k(p, s, ks) for p, s in zip(proxy, scores, strict=True)])
    return gold, prox


def best_of_n_curve(think_dir: str | Path, n_boot: int = 500, seed: int = 0) -> dict:
    """Gold and proxy gains of best-of-n against d = sqrt(KL), Gao et al.'s fit of the gold gain and its peak."""
    think_dir = Path(think_dir)
    samples = _read_jsonl(think_dir / "samples.jsonl")
    scores = {(r["problem"], r["sample"]): r["score"] for r in _read_jsonl(think_dir / "scores.jsonl")}
    by_problem: dict[int, dict[int, float]] = {}
    for row in samples:
        by_problem.setdefault(row["problem"], {})[row["sample"]] = row["reward"]
    n = min(len(v) for v in by_problem.values())
    missing = [(q, j) for q in by_problem for j in range(n) if (q, j) not in scores]
    if missing:
        raise DatawallError(f"{think_dir / 'scores.jsonl'}: no score for problem {missing[0][0]} sample "
                            f"{missing[0][1]} (rerun think with --orm)")
    if n < 4:
        raise DatawallError(f"{think_dir}: {n} samples per problem; an over-optimisation curve needs --n-max 4 or "
                            "more")
    problems = sorted(by_problem)
    rewards = np.array([[by_problem[q][j] for j in range(n)] for q in problems])
    score = np.array([[scores[(q, j)] for j in range(n)] for q in problems])
    ks = sorted({*(2 ** i for i in range(int(math.log2(n)) + 1)), n})
    gold, proxy = per_problem_curves(rewards, score, ks)
    d = np.sqrt(bon_kl(np.array(ks)))
    g, p = gold.mean(0), proxy.mean(0)
    gold_fit = fit_bon(d, g - g[0])
    proxy_fit = fit_bon(d, p - p[0])
    rng = np.random.default_rng(seed)
    peaks = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(problems), len(problems))
        gb = gold[pick].mean(0)
        fit = fit_bon(d, gb - gb[0])
        peaks.append(fit.get("peak_d", math.inf))
    peaks = np.array(peaks)
    finite = peaks[np.isfinite(peaks)]
    info = {}
    if (think_dir / "results.json").is_file():
        res = json.loads((think_dir / "results.json").read_text())
        info = {"task": res.get("task"), "reward_model": (res.get("reward_model") or {}).get("path")}
    return {**info, "think_dir": str(think_dir), "problems": len(problems), "n_max": n, "n": ks,
            "kl": bon_kl(np.array(ks)).tolist(), "d": d.tolist(), "gold": g.tolist(), "proxy": p.tolist(),
            "gold_gain": (g - g[0]).tolist(), "proxy_gain": (p - p[0]).tolist(),
            "gold_fit": gold_fit, "proxy_fit": proxy_fit,
            # the interval of the peak over bootstrap replicates that have one (None when most have none)
            "peak_d_ci": [float(np.quantile(finite, 0.025)), float(np.quantile(finite, 0.975))]
            if len(finite) >= n_boot / 2 else None,
            "peak_found_share": float(np.isfinite(peaks).mean()),
            "best_measured_n": ks[int(np.argmax(g))]}


def describe_curve(c: dict) -> str:
    """The curve as a small table and the fit in words."""
    lines = [f"best-of-n on {c['problems']} problems, up to n = {c['n_max']}",
             f"{'n':>5} {'d':>6} {'gold':>7} {'proxy':>7}"]
    lines += [f"{n:>5} {d:>6.3f} {g:>7.3f} {p:>7.3f}" for n, d, g, p in zip(c["n"], c["d"], c["gold"], c["proxy"],
                                                                          strict=True)]
    f = c["gold_fit"]
    lines.append(f"gold gain = d ({f['alpha']:.3f} - {f['beta']:.3f} d), rmse {f['rmse']:.4f}")
    if "peak_d" in f:
        ci = c["peak_d_ci"]
        where = f" (95% bootstrap [{ci[0]:.2f}, {ci[1]:.2f}])" if ci else ""
        lines.append(f"peak at d = {f['peak_d']:.2f}{where}, n ~ {f['peak_n']:.3g}, gain {f['peak_r']:+.3f} "
                     f"({c['peak_found_share']:.0%} of bootstrap replicates turn down)")
    else:
        lines.append("no peak: the fitted gold gain does not turn down (beta <= 0)")
    return "\n".join(lines)


def plot_curve(c: dict, path: str | Path) -> None:
    """Gold and proxy gains against d with the fitted gold curve, as a PNG."""
    from datawall.report.figures import new_figure, png_bytes

    fig, (ax,) = new_figure(size=(6.0, 4.0))
    d = np.array(c["d"])
    ax.plot(d, c["gold_gain"], "o", color="C0", label="gold (verifier) gain")
    ax.plot(d, c["proxy_gain"], "s", color="C3", label="proxy (reward model logit) gain")
    grid = np.linspace(0, d.max() * 1.1, 100)
    f = c["gold_fit"]
    ax.plot(grid, r_bon(grid, f["alpha"], f["beta"]), "-", color="C0", alpha=0.6, label="fit d (alpha - beta d)")
    if "peak_d" in f and f["peak_d"] < grid[-1]:
        ax.axvline(f["peak_d"], color="C0", ls=":", lw=1)
    for n, x, y in zip(c["n"], d, c["gold_gain"], strict=True):
        ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.set_xlabel("d = sqrt(KL(best-of-n || policy))")
    ax.set_ylabel("gain over n = 1")
    ax.legend(fontsize=8)
    from datawall.atomic import atomic_write_bytes

    atomic_write_bytes(path, png_bytes(fig))


# --- RL from a `datawall rl --track-kl N` run ------------------------------------------------------------------

def _rl_points(run_dir: Path) -> tuple[dict, list[dict]]:
    """The run's config.json and its tracked points: the start (step 0, KL 0) and every evaluation after it."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except FileNotFoundError:
        raise DatawallError(f"{run_dir}: no config.json; not a `datawall rl` run directory") from None
    if config.get("kind") != "rl":
        raise DatawallError(f"{run_dir / 'config.json'}: kind {config.get('kind')!r}, not an rl run")
    try:
        start = json.loads((run_dir / "before.json").read_text()).get("track")
    except FileNotFoundError:
        start = None
    if start is None:
        raise DatawallError(f"{run_dir}: not tracked; run `datawall rl ... --track-kl N` (N held-out problems) to log "
                            "the proxy reward, gold reward and KL at every evaluation")
    rows = [r for r in _read_jsonl(run_dir / "metrics.jsonl") if "track_kl" in r]
    points = [{"step": 0, **start}] + [{"step": r["step"], **{k: v for k, v in r.items() if k.startswith("track_")}}
                                       for r in rows]
    if len(points) < 3:
        raise DatawallError(f"{run_dir}: {len(points) - 1} tracked evaluation(s); a fit needs two or more (lower "
                            "--eval-every or run more --steps)")
    return config, points


def rl_curve(run_dir: str | Path, max_d: float | None = None, n_boot: int = 500, seed: int = 0) -> dict:
    """Gold and proxy gains of an RL run against d = sqrt(measured KL), Gao et al.'s RL fit of both and the gold
    peak, with an interval from the points' own sampling noise (each point redrawn from its mean and standard
    error over problems; the points come from one trajectory, so this is not the spread between runs).

    `max_d`: fit only the points with d <= max_d (every point is still listed): the form is for the regime before
    the gold reward reaches its floor (a verifier's 0), where a collapsed policy's curve flattens whatever d does."""
    run_dir = Path(run_dir)
    config, points = _rl_points(run_dir)

    def col(key: str) -> np.ndarray:
        return np.array([p.get(key, math.nan) for p in points], dtype=np.float64)

    kl, gold, proxy = col("track_kl"), col("track_gold"), col("track_proxy")
    se = {k: np.nan_to_num(col(f"track_{k}_se")) for k in ("kl", "gold", "proxy")}
    d = np.sqrt(np.clip(kl, 0.0, None))  # an estimate of a small KL can come out below 0
    fit = d <= max_d if max_d is not None else np.ones(len(d), dtype=bool)
    if (d[fit] > 0).sum() < 2:
        raise DatawallError(f"--max-d {max_d}: leaves {int((d[fit] > 0).sum())} point(s) with d > 0; a fit needs two")
    gold_fit, proxy_fit = fit_rl(d[fit], gold[fit] - gold[0]), fit_rl(d[fit], proxy[fit] - proxy[0])
    rng = np.random.default_rng(seed)
    peaks = []
    for _ in range(n_boot):
        db = np.sqrt(np.clip(kl + rng.normal(0.0, 1.0, len(kl)) * se["kl"], 0.0, None))
        gb = gold + rng.normal(0.0, 1.0, len(gold)) * se["gold"]
        try:
            peaks.append(fit_rl(db[fit], gb[fit] - gb[0]).get("peak_d", math.inf))
        except DatawallError:  # fewer than two points left with d > 0
            peaks.append(math.inf)
    peaks = np.array(peaks)
    finite = peaks[np.isfinite(peaks)]
    best = int(np.argmax(gold))
    rl = config.get("rl", {})
    return {"run_dir": str(run_dir), "task": rl.get("task"), "reward": config.get("reward"),
            "problems": rl.get("track_kl"), "samples": rl.get("group"),
            "step": [p["step"] for p in points], "kl": kl.tolist(), "d": d.tolist(),
            "gold": gold.tolist(), "proxy": proxy.tolist(),
            "gold_gain": (gold - gold[0]).tolist(), "proxy_gain": (proxy - proxy[0]).tolist(),
            "gold_se": se["gold"].tolist(), "proxy_se": se["proxy"].tolist(), "kl_se": se["kl"].tolist(),
            "tokens": col("track_tokens").tolist(),
            "max_d": max_d, "fitted_points": int(fit.sum()), "gold_fit": gold_fit, "proxy_fit": proxy_fit,
            "peak_d_ci": [float(np.quantile(finite, 0.025)), float(np.quantile(finite, 0.975))]
            if len(finite) >= n_boot / 2 else None,
            "peak_found_share": float(np.isfinite(peaks).mean()),
            "best_measured_step": points[best]["step"], "best_measured_d": float(d[best])}


def describe_rl_curve(c: dict) -> str:
    """The RL curve as a small table and the fits in words."""
    lines = [f"RL against {c['reward']}: {c['problems']} held-out problems x {c['samples']} samples per evaluation",
             f"{'step':>5} {'KL':>7} {'d':>6} {'gold':>7} {'proxy':>7} {'tokens':>6}"]
    lines += [f"{s:>5} {k:>7.3f} {d:>6.3f} {g:>7.3f} {p:>7.3f} {t:>6.1f}" for s, k, d, g, p, t in
              zip(c["step"], c["kl"], c["d"], c["gold"], c["proxy"], c["tokens"], strict=True)]
    if c["max_d"] is not None:
        lines.append(f"fitted: the {c['fitted_points']} points with d <= {c['max_d']:g}")
    for name in ("gold", "proxy"):
        f = c[f"{name}_fit"]
        lines.append(f"{name} gain = d ({f['alpha']:.3f} - {f['beta']:.3f} log d), rmse {f['rmse']:.4f}" +
                     (f", peak at d = {f['peak_d']:.3g} (KL {f['peak_kl']:.3g}), gain {f['peak_r']:+.3f}"
                      if "peak_d" in f else ", no peak (beta <= 0)"))
    ci = c["peak_d_ci"]
    lines.append(f"gold peak: {c['peak_found_share']:.0%} of redrawn curves turn down" +
                 (f", d in [{ci[0]:.3g}, {ci[1]:.3g}] (95%)" if ci else "") +
                 f"; best measured gold at step {c['best_measured_step']} (d = {c['best_measured_d']:.3f})")
    return "\n".join(lines)


def plot_rl_curve(c: dict, path: str | Path) -> None:
    """Gold and proxy gains of an RL run against d with both fits, as a PNG."""
    from datawall.atomic import atomic_write_bytes
    from datawall.report.figures import new_figure, png_bytes

    fig, (ax,) = new_figure(size=(6.0, 4.0))
    d = np.array(c["d"])
    ax.errorbar(d, c["gold_gain"], yerr=1.96 * np.array(c["gold_se"]), fmt="o", color="C0", ms=4,
                label="gold (verifier) gain")
    ax.plot(d, c["proxy_gain"], "s", color="C3", ms=4, label="proxy (reward model) gain")
    grid = np.linspace(0, min(d.max(), c["max_d"] or math.inf) * 1.1, 100)  # the fits over the fitted range
    for name, color in (("gold", "C0"), ("proxy", "C3")):
        f = c[f"{name}_fit"]
        ax.plot(grid, r_rl(grid, f["alpha"], f["beta"]), "-", color=color, alpha=0.6,
                label=f"{name} fit d (alpha - beta log d)")
    f = c["gold_fit"]
    if "peak_d" in f and f["peak_d"] < grid[-1]:
        ax.axvline(f["peak_d"], color="C0", ls=":", lw=1)
    ax.set_xlabel("d = sqrt(KL(policy || start)), measured")
    ax.set_ylabel("gain over the start")
    ax.legend(fontsize=8)
    atomic_write_bytes(path, png_bytes(fig))


def is_rl_run(directory: str | Path) -> bool:
    """Whether `directory` holds a `datawall rl` run (its config.json says kind rl)."""
    try:
        return json.loads((Path(directory) / "config.json").read_text()).get("kind") == "rl"
    except (FileNotFoundError, ValueError):
        return False
