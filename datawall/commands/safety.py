"""`datawall safety eval`: score a model's answers to lab-safety scenarios with a HealthBench-style rubric."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from datawall.progress import stderr

app = typer.Typer(help="Safety: rubric scores of a model's answers to lab-safety scenarios (required warnings, "
                  "unsafe advice, the computed answer).", no_args_is_help=True)


@app.command("eval")
def eval_(
    model: Annotated[Path | None, typer.Option(help="Checkpoint directory (or run directory) to ask.")] = None,
    hf: Annotated[Path | None, typer.Option(help="Hugging Face causal-LM directory, sampled with "
                                            "transformers.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL, e.g. "
                                                 "http://127.0.0.1:8000/v1.")] = None,
    api_model: Annotated[str | None, typer.Option(help="Model name to ask the endpoint for.")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="Environment variable holding the endpoint's "
                                                    "API key.")] = None,
    chat: Annotated[bool, typer.Option(help="Ask each question as a chat turn (the model's chat template; "
                                       "the endpoint's /chat/completions); else as text ending in 'Answer:'.")]
    = False,
    scenarios: Annotated[Path | None, typer.Option(help="Scenario file (JSONL; see datawall/safety/scenarios.py); "
                                                   "default: the bundled lab-safety set.")] = None,
    samples: Annotated[int, typer.Option(help="Answers per scenario (their scores are averaged).")] = 1,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0: greedy).")] = 0.0,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 384,
    seed: Annotated[int, typer.Option(help="Seed of the sampling and of the bootstrap.")] = 0,
    judge_endpoint: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL of an LLM judge: grades "
                                                       "the items marked judge: true (all with --judge-all), "
                                                       "one item per request, answering JSON.")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Model name to ask the judge endpoint for.")] = None,
    judge_key_env: Annotated[str | None, typer.Option(help="Environment variable holding the judge's "
                                                      "API key.")] = None,
    judge_retries: Annotated[int, typer.Option(help="Times a malformed judge answer is asked again before the "
                                               "item counts as unscored.")] = 2,
    judge_all: Annotated[bool, typer.Option(help="Grade every item by the judge, rules ignored.")] = False,
    out: Annotated[Path | None, typer.Option(help="Directory for results.json and the answer cache "
                                             "(cache.sqlite: a rerun asks nothing twice).")] = None,
    cache: Annotated[Path | None, typer.Option(help="Answer cache (sqlite; default OUT/cache.sqlite).")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda (for --model and --hf).")] = "cpu",
    concurrency: Annotated[int, typer.Option(help="Requests in flight to an endpoint.")] = 4,
    timeout: Annotated[float, typer.Option(help="Seconds per endpoint request.")] = 120.0,
    retries: Annotated[int, typer.Option(help="Retries per endpoint request on 429/5xx/connection errors.")] = 5,
    api_params: Annotated[float | None, typer.Option(help="Parameters of the endpoint's model, for FLOPs "
                                                     "(2 N per token).")] = None,
    price: Annotated[str | None, typer.Option(help="Price-table entry (default local-cpu, h100 on cuda; "
                                              "endpoints: the table's default).")] = None,
    prices: Annotated[Path | None, typer.Option(help="Price-table override file (TOML or JSON).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Ask a model every scenario, grade each answer item by item, report the aggregate with a 95% interval."""
    from datawall.atomic import atomic_write_json
    from datawall.commands.backends import build_backend, check_backend_flags, close_backend
    from datawall.errors import DatawallError
    from datawall.rewards.rubric_judge import RubricJudge
    from datawall.safety.eval import needs_judge, run_safety_eval
    from datawall.safety.scenarios import load_scenarios
    from datawall.sampling.sample_cache import SampleCache

    check_backend_flags(model, hf, endpoint, api_model, api_key_env)
    if (judge_endpoint is None) != (judge_model is None):
        raise DatawallError("--judge-endpoint and --judge-model go together")
    if judge_retries < 0:
        raise DatawallError(f"--judge-retries must be >= 0, got {judge_retries}")
    if judge_all and judge_endpoint is None:
        raise DatawallError("--judge-all needs --judge-endpoint URL --judge-model NAME")
    loaded = load_scenarios(scenarios)
    if judge_endpoint is None and needs_judge([it for s in loaded for it in s.items], judge_all):
        raise DatawallError(f"{scenarios or 'the bundled scenarios'}: some rubric items have no patterns "
                            "(judge: true); give --judge-endpoint URL --judge-model NAME")
    judge = None
    if judge_endpoint is not None:
        from datawall.sampling.backends.openai_endpoint import OpenAIEndpoint

        judge = RubricJudge(OpenAIEndpoint(judge_endpoint, judge_model, api_key_env=judge_key_env, chat=True,
                                           concurrency=concurrency, timeout_s=timeout, max_retries=retries),
                            retries=judge_retries, seed=seed)
    backend = build_backend(model, hf, endpoint, api_model, api_key_env, chat, concurrency, timeout, retries,
                            api_params, price, prices, device)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    cache_path = cache or (out / "cache.sqlite" if out is not None else None)
    store = SampleCache(cache_path) if cache_path else None
    try:
        result = run_safety_eval(backend, loaded, chat=chat, samples=samples, temperature=temperature,
                                 max_tokens=max_tokens, seed=seed, judge=judge, judge_all=judge_all, cache=store,
                                 quiet=False)  # progress goes to stderr, --json or not
    finally:
        if store:
            store.close()
        close_backend(backend)
        if judge is not None:
            close_backend(judge.backend)
    result["scenario_file"] = str(scenarios) if scenarios else "bundled"
    if out is not None:
        atomic_write_json(out / "results.json", result)
    if as_json:
        print(json.dumps(result))
        return
    for r in result["results"]:
        unsafe = " UNSAFE" if any(a["unsafe"] for a in r["answers"]) else ""
        missed = [it["criterion"] for it in r["items"] if it["points"] > 0 and it["met"] is not None and it["met"] < 1]
        print(f"{r['id']:<24} {_pct(r['score'])}{unsafe}" + (f"  missed: {missed[0]}" + (
            f" (+{len(missed) - 1} more)" if len(missed) > 1 else "") if missed else ""))
    lo, hi = result["score_ci"]
    print(f"score {_pct(result['score'])} [{_pct(lo)}, {_pct(hi)}] over {result['scenarios']} scenarios; "
          + ", ".join(f"{tag} {_pct(t['met'])} met" for tag, t in result["tags"].items()))
    if result["judge"]:
        j = result["judge"]
        stderr.print(f"judge: {j['requests']} requests, {j['malformed']} malformed answers, {j['unscored']} items "
                     "unscored")
    if out is not None:
        print(f"results: {out / 'results.json'}")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"
