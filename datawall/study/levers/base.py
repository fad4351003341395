"""What every lever is made of: a spec section, the settings and points it plans, and the Lever record that
names its jobs, points, words and plots (see levers/__init__.py for the registry, docs/study.md for a how-to).

Nothing here imports the rest of the study, so spec, plan, analysis and report can all build on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from datawall.counts import parse_count
from datawall.errors import DatawallError

if TYPE_CHECKING:
    from datawall.study.plan import Plan, PlanBuilder
    from datawall.study.spec import StudySpec


def _no_bool(value: Any) -> Any:
    # TOML's true is an int to pydantic (True == 1); a boolean where a number is expected is a mistake
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
    return value


def _count(value: Any) -> Any:
    """Accept 200k, 3M, 1e13 (strings or numbers) wherever a count is expected; refuse booleans."""
    if isinstance(value, bool):
        raise ValueError(f"expected a count, got the boolean {str(value).lower()}")
    if isinstance(value, str):
        try:
            return parse_count(value)
        except DatawallError as e:
            raise ValueError(str(e).split(": ", 1)[-1]) from None
    return value


def _model_size(size: str) -> str:
    from datawall.model.config import PRESETS as SIZES

    if size.lower() not in SIZES:
        raise ValueError(f"unknown model size {size!r}; sizes: {', '.join(SIZES)}")
    return size


Count = Annotated[int, BeforeValidator(_count), Field(gt=0)]
FloatCount = Annotated[float, BeforeValidator(_count), Field(gt=0)]
Int = Annotated[int, BeforeValidator(_no_bool)]
Float = Annotated[float, BeforeValidator(_no_bool)]
ModelSize = Annotated[str, AfterValidator(_model_size)]  # a model preset name (100k, 1m, ...), as written


class Section(BaseModel):
    """A spec section: unknown keys are an error naming the key."""

    model_config = ConfigDict(extra="forbid")


class LeverSection(Section):
    """The `[levers.NAME]` section of a lever; every lever can be switched off."""

    enabled: bool = True


class Reserved(BaseModel):
    """A lever datawall cannot run yet: accepted only switched off."""

    model_config = ConfigDict(extra="allow")
    enabled: bool = False


@dataclass(frozen=True)
class Setting:
    """One trained configuration: a model size and passes over the U unique examples."""

    size: str
    epochs: float


@dataclass(frozen=True)
class Point:
    """One planned point of a lever: a setting trained once per seed, plus the lever's own runs on it."""

    lever: str  # "baseline" or a lever's name
    setting: Setting
    pretrain: tuple[str, ...]  # pretrain job key per seed
    jobs: tuple[str, ...] = ()  # the lever's own job per seed on those checkpoints (test_time: think runs)


# series of an accuracy plot: (legend label, its points, matplotlib marker)
Series = tuple[str, list[dict], str]


def _baseline(points: list[dict], base: dict) -> dict:
    return base


def _no_laws(plan: Plan, mine: list[Point], points: list[dict], results: dict[str, dict]) -> dict:
    return {}


def _one_series(name: str, points: list[dict]) -> list[Series]:
    return [(name, sorted(points, key=lambda p: p["compute"]), "D")]  # D: a trained point decodes greedily


@dataclass(frozen=True)
class Lever:
    """A lever of the study, registered in `datawall.study.levers.LEVERS` under its name.

    `jobs(spec, plan, base)` adds what the lever needs to the plan (`plan.pretrain(...)`, `plan.add(job,
    flops, lever)`) and returns its Points; `points(plan, mine, base, results, price)` turns its finished runs
    into measured points on the one compute/dollar axis (dicts like `measure.pretrain_point`'s);
    `label(point, base)` says a point as a step from the baseline; `reference(points, base)` is the point its
    gains are measured from.
    """

    name: str
    section: type[LeverSection]  # the pydantic model of [levers.NAME]
    title: str  # its report heading
    noun: str  # the lever in a sentence: "... 3.0x more than {noun}"
    color: str  # its colour in every plot
    jobs: Callable[[StudySpec, PlanBuilder, Point], list[Point]]
    points: Callable[[Plan, list[Point], dict, dict[str, dict], Any], list[dict]]
    label: Callable[[dict, dict], str]
    tag: Callable[[dict], str]  # a point's short name on plots: "1m", "84 ep"
    reference: Callable[[list[dict], dict], dict] = _baseline
    # fits beside the accuracy-vs-compute law every lever gets: name -> law dict
    laws: Callable[[Plan, list[Point], list[dict], dict[str, dict]], dict] = _no_laws
    series: Callable[[str, list[dict]], list[Series]] = _one_series
    plots: Callable[[dict], list[tuple[bytes, str]]] = lambda summary: []  # (PNG, alt text) for the report
    describe_law: Callable[[str, dict], str | None] = lambda name, law: None  # a lever-specific law in words
    notes: Callable[[dict], list[str]] = lambda summary: []  # sentences under its table (synthetic: resemblance)
