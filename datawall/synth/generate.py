"""`synth generate`: a teacher writes worked solutions for unlabelled train-split problems beyond the first U real ones.

Pipeline: select P train problems (from `start`, or just past the problems whose worked examples hold the first U
real tokens, skipping any whose prompt is a real one's) -> draw K samples per problem through the sample cache
-> score them with the reward model when the strategy or filter needs one -> choose and filter
(datawall.synth.filters) -> drop exact and near duplicates among the kept (datawall.synth.dedup) -> write.

OUT (a run directory): config.json (the resolved settings and the teacher's identity; another run's settings in
the same OUT are refused), cache.sqlite (every sample, so a killed run redraws nothing it had), synthetic.jsonl,
result.json, and DONE, written last; a run with DONE is read back, never recomputed.

synthetic.jsonl holds one JSON object per problem, in problem order (the contract the training reader uses:
train on rows with "kept": true, the text being "prompt" followed by "solution"):

    problem    int          train-split index of the problem
    prompt     str          the task's plain prompt (Problem.prompt: what a student is trained on; no few-shot
                            examples or chat turns, whatever the teacher was shown)
    solution   str          the teacher's chosen completion (the kept one; for a dropped row the strategy's choice)
    answer     str | null   the answer read from the solution (--extract)
    correct    bool         the task's verifier accepts the solution (always computed, whatever the filter)
    kept       bool         part of the synthetic dataset
    dropped    str | null   why not: "wrong", "no_answer", "no_consensus", "below_threshold", "duplicate",
                            "near_duplicate" (null when kept)
    samples    int          samples the teacher drew for the problem (K)
    agreement  float | null share of the K samples whose answer equals the solution's (null: it states none)
    score      float | null the reward model's score of the solution (null when none was used)

On a world with hazard cases each row also says whether its problem is hazardous ("hazardous") and whether the
solution carries the required caveat line ("caveat"), and result.json the teacher's caveat recall (its own choice
on the hazardous problems) beside the kept data's ("kept_caveat_recall"): the verifier checks answers only, so
without --require-caveat a teacher's omissions reach the data.

A filter that keeps nothing still writes synthetic.jsonl and result.json (so the reasons can be read) but no
DONE, and the command fails with one line: that directory is not a dataset.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np

from datawall.atomic import atomic_write_json, atomic_write_text
from datawall.data.task_docs import SplitExhaustedError, task_docs
from datawall.data.tokenizer import Tokenizer
from datawall.economics.prices import FlopsPrice
from datawall.errors import DatawallError
from datawall.progress import progress_bar
from datawall.rewards.rubric_task import has_caveat
from datawall.rewards.scoring import SampleScorer
from datawall.sampling.backends import Backend, Completion
from datawall.sampling.draw import CachedDraw
from datawall.sampling.sample_cache import SampleCache
from datawall.synth.dedup import duplicates
from datawall.synth.diversity import diversity
from datawall.synth.filters import Draw, choose
from datawall.synth.generate_config import GenerateConfig
from datawall.tasks import Problem, get_task
from datawall.tasks.base import TaskIndexError
from datawall.tasks.prompting import FEWSHOT_POOL, build_prompt, stop_sequences
from datawall.testtime.think import default_max_tokens

SYNTHETIC = "synthetic.jsonl"
DROP_REASONS = ("wrong", "no_answer", "no_consensus", "below_threshold", "duplicate", "near_duplicate")
CAVEAT_DROP = "no_caveat"  # --require-caveat: listed among the reasons only then
BATCH_PROBLEMS = 16  # problems per sampling call: the cache is written after each, so a kill loses at most this
KIND = "synth-generate"


def real_problem_count(task, unique_tokens: int) -> int:
    """How many train problems the first `unique_tokens` real tokens use, counted as pretraining counts them.

    task_docs skips an example identical to an earlier one, so the last doc's problem can sit past index
    len(docs) - 1; it is found by encoding problems from there on until one equals it.
    """
    tok = Tokenizer.for_chars(task.alphabet)
    try:
        docs = task_docs(task, tok, "train", unique_tokens=unique_tokens)
    except SplitExhaustedError as e:
        raise DatawallError(f"--skip-unique-tokens {unique_tokens:,}: {e}") from None
    last, j = docs[-1].ids, len(docs) - 1
    while not np.array_equal(task_docs(task, tok, "train", count=1, start=j)[0].ids, last):
        j += 1
    return j + 1


def select_problems(task, start: int, count: int, real_prompts: set[str]) -> tuple[list[Problem], int]:
    """`count` train problems from index `start` on whose prompt is no real problem's; and how many were skipped."""
    out, skipped, i = [], 0, start
    while len(out) < count:
        try:
            p = task.problem("train", i)
        except TaskIndexError as e:
            raise DatawallError(f"--problems {count:,} from train problem {start:,}: {e}") from None
        if p.prompt in real_prompts:
            skipped += 1
        else:
            out.append(p)
        i += 1
    return out, skipped


def teacher_identity(backend: Backend) -> dict:
    """What wrote the solutions: the backend kind and the identity the sample cache keys it by."""
    return {"backend": backend.name, "identity": backend.identity}


def _first_difference(old, new, where: str = "") -> str | None:
    """The first setting (dotted) whose value differs between two configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*new, *(k for k in old if k not in new)]:
            found = _first_difference(old.get(key), new.get(key), f"{where}.{key}" if where else key)
            if found:
                return found
        return None
    return None if old == new else where


def claim_run_dir(out: Path, config: dict, what: str = "a run") -> None:
    """Write OUT/config.json, or refuse in one line a directory that holds `what` with other settings (the first
    one named, dotted); a directory with the same settings is this run's, to resume or read back."""
    path = out / "config.json"
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DatawallError(f"{path}: not valid JSON; remove the directory or choose another --out") from None
        key = _first_difference(old, config)
        if key is not None:
            a, b = _lookup(old, key), _lookup(config, key)
            raise DatawallError(f"{out}: holds {what} with other settings ({key}: {a!r}, now {b!r}); use another "
                                "--out")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, config)


def _check_run(out: Path, config: dict) -> dict | None:
    """Refuse another run's directory; the finished run's result when OUT holds this one with DONE."""
    claim_run_dir(out, config)
    if (out / "DONE").exists():
        return json.loads((out / "result.json").read_text(encoding="utf-8"))
    return None


def _lookup(d, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _same_size(problems: list[Problem], n: int, seed: int) -> list[Problem]:
    """A seeded sample of n of the problems, in order (all of them when there are no more): distinct n-grams and
    entropy grow or shrink with the number of texts, so the human side is measured at the synthetic side's size."""
    if len(problems) <= n:
        return problems
    pick = np.random.default_rng(seed).choice(len(problems), n, replace=False)
    return [problems[i] for i in sorted(pick)]


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def run_generate(backend: Backend, cfg: GenerateConfig, out: str | Path, scorer: SampleScorer | None = None,
                 cache: SampleCache | None = None, quiet: bool = False) -> dict:
    """Generate, filter, deduplicate and write OUT/{config.json,synthetic.jsonl,result.json,DONE}; the result."""
    out = Path(out)
    needs_scorer = cfg.kind == "best-of" or cfg.filter == "orm"
    if needs_scorer and scorer is None:
        raise DatawallError(f"--strategy {cfg.strategy} / --filter {cfg.filter}: needs a reward model (--orm DIR)")
    task = get_task(cfg.task, **cfg.task_args)
    if cfg.require_caveat and not task.has_hazards:
        raise DatawallError(f"--require-caveat: {task.name} ({cfg.task_args or 'default settings'}) has no hazard "
                            "cases, so no solution needs a caveat (arith takes hazard_rate=0.1, lab has them)")
    if cfg.start is not None:
        start = cfg.start
    else:
        start = real_problem_count(task, cfg.skip_unique_tokens) if cfg.skip_unique_tokens else 0
    real = task.problems("train", start)
    problems, skipped = select_problems(task, start, cfg.problems, {p.prompt for p in real})
    max_tokens = cfg.max_tokens or default_max_tokens(task, backend, problems)
    stop = stop_sequences(task, cfg.stop)
    scorer_id = getattr(scorer, "identity", None) if needs_scorer else None
    config = {"kind": KIND, "settings": cfg.settings(), "teacher": teacher_identity(backend),
              "orm": scorer_id, "resolved": {"start": start, "max_tokens": max_tokens, "stop": stop}}
    done = _check_run(out, config)
    if done is not None:
        return done

    own_cache = cache is None
    cache = cache or SampleCache(out / "cache.sqlite")
    try:
        comps, sampling = _draw(backend, cache, task, problems, cfg, max_tokens, stop, quiet)
    finally:
        if own_cache:
            cache.close()
    scores, score_flops = _score(scorer, problems, comps, quiet) if needs_scorer else (None, None)
    rows, accuracy = _rows(task, problems, comps, scores, cfg)
    if cfg.dedup:
        kept = [r for r in rows if r["kept"]]
        texts = [r["prompt"] + r["solution"] if cfg.dedup_on == "example" else r["solution"] for r in kept]
        for r, why in zip(kept, duplicates(texts, cfg.dedup_threshold), strict=True):
            if why is not None:
                r["kept"], r["dropped"] = False, why
    result = _result(task, cfg, backend, problems, real, comps, rows, score_flops, scorer_id, sampling) | accuracy
    result |= {"start": start, "max_tokens": max_tokens, "stop": stop, "skipped_real_prompts": skipped}
    atomic_write_text(out / SYNTHETIC, "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_json(out / "result.json", result)
    if not result["kept"]:
        why = ", ".join(f"{k} {v}" for k, v in result["dropped"].items() if v) or "none"
        raise DatawallError(f"{out}: the {cfg.filter} filter kept none of the {len(rows)} solutions (dropped: {why}); "
                            f"see {out / SYNTHETIC} (no DONE: this directory is not a dataset)")
    atomic_write_text(out / "DONE", "")
    return result


def _draw(backend: Backend, cache: SampleCache, task, problems: list[Problem], cfg: GenerateConfig, max_tokens: int,
          stop: list[str], quiet: bool) -> tuple[list[list[Completion]], dict]:
    """K completions per problem, cached ones reused; and how many were drawn and read from the cache."""
    if cfg.fewshot and problems[0].index < FEWSHOT_POOL and not quiet:
        from datawall.progress import stderr

        stderr.print(f"note: few-shot examples are real solutions of the first {FEWSHOT_POOL} train problems; "
                     f"problems start at {problems[0].index}, so the teacher may see real solutions beyond U")
    k = cfg.samples
    temperature = 0.0 if cfg.kind == "greedy" else cfg.temperature
    prompts = [build_prompt(task, p, cfg.fewshot, cfg.fewshot_seed, cfg.chat) for p in problems]
    drawer = CachedDraw(backend, cache, cfg.seed)
    hits = cache.hits
    comps: list[list[Completion]] = []
    began = time.monotonic()
    with progress_bar(rate_unit="samples/s", disable=quiet) as bar:
        job = bar.add_task("synth generate", total=len(problems) * k, rate="-", info=f"{cfg.strategy} samples")
        for i in range(0, len(problems), BATCH_PROBLEMS):
            comps += drawer.draw(prompts[i:i + BATCH_PROBLEMS], k, max_tokens, temperature, cfg.top_p, stop or None)
            elapsed = max(time.monotonic() - began, 1e-9)
            bar.update(job, completed=len(comps) * k, rate=f"{len(comps) * k / elapsed:.3g}")
    return comps, {"drawn": drawer.drawn, "from_cache": cache.hits - hits}


def _score(scorer: SampleScorer, problems: list[Problem], comps: list[list[Completion]], quiet: bool
           ) -> tuple[list[list[float]], float]:
    """The reward model's score of every sample, and the FLOPs of computing them (NaN when unknown)."""
    scores, flops = [], 0.0
    costed = isinstance(scorer, SampleScorer)
    with progress_bar(rate_unit="", disable=quiet) as bar:
        job = bar.add_task("orm", total=sum(map(len, comps)), rate="", info="reward-model scores")
        for p, cs in zip(problems, comps, strict=True):
            texts = [c.text for c in cs]
            scores.append([float(s) for s in scorer(p, texts)])
            flops += sum(scorer.flops(p.prompt, t) for t in texts) if costed else math.nan
            bar.advance(job, len(cs))
    return scores, flops


def _rows(task, problems: list[Problem], comps: list[list[Completion]], scores: list[list[float]] | None,
          cfg: GenerateConfig) -> tuple[list[dict], dict]:
    """One synthetic.jsonl row per problem (its chosen solution, verified, kept or dropped, before dedup); and the
    teacher's accuracy: of the strategy's own choice per problem, and of a single sample."""
    rows, top_right, samples_right, top_caveats = [], 0, 0, []
    for i, (p, cs) in enumerate(zip(problems, comps, strict=True)):
        hazard = task.hazard(p)
        draws = [Draw(c.text, task.extract_answer(c.text, cfg.extract), task.verify(p, c.text, cfg.extract) >= 1.0,
                      None if scores is None else scores[i][j], hazard is None or has_caveat(hazard, c.text))
                 for j, c in enumerate(cs)]
        ch = choose(draws, cfg.kind, cfg.filter, cfg.orm_threshold, cfg.min_agreement, cfg.require_caveat)
        top_right += draws[ch.top].correct
        samples_right += sum(x.correct for x in draws)
        d = draws[ch.index]
        rows.append({"problem": p.index, "prompt": p.prompt, "solution": d.text, "answer": d.answer,
                     "correct": d.correct, "kept": ch.kept, "dropped": ch.dropped, "samples": len(cs),
                     "agreement": ch.agreement, "score": d.score})
        if task.has_hazards:  # only then: rows of other worlds stay as they were
            rows[-1] |= {"hazardous": hazard is not None, "caveat": hazard is not None and d.caveat}
            if hazard is not None:
                top_caveats.append(draws[ch.top].caveat)
    out = {"teacher_accuracy": top_right / len(rows), "sample_accuracy": samples_right / sum(map(len, comps))}
    if task.has_hazards:
        out["teacher_caveat_recall"] = sum(top_caveats) / len(top_caveats) if top_caveats else None
    return rows, out


def _result(task, cfg: GenerateConfig, backend: Backend, problems: list[Problem], real: list[Problem],
            comps: list[list[Completion]], rows: list[dict], score_flops: float | None, scorer_id: dict | None,
            sampling: dict) -> dict:
    """result.json: counts, precision, costs (generation + scoring), diversity against the human solutions."""
    cost = backend.cost_model()
    queries = [cost.query(cs[0].prompt_tokens, [c.completion_tokens for c in cs], seconds=sum(c.seconds for c in cs))
               for cs in comps]
    gen_flops, gen_dollars = sum(q.flops for q in queries), sum(q.dollars for q in queries)
    per_flop = isinstance(cost.price, FlopsPrice)
    score_dollars = cost.price.dollars(0.0, 0.0, score_flops) if score_flops is not None and per_flop else None
    flops = gen_flops + (score_flops or 0.0)
    dollars = gen_dollars + (score_dollars or 0.0)
    kept = [r for r in rows if r["kept"]]
    human = _same_size(real if real else problems, len(kept), cfg.seed)
    dropped = Counter(r["dropped"] for r in rows if r["dropped"])
    reasons = (*DROP_REASONS, CAVEAT_DROP) if cfg.require_caveat else DROP_REASONS
    return {
        "generated": len(rows), "kept": len(kept),
        "kept_precision": sum(r["correct"] for r in kept) / len(kept) if kept else None,
        **(_kept_caveats(rows) if task.has_hazards else {}),
        "dropped": {reason: dropped.get(reason, 0) for reason in reasons},
        "flops": _num(flops), "dollars": _num(dollars),
        "flops_per_kept": _num(flops / len(kept)) if kept else None,
        "dollars_per_kept": _num(dollars / len(kept)) if kept else None,
        "cost": {"samples": sum(map(len, comps)), "prompt_tokens": sum(q.prompt_tokens for q in queries),
                 "completion_tokens": sum(q.completion_tokens for q in queries),
                 "generation_flops": _num(gen_flops), "generation_dollars": _num(gen_dollars),
                 "scoring_flops": None if score_flops is None else _num(score_flops),
                 "scoring_dollars": None if score_dollars is None else _num(score_dollars),
                 "scoring_dollars_included": score_flops is None or per_flop, "price": cost.price.model_dump()},
        "diversity": {"synthetic": diversity([r["solution"] for r in kept], [r["answer"] for r in kept], cfg.seed),
                      "human": diversity([task.solution(p) for p in human], [p.answer for p in human], cfg.seed),
                      "human_source": (f"reference solutions of {len(human):,} of the {len(real):,} real train "
                                       "problems before the synthetic ones" if real else
                                       f"reference solutions of {len(human):,} of the same problems (no real "
                                       "problems precede them)")},
        "teacher": teacher_identity(backend), "reward_model": scorer_id,
        "strategy": cfg.strategy, "filter": cfg.filter,
        **cfg.settings(),
        "first_problem": problems[0].index, "last_problem": problems[-1].index,
        "sampling": sampling,
    }


def _kept_caveats(rows: list[dict]) -> dict:
    """How many problems are hazardous, how many of them the data keeps, and the share of those whose solution
    carries the required caveat (what a student trained on the data sees)."""
    hazardous = [r for r in rows if r["hazardous"]]
    kept = [r for r in hazardous if r["kept"]]
    return {"hazardous": len(hazardous), "kept_hazardous": len(kept),
            "kept_caveat_recall": sum(r["caveat"] for r in kept) / len(kept) if kept else None}
