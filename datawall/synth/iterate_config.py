"""IterateConfig: a self-improvement run (STaR / ReST-EM), validated once; `datawall synth iterate` takes its flags'
help from the descriptions here (pydantic only, so the CLI's --help stays light)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictInt, ValidationError, field_validator, model_validator

from datawall.synth.generate_config import FILTERS, Described, GenerateConfig, verifier_strategy

Positive = Annotated[StrictInt, Field(ge=1)]


class IterateConfig(Described):
    """The model is its own teacher for K rounds: it writes solutions, a filter keeps some, it is fine-tuned on them."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="Task world.")
    task_args: dict[str, Any] = Field(default_factory=dict, description="Task settings.")
    rounds: Positive = Field(3, description="K: rounds of generate -> filter -> fine-tune.")
    start_from: Literal["base", "last"] = Field(
        "base", description="What each round fine-tunes: base (ReST-EM: the base model every round, on the data the "
        "last round's model wrote) or last (continue: the last round's model, as the brief's STaR).")
    problems: Positive = Field(1000, description="P: train problems past the real ones that each round's model "
                               "answers (the same problems every round, new samples).")
    strategy: str = Field("majority@4", description="How the model answers: greedy, sample, majority@K or "
                          "best-of-K (without --orm: use majority@K or sample).")
    filter: Literal[FILTERS] = Field("verifier", description="Which solutions are kept: verifier (rejection "
                                     "sampling), majority, none.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature.")
    real_tokens: Positive | None = Field(None, description="U: the real examples mixed into every round's training, "
                                         "as pretrain --unique-tokens counts them (default: the base model's own "
                                         "U, from its datawall.json).")
    real: bool = Field(True, description="Mix the U real examples into every round's training (else synthetic only).")
    tokens: Positive = Field(200_000, description="Training tokens of each round's fine-tuning.")
    batch_size: Positive = 8
    lr: float = Field(1e-3, gt=0, description="Peak learning rate of each round's fine-tuning.")
    seq_len: Positive = 64
    eval_problems: Positive = Field(500, description="Held-out problems each round's model is scored on (greedy).")
    seed: StrictInt = Field(0, description="Seed of the samples (round r draws with seed + r) and of the training.")

    _strategy = field_validator("strategy")(verifier_strategy)

    @model_validator(mode="after")
    def _generates(self) -> IterateConfig:
        try:  # what each round asks its teacher for must be a valid synth generate run
            GenerateConfig(task=self.task, task_args=self.task_args, strategy=self.strategy, filter=self.filter,
                           temperature=self.temperature)
        except ValidationError as e:
            raise ValueError(e.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return self
