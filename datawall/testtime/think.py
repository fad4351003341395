"""The `datawall think` pipeline: sample a pool per held-out problem, verify, build strategy curves, plot.

For K problems it draws n_max temperature samples (and one greedy completion) per problem through a backend,
scores each with the task's verifier and appends it to OUT/samples.jsonl (greedy ones to OUT/greedy.jsonl)
as soon as its batch returns. What a problem is asked comes from datawall.tasks.prompting: its prompt, after
cfg.fewshot solved train examples, as text or (cfg.chat) chat messages; completions stop at the task's stop
sequences and cfg.stop. Samples already in those files or in the sample cache are never drawn again,
so a re-run is free and an interrupted run resumes. Then it computes every strategy's accuracy-versus-budget
curve with costs per query, fits the coverage law, and writes results.json, PNG plots and report.html.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from datawall.atomic import atomic_write_json, atomic_write_text
from datawall.errors import DatawallError
from datawall.progress import progress_bar
from datawall.rewards.scoring import charge_scoring, score_rows, scoring_summary, write_scores
from datawall.sampling.backends import Backend, Completion, mix_seed
from datawall.sampling.sample_cache import SampleCache, params_key
from datawall.tasks import Problem, get_task
from datawall.tasks.prompting import Prompt, build_prompt, stop_sequences
from datawall.testtime.beam_search import BeamConfig, StepScorer, beam_grid
from datawall.testtime.coverage_law import fit_coverage_law
from datawall.testtime.curves import Curve, pools_from_rows, results_json, single_curve, strategy_curves
from datawall.testtime.strategies import STRATEGIES, check_scorers
from datawall.testtime.think_config import ThinkConfig
from datawall.testtime.think_policy import policy_json
from datawall.testtime.think_report import policy_blocks, thinking_blocks
from datawall.testtime.think_safety import safety_blocks, safety_results
from datawall.testtime.think_search import run_beam, run_thinking
from datawall.testtime.thinking_budget import ThinkingConfig

# reward model for best-of-n and weighted-majority: scores each completion of a problem, after sampling; one
# with `flops(prompt, completion)` and `identity` (datawall.rewards.scorers.RewardScorer) has its cost charged
Scorer = Callable[[Problem, list[str]], list[float]]
BATCH_PROMPTS = 16


def select_problems(task, split: str, k: int) -> list[Problem]:
    """Problems 0 .. k-1 of `split` (a split never repeats a problem; asking for more than it has is an error)."""
    return [task.problem(split, i) for i in range(k)]


def default_max_tokens(task, backend: Backend, problems: list[Problem], slack: float = 1.5) -> int:
    """The longest reference solution among the problems, with slack (characters if tokens are unknown)."""
    longest = 0
    for p in problems:
        text = task.solution(p)
        tokens = backend.count_tokens(text)
        longest = max(longest, len(text) if tokens is None else tokens)
    return int(longest * slack) + 8


def read_rows(path: Path) -> list[dict]:
    """Complete rows of a samples file; a torn last line (a crash mid-write) is dropped from the file."""
    if not path.exists():
        return []
    rows, good, torn = [], [], False
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            row = json.loads(line)
            ok = line.endswith("\n") and isinstance(row, dict) and {"problem", "sample"} <= row.keys()
        except json.JSONDecodeError:
            ok = False
        if ok:
            rows.append(row)
            good.append(line)
        else:
            torn = True
    if torn:
        atomic_write_text(path, "".join(good))
    return rows


def _append(path: Path, rows: list[dict]) -> None:
    """Append rows and flush them to disk once per batch."""
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
        f.flush()
        os.fsync(f.fileno())


def _recorded_max_tokens(out: Path) -> int | None:
    """The budget an earlier run in `out` used, so that growing --problems keeps its samples valid."""
    path = out / "think.json"
    return json.loads(path.read_text()).get("max_tokens") if path.exists() else None


# what a run recorded before these settings existed drew its samples with
_LEGACY = {"chat": False, "fewshot": 0, "fewshot_seed": None, "stop": [], "extract": "strict"}


def _check_run(out: Path, settings: dict) -> None:
    """Refuse to mix samples of different settings in one directory; record the settings otherwise."""
    path = out / "think.json"
    if path.exists():
        old = _LEGACY | json.loads(path.read_text())
        diff = [k for k in settings if k in old and old[k] != settings[k]]
        if diff:
            raise DatawallError(f"{out}: holds samples drawn with other settings ({diff[0]}: {old[diff[0]]!r}, "
                                f"now {settings[diff[0]]!r}); use another --out")
    atomic_write_json(path, settings)


class _Sampler:
    """Draws the samples a file lacks: cache first, then the backend, batched by missing indices."""

    def __init__(self, task, backend: Backend, cache: SampleCache, params: dict, seed: int, bar, job,
                 prompts: dict[int, Prompt], extract: str = "strict"):
        self.task, self.backend, self.cache, self.prompts, self.extract = task, backend, cache, prompts, extract
        self.params, self.seed = params, seed
        self.pkey = params_key(**params)
        self.bar, self.job = bar, job
        self.drawn = 0

    def fill(self, path: Path, problems: list[Problem], n: int, have: dict[tuple[int, int], dict]) -> None:
        """Make `path` hold samples 0..n-1 of every problem (appending what it lacks)."""
        for i in range(0, len(problems), BATCH_PROMPTS):
            chunk = problems[i:i + BATCH_PROMPTS]
            got: dict[int, dict[int, Completion]] = {}
            need: dict[tuple[int, ...], list[Problem]] = {}
            for p in chunk:
                missing = [j for j in range(n) if (p.index, j) not in have]
                cached = self.cache.get(self._key(p), missing) if missing else {}
                got[p.index] = cached
                rest = tuple(j for j in missing if j not in cached)
                if rest:
                    need.setdefault(rest, []).append(p)
                self.bar.advance(self.job, n - len(rest))
            for idx, group in need.items():
                # a resumed request gets its own seed stream, so it never repeats the samples already drawn
                seed = self.seed if idx[0] == 0 else mix_seed(self.seed, idx[0])
                outs = self.backend.sample([self.prompts[p.index] for p in group], n=len(idx), seed=seed,
                                           **self.params)
                self.cache.put([(self._key(p), j, c) for p, cs in zip(group, outs, strict=True)
                                for j, c in zip(idx, cs, strict=True)])
                for p, cs in zip(group, outs, strict=True):
                    got[p.index].update(zip(idx, cs, strict=True))
                self.drawn += len(idx) * len(group)
                self.bar.advance(self.job, len(idx) * len(group))
            rows = [self._row(p, got[p.index]) for p in chunk if got[p.index]]
            _append(path, [r for rs in rows for r in rs])
            for rs in rows:
                have.update({(r["problem"], r["sample"]): r for r in rs})

    def _key(self, p: Problem) -> str:
        return SampleCache.key(self.backend.identity, self.prompts[p.index], self.pkey)

    def _row(self, p: Problem, comps: dict[int, Completion]) -> list[dict]:
        return [{"problem": p.index, "sample": j, "completion": c.text,
                 "answer": self.task.extract_answer(c.text, self.extract),
                 "reward": float(self.task.verify(p, c.text, self.extract)), "tokens": c.completion_tokens,
                 "prompt_tokens": c.prompt_tokens, "seconds": c.seconds} for j, c in sorted(comps.items())]


def _pools(rows: dict[tuple[int, int], dict], indices: list[int], n: int):
    pools = []
    for i in indices:
        mine = [rows[(i, j)] for j in range(n)]
        pool = pools_from_rows(mine)[0]
        secs = [r.get("seconds") for r in mine]
        pool.seconds = float(sum(secs)) if all(isinstance(s, int | float) for s in secs) else math.nan
        pools.append(pool)
    return pools


def run_think(backend: Backend, cfg: ThinkConfig, out: str | Path, cache: SampleCache | None = None,
              scorer: Scorer | None = None, quiet: bool = False, step_scorer: StepScorer | None = None) -> dict:
    """Sample, verify, build curves and write OUT/{samples.jsonl,greedy.jsonl,results.json,*.png,report.html}.

    With "beam" among the strategies, `step_scorer` guides a step-level beam search (OUT/beam.jsonl); with
    cfg.thinking_budgets, budget forcing runs at each budget (OUT/thinking.jsonl, results["thinking_budget"]).
    """
    check_scorers(cfg.strategies, scorer, step_scorer)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task = get_task(cfg.task, **cfg.task_args)
    problems = select_problems(task, cfg.split, cfg.problems)
    indices = [p.index for p in problems]
    max_tokens = cfg.max_tokens or _recorded_max_tokens(out) or default_max_tokens(task, backend, problems)
    # what each problem is asked (few-shot examples and chat turns included: they are prompt tokens like any)
    prompts = {p.index: build_prompt(task, p, cfg.fewshot, cfg.fewshot_seed, cfg.chat) for p in problems}
    stop = stop_sequences(task, cfg.stop)
    _check_run(out, {"backend": backend.identity, "task": cfg.task, "task_args": cfg.task_args,
                     "split": cfg.split, "temperature": cfg.temperature, "top_p": cfg.top_p,
                     "max_tokens": max_tokens, "seed": cfg.seed, "chat": cfg.chat, "fewshot": cfg.fewshot,
                     "fewshot_seed": cfg.fewshot_seed if cfg.fewshot else None, "stop": stop,
                     "extract": cfg.extract})
    own_cache = cache is None
    cache = cache or SampleCache(out / "cache.sqlite")
    cost = backend.cost_model()
    search: dict[str, Curve] = {}
    extra: dict = {}
    greedy = "greedy" in cfg.strategies
    sample_path, greedy_path = out / "samples.jsonl", out / "greedy.jsonl"
    have = {(r["problem"], r["sample"]): r for r in read_rows(sample_path)}
    have_greedy = {(r["problem"], r["sample"]): r for r in read_rows(greedy_path)} if greedy else {}
    wanted = set(indices)
    from_files = sum(1 for k in have if k[0] in wanted and k[1] < cfg.n_max) + len(
        [k for k in have_greedy if k[0] in wanted and k[1] == 0])
    hits_before = cache.hits
    drawn = 0
    try:
        with progress_bar(rate_unit="", disable=quiet) as bar:
            job = bar.add_task("think", total=cfg.problems * (cfg.n_max + greedy), rate="", info="samples")
            common = {"max_tokens": max_tokens, "top_p": cfg.top_p, "stop": stop or None}
            sampler = _Sampler(task, backend, cache, {**common, "temperature": cfg.temperature}, cfg.seed, bar, job,
                               prompts, cfg.extract)
            sampler.fill(sample_path, problems, cfg.n_max, have)
            drawn += sampler.drawn
            if greedy:
                g = _Sampler(task, backend, cache, {**common, "temperature": 0.0}, cfg.seed, bar, job, prompts,
                             cfg.extract)
                g.fill(greedy_path, problems, 1, have_greedy)
                drawn += g.drawn
        # the searches continue the prompt's text: the few-shot one (chat is refused with them by ThinkConfig)
        asked = [replace(p, prompt=prompts[p.index]) if isinstance(prompts[p.index], str) else p for p in problems]
        search, extra = _search(task, backend, asked, cfg, out, cache, step_scorer, max_tokens, cost, quiet)
    finally:
        if own_cache:
            cache.close()

    scored = [s for s in cfg.strategies if STRATEGIES[s].scorer]  # best-of-n, weighted-majority
    score_flops = _score(have, problems, cfg.n_max, scorer, out, quiet) if scorer is not None and scored else None
    pools = _pools(have, indices, cfg.n_max)
    curves: dict[str, Curve] = {}
    pooled = [s for s in cfg.strategies if STRATEGIES[s].pool]
    pooled_curves = strategy_curves(pools, pooled, cost=cost, seed=cfg.seed) if pooled else {}
    for name in cfg.strategies:
        if name == "greedy":
            rs = [have_greedy[(i, 0)] for i in indices]
            curves[name] = single_curve("greedy", [r["reward"] for r in rs], [r["prompt_tokens"] for r in rs],
                                        [r["tokens"] for r in rs], cost, [r["seconds"] for r in rs])
        elif name in search:
            curves[name] = search[name]
        else:
            curves[name] = pooled_curves[name]
    if score_flops is not None:
        curves |= {name: charge_scoring(curves[name], score_flops, cost.price) for name in scored}
    results = results_json(curves, n_boot=cfg.n_boot, seed=cfg.seed)
    if score_flops is not None:
        results["reward_model"] = scoring_summary(scorer, score_flops, cost.price, scored)
    policy_curves = {**curves, **{k: c for k, c in search.items() if k not in curves}}
    results |= extra | {"policy": policy_json(policy_curves, [p.rewards.mean() for p in pools], cfg.difficulty_bins)}
    results |= {"task": cfg.task, "task_args": cfg.task_args, "split": cfg.split, "problems": cfg.problems,
                "problem_indices": indices, "n_max": cfg.n_max,
                "temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": max_tokens,
                "seed": cfg.seed, "chat": cfg.chat, "fewshot": cfg.fewshot, "fewshot_seed": cfg.fewshot_seed,
                "stop": stop, "extract": cfg.extract, "backend": backend.identity, "price": cost.price.model_dump(),
                "coverage_law": _coverage_law(curves.get("pass@k"), pools),
                "sampling": {"drawn": drawn, "from_cache": cache.hits - hits_before, "from_files": from_files}}
    if task.has_hazards:  # caveat recall and unsafe advice per strategy (datawall.testtime.think_safety)
        results["safety"] = safety_results(task, problems, have, have_greedy if greedy else None, cfg.strategies,
                                           pools, cfg.n_max, cfg.extract, cfg.n_boot, cfg.seed)
    atomic_write_json(out / "results.json", results)
    results["plots"] = write_plots(out, curves, results)
    atomic_write_json(out / "results.json", results)
    return results


def _score(rows: dict[tuple[int, int], dict], problems: list[Problem], n: int, scorer: Scorer, out: Path,
           quiet: bool):
    """Reward-model scores of the whole pool (rows updated in memory, OUT/scores.jsonl) and their FLOPs [P, n]."""
    with progress_bar(rate_unit="", disable=quiet) as bar:
        job = bar.add_task("score", total=len(problems) * n, rate="", info="reward model")
        flops = score_rows(rows, problems, n, scorer, progress=lambda k: bar.advance(job, k))
    name = getattr(scorer, "identity", {}).get("path", getattr(scorer, "__name__", type(scorer).__name__))
    write_scores(out / "scores.jsonl", rows, problems, n, name)
    return flops


def _search(task, backend: Backend, problems: list[Problem], cfg: ThinkConfig, out: Path, cache: SampleCache,
            step_scorer: StepScorer | None, max_tokens: int, cost, quiet: bool) -> tuple[dict[str, Curve], dict]:
    """Beam search and thinking budgets, when asked for: their curves and their results.json sections."""
    curves: dict[str, Curve] = {}
    extra: dict = {}
    if "beam" in cfg.strategies:
        base = BeamConfig(n=cfg.beam_expand, expand=cfg.beam_expand, aggregate=cfg.beam_aggregate,
                          max_tokens=max_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
        grid = beam_grid(cfg.n_max, cfg.beam_expand, cfg.beam_n)
        curves["beam"], extra["beam"] = run_beam(task, backend, problems, grid, base, step_scorer, cost, cache, out,
                                                 quiet)
    if cfg.thinking_budgets:
        answer = max(backend.count_tokens(p.answer) or len(p.answer) for p in problems) + 4
        tcfg = ThinkingConfig(tuple(cfg.thinking_budgets), answer_tokens=answer, extend=cfg.thinking_extend,
                              seed=cfg.seed)
        curves["thinking-budget"], extra["thinking_budget"] = run_thinking(task, backend, problems, tcfg, cost, cache,
                                                                           out, cfg.n_boot, quiet)
    return curves, extra


def _coverage_law(curve: Curve | None, pools) -> dict:
    """Fit c(k) = exp(a k^b) to pass@k; a fit that is impossible (all 0 or all 1) says why."""
    if curve is None:
        curve = strategy_curves(pools, ["pass@k"])["pass@k"]
    try:
        return fit_coverage_law(curve.ks, curve.mean_accuracy()).to_dict()
    except DatawallError as e:
        return {"error": str(e)}


def write_plots(out: Path, curves: dict[str, Curve], results: dict) -> list[str]:
    """Accuracy vs samples, FLOPs and dollars per query (PNG each) and report.html; returns the file names."""
    from datawall.report.figures import new_figure, save_png
    from datawall.report.html import html_page

    labels = {"samples": "samples per query", "flops": "FLOPs per query", "dollars": "dollars per query"}
    files, blocks = [], [("p", f"{results['task']} ({results['split']}), {results['problems']} problems, "
                          f"n_max {results['n_max']}, temperature {results['temperature']}, "
                          f"backend {results['backend']}")]
    for axis, label in labels.items():
        xs = {name: c.budget(axis) for name, c in curves.items()}
        if not all(np.isfinite(x).all() and (x > 0).all() for x in xs.values()):
            blocks.append(("p", f"accuracy vs {label}: not drawn (cost unknown for this backend or price)"))
            continue
        fig, (ax,) = new_figure()
        for name in curves:
            rows = results["strategies"][name]
            acc = np.array([r["accuracy"] for r in rows], dtype=float)
            lo = np.array([r["ci_low"] if r["ci_low"] is not None else np.nan for r in rows], dtype=float)
            hi = np.array([r["ci_high"] if r["ci_high"] is not None else np.nan for r in rows], dtype=float)
            if len(acc) == 1:
                ax.errorbar(xs[name], acc, yerr=[acc - lo, hi - acc], fmt="o", capsize=3, label=name)
            else:
                ax.plot(xs[name], acc, marker="o", label=name)
                ax.fill_between(xs[name], lo, hi, alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"accuracy vs {label}")
        ax.legend()
        name = f"accuracy_vs_{axis}.png"
        blocks.append(("img", save_png(fig, out / name), f"accuracy vs {label} (95% bootstrap intervals)"))
        files.append(name)
    header = ["strategy", "n", "accuracy", "ci", "gain over greedy (paired ci)", "tokens/query", "FLOPs/query",
              "$/query"]
    gains = {name: {g["n"]: g for g in rows} for name, rows in results.get("vs_greedy", {}).items()}
    table = [[name, r["n"], _fmt(r["accuracy"]), f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]",
              _gain_cell(gains.get(name, {}).get(r["n"])),
              _fmt(r["tokens_per_query"]), _fmt(r["flops_per_query"]), _fmt(r["dollars_per_query"])]
             for name, rows in results["strategies"].items() for r in rows]
    blocks += [("h2", "strategies"), ("table", header, table), ("h2", "coverage law"),
               ("pre", json.dumps(results["coverage_law"], indent=2))]
    thinking, thinking_files = thinking_blocks(out, results)
    blocks += thinking + policy_blocks(results) + safety_blocks(results)
    files += thinking_files
    atomic_write_text(out / "report.html", html_page("datawall think", blocks))
    return [*files, "report.html"]


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _gain_cell(g: dict | None) -> str:
    if g is None or g["gain"] is None:
        return "-"
    return f"{g['gain']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}]"
