"""`datawall think-compare SMALL LARGE`: the budget at which a smaller model, sampled more, matches a larger one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def think_compare(
    small: Annotated[Path, typer.Argument(help="`datawall think` output directory of the smaller model.")],
    large: Annotated[Path, typer.Argument(help="`datawall think` output directory of the larger model.")],
    strategy: Annotated[str, typer.Option(help="Strategy of the small model whose curve is searched.")] = "majority",
    large_strategy: Annotated[str | None, typer.Option(help="Strategy of the large model (default: "
                                                       "--strategy).")] = None,
    large_k: Annotated[int | None, typer.Option(help="Samples of the large model to match (default: its first "
                                                "point, usually 1).")] = None,
    axis: Annotated[str, typer.Option(help="Budget axis: flops, tokens, dollars or samples.")] = "flops",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Crossover: the smallest budget per query at which SMALL's curve reaches LARGE's accuracy at --large-k."""
    from datawall.testtime.think_policy import compare_runs

    res = compare_runs(small, large, strategy, large_strategy, axis, large_k)
    if as_json:
        print(json.dumps(res))
        return
    print(f"large {res['large_strategy']}@{res['large_k']}: accuracy {res['target_accuracy']:.1%} at "
          f"{res['large_budget']:.4g} {axis} per query")
    if res["small_budget"] is None:
        print(f"small {res['strategy']} never matches it within n={res['small_n_max']} "
              f"(best {res['small_max_accuracy']:.1%})")
    else:
        verdict = "cheaper" if res["ratio"] < 1 else "costlier"
        print(f"small {res['strategy']} matches it at {res['small_budget']:.4g} {axis} per query "
              f"(~{res['small_samples']:.3g} samples): {res['ratio']:.3g}x the large model's budget ({verdict})")
    if "warning" in res:
        print(f"warning: {res['warning']}")
