"""What `datawall prefer` runs are made of, validated once: PairsConfig (sample, grade, pair), DPOConfig (tune a
policy on pairs) and RewardPairsConfig (a Bradley-Terry reward model on pairs).

The commands build them from their flags and take their help text from the descriptions here; study jobs build
them from their configs. Light on purpose (pydantic only): the CLI imports this to build its --help.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from datawall.prefer.graders import AGGREGATES, GraderConfig

Positive = Annotated[StrictInt, Field(ge=1)]


class HelpedConfig(BaseModel):
    """A config whose fields' descriptions are the --help of their flags."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def help(cls, name: str) -> str:
        """A field's description (the --help of its flag)."""
        return cls.model_fields[name].description or ""

    @classmethod
    def default(cls, name: str) -> Any:
        """A field's default value."""
        return cls.model_fields[name].get_default(call_default_factory=True)


class PairsConfig(HelpedConfig):
    """Preference pairs sampled from a policy on train-split prompts and judged by graders."""

    model: str = Field(description="Policy checkpoint (or run) directory whose answers are compared.")
    task: str = Field(description="Task world: arith, trace, countdown or jsonl:PATH.")
    task_args: dict[str, Any] = Field(default_factory=dict, description="Task settings, e.g. digits=5, ops=add.")
    problems: Positive = Field(200, description="Train-split prompts to sample answers for (held-out ones never).")
    first_problem: StrictInt = Field(0, ge=0, description="Index of the first train-split prompt: start past the "
                                     "policy's own U training examples to ask about prompts it has not seen.")
    n: StrictInt = Field(8, ge=2, description="Answers sampled per prompt (2 or more).")
    comparisons: Positive | None = Field(None, description="Comparisons per prompt, drawn from the pairs of its "
                                         "distinct answers (default: every pair).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature of the answers.")
    max_tokens: Positive | None = Field(None, description="Max new tokens per answer (default: 1.5 x the longest "
                                        "reference solution).")
    graders: Positive = Field(1, description="Simulated graders judging each comparison (k; each is paid).")
    grader: GraderConfig = Field(GraderConfig(), description="Each grader's noise and bias.")
    aggregate: Literal[AGGREGATES] = Field("majority", description="How k graders' votes become a pair: majority "
                                           "(a tied vote drops the pair) or bt (Bradley-Terry strengths of all a "
                                           "prompt's answers fitted to every vote).")
    judge_endpoint: str | None = Field(None, description="An LLM judge instead of simulated graders: its "
                                       "OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1.")
    judge_model: str | None = Field(None, description="Model name to ask the judge endpoint for.")
    judge_api_key_env: str | None = Field(None, description="Environment variable holding the judge's API key.")
    judge_price: str = Field("gpt-4o-mini", description="Price-table entry of the judge's tokens (an api entry).")
    price: str = Field("human-grader", description="Price-table entry of one simulated grader's comparison "
                       "(kind comparison: dollars per comparison).")
    policy_price: str | None = Field(None, description="Price-table entry of sampling the policy (default: the "
                                     "table's default, local-cpu).")
    prices: str | None = Field(None, description="Price-table override file (TOML or JSON).")
    seed: StrictInt = Field(0, description="Seed of the answers, the comparisons drawn and the graders' draws.")
    device: str = Field("cpu", description="cpu or cuda.")

    @model_validator(mode="after")
    def _judge(self) -> PairsConfig:
        if self.judge_endpoint is not None:
            if not self.judge_model:
                raise ValueError("judge_endpoint needs judge_model (the model id the server serves)")
            if self.graders != 1 or self.grader != GraderConfig():
                raise ValueError("an LLM judge replaces the simulated graders: leave graders, noise and bias "
                                 "at their defaults")
        elif self.judge_model or self.judge_api_key_env:
            raise ValueError("judge_model and judge_api_key_env go with judge_endpoint")
        return self


class DPOConfig(HelpedConfig):
    """A policy tuned on preference pairs with a member of the DPO family (datawall.train.objectives.dpo)."""

    pairs: str = Field(description="Pairs file (JSONL: prompt, chosen, rejected[, grader]).")
    model: str = Field(description="Starting policy checkpoint (or run) directory; also the frozen reference "
                       "unless --reference is given.")
    reference: str | None = Field(None, description="Reference checkpoint (same tokenizer as the policy; default: "
                                  "the starting policy).")
    loss: Literal["sigmoid", "ipo", "hinge", "robust"] = Field(
        "sigmoid", description="sigmoid (DPO), ipo (IPO on per-token-averaged log-ratios), hinge (SLiC) or robust "
        "(rDPO: unbiased under labels flipped with probability --label-smoothing).")
    beta: float = Field(0.5, gt=0, description="Strength of the tie to the reference: the implicit reward is "
                        "beta x log(pi / pi_ref).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="eps, the share of labels assumed flipped "
                                   "(sigmoid: conservative DPO; robust: rDPO's noise rate, needs eps > 0).")
    nll: float = Field(1.0, ge=0, description="RPO: weight of the chosen answer's mean NLL per token, added to the "
                       "loss (0: plain DPO, which lowered held-out accuracy in the quick world: docs/preference.md).")
    length_alpha: float = Field(0.0, ge=0, description="R-DPO: alpha x (|chosen| - |rejected|) tokens is added to "
                                "beta h: the part of a preference that length explains does not push the longer answer "
                                "up (0: none).")
    epochs: float = Field(3.0, gt=0, description="Passes over the training pairs.")
    batch_size: Positive = Field(32, description="Pairs per optimizer step.")
    grad_accum: Positive = Field(1, description="Micro-batches per step (same step, less memory).")
    lr: float = Field(3e-4, gt=0, description="AdamW peak learning rate (10% warmup, cosine to 10%).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay of matrices.")
    val_frac: float = Field(0.1, ge=0, lt=1, description="Share of the pairs' prompts held out for the implicit-"
                            "reward accuracy.")
    task: str | None = Field(None, description="Task world scored greedily on held-out problems before, during and "
                             "after training (default: the one the pairs were sampled from, if known).")
    task_args: dict[str, Any] | None = Field(None, description="Settings of --task (default: the pairs').")
    eval_problems: StrictInt = Field(200, ge=0, description="Held-out (test-split) problems scored (0: none).")
    eval_every: StrictInt = Field(0, ge=0, description="Steps between evaluations (0: about 10 per run).")
    price: str | None = Field(None, description="Price-table entry of training compute (default: local-cpu).")
    prices: str | None = Field(None, description="Price-table override file (TOML or JSON).")
    seed: StrictInt = Field(0, description="Seed of the held-out split and the pair order.")
    device: str = Field("cpu", description="cpu or cuda.")

    @model_validator(mode="after")
    def _loss_constants(self) -> DPOConfig:
        if self.loss == "robust" and self.label_smoothing == 0:
            raise ValueError("loss 'robust' needs label_smoothing > 0 (the assumed flip rate; at 0 it is sigmoid)")
        if self.loss in ("ipo", "hinge") and self.label_smoothing > 0:
            raise ValueError(f"label_smoothing applies to the sigmoid and robust losses, not {self.loss!r}")
        if self.grad_accum > self.batch_size:
            raise ValueError(f"grad_accum {self.grad_accum} exceeds batch_size {self.batch_size}")
        return self


class RewardPairsConfig(HelpedConfig):
    """A Bradley-Terry reward model fitted to preference pairs (the RLHF route's proxy reward)."""

    pairs: str = Field(description="Pairs file (JSONL: prompt, chosen, rejected[, grader]).")
    model: str = Field(description="Policy checkpoint (or run) directory: the reward model's starting backbone and "
                       "tokenizer.")
    epochs: Positive = Field(4, description="Max passes over the training pairs (the best held-out epoch is kept).")
    patience: StrictInt = Field(1, ge=0, description="Epochs without held-out improvement tolerated; one more "
                                "stops training.")
    lr: float = Field(3e-4, gt=0, description="AdamW learning rate of the backbone.")
    head_lr: float = Field(3e-3, gt=0, description="AdamW learning rate of the new scalar head.")
    batch_size: Positive = Field(32, description="Pairs per optimizer step.")
    val_frac: float = Field(0.1, ge=0, lt=1, description="Share of the pairs' prompts held out (pairwise accuracy, "
                            "early stopping).")
    seed: StrictInt = Field(0, description="Seed of the held-out split and the pair order.")
    device: str = Field("cpu", description="cpu or cuda.")
