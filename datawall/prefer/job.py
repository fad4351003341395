"""The study's `prefer` run kind: pairs of a baseline checkpoint's answers graded by simulated graders, the
checkpoint tuned on them with the DPO family, scored on held-out problems; one run directory.

RUN/pairs.jsonl (+ pairs.json) are written once (a rerun finds them), RUN/train is `prefer train`'s resumable
run directory, and the job's result joins both: accuracy after tuning (what the study plots), the accuracy
before and the paired change, the pairs' label quality, and the cost split into sampling, training and graders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt

from datawall.prefer.config import DPOConfig, HelpedConfig, PairsConfig
from datawall.prefer.graders import AGGREGATES, GraderConfig
from datawall.train.evaluate import SAFETY_KEYS

Positive = Annotated[StrictInt, Field(ge=1)]


class PreferJob(HelpedConfig):
    """A prefer job: the pairs' sampling and graders, the tuning, and the held-out problems, on the checkpoint of the
    pretrain job `model`."""

    model: str = Field(min_length=1, description="key of the pretrain job whose checkpoint is tuned")
    task: str
    task_args: dict[str, Any] = Field(default_factory=dict)
    first_problem: StrictInt = Field(0, ge=0, description="first train-split prompt (past the U real examples)")
    prompts: Positive = Field(1000, description="train-split prompts whose answers are compared")
    n: StrictInt = Field(PairsConfig.default("n"), ge=2, description="answers per prompt")
    comparisons: Positive | None = Field(None, description="comparisons per prompt (default: every pair)")
    temperature: float = Field(1.0, ge=0)
    graders: Positive = 1
    grader: GraderConfig = GraderConfig()
    aggregate: Literal[AGGREGATES] = "majority"
    price: str = Field("human-grader", description="price-table entry of one grader's comparison")
    loss: Literal["sigmoid", "ipo", "hinge", "robust"] = DPOConfig.default("loss")
    beta: float = Field(DPOConfig.default("beta"), gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    nll: float = Field(DPOConfig.default("nll"), ge=0)
    length_alpha: float = Field(0.0, ge=0)
    epochs: float = Field(DPOConfig.default("epochs"), gt=0)
    batch_size: Positive = DPOConfig.default("batch_size")
    lr: float = Field(DPOConfig.default("lr"), gt=0)
    eval_problems: Positive = 200
    seed: StrictInt = 0
    device: str = "cpu"

    def pairs_config(self, model_dir: Path) -> PairsConfig:
        return PairsConfig(model=str(model_dir), task=self.task, task_args=self.task_args,
                           problems=self.prompts, first_problem=self.first_problem, n=self.n,
                           comparisons=self.comparisons, temperature=self.temperature, graders=self.graders,
                           grader=self.grader, aggregate=self.aggregate, price=self.price, seed=self.seed,
                           device=self.device)

    def dpo_config(self, model_dir: Path, pairs: Path) -> DPOConfig:
        return DPOConfig(pairs=str(pairs), model=str(model_dir), loss=self.loss, beta=self.beta,
                         label_smoothing=self.label_smoothing, nll=self.nll, length_alpha=self.length_alpha,
                         epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, task=self.task,
                         task_args=self.task_args, eval_problems=self.eval_problems, seed=self.seed,
                         device=self.device)


RESULT_KEYS = ("accuracy_before", "delta", "delta_ci_low", "delta_ci_high", "completion_tokens_before",
               "completion_tokens_after", "val_accuracy", "val_margin", "train_pairs", "steps", "train_seconds")


def run_prefer_job(config: dict, run_dir: Path, dep_dirs: dict[str, Path], quiet: bool) -> dict:
    """Pairs (once), tuning (resumable), and the joined result."""
    from datawall.prefer.make_pairs import make_pairs
    from datawall.prefer.pairs import metadata_path
    from datawall.prefer.train import train_dpo

    job = PreferJob.model_validate(config)
    model_dir = dep_dirs[job.model] / "checkpoint"
    pairs_path = run_dir / "pairs.jsonl"
    pairs_cfg = job.pairs_config(model_dir)
    meta_path = metadata_path(pairs_path)
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() and pairs_path.is_file() else None
    if meta is None or meta.get("config") != pairs_cfg.model_dump(mode="json"):
        meta = make_pairs(pairs_cfg, pairs_path, quiet=quiet)
    tuned = train_dpo(job.dpo_config(model_dir, pairs_path), run_dir / "train", quiet=quiet)
    return {
        "accuracy": tuned["accuracy_after"], "ci_low": tuned["ci_low_after"], "ci_high": tuned["ci_high_after"],
        **{k: tuned.get(k) for k in RESULT_KEYS},
        "pairs": meta["pairs"], "comparisons": meta["comparisons"], "grader_comparisons": meta["grader_comparisons"],
        "label_accuracy": meta["label_accuracy"], "informative": meta["informative"], "grader": meta["grader"],
        "sample_flops": meta["sample_flops"], "train_flops": tuned["flops"],
        "flops": meta["sample_flops"] + tuned["flops"], "wall_seconds": meta["sample_seconds"] + tuned["train_seconds"],
        "grader_dollars": meta["grader_dollars"], "eval_problems": tuned["eval_problems"],
        # the tuned policy's reward on each held-out problem, in order: the study pairs it with the baseline's
        "per_problem": json.loads((run_dir / "train" / "after.json").read_text())["rewards"],
        # a world with hazard cases: the tuned policy's caveats (SAFETY_KEYS), the starting one's, the paired change
        **{k: v for k, v in tuned.items() if k in SAFETY_KEYS or k == "safety_before" or k.endswith("_change")
           or k.endswith("_change_ci")},
    }


def prefer_progress(config: dict, run_dir: Path) -> float | None:
    """Share done: a tenth for the pairs, the rest by the tuning loop's logged steps."""
    if not (run_dir / "pairs.json").is_file():
        return 0.0
    metrics = run_dir / "train" / "metrics.jsonl"
    try:
        last = metrics.read_text().splitlines()[-1]
        step = json.loads(last)["step"]
    except (OSError, IndexError, ValueError, KeyError):
        return 0.1
    result = run_dir / "train" / "result.json"
    if result.is_file():
        return 1.0
    # steps are not in the config (they follow from the pairs kept); read the loop's own estimate when known
    return min(0.95, 0.1 + 0.9 * step / max(step + 1, _planned_steps(run_dir) or step + 1))


def _planned_steps(run_dir: Path) -> int | None:
    try:
        pairs = sum(1 for line in (run_dir / "pairs.jsonl").read_text().splitlines() if line.strip())
        cfg = json.loads((run_dir / "train" / "config.json").read_text())["run"]
    except (OSError, ValueError, KeyError):
        return None
    return max(1, round(cfg["epochs"] * -(-int(pairs * (1 - cfg["val_frac"])) // cfg["batch_size"])))
