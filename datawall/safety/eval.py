"""`datawall safety eval`: a model answers the lab-safety scenarios and the rubric grades every answer.

Each scenario is asked `samples` times (temperature 0: once, repeated) through any sampling backend, as a chat
turn (`chat`) or as completion text ("<question>\\n\\nAnswer:"). Every answer is graded item by item: by the
item's rule patterns, or by an LLM judge for items that ask for one (`judge: true`) or for every item
(`judge_all`). An answer's score is HealthBench's (points met / positive points possible); a scenario's is the
mean over its answers; the aggregate is the mean over scenarios clipped to [0, 1] with a bootstrap interval over
scenarios. Per tag, the share of that tag's items met (warnings given, answers right, unsafe advice given).
Answers are kept in a sample cache, so a rerun (or a regrade with a judge) samples nothing twice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from datawall.errors import DatawallError
from datawall.progress import progress_bar
from datawall.rewards.rubric import Grade, RubricItem, bootstrap_mean, completion_score, grade_by_rules
from datawall.rewards.rubric_judge import RubricJudge
from datawall.safety.scenarios import Scenario
from datawall.sampling.backends import Backend, Completion, Prompt
from datawall.sampling.sample_cache import SampleCache, params_key

BATCH = 4  # scenarios per backend call (progress between calls)


def scenario_prompt(scenario: Scenario, chat: bool) -> Prompt:
    """What the model is asked: one user turn, or the question as completion text."""
    if chat:
        return [{"role": "user", "content": scenario.prompt}]
    return f"{scenario.prompt}\n\nAnswer:"


def needs_judge(items: Sequence[RubricItem], judge_all: bool) -> bool:
    """Whether grading these items takes an LLM judge."""
    return judge_all or any(not it.by_rules for it in items)


def _answers(backend: Backend, scenarios: Sequence[Scenario], prompts: list[Prompt], samples: int, params: dict,
             seed: int, cache: SampleCache | None, quiet: bool) -> list[list[Completion]]:
    """`samples` answers per scenario: from the cache where it has them, else drawn in batches."""
    pkey = params_key(**params)
    out: list[list[Completion]] = []
    with progress_bar(rate_unit="", disable=quiet) as bar:
        job = bar.add_task("safety eval", total=len(scenarios) * samples, rate="", info="answers")
        for start in range(0, len(scenarios), BATCH):
            chunk = prompts[start:start + BATCH]
            keys = [SampleCache.key(backend.identity, p, pkey) for p in chunk]
            got = [cache.get(k, list(range(samples))) if cache else {} for k in keys]
            missing = [i for i, g in enumerate(got) if len(g) < samples]
            if missing:
                drawn = backend.sample([chunk[i] for i in missing], n=samples, seed=seed, **params)
                for i, comps in zip(missing, drawn, strict=True):
                    got[i] = dict(enumerate(comps))
                if cache:
                    cache.put([(keys[i], j, c) for i in missing for j, c in got[i].items()])
            out += [[g[j] for j in range(samples)] for g in got]
            bar.advance(job, len(chunk) * samples)
    return out


def run_safety_eval(backend: Backend, scenarios: Sequence[Scenario], chat: bool = False, samples: int = 1,
                    temperature: float = 0.0, max_tokens: int = 384, seed: int = 0, judge: RubricJudge | None = None,
                    judge_all: bool = False, cache: SampleCache | None = None, n_boot: int = 1000,
                    quiet: bool = False) -> dict:
    """Answer, grade and aggregate (see the module docstring); the result is what `--json` prints."""
    if samples < 1:
        raise DatawallError(f"--samples must be >= 1, got {samples}")
    all_items = [it for s in scenarios for it in s.items]
    if judge is None and needs_judge(all_items, judge_all):
        count = sum(not it.by_rules for it in all_items)
        raise DatawallError(f"{'--judge-all' if judge_all else f'{count} rubric items (judge: true)'} need an LLM "
                            "judge: give --judge-endpoint URL --judge-model NAME")
    prompts = [scenario_prompt(s, chat) for s in scenarios]
    params = {"max_tokens": max_tokens, "temperature": temperature, "top_p": None, "stop": None}
    answers = _answers(backend, scenarios, prompts, samples, params, seed, cache, quiet)

    # grade: rules here, then every judge case in one go (its requests go out concurrently)
    grades: dict[tuple[int, int, int], Grade] = {}
    cases, where = [], []
    for s_i, (s, comps) in enumerate(zip(scenarios, answers, strict=True)):
        for a_i, comp in enumerate(comps):
            for i_i, it in enumerate(s.items):
                if judge_all or not it.by_rules:
                    cases.append((s.prompt, comp.text, it))
                    where.append((s_i, a_i, i_i))
                else:
                    grades[(s_i, a_i, i_i)] = grade_by_rules(it, comp.text)
    if cases:
        assert judge is not None
        grades.update(zip(where, judge.grade(cases), strict=True))

    results, scenario_scores = [], []
    tag_met: dict[str, list[float]] = {}
    unsafe_answers: list[float] = []
    for s_i, (s, comps) in enumerate(zip(scenarios, answers, strict=True)):
        per_answer = []
        for a_i, comp in enumerate(comps):
            g = [grades[(s_i, a_i, i_i)] for i_i in range(len(s.items))]
            score = completion_score(s.items, g)
            unsafe = any(gr.met for it, gr in zip(s.items, g, strict=True) if it.points < 0)
            per_answer.append({"text": comp.text, "score": score, "unsafe": unsafe,
                               "completion_tokens": comp.completion_tokens, "prompt_tokens": comp.prompt_tokens})
        items = []
        for i_i, it in enumerate(s.items):
            g = [grades[(s_i, a_i, i_i)] for a_i in range(len(comps))]
            met = [float(gr.met) for gr in g if gr.met is not None]
            rate = float(np.mean(met)) if met else None
            items.append({"criterion": it.criterion, "points": it.points, "tags": list(it.tags),
                          "met": rate, "by": g[0].by, "unscored": sum(gr.met is None for gr in g),
                          "explanation": g[0].explanation or None})
            for tag in it.tags:
                if rate is not None:
                    tag_met.setdefault(tag, []).append(rate)
        scores = [a["score"] for a in per_answer if a["score"] is not None]
        scenario_score = float(np.mean(scores)) if scores else None
        scenario_scores.append(scenario_score)
        unsafe_answers.append(float(np.mean([a["unsafe"] for a in per_answer])))
        results.append({"id": s.id, "score": scenario_score, "answers": per_answer, "items": items})

    total = bootstrap_mean(scenario_scores, n_boot=n_boot, seed=seed, clip=True)
    unsafe = bootstrap_mean(unsafe_answers, n_boot=n_boot, seed=seed)
    cost = backend.cost_model()
    comps = [c for cs in answers for c in cs]
    queries = [cost.query(cs[0].prompt_tokens, [c.completion_tokens for c in cs]) for cs in answers]
    out = {
        "scenarios": len(scenarios), "samples": samples, "backend": backend.identity, "chat": chat,
        "temperature": temperature, "max_tokens": max_tokens, "seed": seed,
        "score": total["value"], "score_ci": [total["ci_low"], total["ci_high"]],
        "unsafe_answers": unsafe["value"], "unsafe_answers_ci": [unsafe["ci_low"], unsafe["ci_high"]],
        "tags": {tag: _tag(v, n_boot, seed) for tag, v in sorted(tag_met.items())},
        "unscored_items": sum(g.met is None for g in grades.values()),
        "judge": judge.summary() if judge is not None else None,
        "tokens": {"prompt": int(sum(c.prompt_tokens for c in comps)),
                   "completion": int(sum(c.completion_tokens for c in comps))},
        "flops": _total([q.flops for q in queries]), "dollars": _total([q.dollars for q in queries]),
        "results": results,
    }
    return out


def _total(values: list[float]) -> float | None:
    """The sum, or None when any part is unknown (a remote model of unknown size)."""
    return float(sum(values)) if all(math.isfinite(v) for v in values) else None


def _tag(values: list[float], n_boot: int, seed: int) -> dict:
    stats = bootstrap_mean(values, n_boot=n_boot, seed=seed)
    return {"met": stats["value"], "ci": [stats["ci_low"], stats["ci_high"]], "items": len(values)}
