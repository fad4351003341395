"""The study spec: one task world, one human-data budget U, the levers to pull, and how to price them.

A spec is a TOML file (or an embedded preset, see presets/*.toml). Every section is a pydantic model that
forbids unknown keys, so a typo is an error naming the key (`study.toml: levers.scale.sizs: ...`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from datawall.device import DeviceName
from datawall.errors import DatawallError, validation_error
from datawall.study.levers import LEVERS, RESERVED
from datawall.study.levers.base import Count, Float, FloatCount, Int, ModelSize, Reserved, Section

PRESETS = ("quick", "standard", "gpu")
PRESET_DIR = Path(__file__).with_name("presets")
Positive = Annotated[Int, Field(gt=0)]


class World(Section):
    """The verifiable task world and the finite human data in it."""

    task: str = "arith"
    task_args: dict[str, str] = {}
    unique_examples: Count = Field(2000, description="U: unique worked solutions the study may train on")
    eval_problems: Count = Field(200, description="held-out problems every accuracy is measured on")
    seeds: list[Int] = Field([0], min_length=1, description="training seeds; each run is repeated per seed")

    @field_validator("task_args", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        # tasks parse their own settings from strings (as on the command line); TOML gives ints and bools
        if isinstance(v, dict):
            return {str(k): str(x).lower() if isinstance(x, bool) else str(x) for k, x in v.items()}
        return v

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v


class Train(Section):
    """Training settings shared by every pretraining run of the study."""

    batch_size: Positive = 32
    lr: Annotated[Float, Field(gt=0)] = 3e-3
    lr_by_size: dict[ModelSize, Annotated[Float, Field(gt=0)]] = Field(
        {}, description="peak lr per model size, where it differs from lr (a bigger model wants a smaller one; "
                        "the presets record the per-size sweep they were calibrated with)")
    weight_decay: Annotated[Float, Field(ge=0, description="AdamW's decoupled weight decay on every matrix")] = 0.1
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    seq_len: Annotated[Int, Field(gt=1, description="model context; examples longer than this are an error")] = 256
    device: DeviceName = "cpu"

    @field_validator("lr_by_size")
    @classmethod
    def _lower_sizes(cls, v: dict[str, float]) -> dict[str, float]:
        return {size.lower(): lr for size, lr in v.items()}

    def lr_for(self, size: str) -> float:
        """The peak learning rate of a model size."""
        return self.lr_by_size.get(size.lower(), self.lr)


class Budget(Section):
    """Caps on the study's estimated compute; the plan refuses to start above them, naming what needs most."""

    max_train_flops: FloatCount | None = Field(None, description="pretraining runs only")
    max_train_tokens: Count | None = None
    max_flops: FloatCount | None = Field(None, description="every job: training plus the levers' sampling")


class Queries(Section):
    """How many queries the model will serve: inference FLOPs per query x this joins the training FLOPs."""

    expected: FloatCount = 1_000_000


class Prices(Section):
    """Which price-table entry turns FLOPs (or GPU-hours) into dollars."""

    entry: str = "local-cpu"
    file: str | None = Field(None, description="price-table override (TOML/JSON), relative to the spec file")


class Baseline(Section):
    """The current point every lever starts from."""

    size: ModelSize = "100k"
    epochs: Annotated[Float, Field(gt=0)] = 2.0


class _LeversBase(Section):
    @model_validator(mode="after")
    def _reserved_off(self) -> Any:
        fields = type(self).model_fields
        runs = [name for name, f in fields.items() if f.annotation is not Reserved]
        for name in (name for name, f in fields.items() if f.annotation is Reserved):
            if getattr(self, name).enabled:
                raise ValueError(f"levers.{name}: not available yet (a study runs {_and(runs)}); "
                                 f"set levers.{name}.enabled = false")
        return self


def _and(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


def levers_model(levers: dict | None = None, reserved: tuple[str, ...] = RESERVED) -> type[Section]:
    """The [levers] model: one section per registered lever (default datawall.study.levers), then the reserved."""
    levers = LEVERS if levers is None else levers
    return create_model(
        "Levers", __base__=_LeversBase, __doc__="Every lever's section, in the registry's order.",
        **{name: (lever.section, Field(default_factory=lever.section)) for name, lever in levers.items()},
        **{name: (Reserved, Field(default_factory=Reserved)) for name in reserved},
    )


Levers = levers_model()


class StudySpec(Section):
    """A whole study: world, budget, queries, prices, baseline and levers."""

    name: str = Field("study", pattern=r"^[A-Za-z0-9_.-]+$", description="names the study in the run store")
    world: World = World()
    train: Train = Train()
    budget: Budget = Budget()
    queries: Queries = Queries()
    prices: Prices = Prices()
    baseline: Baseline = Baseline()
    levers: Levers = Levers()


def parse_spec(data: dict, source: str, base_dir: Path | None = None) -> StudySpec:
    """A StudySpec from a parsed TOML dict; errors name `source` and the key at fault."""
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as e:
        raise validation_error(e, source) from None
    if spec.prices.file and base_dir is not None and not Path(spec.prices.file).is_absolute():
        spec = spec.model_copy(update={"prices": spec.prices.model_copy(
            update={"file": str((base_dir / spec.prices.file).resolve())})})
    _check_price(spec, source)
    return spec


def _check_price(spec: StudySpec, source: str) -> None:
    from datawall.economics.prices import load_prices

    try:
        price = load_prices(spec.prices.file).get(spec.prices.entry)
    except DatawallError as e:
        raise DatawallError(f"{source}: prices: {e}") from None
    if price.kind in ("api", "comparison"):
        what = "an api price (dollars per token)" if price.kind == "api" else "a grader's price (per comparison)"
        raise DatawallError(f"{source}: prices.entry: {spec.prices.entry!r} is {what}, which cannot price "
                            "training; use a flops or gpu-hour entry")


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study TOML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DatawallError(f"{path}: cannot read study spec ({e.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DatawallError(f"{path.name}: not valid TOML: {e}") from None
    return parse_spec(data, path.name, base_dir=path.parent)


def preset_text(name: str) -> str:
    """The commented TOML of an embedded preset."""
    if name not in PRESETS:
        raise DatawallError(f"--preset: unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return (PRESET_DIR / f"{name}.toml").read_text(encoding="utf-8")


def load_preset(name: str) -> StudySpec:
    """The StudySpec of an embedded preset."""
    return parse_spec(tomllib.loads(preset_text(name)), f"preset {name}")
