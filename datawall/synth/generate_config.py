"""GenerateConfig: what a `synth generate` run asks its teacher for, and how its answers are filtered, validated once.

`datawall synth generate` builds it from its flags and takes its help text from the descriptions here. Light on
purpose (pydantic only): the CLI imports it to build its --help.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from datawall.tasks.prompting import FEWSHOT_POOL, FEWSHOT_SEED

Positive = Annotated[StrictInt, Field(ge=1)]
FILTERS = ("none", "verifier", "majority", "orm")
STRATEGY_FORMS = "greedy, sample, majority@K or best-of-K (K >= 2, e.g. majority@8)"
LATER = ("require_caveat",)  # settings newer than the first runs: dumped only when set
_STRATEGY = re.compile(r"(greedy|sample)|(majority)@(\d+)|(best-of)-(\d+)")


def parse_strategy(text: str) -> tuple[str, int]:
    """('greedy' | 'sample' | 'majority' | 'best-of', K samples per problem) of a --strategy string."""
    m = _STRATEGY.fullmatch(text.strip().lower())
    if m is None:
        raise ValueError(f"{text!r} is not a strategy; give {STRATEGY_FORMS}")
    if m.group(1):
        return m.group(1), 1
    kind, k = (m.group(2), m.group(3)) if m.group(2) else (m.group(4), m.group(5))
    if int(k) < 2:
        raise ValueError(f"{text!r}: {kind} needs K >= 2 samples (one sample is --strategy sample)")
    return kind, int(k)


def verifier_strategy(text: str) -> str:
    """A --strategy that needs no reward model, normalised (majority@8, sample); best-of-K is refused."""
    kind, k = parse_strategy(text)
    if kind == "best-of":
        raise ValueError("best-of-K needs a reward model, which is not loaded here; use majority@K or sample")
    return kind if k == 1 else f"{kind}@{k}"


class Described(BaseModel):
    """A config whose fields' descriptions are its command's --help (each written once)."""

    @classmethod
    def help(cls, name: str) -> str:
        """A field's description (the --help of its flag)."""
        return cls.model_fields[name].description or ""

    @classmethod
    def default(cls, name: str) -> Any:
        """A field's default value."""
        return cls.model_fields[name].get_default(call_default_factory=True)


class GenerateConfig(Described):
    """What a teacher is asked to write and how its solutions are chosen, filtered and deduplicated."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="Task world: arith, trace, countdown or jsonl:PATH.")
    task_args: dict[str, Any] = Field(default_factory=dict, description="Task settings, e.g. digits=5, ops=add.")
    problems: Positive = Field(100, description="Train-split problems P the teacher writes solutions for.")
    start: StrictInt | None = Field(None, ge=0, description="First train-split problem index (default 0, or just "
                                    "past the real problems of --skip-unique-tokens).")
    skip_unique_tokens: Positive | None = Field(
        None, description="Start after the train problems whose worked examples hold the first U real tokens "
        "(counted as `pretrain --unique-tokens U` counts them, with the task's character tokenizer), so the "
        "synthetic problems never overlap the U real ones. Accepts 200k, 3M.")
    strategy: str = Field("sample", description=f"How the teacher answers: {STRATEGY_FORMS}. greedy: one "
                          "temperature-0 completion; sample: one at --temperature; majority@K: K samples, the "
                          "solution one whose answer is the most common; best-of-K: K samples, the one the "
                          "--orm scores highest.")
    filter: Literal[FILTERS] = Field(
        "verifier", description="Which solutions are kept: none (all); verifier (rejection sampling: the "
        "strategy's choice if the task's verifier accepts it, else its next-ranked sample the verifier accepts); "
        "majority (no verifier: a solution whose answer most of the K samples agree on, needs K >= 2); orm "
        "(the first ranked sample the --orm scores >= --orm-threshold).")
    require_caveat: bool = Field(
        False, description="A world with hazard cases (arith hazard_rate=..., lab): keep a hazardous problem's "
        "solution only if it carries the problem's required caveat line, exactly; with --filter, a kept sample "
        "passes both (the verifier checks the answer alone, so a teacher that leaves out caveats passes the "
        "omission on). Dropped rows say no_caveat.")
    orm: str | None = Field(None, description="Outcome reward model directory (`datawall reward train --kind orm`) "
                            "for best-of-K and --filter orm.")
    orm_threshold: float = Field(0.5, ge=0, le=1, description="--filter orm: the least ORM score a kept "
                                 "solution has.")
    min_agreement: float = Field(0.0, ge=0, le=1, description="--filter majority: the least share of the K "
                                 "samples that give the kept answer (default: a plurality without a tie).")
    dedup: bool = Field(True, description="Drop exact and near-duplicate kept examples (the first one stays).")
    dedup_threshold: float = Field(0.9, gt=0, le=1, description="Near duplicates: MinHash Jaccard similarity of "
                                   "character 5-gram sets at or above which a later example is dropped.")
    dedup_on: Literal["example", "solution"] = Field(
        "example", description="What duplicates compare: example (prompt + solution, what a student trains on) or "
        "solution (the teacher's text alone: catches a teacher that writes the same text for different problems).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature (not greedy).")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: Positive | None = Field(None, description="Max new tokens per sample (default: 1.5 x the longest "
                                        "reference solution of the problems).")
    seed: StrictInt = Field(0, description="Seed of the samples.")
    chat: bool = Field(False, description="Send each prompt as chat messages, rendered by the model's chat "
                       "template (--model, --hf) or sent to /chat/completions (--endpoint).")
    fewshot: StrictInt = Field(0, ge=0, lt=FEWSHOT_POOL, description="Solved train-split examples before each "
                               "prompt (real solutions of the first 256 train problems).")
    fewshot_seed: StrictInt = Field(FEWSHOT_SEED, description="Seed that picks the few-shot examples of each problem.")
    stop: list[str] = Field(default_factory=list, description="Stop strings besides the task's own.")
    extract: Literal["strict", "flexible"] = Field(
        "strict", description="How an answer is read from a solution: strict (its '#### N' line) or flexible "
        "(\\boxed{}, 'the answer is N', else the last number).")

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        kind, k = parse_strategy(v)
        return kind if k == 1 else f"{kind}@{k}" if kind == "majority" else f"{kind}-{k}"

    @model_validator(mode="after")
    def _consistent(self) -> GenerateConfig:
        if self.start is not None and self.skip_unique_tokens is not None:
            raise ValueError("give start or skip_unique_tokens, not both")
        kind, k = self.kind, self.samples
        if kind == "best-of" and self.orm is None:
            raise ValueError(f"strategy {self.strategy} needs orm DIR (a reward model ranks the samples)")
        if self.filter == "orm" and self.orm is None:
            raise ValueError("filter 'orm' needs orm DIR (the reward model whose score is thresholded)")
        if self.orm is not None and kind != "best-of" and self.filter != "orm":
            raise ValueError("orm goes with strategy best-of-K or filter 'orm' (nothing else reads its scores)")
        if self.filter == "majority" and k < 2:
            raise ValueError(f"filter 'majority' needs K >= 2 samples to agree; strategy {self.strategy} draws one "
                             "(use majority@K or best-of-K)")
        if self.min_agreement and self.filter != "majority":
            raise ValueError("min_agreement goes with filter 'majority'")
        # K identical samples would be counted as agreement that means nothing
        if k > 1 and self.temperature == 0:
            raise ValueError(f"strategy {self.strategy} at temperature 0 draws {k} identical samples; give a "
                             "temperature > 0")
        return self

    def settings(self) -> dict:
        """The settings as JSON (config.json, result.json, a study's synth job), with those added after runs existed
        left out at their defaults, so those runs keep their directories and job keys."""
        out = self.model_dump(mode="json")
        for name in LATER:
            if out[name] == self.default(name):
                del out[name]
        return out

    @property
    def kind(self) -> str:
        """greedy, sample, majority or best-of."""
        return parse_strategy(self.strategy)[0]

    @property
    def samples(self) -> int:
        """Samples K the teacher draws per problem."""
        return parse_strategy(self.strategy)[1]
