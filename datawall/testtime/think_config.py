"""ThinkConfig: what a think run samples and how it is summarised, validated once.

`datawall think` builds it from its flags (and takes its help text from the descriptions here), a study's think
job from its config; both get the same checks and the same one-line errors. Light on purpose (pydantic only):
the CLI imports it to build its --help.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from datawall.rewards.steps import AGGREGATES
from datawall.tasks.prompting import FEWSHOT_POOL, FEWSHOT_SEED
from datawall.testtime.strategies import DEFAULT_STRATEGIES, resolve_strategies

Positive = Annotated[StrictInt, Field(ge=1)]


class ThinkConfig(BaseModel):
    """What a think run samples and how it is summarised."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="Task world: arith, trace, countdown or jsonl:PATH.")
    task_args: dict[str, Any] = Field(default_factory=dict, description="Task settings, e.g. digits=5, ops=add.")
    problems: Positive = Field(50, description="Held-out problems K.")
    n_max: Positive = Field(16, description="Temperature samples per problem (the pool).")
    strategies: list[str] = Field(
        default_factory=lambda: list(DEFAULT_STRATEGIES),
        description="greedy, majority, pass@k (best-of-n with the verifier as oracle); with a reward model "
        "(--orm/--prm) also best-of-n and weighted-majority, with a process reward model (--prm) beam.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature of the pool.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: Positive | None = Field(None, description="Max new tokens per sample (default: 1.5 x the longest "
                                        "reference solution).")
    seed: StrictInt = Field(0, description="Seed of the samples and of the estimators.")
    split: Literal["train", "test"] = Field("test", description="Split the problems are drawn from.")
    n_boot: Positive = Field(1000, description="Bootstrap replicates of every interval.")
    beam_n: list[StrictInt] | None = Field(
        None, description="Beam search (strategy 'beam', needs --prm): candidates per step N = width x expand "
        "(default: expand, 2 expand, ... up to --n-max).")
    beam_expand: Positive = Field(4, description="Beam search: continuations each beam draws per step.")
    beam_aggregate: Literal[AGGREGATES] = Field(
        "last", description="Beam search: rank beams by the last, min or product of their step scores.")
    thinking_budgets: list[StrictInt] = Field(
        default_factory=list, description="Budget forcing (s1): thinking-token budgets, e.g. 8,16,32,64; the answer "
        "is forced when a budget runs out.")
    thinking_extend: StrictInt = Field(0, ge=0, description="Budget forcing: times an end of thinking before the "
                                       "budget is suppressed (s1's 'Wait').")
    chat: bool = Field(False, description="Send each prompt as chat messages, rendered by the model's chat "
                       "template (--model, --hf) or sent to /chat/completions (--endpoint).")
    fewshot: StrictInt = Field(0, ge=0, lt=FEWSHOT_POOL, description="Solved train-split examples before each "
                               "prompt (in chat: alternating user/assistant turns).")
    fewshot_seed: StrictInt = Field(FEWSHOT_SEED, description="Seed that picks the few-shot examples of each problem.")
    stop: list[str] = Field(default_factory=list, description="Stop strings besides the task's own (jsonl and rg "
                            "tasks stop at '\\n\\nQuestion:').")
    extract: Literal["strict", "flexible"] = Field(
        "strict", description="How an answer is read from a completion, for the verifier and the vote: strict "
        "(its '#### N' line) or flexible (\\boxed{}, '#### N', 'the answer is N', else the last number; "
        "lm-eval's GSM8K flexible-extract).")
    difficulty_bins: Positive = Field(5, description="Difficulty bins of the compute-optimal policy (fewer when "
                                      "there are few problems).")

    @field_validator("strategies", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        # "greedy,maj" or ["greedy", "maj"] -> canonical names, in order, once each
        return resolve_strategies(v) if isinstance(v, str | list | tuple) else v

    @field_validator("beam_n", "thinking_budgets")
    @classmethod
    def _sorted_positive(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if any(x < 1 for x in v):
            raise ValueError(f"every value must be >= 1, got {min(v)}")
        return sorted(set(v))

    @model_validator(mode="after")
    def _consistent(self) -> ThinkConfig:
        # each beam keeps `expand` continuations, so N candidates per step must split into whole beams
        bad = [n for n in self.beam_n or () if n < self.beam_expand or n % self.beam_expand]
        if bad:
            raise ValueError(f"beam_n: {bad[0]} is not a multiple of beam_expand ({self.beam_expand}): each step "
                             "keeps N / expand beams")
        # both continue a prompt's text with partial completions; a chat turn has no text to continue, and a
        # process reward model scores steps after the bare prompt it was trained on, not after few-shot examples
        if "beam" in self.strategies and (self.chat or self.fewshot):
            raise ValueError("the beam strategy works on plain prompts: drop chat and fewshot, or beam")
        if self.thinking_budgets and self.chat:
            raise ValueError("thinking_budgets continue the prompt's text, which chat has not: drop one")
        return self

    @classmethod
    def help(cls, name: str) -> str:
        """A field's description (the --help of its flag)."""
        return cls.model_fields[name].description or ""

    @classmethod
    def default(cls, name: str) -> Any:
        """A field's default value."""
        return cls.model_fields[name].get_default(call_default_factory=True)
