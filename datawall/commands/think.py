"""`datawall think`: test-time compute curves of a local checkpoint or an OpenAI-compatible endpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from datawall.errors import DatawallError
from datawall.progress import stderr
from datawall.testtime.think_config import ThinkConfig

_help, _default = ThinkConfig.help, ThinkConfig.default  # each setting's help and default are written once there


def think(
    task: Annotated[str, typer.Option(help=_help("task"))],
    out: Annotated[Path, typer.Option(help="Output directory (resumed if it holds samples of the same run).")],
    model: Annotated[Path | None, typer.Option(help="Checkpoint directory (or run directory) to sample.")] = None,
    hf: Annotated[Path | None, typer.Option(help="Hugging Face causal-LM directory, sampled with "
                                            "transformers.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL, e.g. "
                                                 "http://127.0.0.1:8000/v1.")] = None,
    api_model: Annotated[str | None, typer.Option(help="Model name to ask the endpoint for.")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="Environment variable holding the endpoint's "
                                                    "API key.")] = None,
    chat: Annotated[bool, typer.Option(help=_help("chat"))] = _default("chat"),
    fewshot: Annotated[int, typer.Option(help=_help("fewshot"))] = _default("fewshot"),
    fewshot_seed: Annotated[int, typer.Option(help=_help("fewshot_seed"))] = _default("fewshot_seed"),
    stop: Annotated[list[str] | None, typer.Option(help=_help("stop") + " Repeatable.")] = None,
    task_args: Annotated[str, typer.Option(help="Task settings as k=v,k=v, e.g. 'digits=5,ops=add'.")] = "",
    problems: Annotated[int, typer.Option(help=_help("problems"))] = _default("problems"),
    n_max: Annotated[int, typer.Option(help=_help("n_max"))] = _default("n_max"),
    strategies: Annotated[str, typer.Option(help="Comma-separated: " + _help("strategies"))] = ",".join(
        _default("strategies")),
    temperature: Annotated[float, typer.Option(help=_help("temperature"))] = _default("temperature"),
    top_p: Annotated[float | None, typer.Option(help=_help("top_p"))] = _default("top_p"),
    max_tokens: Annotated[int | None, typer.Option(help=_help("max_tokens"))] = _default("max_tokens"),
    seed: Annotated[int, typer.Option(help=_help("seed"))] = _default("seed"),
    concurrency: Annotated[int, typer.Option(help="Requests in flight to the endpoint.")] = 4,
    timeout: Annotated[float, typer.Option(help="Seconds per endpoint request.")] = 120.0,
    retries: Annotated[int, typer.Option(help="Retries per endpoint request on 429/5xx/connection errors.")] = 5,
    api_params: Annotated[float | None, typer.Option(help="Parameters of the endpoint's model, for FLOPs "
                                                     "(2 N per token).")] = None,
    price: Annotated[str | None, typer.Option(help="Price-table entry (default local-cpu, h100 on cuda; "
                                              "endpoints: the table's default).")] = None,
    prices: Annotated[Path | None, typer.Option(help="Price-table override file (TOML or JSON).")] = None,
    cache: Annotated[Path | None, typer.Option(help="Sample cache (sqlite; default OUT/cache.sqlite).")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda (for --model and --hf).")] = "cpu",
    compile_step: Annotated[bool, typer.Option("--compile", help="With --model: decode through a torch.compile'd "
                                               "step, faster per token on small models after a one-off "
                                               "compilation of tens of seconds; samples equal the eager step's up "
                                               "to float rounding (cached apart from them).")] = False,
    orm: Annotated[Path | None, typer.Option(help="Outcome reward model directory (`datawall reward train "
                                             "--kind orm`): scores samples for best-of-n and "
                                             "weighted-majority.")] = None,
    prm: Annotated[Path | None, typer.Option(help="Process reward model directory (`--kind prm`): scores samples "
                                             "(steps aggregated by --aggregate) when no --orm is given, and guides "
                                             "step-level search.")] = None,
    aggregate: Annotated[str, typer.Option(help="A PRM's score of a whole sample from its step scores: last, min "
                                           "or product.")] = "min",
    beam_n: Annotated[str | None, typer.Option(help=_help("beam_n") + " Comma-separated.")] = None,
    beam_expand: Annotated[int, typer.Option(help=_help("beam_expand"))] = _default("beam_expand"),
    beam_aggregate: Annotated[str, typer.Option(help=_help("beam_aggregate"))] = _default("beam_aggregate"),
    thinking_budgets: Annotated[str | None, typer.Option(help=_help("thinking_budgets"))] = None,
    thinking_extend: Annotated[int, typer.Option(help=_help("thinking_extend"))] = _default("thinking_extend"),
    difficulty_bins: Annotated[int, typer.Option(help=_help("difficulty_bins"))] = _default("difficulty_bins"),
    extract: Annotated[str, typer.Option(help=_help("extract"))] = _default("extract"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Sample a pool per held-out problem and report accuracy vs samples, FLOPs and dollars per strategy."""
    from datawall.commands.backends import build_backend, check_backend_flags, close_backend
    from datawall.sampling.sample_cache import SampleCache
    from datawall.tasks.registry import parse_task_args
    from datawall.testtime.strategies import check_scorers
    from datawall.testtime.think import run_think

    check_backend_flags(model, hf, endpoint, api_model, api_key_env)
    orm_scorer, prm_scorer = None, None
    if orm is not None or prm is not None:
        from datawall.rewards.scorers import load_scorers

        orm_scorer, prm_scorer = load_scorers(orm, prm, aggregate, device)
    scorer = orm_scorer or prm_scorer  # the ORM judges whole samples when both are given
    cfg = think_config(task=task, task_args=parse_task_args(task_args), problems=problems, n_max=n_max,
                       strategies=strategies, temperature=temperature, top_p=top_p,
                       max_tokens=max_tokens, seed=seed, chat=chat, fewshot=fewshot, fewshot_seed=fewshot_seed,
                       stop=list(stop or []), extract=extract, **search_options(beam_n, beam_expand, beam_aggregate,
                                                               thinking_budgets, thinking_extend, difficulty_bins))
    check_scorers(cfg.strategies, scorer, prm_scorer)
    backend = build_backend(model, hf, endpoint, api_model, api_key_env, chat, concurrency, timeout, retries,
                            api_params, price, prices, device, compile_step=compile_step)
    store = SampleCache(cache) if cache else None
    try:
        results = run_think(backend, cfg, out, cache=store, quiet=as_json, scorer=scorer,
                            step_scorer=prm_scorer.step_scores if prm_scorer else None)
    finally:
        if store:
            store.close()
        close_backend(backend)
    if as_json:
        print(json.dumps(results))
        return
    s = results["sampling"]
    stderr.print(f"{s['drawn']} samples drawn, {s['from_cache']} from the cache, {s['from_files']} already in {out}")
    if rm := results.get("reward_model"):
        how = f" ({rm['aggregate']} over steps)" if rm.get("aggregate") else ""
        per = f"{rm['flops_per_sample']:.3g} FLOPs per sample" if rm["flops_included"] else "cost unknown"
        stderr.print(f"scored by the {rm['kind'].upper()} {rm['path']}{how}: {per}, charged to "
                     f"{', '.join(rm['strategies'])}")
    for name, rows in results["strategies"].items():
        best = rows[-1]
        g = results.get("vs_greedy", {}).get(name, [None])[-1]
        gain = (f"  {g['gain']:+.1%} vs greedy [{g['ci_low']:+.1%}, {g['ci_high']:+.1%}]"
                if g and g["gain"] is not None else "")
        print(f"{name:>9} n={best['n']:<4} accuracy {best['accuracy']:.1%} "
              f"[{best['ci_low']:.1%}, {best['ci_high']:.1%}]  ({rows[0]['accuracy']:.1%} at n={rows[0]['n']}){gain}")
    for p in results.get("thinking_budget", {}).get("points", []):
        print(f"thinking B={p['budget']:<5} accuracy {p['accuracy']:.1%} [{p['ci_low']:.1%}, {p['ci_high']:.1%}]  "
              f"({p['thinking_tokens']:.1f} thinking tokens, {p['forced']:.0%} forced)")
    for name, r in results.get("safety", {}).get("strategies", {}).items():  # a world with hazard cases
        c, u = r["caveat_recall"][-1], (r["unsafe_rate"] or [None])[-1]
        print(f"{name:>9} n={c['n']:<4} caveat recall {c['value']:.1%} [{c['ci_low']:.1%}, {c['ci_high']:.1%}] "
              f"on {results['safety']['hazardous']} hazardous problems"
              + (f", unsafe advice {u['value']:.1%}" if u else ""))
    pol = results.get("policy", {})
    if pol.get("overall_gain") and pol["overall_gain"][-1] is not None:
        print(f"compute-optimal policy: {pol['overall'][-1]:.1%} at the largest budget, "
              f"{pol['overall_gain'][-1]:+.1%} over {pol['baseline']} (per-bin table in the report)")
    print(f"results: {out / 'results.json'}  report: {out / 'report.html'}")


def think_config(**flags) -> ThinkConfig:
    """The ThinkConfig of these flags; a bad value is one line naming its flag (`--n-max: ...`)."""
    from datawall.commands.flags import config_from_flags

    return config_from_flags(ThinkConfig, **flags)


def search_options(beam_n: str | None, beam_expand: int, beam_aggregate: str, thinking_budgets: str | None,
                   thinking_extend: int, difficulty_bins: int) -> dict:
    """ThinkConfig fields of beam search, budget forcing and the policy, parsed from the flags."""
    from datawall.testtime.thinking_budget import parse_budgets

    try:
        grid = [int(x) for x in beam_n.split(",") if x.strip()] if beam_n else None
    except ValueError:
        raise DatawallError(f"--beam-n {beam_n!r}: expected comma-separated integers, e.g. 4,8,16") from None
    budgets = list(parse_budgets(thinking_budgets)) if thinking_budgets else []
    return {"beam_n": grid, "beam_expand": beam_expand, "beam_aggregate": beam_aggregate,
            "thinking_budgets": budgets, "thinking_extend": thinking_extend, "difficulty_bins": difficulty_bins}


def register(app: typer.Typer) -> None:
    """Add `think` and `think-compare` to the root app."""
    from datawall.commands.think_compare import think_compare

    app.command("think")(think)
    app.command("think-compare")(think_compare)
