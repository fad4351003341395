"""The preference lever: the baseline checkpoint tuned on graded pairs of its own answers (the DPO family).

Each grader-noise value is one point, one `prefer` job per seed on that seed's baseline checkpoint: answers to
train-split prompts past the U real examples (prompts are free; graders are not), compared and judged by simulated
graders with that noise (and the section's bias), then DPO on the pairs, scored greedily on held-out problems. Its
cost on the one axis: the baseline's training plus the lever's sampling and tuning FLOPs, and in dollars the
graders' comparisons besides; inference per query stays the baseline's (same model). On a world with hazard cases
each point carries the tuned policy's caveat recall, paired with the baseline's (measure.safety_point); a section's
`bias = "ignores-caveat"` gives graders blind to the caveats.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from datawall.errors import DatawallError
from datawall.prefer.config import DPOConfig, PairsConfig
from datawall.prefer.graders import AGGREGATES, BIASES
from datawall.study.jobs import Job
from datawall.study.levers.base import Count, Float, Int, Lever, LeverSection, Point
from datawall.study.levers.measure import accuracy_se, combine, interval, safety_point

if TYPE_CHECKING:
    from datawall.study.plan import Plan, PlanBuilder
    from datawall.study.spec import StudySpec

NAME = "preference"


class Preference(LeverSection):
    """DPO on graded pairs of the baseline's own answers (one point per grader noise)."""

    noise: list[Annotated[Float, Field(ge=0, le=1)]] = Field([0.0], description="grader flip rates, one point each")
    bias: str = Field("none", description="grader bias: none, " + ", ".join(BIASES))
    strength: Annotated[Float, Field(ge=0, le=1)] = 0.0
    graders: Annotated[Int, Field(ge=1)] = 1
    aggregate: Literal[AGGREGATES] = "majority"
    prompts: Count = Field(1000, description="train-split prompts past U whose answers are compared")
    n: Annotated[Int, Field(ge=2)] = PairsConfig.default("n")
    comparisons: Count | None = Field(None, description="comparisons per prompt (default: every pair)")
    price: str = Field("human-grader", description="price-table entry of one grader comparison")
    loss: Literal["sigmoid", "ipo", "hinge", "robust"] = DPOConfig.default("loss")
    beta: Annotated[Float, Field(gt=0)] = DPOConfig.default("beta")
    nll: Annotated[Float, Field(ge=0)] = DPOConfig.default("nll")
    length_alpha: Annotated[Float, Field(ge=0)] = DPOConfig.default("length_alpha")
    epochs: Annotated[Float, Field(gt=0)] = DPOConfig.default("epochs")
    lr: Annotated[Float, Field(gt=0)] = DPOConfig.default("lr")
    problems: Count | None = Field(None, description="held-out problems (default: world.eval_problems)")

    @field_validator("noise")
    @classmethod
    def _sorted(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("give at least one grader noise")
        return sorted(set(v))

    @model_validator(mode="after")
    def _grader(self) -> Preference:
        from datawall.prefer.graders import GraderConfig

        GraderConfig(bias=self.bias, strength=self.strength)  # the same checks as `prefer pairs`
        return self


def _config(spec: StudySpec, model_key: str, seed: int, noise: float) -> dict:
    p = spec.levers.preference
    return {"model": model_key, "task": spec.world.task, "task_args": dict(spec.world.task_args),
            "first_problem": spec.world.unique_examples, "prompts": p.prompts, "n": p.n,
            "comparisons": p.comparisons, "graders": p.graders,
            "grader": {"noise": noise, "bias": p.bias, "strength": p.strength}, "aggregate": p.aggregate,
            "price": p.price, "loss": p.loss, "beta": p.beta, "nll": p.nll, "length_alpha": p.length_alpha,
            "epochs": p.epochs, "lr": p.lr, "eval_problems": p.problems or spec.world.eval_problems, "seed": seed,
            "device": spec.train.device}


def jobs(spec: StudySpec, plan: PlanBuilder, base: Point) -> list[Point]:
    """One prefer job per (noise, seed) on that seed's baseline checkpoint."""
    p = spec.levers.preference
    _grader_price(spec)  # a wrong entry fails the plan, not the report
    q = plan.query_flops(base.setting.size)
    # sampling: prompts x n answers; tuning: about a pair per prompt, both rows, forward + backward, per epoch
    est = p.prompts * p.n * q + 6 * p.prompts * p.epochs * q
    out = []
    for noise in p.noise:
        keys = tuple(plan.add(Job("prefer", _config(spec, key, seed, noise), deps=(key,)), est, NAME)
                     for seed, key in zip(spec.world.seeds, base.pretrain, strict=True))
        out.append(Point(NAME, base.setting, base.pretrain, keys))
    return out


def _grader_price(spec: StudySpec) -> float:
    """Dollars per comparison of the section's grader entry, from the study's price table."""
    from datawall.economics.prices import grader_price

    try:
        return grader_price(spec.levers.preference.price, spec.prices.file).dollars_per_comparison
    except DatawallError as e:
        raise DatawallError(f"levers.preference.price: {e}") from None


def points(plan: Plan, mine: list[Point], base: dict, results: dict[str, dict], price) -> list[dict]:
    """Each noise value's tuned checkpoints, averaged over seeds, with the graders' dollars counted (comparisons x
    the study's price per comparison, so a [prices] file that changes it applies)."""
    spec = plan.spec
    per_comparison = _grader_price(spec)
    out = []
    for point in mine:
        rs = [results[k] for k in point.jobs]
        noise = plan.job(point.jobs[0]).config["grader"]["noise"]
        acc, se = combine([r["accuracy"] for r in rs], [accuracy_se(r) for r in rs])
        lo, hi = interval(acc, se)
        lever_flops = float(np.mean([r["flops"] for r in rs]))
        lever_seconds = float(np.mean([r["wall_seconds"] for r in rs]))
        comparisons = float(np.mean([r["grader_comparisons"] for r in rs]))
        graders = comparisons * per_comparison
        train_flops = base["train_flops"] + lever_flops
        train_dollars = base["train_dollars"] + price.dollars(0.0, 0.0, lever_flops, lever_seconds) + graders
        q_flops, q_dollars = base["inference_flops_per_query"], base["dollars_per_query"]
        out.append({
            "lever": NAME, "size": base["size"], "epochs": base["epochs"], "strategy": "greedy", "n": 1,
            "oracle": False, "seeds": len(rs), "runs": list(point.jobs), "noise": noise,
            "params": base["params"], "train_flops": train_flops,
            "train_seconds": base["train_seconds"] + lever_seconds,
            "train_dollars": train_dollars, "grader_dollars": graders, "dollars_per_comparison": per_comparison,
            "comparisons": comparisons,
            "pairs": float(np.mean([r["pairs"] for r in rs])),
            "label_accuracy": float(np.mean([r["label_accuracy"] or 0.0 for r in rs])),
            "completion_tokens": float(np.mean([r["completion_tokens_after"] for r in rs])),
            "inference_flops_per_query": q_flops, "dollars_per_query": q_dollars,
            "compute": train_flops + q_flops * spec.queries.expected,
            "dollars": train_dollars + q_dollars * spec.queries.expected,
            "accuracy": acc, "accuracy_se": se, "ci_low": lo, "ci_high": hi,
            "accuracy_seeds": [r["accuracy"] for r in rs], "eval_loss": None, "eval_loss_seeds": [],
            "per_problem_seeds": [r.get("per_problem") for r in rs],  # paired gains over the baseline
        } | safety_point(rs))  # a world with hazard cases: the tuned policy's caveats, paired with the baseline's
    return out


def label(p: dict, base: dict) -> str:
    """"tuning on 350 graded pairs (graders flip 10%)"."""
    return f"tuning on {p['pairs']:.0f} graded pairs (graders flip {p['noise']:.0%})"


def plots(summary: dict) -> list[tuple[bytes, str]]:
    """Accuracy against grader noise, the baseline as a line."""
    from datawall.report.figures import new_figure, png_bytes

    pts = sorted(summary["levers"].get(NAME) or [], key=lambda p: p["noise"])
    if len(pts) < 2:
        return []
    fig, (ax,) = new_figure(size=(6.0, 4.0))
    x = [100 * p["noise"] for p in pts]
    y = 100 * np.array([p["accuracy"] for p in pts])
    err = 100 * np.array([[p["accuracy"] - p["ci_low"] for p in pts], [p["ci_high"] - p["accuracy"] for p in pts]])
    ax.errorbar(x, y, yerr=err, fmt="o-", capsize=3, color="C5", label="after preference tuning")
    base = summary.get("baseline")
    if base:
        ax.axhline(100 * base["accuracy"], color="gray", ls="--", lw=1, label="baseline")
    ax.set_xlabel("grader noise (% of verdicts flipped)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.legend(fontsize=8)
    return [(png_bytes(fig), "accuracy vs grader noise")]


LEVER = Lever(name=NAME, section=Preference, title="Preference tuning (graded pairs, DPO)",
              noun="preference tuning", color="C5", jobs=jobs, points=points, label=label,
              tag=lambda p: f"noise {p['noise']:.0%}", plots=plots)
