"""Over-optimisation tracking of an RL run (`--track-kl N`): proxy reward, gold reward and KL to the start.

Gao, Schulman & Hilton 2022 (arXiv:2210.10760) draw a policy's gold and proxy reward against d = sqrt(KL(pi ||
pi_0)). At every evaluation the policy samples G completions (at the rollout temperature, one fixed seed: the
same random numbers at every evaluation, so a change between two is the weights', not the dice's) to each of N
held-out problems; each is scored by the run's training reward without shaping (the proxy: for a Bradley-Terry
reward model its logit) and by the verifier (the gold), and KL is measured on the same samples as the mean over
them of sum_t [log pi(y_t) - log pi_0(y_t)] (an unbiased estimate of the sequence-level KL; both log-probs of
logits / temperature, the distribution sampled). pi_0 is a frozen copy of the starting policy. Logged per
evaluation (means over problems, `_se` their standard errors over problems): track_proxy, track_gold, track_kl,
track_tokens; the start (KL 0) is before.json's "track".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from datawall.model.sampler import generate
from datawall.rl.rewards import Reward
from datawall.tasks import Problem, Task
from datawall.train.objectives import model_device
from datawall.train.objectives.sequences import pack_sequences, token_logprobs


@torch.no_grad()
def sequence_logprobs(model: torch.nn.Module, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                      pad_id: int, temperature: float = 1.0, micro_batch: int = 64) -> torch.Tensor:
    """Sum over each completion's tokens of log p(y_t | prefix) under `model` at `temperature` [B], no gradient."""
    batch = pack_sequences(prompts, completions, pad_id)
    dev = model_device(model)
    out = []
    for i in range(0, batch.x.shape[0], micro_batch):
        sub = batch.rows(slice(i, i + micro_batch)).to(dev)
        logits = model(sub.x)
        if temperature != 1.0:
            logits = logits / temperature
        out.append(token_logprobs(logits, sub).sum(1).cpu())
    return torch.cat(out)


def _mean_se(per_problem: list[float]) -> tuple[float, float]:
    x = np.asarray(per_problem, dtype=np.float64)
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan
    return float(x.mean()), se


class OveroptTracker:
    """Calling it on the policy samples the tracked problems and returns the track_* metrics."""

    def __init__(self, task: Task, tokenizer, problems: Sequence[Problem], encode: Callable, reward: Reward,
                 reference: torch.nn.Module, n: int, max_tokens: int, temperature: float, stop: list[str] | None,
                 how: str, seed: int, device: str, micro_batch: int = 64):
        self.task, self.tok, self.problems, self.encode, self.reward = task, tokenizer, list(problems), encode, reward
        self.reference, self.n, self.max_tokens, self.temperature = reference, n, max_tokens, temperature
        self.stop, self.how, self.seed, self.device, self.micro_batch = stop, how, seed, device, micro_batch

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        from datawall.rl.rollout import _per_distinct

        was_training = model.training
        model.eval()
        try:
            prompts = [self.encode(p) for p in self.problems]
            groups = generate(model, self.tok, prompts, n=self.n, max_new_tokens=self.max_tokens,
                              temperature=self.temperature, stop=self.stop, seed=self.seed, device=self.device,
                              return_logprobs=False)
            rows_p = [ids for ids, g in zip(prompts, groups, strict=True) for _ in g]
            rows_c = [s.token_ids for g in groups for s in g]
            args = (rows_p, rows_c, self.tok.pad_id, self.temperature, self.micro_batch)
            diff = (sequence_logprobs(model, *args) - sequence_logprobs(self.reference, *args)).view(len(groups), -1)
        finally:
            model.train(was_training)
        gold, proxy, tokens = [], [], []
        for problem, samples in zip(self.problems, groups, strict=True):
            texts = [s.text for s in samples]
            gold.append(float(np.mean(_per_distinct(
                lambda p, ts: [self.task.verify(p, t, self.how) for t in ts], problem, texts))))
            proxy.append(float(np.mean(_per_distinct(self.reward.fn, problem, texts))))
            tokens.append(float(np.mean([s.completion_tokens for s in samples])))
        out: dict[str, float] = {}
        for name, values in (("proxy", proxy), ("gold", gold), ("kl", diff.double().mean(1).tolist()),
                             ("tokens", tokens)):
            out[f"track_{name}"], out[f"track_{name}_se"] = _mean_se(values)
        return out
