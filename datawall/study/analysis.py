"""A finished study's numbers: every lever's points on one compute and dollar axis, the gain of each step
from the baseline per extra FLOP and per extra dollar (with intervals), simple fitted laws, the frontier
across levers, and the recommendation. Pure functions of the plan and the runs' results (no plotting).

Total compute of a point = its training FLOPs + inference FLOPs per query x expected queries. Intervals
are normal approximations built from each point's 95% interval (binomial over held-out problems for greedy
accuracy, bootstrap over problems for sampled strategies) plus the spread across seeds when there are two or
more; a gain's interval combines the point's and the baseline's as if independent (conservative, since both
are scored on the same problems).
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np

from datawall.study.plan import Plan, Point

Z95 = 1.959964
LEVER_NAMES = {"scale": "a bigger model", "repetition": "more epochs", "test_time": "more samples per query"}


def _se(result: dict) -> float:
    """Standard error of an accuracy from its 95% interval."""
    lo, hi = result.get("ci_low"), result.get("ci_high")
    if lo is None or hi is None:
        return 0.0
    return max(0.0, (hi - lo) / (2 * Z95))


def _combine(accs: list[float], ses: list[float]) -> tuple[float, float]:
    """Mean over seeds and its standard error: problem sampling plus (with 2+ seeds) the seeds' spread."""
    k = len(accs)
    var = float(np.mean(np.square(ses))) / k
    if k >= 2:
        var += float(np.var(accs, ddof=1)) / k
    return float(np.mean(accs)), math.sqrt(var)


def _price(plan: Plan):
    from datawall.economics.prices import load_prices

    return load_prices(plan.spec.prices.file).get(plan.spec.prices.entry)


def _interval(acc: float, se: float) -> tuple[float, float]:
    return max(0.0, acc - Z95 * se), min(1.0, acc + Z95 * se)


def sci(x: float) -> str:
    """2 significant digits in scientific notation without the plus sign: 3.1e13."""
    return f"{x:.2g}".replace("e+", "e")


def money(x: float) -> str:
    """Dollars compactly: $1,000, $2.5, $0.001."""
    if x >= 10:
        return f"${x:,.0f}"
    return f"${x:.2g}" if x >= 1e-3 else "$" + f"{x:.0e}".replace("e-0", "e-")


def _epochs(e: float) -> str:
    return f"{e:g} epoch" + ("" if e == 1 else "s")


def step_label(lever: str, p: dict, base: dict) -> str:
    """What a step from the baseline does, in words."""
    if lever == "scale":
        if p["size"] == base["size"]:
            return f"the baseline ({base['size']} model)"
        return f"training a {p['size']} model instead of {base['size']}"
    if lever == "repetition":
        if p["epochs"] == base["epochs"]:
            return f"the baseline ({_epochs(base['epochs'])})"
        return f"training {_epochs(p['epochs'])} over the data instead of {base['epochs']:g}"
    if p["n"] == 1 and p["strategy"] != "greedy":
        return "one temperature sample instead of greedy decoding"
    if p["strategy"] == "majority":
        return f"sampling {p['n']} answers and voting"
    if p["strategy"] == "pass@k":
        return f"keeping the best of {p['n']} samples (oracle verifier)"
    return "greedy decoding"


def pretrain_point(plan: Plan, point: Point, results: dict[str, dict], price) -> dict:
    """A trained setting averaged over seeds: accuracy, eval loss, training and total compute and dollars."""
    rs = [results[k] for k in point.pretrain]
    acc, se = _combine([r["accuracy"] for r in rs], [_se(r) for r in rs])
    train_flops = float(np.mean([r["flops"] for r in rs]))
    wall = float(np.mean([r["wall_seconds"] for r in rs]))
    secs_per_flop = wall / train_flops if train_flops > 0 else math.nan
    q_flops = plan.infer_flops[point.setting.size]
    train_dollars = price.dollars(0.0, 0.0, train_flops, wall)
    q_dollars = price.dollars(0.0, 0.0, q_flops, q_flops * secs_per_flop)
    losses = [r.get("eval_loss") for r in rs]
    lo, hi = _interval(acc, se)
    return {
        "lever": point.lever, "size": point.setting.size, "epochs": point.setting.epochs, "strategy": "greedy",
        "n": 1, "oracle": False, "seeds": len(rs), "runs": list(point.pretrain),
        "params": rs[0].get("params"), "train_flops": train_flops, "train_seconds": wall,
        "train_dollars": train_dollars, "inference_flops_per_query": q_flops, "dollars_per_query": q_dollars,
        "compute": train_flops + q_flops * plan.spec.queries.expected,
        "dollars": train_dollars + q_dollars * plan.spec.queries.expected,
        "accuracy": acc, "accuracy_se": se, "ci_low": lo, "ci_high": hi,
        "accuracy_seeds": [r["accuracy"] for r in rs],
        "eval_loss": float(np.mean(losses)) if all(x is not None for x in losses) else None,
        "eval_loss_seeds": losses,
    }


def test_time_points(plan: Plan, point: Point, base: dict, results: dict[str, dict], price) -> list[dict]:
    """One point per (strategy, n) of the think runs on the baseline checkpoint(s), averaged over seeds."""
    tt = plan.spec.levers.test_time
    thinks = [results[k] for k in point.think]
    secs_per_flop = base["train_seconds"] / base["train_flops"] if base["train_flops"] > 0 else math.nan
    # placed relative to the baseline: its estimated greedy cost plus what sampling measurably adds to the
    # measured greedy cost, so the greedy point sits on the baseline and the extra costs are exact
    greedy = [next(iter(t["strategies"]["greedy"])) for t in thinks]
    shift = base["inference_flops_per_query"] - float(np.mean([r["flops_per_query"] for r in greedy]))
    out = []
    for strategy in dict.fromkeys(["greedy", *tt.strategies]):
        # one sample is one sample: pass@1 repeats majority@1
        ns = [1] if strategy == "greedy" else [n for n in tt.n if n > 1 or strategy != "pass@k"]
        for n in ns:
            rows = [next((r for r in t["strategies"][strategy] if r["n"] == n), None) for t in thinks]
            if any(r is None for r in rows):
                continue
            acc, se = _combine([r["accuracy"] for r in rows], [_se(r) for r in rows])
            q_flops = float(np.mean([r["flops_per_query"] for r in rows])) + shift
            q_dollars = price.dollars(0.0, 0.0, q_flops, q_flops * secs_per_flop)
            lo, hi = _interval(acc, se)
            out.append({
                "lever": "test_time", "size": base["size"], "epochs": base["epochs"], "strategy": strategy, "n": n,
                "oracle": strategy == "pass@k", "seeds": len(rows), "runs": list(point.think),
                "params": base["params"], "train_flops": base["train_flops"], "train_seconds": base["train_seconds"],
                "train_dollars": base["train_dollars"], "inference_flops_per_query": q_flops,
                "dollars_per_query": q_dollars,
                "tokens_per_query": float(np.mean([r["tokens_per_query"] for r in rows])),
                "compute": base["train_flops"] + q_flops * plan.spec.queries.expected,
                "dollars": base["train_dollars"] + q_dollars * plan.spec.queries.expected,
                "accuracy": acc, "accuracy_se": se, "ci_low": lo, "ci_high": hi,
                "accuracy_seeds": [r["accuracy"] for r in rows], "eval_loss": None, "eval_loss_seeds": [],
            })
    return out


def add_gains(points: list[dict], ref: dict) -> None:
    """Gain over the reference point per extra FLOP and per extra dollar, with 95% intervals, in place."""
    for p in points:
        gain = p["accuracy"] - ref["accuracy"]
        se = math.hypot(p["accuracy_se"], ref["accuracy_se"])
        p["gain"], p["gain_ci"] = gain, [gain - Z95 * se, gain + Z95 * se]
        p["extra_compute"] = p["compute"] - ref["compute"]
        p["extra_dollars"] = p["dollars"] - ref["dollars"]
        for axis, extra in (("flop", p["extra_compute"]), ("dollar", p["extra_dollars"])):
            ok = extra > 0 and not p["oracle"] and math.isfinite(extra)
            p[f"gain_per_{axis}"] = gain / extra if ok else None
            p[f"gain_per_{axis}_ci"] = [c / extra for c in p["gain_ci"]] if ok else None


def best_step(points: list[dict], axis: str = "flop") -> dict | None:
    """The point with the highest gain per extra FLOP (or dollar) among those costing more than the reference."""
    ok = [p for p in points if p[f"gain_per_{axis}"] is not None]
    return max(ok, key=lambda p: p[f"gain_per_{axis}"]) if ok else None


def fit_accuracy_vs_compute(points: list[dict]) -> dict:
    """accuracy = a + b log10(compute) by least squares; needs 3+ distinct compute values to say anything."""
    pts = [p for p in points if not p["oracle"]]
    xs = np.log10([p["compute"] for p in pts])
    ys = np.array([p["accuracy"] for p in pts])
    form = "accuracy = a + b log10(C)"
    distinct = len(np.unique(np.round(xs, 6)))
    if distinct < 3:
        return {"form": form, "fit": None, "reason": f"{distinct} distinct compute values: too few for a fit (need 3)"}
    if np.ptp(xs) < 0.1:
        return {"form": form, "fit": None, "reason": f"total compute spans only {np.ptp(xs):.3f} decades (the "
                                                     "inference of expected queries dominates): too narrow for a fit"}
    b, a = np.polyfit(xs, ys, 1)
    pred = a + b * xs
    ss = float(np.sum((ys - ys.mean()) ** 2))
    r2 = 1 - float(np.sum((ys - pred) ** 2)) / ss if ss > 0 else 1.0
    return {"form": "accuracy = a + b log10(C)", "fit": {"a": float(a), "b": float(b), "r2": r2, "points": len(pts),
                                                         "points_per_decade": 100 * float(b)}}


def fit_loss_vs_compute(points: list[dict]) -> dict:
    """eval loss = E + A C^-alpha over training FLOPs (scipy least squares); needs 4+ distinct points."""
    from scipy.optimize import curve_fit

    pts = [p for p in points if p.get("eval_loss") is not None]
    C = np.array([p["train_flops"] for p in pts], dtype=float)
    L = np.array([p["eval_loss"] for p in pts], dtype=float)
    distinct = len(np.unique(np.round(np.log10(C), 6))) if len(C) else 0
    form = "eval loss = E + A (C / C0)^-alpha, C = training FLOPs"
    if distinct < 4:
        return {"form": form, "fit": None, "reason": f"{distinct} distinct training budgets: too few for a "
                                                     "3-parameter law (need 4)"}
    c0 = float(np.exp(np.log(C).mean()))

    def law(c, E, A, alpha):
        return E + A * (c / c0) ** (-alpha)

    try:
        (E, A, alpha), _ = curve_fit(law, C, L, p0=[max(L.min() * 0.5, 1e-6), L.mean(), 0.3],
                                     bounds=([0, 0, 0], [np.inf, np.inf, 5]), maxfev=20000)
    except (RuntimeError, ValueError) as e:
        return {"form": form, "fit": None, "reason": f"did not converge ({e})"}
    resid = L - law(C, E, A, alpha)
    return {"form": form, "fit": {"E": float(E), "A": float(A), "alpha": float(alpha), "C0": c0,
                                  "rmse": float(np.sqrt(np.mean(resid ** 2))), "points": len(pts)}}


def frontier(points: list[dict]) -> list[dict]:
    """The best accuracy reachable at each total compute: points more accurate than every cheaper one."""
    best, out = -1.0, []
    for p in sorted((p for p in points if not p["oracle"]), key=lambda p: (p["compute"], -p["accuracy"])):
        if p["accuracy"] > best:
            best = p["accuracy"]
            out.append({k: p[k] for k in ("lever", "size", "epochs", "strategy", "n", "compute", "dollars",
                                          "accuracy", "ci_low", "ci_high")} | {"label": p["label"]})
    return out


def _unit(x: float) -> float:
    """The power of ten at or below x (the step the sentence speaks in)."""
    return 10.0 ** math.floor(math.log10(x)) if x > 0 else 1.0


def recommend(steps: dict[str, dict | None], dollar_steps: dict[str, dict | None], base: dict) -> dict:
    """The lever whose best step buys the most accuracy per extra FLOP (and per extra dollar), in one sentence."""
    ranked = sorted(((lv, s) for lv, s in steps.items() if s is not None), key=lambda t: -t[1]["gain_per_flop"])
    at = f"At {sci(base['compute'])} FLOPs (baseline {base['size']} model, {base['epochs']:g} epochs, " \
         f"{100 * base['accuracy']:.0f}% held-out)"
    rec = {"lever": None, "sentence": "", "gain_per_flop": None, "gain_per_flop_ci": None, "gain_per_dollar": None,
           "gain_per_dollar_ci": None, "baseline_compute": base["compute"], "baseline_dollars": base["dollars"],
           "baseline_accuracy": base["accuracy"]}
    if not ranked:
        rec["sentence"] = f"{at}, no lever has a point that costs more than the baseline, so none can be compared."
        return rec
    lever, s = ranked[0]
    if s["gain_per_flop"] <= 0:
        rec["sentence"] = (f"{at}, no lever raised held-out accuracy at the measured points (best: "
                           f"{s['label']}, {100 * s['gain']:+.1f} points); keep the baseline or measure larger steps.")
        return rec
    unit = _unit(s["extra_compute"])
    pts = [100 * unit * v for v in (s["gain_per_flop"], *s["gain_per_flop_ci"])]
    sentence = (f"{at}, {s['label']} buys the most: {pts[0]:+.1f} points [{pts[1]:.1f}, {pts[2]:.1f}] per "
                f"{sci(unit)} extra FLOPs")
    if len(ranked) > 1:
        other, so = ranked[1]
        if so["gain_per_flop"] > 0:
            sentence += f", {s['gain_per_flop'] / so['gain_per_flop']:.1f}x more than {LEVER_NAMES[other]}"
        else:
            sentence += f", while {LEVER_NAMES[other]} did not raise accuracy"
    sentence += "."
    if s["gain_per_flop_ci"][0] <= 0:
        sentence += " (Its interval includes zero: more seeds or held-out problems would be needed to be sure.)"
    dranked = sorted(((lv, d) for lv, d in dollar_steps.items() if d is not None),
                     key=lambda t: -t[1]["gain_per_dollar"])
    by_dollar = None
    if dranked and dranked[0][1]["gain_per_dollar"] > 0:
        dl, d = dranked[0]
        du = _unit(d["extra_dollars"])
        dp = 100 * du * d["gain_per_dollar"]
        by_dollar = {"lever": dl, "label": d["label"], "gain_per_dollar": d["gain_per_dollar"],
                     "gain_per_dollar_ci": d["gain_per_dollar_ci"]}
        same = "the same lever" if dl == lever else d["label"]
        sentence += f" Per dollar, {same} buys the most: {dp:+.1f} points per {money(du)} extra."
    rec.update({"lever": lever, "label": s["label"], "sentence": sentence, "gain": s["gain"],
                "gain_ci": s["gain_ci"], "gain_per_flop": s["gain_per_flop"],
                "gain_per_flop_ci": s["gain_per_flop_ci"], "gain_per_dollar": s["gain_per_dollar"],
                "gain_per_dollar_ci": s["gain_per_dollar_ci"], "compute": s["compute"], "dollars": s["dollars"],
                "extra_compute": s["extra_compute"], "extra_dollars": s["extra_dollars"], "by_dollar": by_dollar})
    return rec


def analyse(plan: Plan, results: dict[str, dict]) -> dict:
    """The summary.json object of a finished study (see module docstring)."""
    price = _price(plan)
    base_point = next(p for p in plan.points if p.lever == "baseline")
    base = pretrain_point(plan, base_point, results, price)
    base["label"] = "baseline"
    levers: dict[str, list[dict]] = {}
    refs: dict[str, dict] = {}
    for point in plan.points:
        if point.lever in ("scale", "repetition"):
            p = pretrain_point(plan, point, results, price)
            levers.setdefault(point.lever, []).append(p)
            refs[point.lever] = base
        elif point.lever == "test_time":
            levers["test_time"] = test_time_points(plan, point, base, results, price)
            # sampled strategies are compared with greedy decoding on the same problems and checkpoints
            refs["test_time"] = next((p for p in levers["test_time"] if p["strategy"] == "greedy"), base)
    for lever, pts in levers.items():
        for p in pts:
            p["label"] = step_label(lever, p, base)
        add_gains(pts, refs[lever])
    add_gains([base], base)
    steps = {lv: best_step(pts, "flop") for lv, pts in levers.items()}
    dollar_steps = {lv: best_step(pts, "dollar") for lv, pts in levers.items()}
    laws = {lv: {"accuracy_vs_compute": fit_accuracy_vs_compute([refs[lv], *pts])} for lv, pts in levers.items()}
    for lv in ("scale", "repetition"):
        if lv in levers:
            laws[lv]["loss_vs_train_compute"] = fit_loss_vs_compute(levers[lv])
    think_point = next((p for p in plan.points if p.think), None)
    if "test_time" in levers and think_point is not None:
        laws["test_time"]["coverage_law"] = results[think_point.think[0]].get("coverage_law")
    every = [base, *(p for pts in levers.values() for p in pts)]
    return {
        "study": plan.spec.name,
        "recommendation": recommend(steps, dollar_steps, base),
        "baseline": base,
        "levers": levers,
        "steps": {lv: (None if s is None else {"label": s["label"], "gain_per_flop": s["gain_per_flop"],
                                               "gain_per_flop_ci": s["gain_per_flop_ci"],
                                               "gain_per_dollar": s["gain_per_dollar"],
                                               "gain_per_dollar_ci": s["gain_per_dollar_ci"],
                                               "gain": s["gain"], "gain_ci": s["gain_ci"],
                                               "extra_compute": s["extra_compute"]})
                  for lv, s in steps.items()},
        "laws": laws,
        "frontier": frontier(every),
        "world": asdict(plan.world),
        "queries": plan.spec.queries.expected,
        "price": {"entry": plan.spec.prices.entry, **price.model_dump()},
        "spec": plan.spec.model_dump(mode="json"),
        "runs": {j.key: {"kind": j.kind} for j in plan.jobs},
    }
