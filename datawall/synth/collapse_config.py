"""CollapseConfig: a model-collapse run's world, models, generations and modes, validated once.

`datawall synth collapse` builds it from its flags and takes its help text from the descriptions here (pydantic only,
so the CLI's --help stays light).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictInt, field_validator

from datawall.synth.generate_config import Described

MODES = ("replace", "accumulate", "mix")
Positive = Annotated[StrictInt, Field(ge=1)]


class CollapseConfig(Described):
    """A model-collapse run: the world, the models, the generations and the modes compared."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field("arith", description="Task world.")
    task_args: dict[str, Any] = Field(default_factory=lambda: {"digits": 2, "min_digits": 1, "ops": "mul"},
                                      description="Task settings.")
    size: str = Field("100k", description="Model preset of every generation.")
    real_examples: Positive = Field(500, description="U: real worked examples of generation 0 (and of accumulate "
                                    "and mix).")
    tokens: Positive = Field(400_000, description="Training tokens D of every generation (from scratch).")
    generations: Positive = Field(3, description="G: generations trained on samples, after generation 0.")
    modes: list[Literal[MODES]] = Field(list(MODES), description="replace, accumulate and/or mix.")
    real_frac: float = Field(0.1, gt=0, lt=1, description="mix: share of each generation's training rows that are "
                             "real.")
    samples: Positive | None = Field(None, description="P: problems each generation writes solutions for (default "
                                     "U, the real data's size).")
    temperature: float = Field(1.0, gt=0, description="Temperature of the samples a generation trains its "
                               "successor on.")
    seeds: list[StrictInt] = Field([0, 1], description="Seeds: each gives its own generation 0 and chain of each "
                                   "mode.")
    batch_size: Positive = 8
    lr: float = Field(3e-3, gt=0)
    seq_len: Positive = 64
    eval_problems: Positive = Field(300, description="Held-out problems every model is measured on.")
    tail_share: float = Field(0.15, gt=0, lt=1, description="Tail: the rarest answer classes holding at least this "
                              "share of the held-out problems.")

    @field_validator("modes")
    @classmethod
    def _modes(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one mode")
        return list(dict.fromkeys(v))

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one seed")
        return list(dict.fromkeys(v))

    @property
    def per_generation(self) -> int:
        """P, problems sampled per generation."""
        return self.samples or self.real_examples
