"""The repetition lever: more passes over the same U unique examples, at the baseline's model size."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from datawall.laws import repetition_value
from datawall.study.levers.base import Float, Lever, LeverSection, Point, Setting
from datawall.study.levers.measure import pretrain_point, training_laws

if TYPE_CHECKING:
    from datawall.study.plan import Plan, PlanBuilder
    from datawall.study.spec import StudySpec

NAME = "repetition"


class Repetition(LeverSection):
    """More epochs over the same U unique examples (baseline model size)."""

    epochs: list[Annotated[Float, Field(gt=0)]] = [1.0, 2.0, 4.0]


def jobs(spec: StudySpec, plan: PlanBuilder, base: Point) -> list[Point]:
    """One trained point per epochs value, at the baseline's size."""
    return [plan.pretrain(NAME, Setting(base.setting.size, float(e))) for e in spec.levers.repetition.epochs]


def points(plan: Plan, mine: list[Point], base: dict, results: dict[str, dict], price) -> list[dict]:
    """Each epochs value's measured point."""
    return [pretrain_point(plan, p, results, price) for p in mine]


def _epochs(e: float) -> str:
    return f"{e:g} epoch" + ("" if e == 1 else "s")


def label(p: dict, base: dict) -> str:
    """"training 84 epochs over the data instead of 42"."""
    if p["epochs"] == base["epochs"]:
        return f"the baseline ({_epochs(base['epochs'])})"
    return f"training {_epochs(p['epochs'])} over the data instead of {base['epochs']:g}"


def laws(plan: Plan, mine: list[Point], points: list[dict], results: dict[str, dict]) -> dict:
    """Held-out loss against training FLOPs, and R_D* (what a repeated pass is worth) from the accuracy per seed."""
    epochs = [p["epochs"] for p in points for _ in p["accuracy_seeds"]]
    accuracy = [a for p in points for a in p["accuracy_seeds"]]
    return {**training_laws(plan, mine, points, results),
            "repetition_value": repetition_value.fit_repetition_value(epochs, accuracy)}


def describe_law(name: str, law: dict) -> str | None:
    """The R_D* fit in words (the loss law is described like every lever's)."""
    return repetition_value.describe(law) if name == "repetition_value" else None


LEVER = Lever(name=NAME, section=Repetition, title="Repetition (epochs over U)", noun="more epochs", color="C2",
              jobs=jobs, points=points, label=label, tag=lambda p: f"{p['epochs']:g} ep", laws=laws,
              describe_law=describe_law)
