"""The study spec: one task world, one human-data budget U, the levers to pull, and how to price them.

A spec is a TOML file (or an embedded preset, see presets/*.toml). Every section is a pydantic model that
forbids unknown keys, so a typo is an error naming the key (`study.toml: levers.scale.sizs: ...`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from datawall.counts import parse_count
from datawall.errors import DatawallError, validation_error

PRESETS = ("quick", "standard", "gpu")
PRESET_DIR = Path(__file__).with_name("presets")
TEST_TIME_STRATEGIES = ("greedy", "majority", "pass@k")


def _count(value: Any) -> Any:
    """Accept 200k, 3M, 1e13 (strings or numbers) wherever a count is expected."""
    if isinstance(value, str):
        try:
            return parse_count(value)
        except DatawallError as e:
            raise ValueError(str(e).split(": ", 1)[-1]) from None
    return value


Count = Annotated[int, BeforeValidator(_count), Field(gt=0)]
FloatCount = Annotated[float, BeforeValidator(_count), Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class World(_Section):
    """The verifiable task world and the finite human data in it."""

    task: str = "arith"
    task_args: dict[str, str] = {}
    unique_examples: Count = Field(2000, description="U: unique worked solutions the study may train on")
    eval_problems: Count = Field(200, description="held-out problems every accuracy is measured on")
    seeds: list[int] = Field([0], min_length=1, description="training seeds; each run is repeated per seed")

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


class Train(_Section):
    """Training settings shared by every pretraining run of the study."""

    batch_size: int = Field(32, gt=0)
    lr: float = Field(3e-3, gt=0)
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    seq_len: int = Field(256, gt=1, description="model context; examples longer than this are an error")
    device: str = "cpu"


class Budget(_Section):
    """Caps on the study's total (estimated) training compute; the plan refuses to start above them."""

    max_train_flops: FloatCount | None = None
    max_train_tokens: Count | None = None


class Queries(_Section):
    """How many queries the model will serve: inference FLOPs per query x this joins the training FLOPs."""

    expected: FloatCount = 1_000_000


class Prices(_Section):
    """Which price-table entry turns FLOPs (or GPU-hours) into dollars."""

    entry: str = "local-cpu"
    file: str | None = Field(None, description="price-table override (TOML/JSON), relative to the spec file")


class Baseline(_Section):
    """The current point every lever starts from."""

    size: str = "100k"
    epochs: float = Field(2.0, gt=0)


class Scale(_Section):
    """Bigger models on the same data (baseline epochs over U)."""

    enabled: bool = True
    sizes: list[str] = ["100k", "1m"]


class Repetition(_Section):
    """More epochs over the same U unique examples (baseline model size)."""

    enabled: bool = True
    epochs: list[Annotated[float, Field(gt=0)]] = [1.0, 2.0, 4.0]


class TestTime(_Section):
    """More samples per query on the baseline checkpoint(s)."""

    enabled: bool = True
    strategies: list[str] = ["majority", "pass@k"]
    n: list[Annotated[int, Field(gt=0)]] = [1, 2, 4, 8]
    problems: Count | None = Field(None, description="held-out problems (default: world.eval_problems)")
    temperature: float = Field(1.0, ge=0)

    @field_validator("strategies")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for s in v:
            if s not in TEST_TIME_STRATEGIES:
                raise ValueError(f"unknown strategy {s!r}; choose from {', '.join(TEST_TIME_STRATEGIES)}")
        if not v:
            raise ValueError("give at least one strategy")
        return v

    @field_validator("n")
    @classmethod
    def _sorted(cls, v: list[int]) -> list[int]:
        return sorted(set(v))


class Reserved(BaseModel):
    """A lever datawall cannot run yet: accepted only switched off."""

    model_config = ConfigDict(extra="allow")
    enabled: bool = False


class Levers(_Section):
    scale: Scale = Scale()
    repetition: Repetition = Repetition()
    test_time: TestTime = TestTime()
    synthetic: Reserved = Reserved()
    rl: Reserved = Reserved()
    preference: Reserved = Reserved()

    @model_validator(mode="after")
    def _reserved_off(self) -> Levers:
        for name in ("synthetic", "rl", "preference"):
            if getattr(self, name).enabled:
                raise ValueError(f"levers.{name}: not available yet (a study runs scale, repetition and "
                                 f"test_time); set levers.{name}.enabled = false")
        return self


class StudySpec(_Section):
    """A whole study: world, budget, queries, prices, baseline and levers."""

    name: str = Field("study", pattern=r"^[A-Za-z0-9_.-]+$", description="names the study in the run store")
    world: World = World()
    train: Train = Train()
    budget: Budget = Budget()
    queries: Queries = Queries()
    prices: Prices = Prices()
    baseline: Baseline = Baseline()
    levers: Levers = Levers()

    @model_validator(mode="after")
    def _check_sizes(self) -> StudySpec:
        from datawall.model.config import PRESETS as SIZES

        for where, size in [("baseline.size", self.baseline.size)] + [
                (f"levers.scale.sizes.{i}", s) for i, s in enumerate(self.levers.scale.sizes)]:
            if size.lower() not in SIZES:
                raise ValueError(f"{where}: unknown model size {size!r}; sizes: {', '.join(SIZES)}")
        return self

    @property
    def test_problems(self) -> int:
        """Held-out problems of the test-time lever."""
        return self.levers.test_time.problems or self.world.eval_problems


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
    if price.kind == "api":
        raise DatawallError(f"{source}: prices.entry: {spec.prices.entry!r} is an api price (dollars per token), "
                            "which cannot price training; use a flops or gpu-hour entry")


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
