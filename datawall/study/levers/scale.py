"""The scale lever: bigger models on the same U examples, at the baseline's epochs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from datawall.study.levers.base import Lever, LeverSection, ModelSize, Point, Setting
from datawall.study.levers.measure import pretrain_point, training_laws

if TYPE_CHECKING:
    from datawall.study.plan import Plan, PlanBuilder
    from datawall.study.spec import StudySpec

NAME = "scale"


class Scale(LeverSection):
    """Bigger models on the same data (baseline epochs over U)."""

    sizes: list[ModelSize] = ["100k", "1m"]


def jobs(spec: StudySpec, plan: PlanBuilder, base: Point) -> list[Point]:
    """One trained point per size, at the baseline's epochs (the baseline's size is the baseline's runs)."""
    return [plan.pretrain(NAME, Setting(size.lower(), base.setting.epochs)) for size in spec.levers.scale.sizes]


def points(plan: Plan, mine: list[Point], base: dict, results: dict[str, dict], price) -> list[dict]:
    """Each size's measured point."""
    return [pretrain_point(plan, p, results, price) for p in mine]


def label(p: dict, base: dict) -> str:
    """"training a 1m model instead of 100k"."""
    if p["size"] == base["size"]:
        return f"the baseline ({base['size']} model)"
    return f"training a {p['size']} model instead of {base['size']}"


LEVER = Lever(name=NAME, section=Scale, title="Scale (model size)", noun="a bigger model", color="C0", jobs=jobs,
              points=points, label=label, tag=lambda p: p["size"], laws=training_laws)
