"""`datawall synth`: synthetic data written by teachers (generate | compare | iterate | collapse)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from datawall.progress import stderr
from datawall.synth.generate_config import GenerateConfig

app = typer.Typer(help="Synthetic data: teachers write worked solutions for unlabelled problems (generate), the "
                  "student's resemblance to its teacher (compare), self-improvement (iterate) and model collapse "
                  "over generations (collapse).", no_args_is_help=True)

_help, _default = GenerateConfig.help, GenerateConfig.default  # each setting's help and default are written once


@app.command()
def generate(
    task: Annotated[str, typer.Option(help=_help("task"))],
    out: Annotated[Path, typer.Option(help="Run directory (resumed if it holds this run unfinished; read back if "
                                      "DONE).")],
    model: Annotated[Path | None, typer.Option(help="Teacher checkpoint (datawall or HF Llama directory, or a "
                                               "run directory), sampled by datawall's engine.")] = None,
    hf: Annotated[Path | None, typer.Option(help="Teacher: a Hugging Face causal-LM directory, sampled with "
                                            "transformers.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Teacher: an OpenAI-compatible base URL, e.g. "
                                                 "http://127.0.0.1:8000/v1.")] = None,
    api_model: Annotated[str | None, typer.Option(help="Model name to ask the endpoint for.")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="Environment variable holding the endpoint's "
                                                    "API key.")] = None,
    task_args: Annotated[str, typer.Option(help="Task settings as k=v,k=v, e.g. 'digits=5,ops=add'.")] = "",
    problems: Annotated[int, typer.Option(help=_help("problems"))] = _default("problems"),
    start: Annotated[int | None, typer.Option(help=_help("start"))] = None,
    skip_unique_tokens: Annotated[str | None, typer.Option(help=_help("skip_unique_tokens"))] = None,
    strategy: Annotated[str, typer.Option(help=_help("strategy"))] = _default("strategy"),
    filter: Annotated[str, typer.Option(help=_help("filter"))] = _default("filter"),
    orm: Annotated[Path | None, typer.Option(help=_help("orm"))] = None,
    orm_threshold: Annotated[float, typer.Option(help=_help("orm_threshold"))] = _default("orm_threshold"),
    min_agreement: Annotated[float, typer.Option(help=_help("min_agreement"))] = _default("min_agreement"),
    dedup: Annotated[bool, typer.Option(help=_help("dedup"))] = _default("dedup"),
    dedup_threshold: Annotated[float, typer.Option(help=_help("dedup_threshold"))] = _default("dedup_threshold"),
    dedup_on: Annotated[str, typer.Option(help=_help("dedup_on"))] = _default("dedup_on"),
    temperature: Annotated[float, typer.Option(help=_help("temperature"))] = _default("temperature"),
    top_p: Annotated[float | None, typer.Option(help=_help("top_p"))] = None,
    max_tokens: Annotated[int | None, typer.Option(help=_help("max_tokens"))] = None,
    seed: Annotated[int, typer.Option(help=_help("seed"))] = _default("seed"),
    chat: Annotated[bool, typer.Option(help=_help("chat"))] = _default("chat"),
    fewshot: Annotated[int, typer.Option(help=_help("fewshot"))] = _default("fewshot"),
    fewshot_seed: Annotated[int, typer.Option(help=_help("fewshot_seed"))] = _default("fewshot_seed"),
    stop: Annotated[list[str] | None, typer.Option(help=_help("stop") + " Repeatable.")] = None,
    extract: Annotated[str, typer.Option(help=_help("extract"))] = _default("extract"),
    concurrency: Annotated[int, typer.Option(help="Requests in flight to the endpoint.")] = 4,
    timeout: Annotated[float, typer.Option(help="Seconds per endpoint request.")] = 120.0,
    retries: Annotated[int, typer.Option(help="Retries per endpoint request on 429/5xx/connection errors.")] = 5,
    api_params: Annotated[float | None, typer.Option(help="Parameters of the endpoint's model, for FLOPs "
                                                     "(2 N per token).")] = None,
    price: Annotated[str | None, typer.Option(help="Price-table entry (default local-cpu, h100 on cuda; "
                                              "endpoints: the table's default).")] = None,
    prices: Annotated[Path | None, typer.Option(help="Price-table override file (TOML or JSON).")] = None,
    cache: Annotated[Path | None, typer.Option(help="Sample cache (sqlite; default OUT/cache.sqlite). Share one "
                                              "between runs to filter the same samples differently for free.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda (for --model, --hf and --orm).")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print result.json's object on stdout.")] = False,
) -> None:
    """A teacher writes solutions for P train problems past the first U real ones: filtered, deduplicated, costed."""
    from datawall.commands.backends import build_backend, check_backend_flags, close_backend
    from datawall.counts import parse_count
    from datawall.sampling.sample_cache import SampleCache
    from datawall.synth.generate import SYNTHETIC, run_generate
    from datawall.tasks.registry import parse_task_args

    check_backend_flags(model, hf, endpoint, api_model, api_key_env)
    cfg = generate_config(
        task=task, task_args=parse_task_args(task_args), problems=problems, start=start,
        skip_unique_tokens=parse_count(skip_unique_tokens, "--skip-unique-tokens") if skip_unique_tokens else None,
        strategy=strategy, filter=filter, orm=str(orm.resolve()) if orm else None, orm_threshold=orm_threshold,
        min_agreement=min_agreement, dedup=dedup, dedup_threshold=dedup_threshold, dedup_on=dedup_on,
        temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed, chat=chat, fewshot=fewshot,
        fewshot_seed=fewshot_seed, stop=list(stop or []), extract=extract)
    scorer = None
    if orm is not None:
        from datawall.rewards.scorers import load_scorers

        scorer, _ = load_scorers(orm, None, device=device)
    backend = build_backend(model, hf, endpoint, api_model, api_key_env, chat, concurrency, timeout, retries,
                            api_params, price, prices, device)
    store = SampleCache(cache) if cache else None
    try:
        result = run_generate(backend, cfg, out, scorer=scorer, cache=store, quiet=as_json)
    finally:
        if store:
            store.close()
        close_backend(backend)
    if as_json:
        print(json.dumps(result))
        return
    s = result["sampling"]
    stderr.print(f"{s['drawn']} samples drawn, {s['from_cache']} from the cache")
    precision = "-" if result["kept_precision"] is None else f"{result['kept_precision']:.1%}"
    dropped = ", ".join(f"{k} {v}" for k, v in result["dropped"].items() if v) or "none"
    flops = "unknown" if result["flops_per_kept"] is None else f"{result['flops_per_kept']:.3g}"
    print(f"kept {result['kept']}/{result['generated']} ({result['strategy']}, filter {result['filter']}), "
          f"precision {precision}; dropped: {dropped}")
    print(f"teacher accuracy {result['teacher_accuracy']:.1%} ({result['strategy']}; one sample "
          f"{result['sample_accuracy']:.1%})")
    print(f"FLOPs per kept example {flops}; dollars {result['dollars'] or 0:.3g}; data: {out / SYNTHETIC}")


def generate_config(**flags) -> GenerateConfig:
    """The GenerateConfig of these flags; a bad value is one line naming its flag (`--strategy: ...`)."""
    from datawall.commands.flags import config_from_flags

    return config_from_flags(GenerateConfig, **flags)
