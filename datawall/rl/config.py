"""RLConfig: everything that decides an RL run besides its starting checkpoint, validated once.

`datawall rl` builds it from its flags (each flag's help is a description here), a study's rl job from its
config. Light on purpose (pydantic only): the CLI imports it to build its --help.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from datawall.tasks.prompting import FEWSHOT_POOL

PASS_KS = (1, 4, 16, 64)  # pass@k reported before and after, each from one pool of max(k) samples per problem
CLIP_HIGHER = 0.28  # DAPO's upper clip, the default of epsilon_high
LATER = ("length_penalty", "track_kl")  # added after rl runs were stored: out of their identity at the default


class RLConfig(BaseModel):
    """An RL run with verifiable rewards: prompts, sampling, reward, loss, optimizer and evaluation."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="Task world: arith, trace, countdown, jsonl:PATH or rg:NAME.")
    task_args: dict[str, Any] = Field(default_factory=dict, description="Task settings, e.g. digits=3, ops=add.")
    steps: StrictInt = Field(200, ge=1, description="Optimizer steps.")
    prompts_per_step: StrictInt = Field(64, ge=1, description="Prompts P per rollout (train-split problems past "
                                        "the first --first-problem + --val-problems; no solution is needed).")
    prompt_pool: StrictInt = Field(2000, ge=0, description="Distinct train problems the prompts cycle through, in "
                                   "a fresh seeded order each pass (0: every later train problem in index order; "
                                   "a small world's last ones are its hardest).")
    group: StrictInt = Field(8, description="Completions G sampled per prompt (a group; its rewards give "
                         "the advantages, so it needs at least 2).")
    loss: Literal["grpo", "dr_grpo", "dapo", "bnpo", "reinforce"] = Field(
        "dapo", description="Loss normalisation as TRL documents it: grpo (per-sequence mean), dr_grpo (sum over "
        "completions x --max-tokens), dapo (token mean over the step), bnpo (token mean per micro-batch), "
        "reinforce (no ratio clipping, token mean).")
    beta: float = Field(0.0, ge=0, description="Weight of the k3 KL to the frozen starting policy (0: none, and no "
                        "reference model is kept).")
    epsilon: float = Field(0.2, gt=0, lt=1, description="Lower clip of the probability ratio: 1 - epsilon.")
    epsilon_high: float | None = Field(None, gt=0, description="Upper clip 1 + epsilon_high (DAPO's clip-higher; "
                                       f"unset: {CLIP_HIGHER}, none with reinforce).")
    iterations: StrictInt = Field(1, ge=1, description="Policy updates per rollout (GRPO's mu); each is one of "
                                  "--steps.")
    dynamic_sampling: bool = Field(True, description="DAPO's dynamic sampling: replace groups whose rewards are "
                                   "all equal (no signal) with groups of fresh prompts, up to 3 more rounds.")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Divide advantages by the group's reward std, the batch's, or not at all (Dr. GRPO).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of rollouts and of pass@k pools.")
    max_tokens: StrictInt | None = Field(None, ge=1, description="Max new tokens per completion (default: 1.5 x "
                                         "the longest reference solution of the validation problems, + 8).")
    lr: float = Field(5e-4, gt=0, description="AdamW learning rate (after a linear warmup, constant).")
    warmup_steps: StrictInt = Field(10, ge=0, description="Steps of linear learning-rate warmup (at most all but "
                                    "the last step).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay of matrices.")
    grad_clip: float = Field(1.0, ge=0, description="Max global gradient norm (0: no clipping).")
    micro_batch: StrictInt = Field(64, ge=1, description="Completions per forward/backward pass, grouped by "
                                   "length (memory and speed; the loss is normalised over the whole step, except "
                                   "bnpo's per-micro-batch token mean).")
    reward: str = Field("verifier", description="verifier (the task's: 1 right, 0 wrong), rubric (on a world with "
                        "hazard cases: correctness x the problem's rubric score, so a right answer without its "
                        "required caveat earns 0.5), random (a seeded coin flip per completion: the control that "
                        "should teach nothing), or a reward-model directory (`datawall reward train`): its "
                        "P(correct).")
    extract: Literal["strict", "flexible"] = Field(
        "strict", description="How the verifier reads an answer: strict ('#### N') or flexible (free text).")
    format_reward: float = Field(0.0, ge=0, description="Added to the reward of a completion that ends in a "
                                 "strictly readable answer line, right or wrong.")
    overlong_penalty: float = Field(0.0, ge=0, description="DAPO's soft overlong punishment: up to this much is "
                                    "subtracted as a completion runs into the last quarter of --max-tokens.")
    length_penalty: float = Field(0.0, ge=0, description="A length cost: subtracted from the reward per completion "
                                  "token (e.g. 0.01: ten tokens cost a tenth of a right answer).")
    chat: bool = Field(False, description="Send prompts as chat messages under the model's chat template.")
    fewshot: StrictInt = Field(0, ge=0, lt=FEWSHOT_POOL, description="Solved train examples before each prompt.")
    first_problem: StrictInt | None = Field(None, ge=0, description="Train-split problems to skip: the U examples "
                                            "the model was trained on (default: read from the checkpoint when it "
                                            "was trained on this task, else 0).")
    val_problems: StrictInt = Field(200, ge=0, description="Train-split problems after the first ones that are "
                                    "never prompts: greedy accuracy on them picks the best checkpoint (0: keep "
                                    "the last; at most half of the train problems past the first ones).")
    eval_every: StrictInt = Field(10, ge=1, description="Steps between validation evaluations.")
    eval_problems: StrictInt = Field(400, ge=1, description="Held-out (test-split) problems of greedy accuracy "
                                     "before and after.")
    curve_problems: StrictInt = Field(0, ge=0, description="Held-out problems also scored at every evaluation "
                                      "(the learning curve; never used for selection; 0: none).")
    pass_problems: StrictInt = Field(100, ge=0, description="Held-out problems of the pass@k pools before and "
                                     "after (0: no pools).")
    pass_samples: StrictInt = Field(64, ge=1, description="Samples per problem in each pass@k pool (k = 1, 4, "
                                    "16, 64 up to this).")
    track_kl: StrictInt = Field(0, ge=0, description="Over-optimisation tracking (Gao et al. 2022): at every "
                                "evaluation, --group samples (at --temperature) to each of the first N held-out "
                                "problems, logged as track_proxy (the training reward, unshaped), track_gold (the "
                                "verifier) and track_kl (KL to the starting policy, measured on the samples: "
                                "costs a sampling pass and two forward passes; 0: off).")
    seed: StrictInt = Field(0, description="Seed of prompt order and sampling (rollouts and pass@k pools).")
    device: str = Field("cpu", description="cpu or cuda.")

    @field_validator("group")
    @classmethod
    def _group(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"a group of {v} has no advantage to compute (each completion is compared with the "
                             "others of its prompt); use 2 or more")
        return v

    @model_validator(mode="after")
    def _check(self) -> RLConfig:
        if self.loss == "reinforce" and self.epsilon_high is not None:
            raise ValueError("epsilon_high clips a ratio, and loss reinforce does not clip; drop it")
        return self

    def identity(self) -> dict:
        """The resolved settings that name a run (its config.json, a study's job key): fields added after runs were
        stored (LATER) are left out at their default, so those runs keep their directories and keys."""
        out = self.model_dump(mode="json")
        for k in LATER:
            if out[k] == RLConfig.default(k):
                del out[k]
        return out

    @classmethod
    def help(cls, name: str) -> str:
        """A field's description (the --help of its flag)."""
        return cls.model_fields[name].description or ""

    @classmethod
    def default(cls, name: str) -> Any:
        """A field's default value."""
        return cls.model_fields[name].get_default(call_default_factory=True)

    @property
    def clip_high(self) -> float | None:
        """The upper clip width in effect: epsilon_high, CLIP_HIGHER when unset, None for reinforce (no clip)."""
        if self.loss == "reinforce":
            return None
        return CLIP_HIGHER if self.epsilon_high is None else self.epsilon_high

    @property
    def pass_ks(self) -> list[int]:
        """The k of pass@k reported: 1, 4, 16, 64 up to pass_samples."""
        return [k for k in PASS_KS if k <= self.pass_samples]
