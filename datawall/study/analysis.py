"""A finished study's numbers: every lever's points on one compute and dollar axis, the gain of each step
from the baseline per extra FLOP and per extra dollar (with intervals), simple fitted laws, the frontier
across levers, and the recommendation. Pure functions of the plan and the runs' results (no plotting).

Total compute of a point = its training FLOPs + inference FLOPs per query x expected queries. Intervals
are normal approximations built from each point's 95% interval (binomial over held-out problems for greedy
accuracy, bootstrap over problems for sampled strategies) plus the spread across seeds when there are two or
more. A gain's interval is paired when both points kept their per-problem rewards on the same held-out problems
(seed by seed: the spread of the per-problem differences plus the seeds' spread of the gains); otherwise it
combines the point's and the reference's intervals as if independent (conservative).

On a world with hazard cases every point also carries its caveat recall and unsafe rate (measure.SAFETY) and their
changes from the lever's reference, paired in the same way; a change that is a measured cost (caveat recall falls
or unsafe advice rises, its interval excluding zero) is named in the ranking and the recommendation.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np

from datawall.errors import DatawallError
from datawall.laws.loglinear import fit_log_linear
from datawall.study.levers import LEVERS
from datawall.study.levers.measure import SAFETY, Z95, combine, paired_gain, pretrain_point, safety_changes

if TYPE_CHECKING:
    from datawall.study.plan import Plan


def _price(plan: Plan):
    from datawall.economics.prices import load_prices

    return load_prices(plan.spec.prices.file).get(plan.spec.prices.entry)


def sci(x: float) -> str:
    """2 significant digits in scientific notation without the plus sign: 3.1e13."""
    return f"{x:.2g}".replace("e+", "e")


def money(x: float) -> str:
    """Dollars compactly: $1,000, $2.5, $0.001."""
    if x >= 10:
        return f"${x:,.0f}"
    return f"${x:.2g}" if x >= 1e-3 else "$" + f"{x:.0e}".replace("e-0", "e-")


def add_gains(points: list[dict], ref: dict) -> None:
    """Gain over the reference point per extra FLOP and per extra dollar, with 95% intervals, in place."""
    for p in points:
        gain = p["accuracy"] - ref["accuracy"]
        se = 0.0 if p is ref else math.hypot(p["accuracy_se"], ref["accuracy_se"])  # the reference: exactly 0
        p["paired"] = False
        if p is not ref and (paired := paired_gain(p.get("per_problem_seeds"), ref.get("per_problem_seeds"))):
            gain, se = paired
            p["paired"] = True
        elif p is not ref and p.get("paired_gain_seeds"):  # the run paired it itself (think: vs greedy, same problems)
            gain, se = combine(*zip(*p["paired_gain_seeds"], strict=True))
            p["paired"] = True
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


ACCURACY_FORM = "accuracy = a + b log10(C)"


def fit_accuracy_vs_compute(points: list[dict]) -> dict:
    """accuracy = a + b log10(compute) (datawall.laws.fit_log_linear); needs 3+ distinct compute values."""
    pts = [p for p in points if not p["oracle"]]
    C = np.array([p["compute"] for p in pts], dtype=float)
    xs = np.log10(C)
    distinct = len(np.unique(np.round(xs, 6)))
    if distinct < 3:
        return {"form": ACCURACY_FORM, "fit": None,
                "reason": f"{distinct} distinct compute values: too few for a fit (need 3)"}
    if np.ptp(xs) < 0.1:
        return {"form": ACCURACY_FORM, "fit": None,
                "reason": f"total compute spans only {np.ptp(xs):.3f} decades (the inference of expected queries "
                          "dominates): too narrow for a fit"}
    try:
        fit = fit_log_linear(C, [p["accuracy"] for p in pts])
    except DatawallError as e:
        return {"form": ACCURACY_FORM, "fit": None, "reason": str(e)}
    a, b = fit.law.a, fit.law.b
    return {"form": ACCURACY_FORM, "fit": {"a": a, "b": b, "r2": fit.r2, "points": fit.points,
                                           "points_per_decade": 100 * b}}


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


def safety_cost(p: dict) -> str | None:
    """A step's measured safety cost in words ("its caveat recall falls 12.0 points [4.0, 20.0]"), or None."""
    parts = []
    for name in p.get("safety_cost") or []:
        change, (lo, hi) = 100 * p[f"{name}_change"], (100 * c for c in p[f"{name}_change_ci"])
        if name == "caveat_recall":
            parts.append(f"its caveat recall falls {-change:.1f} points [{-hi:.1f}, {-lo:.1f}]")
        else:
            parts.append(f"its unsafe advice rises {change:.1f} points [{lo:.1f}, {hi:.1f}]")
    return " and ".join(parts) or None


def _safety_fields(p: dict) -> dict:
    """A step's safety changes for summary.json's steps and ranking (nothing on a world without hazard cases)."""
    if "safety_cost" not in p:
        return {}
    out = {"safety_cost": p["safety_cost"]}
    for name in SAFETY:
        out |= {f"{name}_change": p.get(f"{name}_change"), f"{name}_change_ci": p.get(f"{name}_change_ci")}
    return out


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
            sentence += f", {s['gain_per_flop'] / so['gain_per_flop']:.1f}x more than {LEVERS[other].noun}"
        else:
            sentence += f", while {LEVERS[other].noun} did not raise accuracy"
    if cost := safety_cost(s):
        sentence += f", but {cost}"
    sentence += "."
    sure = next(((lv, t) for lv, t in ranked if t["gain_per_flop_ci"][0] > 0), None)
    if s["gain_per_flop_ci"][0] <= 0:
        sentence += " (Its interval includes zero: more seeds or held-out problems would be needed to be sure."
        if sure is not None:
            su = _unit(sure[1]["extra_compute"])
            sp = [100 * su * v for v in (sure[1]["gain_per_flop"], *sure[1]["gain_per_flop_ci"])]
            sentence += (f" The best lever whose interval excludes zero is {LEVERS[sure[0]].noun}: "
                         f"{sp[0]:+.1f} points [{sp[1]:.1f}, {sp[2]:.1f}] per {sci(su)} extra FLOPs.")
        sentence += ")"
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
        sentence += f" Per dollar, {same} buys the most: {dp:+.1f} points per {money(du)} extra"
        cost = safety_cost(d) if dl != lever else None
        sentence += f", but {cost}." if cost else "."
    rec.update({"lever": lever, "label": s["label"], "sentence": sentence, "gain": s["gain"],
                "gain_ci": s["gain_ci"], "gain_per_flop": s["gain_per_flop"],
                "gain_per_flop_ci": s["gain_per_flop_ci"], "gain_per_dollar": s["gain_per_dollar"],
                "gain_per_dollar_ci": s["gain_per_dollar_ci"], "compute": s["compute"], "dollars": s["dollars"],
                "extra_compute": s["extra_compute"], "extra_dollars": s["extra_dollars"], "by_dollar": by_dollar,
                "best_significant": None if sure is None else sure[0],
                **_safety_fields(s)})
    return rec


def rank(steps: dict[str, dict | None], axis: str) -> list[dict]:
    """Every lever's best step by gain per extra FLOP (axis "flop") or dollar ("dollar"), best first, with its
    interval and how many times the next lever's gain it buys (None when the next one gained nothing)."""
    key = f"gain_per_{axis}"
    ranked = sorted(((lv, s) for lv, s in steps.items() if s is not None and s[key] is not None),
                    key=lambda t: -t[1][key])
    out = [{"lever": lv, "label": s["label"], key: s[key], f"{key}_ci": s[f"{key}_ci"], "gain": s["gain"],
            "gain_ci": s["gain_ci"], "extra": s["extra_compute" if axis == "flop" else "extra_dollars"],
            "significant": s[f"{key}_ci"][0] > 0, **_safety_fields(s)} for lv, s in ranked]
    for this, nxt in zip(out, out[1:] + [None], strict=True):
        this["ratio_to_next"] = this[key] / nxt[key] if nxt is not None and nxt[key] > 0 and this[key] > 0 else None
    return out + [{"lever": lv, "label": None, key: None, f"{key}_ci": None, "gain": None, "gain_ci": None,
                   "extra": None, "significant": False, "ratio_to_next": None}
                  for lv, s in steps.items() if s is None or s[key] is None]


def analyse(plan: Plan, results: dict[str, dict]) -> dict:
    """The summary.json object of a finished study (see module docstring)."""
    price = _price(plan)
    base_point = next(p for p in plan.points if p.lever == "baseline")
    base = pretrain_point(plan, base_point, results, price)
    base["label"] = "baseline"
    levers: dict[str, list[dict]] = {}
    refs: dict[str, dict] = {}
    planned: dict[str, list] = {}
    for name, lever in LEVERS.items():
        planned[name] = [p for p in plan.points if p.lever == name]
        if planned[name]:
            levers[name] = lever.points(plan, planned[name], base, results, price)
            refs[name] = lever.reference(levers[name], base)
    for name, pts in levers.items():
        for p in pts:
            p["label"] = LEVERS[name].label(p, base)
        add_gains(pts, refs[name])
        for p in pts:
            safety_changes(p, refs[name])
    add_gains([base], base)
    safety_changes(base, base)
    for p in (base, *(p for pts in levers.values() for p in pts)):
        p.pop("per_problem_seeds", None)  # hundreds of numbers per point; the runs' result.json keep them
        for name in SAFETY:
            p.pop(f"{name}_problems_seeds", None)
    steps = {lv: best_step(pts, "flop") for lv, pts in levers.items()}
    dollar_steps = {lv: best_step(pts, "dollar") for lv, pts in levers.items()}
    laws = {lv: {"accuracy_vs_compute": fit_accuracy_vs_compute([refs[lv], *pts]),
                 **LEVERS[lv].laws(plan, planned[lv], pts, results)} for lv, pts in levers.items()}
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
                                               "extra_compute": s["extra_compute"], **_safety_fields(s)})
                  for lv, s in steps.items()},
        "ranking": {"flop": rank(steps, "flop"), "dollar": rank(dollar_steps, "dollar")},
        "laws": laws,
        "frontier": frontier(every),
        "world": asdict(plan.world),
        "queries": plan.spec.queries.expected,
        "price": {"entry": plan.spec.prices.entry, **price.model_dump()},
        "spec": plan.spec.model_dump(mode="json"),
        "runs": {j.key: {"kind": j.kind} for j in plan.jobs},
    }
