"""Rollouts: P train-split prompts, G completions each from datawall's own sampler, rewards, advantages.

The sampler (`datawall.model.sampler.generate`) prefills each distinct prompt once and shares its cache among
its G rows, which is most of the speed over a generic `generate` loop. Rollout g is a pure function of
(seed, g, the policy's weights): its prompts are positions of a seeded order of the prompt pool, its samples
are drawn with a seed derived from (seed, g, round), so a resumed run draws exactly what an uninterrupted one
would.
"""

from __future__ import annotations

import numpy as np
import torch

from datawall.errors import DatawallError
from datawall.model.flops import matmul_params, sample_flops
from datawall.model.sampler import generate
from datawall.rl.rewards import Reward, shape
from datawall.tasks import Problem, Task
from datawall.tasks.splits import stable_seed
from datawall.train.objectives.grpo import Rollout, group_advantages
from datawall.train.objectives.sequences import pack_sequences

DYNAMIC_ROUNDS = 4  # dynamic sampling: the first round and up to 3 refills


class PromptPool:
    """RL's prompts: `size` train-split problems from `start` on, each pass over them in a fresh seeded order; with
    size None, every train problem from `start` on in index order, starting over after the split's last one.

    A window of early problems follows the world's natural distribution of problems; the end of a small world's
    split does not (its generator's repeats are skipped, so what is left is mostly its largest, hardest
    problems: the last 4,000 of 2-digit multiplication's 8,000 hold 0.5% with a 1-digit factor, the first 1,000
    about 60%, as the test problems do).
    """

    def __init__(self, task: Task, start: int, size: int | None, seed: int):
        self.task, self.start, self.seed = task, start, seed
        total = task.size("train")
        left = None if total is None else total - start
        if left is not None and left < 1:
            raise DatawallError(f"{task.name}: the train split has {total:,} problems, none left for RL prompts after "
                                f"the first {start:,} (--first-problem + --val-problems)")
        self.count = left if size is None else size if left is None else min(size, left)
        self.shuffled = size is not None
        self._order: tuple[int, np.ndarray] | None = None

    def problem(self, position: int) -> Problem:
        """The problem at `position` of the pool's endless sequence."""
        if self.count is None:
            return self.task.problem("train", self.start + position)
        epoch, i = divmod(position, self.count)
        if not self.shuffled:
            return self.task.problem("train", self.start + i)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.count))
        return self.task.problem("train", self.start + int(self._order[1][i]))


class TaskRollouts:
    """Rollouts of a task: prompts from a PromptPool, completions from the policy, rewards from `reward`."""

    def __init__(self, task: Task, tokenizer, pool: PromptPool, reward: Reward, encode, cfg, max_tokens: int,
                 stop: list[str] | None, device: str):
        self.task, self.tok, self.pool, self.reward, self.encode = task, tokenizer, pool, reward, encode
        self.cfg, self.max_tokens, self.stop, self.device = cfg, max_tokens, stop, device

    def _round(self, generation: int, rnd: int, model) -> dict:
        """One round of sampling: P prompts, G completions each, their rewards and FLOPs."""
        cfg = self.cfg
        P, G = cfg.prompts_per_step, cfg.group
        first = (generation * (DYNAMIC_ROUNDS if cfg.dynamic_sampling else 1) + rnd) * P
        problems = [self.pool.problem(first + j) for j in range(P)]
        prompts = [self.encode(p) for p in problems]
        seed = stable_seed("rl-rollout", cfg.seed, generation, rnd)
        was_training = model.training
        model.eval()
        groups = generate(model, self.tok, prompts, n=G, max_new_tokens=self.max_tokens,
                          temperature=cfg.temperature, stop=self.stop, seed=seed, device=self.device,
                          return_logprobs=False)
        model.train(was_training)
        rewards, correct, flops = [], [], 0.0
        for problem, ids, samples in zip(problems, prompts, groups, strict=True):
            texts = [s.text for s in samples]
            raw = _per_distinct(self.reward.fn, problem, texts)
            lengths = [s.completion_tokens for s in samples]
            cut = [s.finish_reason == "length" for s in samples]
            rewards.append(shape(raw, self.task, texts, lengths, cut, cfg.format_reward, cfg.overlong_penalty,
                                 self.max_tokens, cfg.length_penalty))
            correct.append(raw if self.reward.is_verifier else
                           _per_distinct(lambda p, ts: [self.task.verify(p, t, cfg.extract) for t in ts], problem,
                                         texts))
            flops += group_flops(model.config, len(ids), lengths)
            flops += sum(self.reward.flops(problem, t) for t in texts)
        return {"problems": problems, "prompts": prompts, "groups": groups, "rewards": rewards,
                "correct": correct, "flops": flops}

    def rollout(self, generation: int, model: torch.nn.Module) -> Rollout:
        """Rollout `generation` from `model` (with dynamic sampling: groups with all-equal rewards replaced by
        groups of fresh prompts, up to DYNAMIC_ROUNDS rounds; what is still missing is filled with them)."""
        cfg = self.cfg
        P = cfg.prompts_per_step
        rounds = [self._round(generation, 0, model)]
        kept = [(0, j) for j in _informative(rounds[0])]
        if cfg.dynamic_sampling:
            while len(kept) < P and len(rounds) < DYNAMIC_ROUNDS:
                rounds.append(self._round(generation, len(rounds), model))
                kept += [(len(rounds) - 1, j) for j in _informative(rounds[-1])]
            flat = [(r, j) for r in range(len(rounds)) for j in range(P)]
            chosen = (kept + [rj for rj in flat if rj not in kept])[:P]
        else:
            chosen = [(0, j) for j in range(P)]
        prompts, completions, rewards, correct, lengths, cut = [], [], [], [], [], []
        for r, j in chosen:
            rd = rounds[r]
            for s, rew, ok in zip(rd["groups"][j], rd["rewards"][j], rd["correct"][j], strict=True):
                prompts.append(rd["prompts"][j])
                completions.append(s.token_ids)
                rewards.append(rew)
                correct.append(ok)
                lengths.append(s.completion_tokens)
                cut.append(s.finish_reason == "length")
        batch = pack_sequences(prompts, completions, self.tok.pad_id)
        r = torch.tensor(rewards, dtype=torch.float32).view(P, cfg.group)
        advantages = group_advantages(r, cfg.scale_rewards).flatten()
        stats = {"reward_mean": float(r.mean()), "reward_std": float(r.std()),
                 "zero_std_groups": 1.0 - len(_informative(rounds[0])) / P,
                 "accuracy": float(np.mean(correct)),
                 "completion_len": float(np.mean(lengths)), "completion_len_max": float(max(lengths)),
                 "truncated": float(np.mean(cut)), "sample_rounds": float(len(rounds)),
                 "sampled_tokens": float(sum(s.completion_tokens for rd in rounds for g in rd["groups"] for s in g))}
        if cfg.dynamic_sampling:  # zero_std_groups is what the first round drew; this, what the step trains on
            stats["trained_zero_std_groups"] = float((r.std(1) == 0).float().mean())
        return Rollout(generation, batch, advantages, stats, sum(rd["flops"] for rd in rounds))


def _per_distinct(fn, problem: Problem, texts: list[str]) -> list[float]:
    """fn(problem, texts) computed once per distinct text (a confident policy repeats itself within a group)."""
    distinct = list(dict.fromkeys(texts))
    scores = dict(zip(distinct, fn(problem, distinct), strict=True))
    return [scores[t] for t in texts]


def group_flops(cfg, prompt_len: int, lengths: list[int]) -> float:
    """Forward FLOPs of sampling one group: the prompt prefilled once, then each completion's tokens (the first
    comes from the prefill's logits), as datawall.model.flops.sample_flops counts them, summed in closed form."""
    prefill = sample_flops(cfg, prompt_len, 1)
    n = np.asarray([m for m in lengths if m > 1], dtype=np.float64) - 1  # decode steps per completion
    if not len(n):
        return prefill
    per_token = 2.0 * matmul_params(cfg)
    attn = 4.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim
    # decode step i of a completion attends to prompt_len + 1 + i positions (i = 0 .. n - 1)
    attended = n * (prompt_len + 1) + n * (n - 1) / 2
    return prefill + float(per_token * n.sum() + attn * attended.sum())


def _informative(rd: dict) -> list[int]:
    """Indices of a sampling round's groups whose rewards are not all equal (the others teach nothing)."""
    return [j for j, rs in enumerate(rd["rewards"]) if max(rs) > min(rs)]
