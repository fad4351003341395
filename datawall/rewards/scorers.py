"""Trained reward models as the scorers test-time strategies use (best-of-n, weighted majority, beam search)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from datawall.errors import DatawallError
from datawall.model.reward_head import RewardModel
from datawall.rewards.steps import AGGREGATES, aggregate, split_steps


def score_completions(rm: RewardModel, prompt: str, completions: Sequence[str], how: str = "last",
                      batch_size: int = 64) -> list[float]:
    """P(correct) of each completion: an ORM's at its last token; a PRM's step scores aggregated by `how`."""
    if rm.kind == "orm":
        items = [rm.encode(prompt, [c]) for c in completions]
        return [p[-1] for p in rm.probs(items, batch_size)]
    items = [rm.encode(prompt, split_steps(c)) for c in completions]
    return [aggregate(p, how) for p in rm.probs(items, batch_size)]


class RewardScorer:
    """A trained reward model as `datawall think` uses it (see datawall.rewards.scoring.SampleScorer).

    Calling it scores a problem's completions (ORM: P(correct) at the last token; PRM: its step scores
    aggregated by `how`); `step_scores` serves step-wise search; `flops` is what reading one sample costs.
    """

    def __init__(self, directory: str | Path, how: str = "min", device: str = "cpu", batch_size: int = 64):
        if how not in AGGREGATES:
            raise DatawallError(f"--aggregate: unknown {how!r}; choose from {', '.join(AGGREGATES)}")
        self.rm = RewardModel.load(directory, device=device)
        self.how, self.batch_size = how, batch_size
        info = self.rm.info
        self.identity = {"path": str(Path(directory).resolve()), "kind": self.rm.kind,
                         "aggregate": how if self.rm.kind == "prm" else None, "params": self.rm.num_params(),
                         "base_model": info.get("base_model"), "task": info.get("task"),
                         "val": (info.get("metrics") or {}).get("val")}

    @property
    def kind(self) -> str:
        return self.rm.kind

    def __call__(self, problem, completions: list[str]) -> list[float]:
        """Scores of one problem's completions (probabilities)."""
        return score_completions(self.rm, problem.prompt, completions, self.how, self.batch_size)

    def step_scores(self, prompt: str, steps: list[str]) -> list[float]:
        """P(correct) after each step prefix."""
        return self.rm.step_scores(prompt, steps)

    def flops(self, prompt: str, completion: str) -> float:
        """Forward FLOPs of reading prompt + completion once (a PRM reads all its steps in the same pass)."""
        ids, _ = self.rm.encode(prompt, [completion])
        return self.rm.flops(len(ids))


def load_scorers(orm: str | Path | None, prm: str | Path | None, how: str = "min", device: str = "cpu"
                 ) -> tuple[RewardScorer | None, RewardScorer | None]:
    """The (ORM, PRM) scorers of `think --orm DIR --prm DIR`, each checked to hold the kind it is given as."""
    out = []
    for flag, path, kind in (("--orm", orm, "orm"), ("--prm", prm, "prm")):
        scorer = RewardScorer(path, how, device) if path is not None else None
        if scorer is not None and scorer.kind != kind:
            raise DatawallError(f"{flag} {path}: holds a {scorer.kind.upper()}, not a {kind.upper()}; "
                                f"pass it as --{scorer.kind}")
        out.append(scorer)
    return out[0], out[1]
