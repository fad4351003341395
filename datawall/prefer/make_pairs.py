"""Preference pairs from a policy: n answers per train-split prompt, comparisons between distinct answers, each
judged by k simulated graders (or an LLM judge), the votes aggregated into (chosen, rejected) pairs.

Everything is a pure function of the config's seed: the answers (datawall's sampler), which comparisons a prompt
gets, and each grader's draws (seeded by seed, problem, the two answers and the grader). Every comparison put to a
grader is paid, whether or not it makes a pair (a tie, or a split panel, drops it); the dollars are the graders'
plus the policy's sampling under its price entry.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np

import datawall
from datawall.atomic import atomic_write_json
from datawall.economics.prices import grader_price, load_prices
from datawall.errors import DatawallError
from datawall.prefer.config import PairsConfig
from datawall.prefer.graders import Candidate, aggregate_prompt, judge
from datawall.prefer.pairs import Pair, metadata_path, write_pairs
from datawall.progress import progress_bar


def choose_comparisons(answers: int, per_prompt: int | None, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Which (i, j), i < j, of a prompt's distinct answers are compared: all, or a random `per_prompt` of them."""
    every = list(itertools.combinations(range(answers), 2))
    if per_prompt is None or per_prompt >= len(every):
        return every
    picked = sorted(rng.choice(len(every), size=per_prompt, replace=False).tolist())
    return [every[k] for k in picked]


def _distinct(candidates: list[Candidate]) -> list[Candidate]:
    """A prompt's answers with repeats removed (two copies of one answer are not a comparison), in order."""
    seen: dict[str, Candidate] = {}
    for c in candidates:
        seen.setdefault(c.text, c)
    return list(seen.values())


def rubric_score(task, problem, completion: str) -> float | None:
    """The rubric score of an answer in a world with hazard cases (caveat required, unsafe advice penalised;
    datawall.rewards.rubric_task), None in a world without them (the verifier is the gold there)."""
    if not task.has_hazards:
        return None
    from datawall.rewards.rubric_task import completion_flags

    return completion_flags(task, problem, completion).score


def label_stats(pairs: list[Pair]) -> dict:
    """How the pairs relate to the gold (the verifier, or the rubric score in a world with hazard cases): the share
    whose answers differ by it (informative), the share of those where the chosen one is the better (label
    accuracy), and answer lengths."""
    side = "score" if pairs and "chosen_score" in pairs[0].extra else "reward"  # the gold the graders approximate
    informative = [p for p in pairs if p.extra[f"chosen_{side}"] != p.extra[f"rejected_{side}"]]
    right = sum(p.extra[f"chosen_{side}"] > p.extra[f"rejected_{side}"] for p in informative)
    n = max(1, len(pairs))
    return {"informative": len(informative) / n,
            "label_accuracy": right / len(informative) if informative else None,
            "chosen_tokens": sum(p.extra["chosen_tokens"] for p in pairs) / n,
            "rejected_tokens": sum(p.extra["rejected_tokens"] for p in pairs) / n,
            "chosen_longer": sum(p.extra["chosen_tokens"] > p.extra["rejected_tokens"] for p in pairs) / n}


def make_pairs(cfg: PairsConfig, out: str | Path, quiet: bool = False) -> dict:
    """Sample, compare, grade and aggregate; write OUT (JSONL pairs) and its description OUT.json; return it."""
    from datawall.model import checkpoint_dir, load_checkpoint
    from datawall.rewards.orm import sample_solutions, train_problems
    from datawall.tasks import get_task
    from datawall.train.evaluate import solution_budget

    out = Path(out)
    task = get_task(cfg.task, **cfg.task_args)
    problems = train_problems(task, cfg.problems, cfg.first_problem)
    prices = load_prices(cfg.prices)
    policy_price = prices.get(cfg.policy_price)
    judge_client = None
    if cfg.judge_endpoint is not None:
        from datawall.prefer.judge import EndpointJudge

        judge_client = EndpointJudge(cfg.judge_endpoint, cfg.judge_model, cfg.judge_api_key_env, cfg.judge_price,
                                     cfg.prices)
        per_comparison = None
    else:
        per_comparison = grader_price(cfg.price, cfg.prices)
    policy_dir = checkpoint_dir(cfg.model)
    ckpt = load_checkpoint(policy_dir)
    policy, tok = ckpt.model.to(cfg.device).eval(), ckpt.tokenizer
    max_tokens = cfg.max_tokens or solution_budget(task, tok, problems)

    start = time.perf_counter()
    with progress_bar(rate_unit="", disable=quiet) as bar:
        job = bar.add_task("sample", total=cfg.problems * cfg.n, rate="", info="answers")
        solutions, data = sample_solutions(policy, tok, task, problems, cfg.n, max_tokens, cfg.temperature, cfg.seed,
                                           cfg.device, progress=lambda k: bar.advance(job, k))
    sample_seconds = time.perf_counter() - start

    # every comparison of every prompt, then the graders' verdicts on each
    per_problem: list[tuple[object, list[Candidate], list[tuple[int, int]]]] = []
    for k, problem in enumerate(problems):
        mine = solutions[k * cfg.n:(k + 1) * cfg.n]
        candidates = _distinct([Candidate(s.text, s.reward, s.tokens, rubric_score(task, problem, s.text))
                                for s in mine])
        compared = choose_comparisons(len(candidates), cfg.comparisons,
                                      np.random.default_rng([cfg.seed, problem.index, 1]))
        per_problem.append((problem, candidates, compared))
    flat = [(p, c, ij) for p, c, comps in per_problem for ij in comps]
    calls = []
    if judge_client is not None:
        try:
            calls = judge_client.judge([(p.prompt, c[i].text, c[j].text) for p, c, (i, j) in flat], cfg.seed)
        finally:
            judge_client.close()
        votes = [[call.verdict] for call in calls]
        grader_name = judge_client.name
        dollars = judge_client.dollars(calls)
    else:
        votes = [[judge(cfg.grader, c[i], c[j], np.random.default_rng([cfg.seed, p.index, i, j, g, 2]))
                  for g in range(cfg.graders)] for p, c, (i, j) in flat]
        grader_name = cfg.grader.describe() + (f" x{cfg.graders} {cfg.aggregate}" if cfg.graders > 1 else "")
        dollars = per_comparison.per_comparison(len(flat) * cfg.graders)

    pairs: list[Pair] = []
    at = 0
    for problem, candidates, compared in per_problem:
        mine = votes[at:at + len(compared)]
        at += len(compared)
        for (i, j), verdict, vs in zip(compared, aggregate_prompt(len(candidates), compared, mine, cfg.aggregate),
                                       mine, strict=True):
            if verdict is None:
                continue
            chosen, rejected = (candidates[i], candidates[j]) if verdict == 0 else (candidates[j], candidates[i])
            for_chosen = sum(v == verdict for v in vs)
            extra = {"problem": problem.index, "chosen_reward": chosen.reward, "rejected_reward": rejected.reward,
                     "chosen_tokens": chosen.tokens, "rejected_tokens": rejected.tokens,
                     "votes": [for_chosen, sum(v is not None for v in vs) - for_chosen]}
            if chosen.score is not None:
                extra |= {"chosen_score": chosen.score, "rejected_score": rejected.score}
            pairs.append(Pair(problem.prompt, chosen.text, rejected.text, grader_name, extra))
    if not pairs:
        raise DatawallError(f"no pairs: every one of {len(flat)} comparisons was a tie or split the graders (more "
                            "--problems, a larger --n, or a higher --temperature give answers that differ)")
    sample_dollars = policy_price.dollars(0.0, data["sample_tokens"], data["sample_flops"], sample_seconds)
    meta = {
        "kind": "pairs", "datawall_version": datawall.__version__, "config": cfg.model_dump(mode="json"),
        "model": str(policy_dir.resolve()), "task": cfg.task, "task_args": cfg.task_args, "grader": grader_name,
        "prompts": len(problems), "answers": len(solutions), "correct_rate": data["correct_rate"],
        "comparisons": len(flat), "graders": cfg.graders, "grader_comparisons": len(flat) * cfg.graders,
        "pairs": len(pairs), "dropped": len(flat) - len(pairs), **label_stats(pairs),
        "max_tokens": max_tokens, "sample_tokens": data["sample_tokens"], "sample_flops": data["sample_flops"],
        "sample_seconds": sample_seconds, "sample_dollars": sample_dollars, "grader_dollars": dollars,
        "dollars": sample_dollars + dollars,
        "price": cfg.judge_price if judge_client is not None else cfg.price,
    }
    if judge_client is not None:
        meta |= {"judge_abstained": sum(c.verdict is None for c in calls),
                 "judge_prompt_tokens": sum(c.prompt_tokens for c in calls),
                 "judge_completion_tokens": sum(c.completion_tokens for c in calls)}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_pairs(out, pairs)
    atomic_write_json(metadata_path(out), meta)
    return meta | {"out": str(out)}


def describe(meta: dict) -> str:
    """Two lines for a terminal."""
    acc = meta["label_accuracy"]
    return (f"{meta['pairs']} pairs from {meta['comparisons']} comparisons of {meta['answers']} answers to "
            f"{meta['prompts']} prompts ({meta['correct_rate']:.1%} correct) by {meta['grader']}\n"
            f"informative {meta['informative']:.1%}, label accuracy "
            f"{'-' if acc is None else f'{acc:.1%}'}, chosen longer {meta['chosen_longer']:.1%}; "
            f"${meta['grader_dollars']:.2f} graders + ${meta['sample_dollars']:.4f} sampling")
