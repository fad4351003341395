"""`datawall reward train`: fit an outcome (ORM) or process (PRM) reward model to a policy's train-split samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from datawall.errors import DatawallError, validation_error
from datawall.progress import stderr

app = typer.Typer(help="Learned reward models (ORM, PRM) that score samples for best-of-n and weighted voting.",
                  no_args_is_help=True)


@app.command()
def train(
    model: Annotated[Path, typer.Option(help="Policy checkpoint (or run) directory: sampled for data, and the "
                                        "reward model's starting weights.")],
    task: Annotated[str, typer.Option(help="Task world: arith, trace, countdown or jsonl:PATH.")],
    out: Annotated[Path, typer.Option(help="Reward-model directory to write (atomically, when training ends).")],
    task_args: Annotated[str, typer.Option(help="Task settings as k=v,k=v, e.g. 'digits=5,ops=add'.")] = "",
    kind: Annotated[str, typer.Option(help="orm (verifier label per solution) or prm (Math-Shepherd label per "
                                      "step, from rollouts).")] = "orm",
    problems: Annotated[int, typer.Option(help="Train-split problems to sample (held-out ones are never "
                                          "used).")] = 200,
    first_problem: Annotated[int, typer.Option(help="First train-split problem index: start past the policy's own "
                                               "U training examples to label problems it has not seen.")] = 0,
    n: Annotated[int, typer.Option(help="Solutions sampled per problem.")] = 8,
    rollouts: Annotated[int, typer.Option(help="PRM: rollouts per step prefix (label = fraction correct).")] = 4,
    label: Annotated[str, typer.Option(help="PRM: soft (fraction of rollouts correct) or hard (any "
                                       "correct).")] = "soft",
    temperature: Annotated[float, typer.Option(help="Sampling temperature of solutions and rollouts.")] = 1.0,
    max_tokens: Annotated[int | None, typer.Option(help="Max new tokens per sample (default: 1.5 x the "
                                                   "longest reference solution).")] = None,
    epochs: Annotated[int, typer.Option(help="Max training epochs (early stopping on held-out problems).")] = 6,
    patience: Annotated[int, typer.Option(help="Epochs without held-out improvement tolerated; one more stops "
                                          "training (the best epoch is kept).")] = 2,
    lr: Annotated[float, typer.Option(help="AdamW learning rate of the backbone.")] = 1e-3,
    head_lr: Annotated[float, typer.Option(help="AdamW learning rate of the new scalar head.")] = 3e-3,
    batch_size: Annotated[int, typer.Option(help="Solutions per optimizer step.")] = 64,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per step (same step, less memory).")] = 1,
    pairwise: Annotated[float, typer.Option(help="Weight of a within-problem ranking loss (right solution above "
                                            "wrong one of the same problem); early stopping then maximises "
                                            "within-problem AUC. 0: verifier BCE only.")] = 0.0,
    val_frac: Annotated[float, typer.Option(help="Share of the train problems held out for early stopping "
                                            "and metrics.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of sampling, rollouts, split and data order.")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    run_dir: Annotated[Path | None, typer.Option(help="Training run directory (labelled samples, metrics.jsonl, "
                                                "checkpoints, best epoch); killed and rerun, the build resumes "
                                                "from it. Default: OUT.run.")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild from scratch (resample, retrain) even if OUT holds a model "
                                        "built with these settings.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Sample train-split solutions, label them with the verifier (ORM) or rollouts (PRM), fit, save to OUT."""
    from datawall.rewards.build import RewardBuildConfig, build_reward_model
    from datawall.tasks.registry import parse_task_args
    from datawall.train.objectives.reward import RewardTrainConfig

    if not model.is_dir():
        raise DatawallError(f"--model {model}: no such directory")
    try:
        cfg = RewardBuildConfig(
            model=str(model), task=task, task_args=parse_task_args(task_args), kind=kind, problems=problems,
            first_problem=first_problem, n=n,
            rollouts=rollouts, label=label, temperature=temperature, max_tokens=max_tokens, seed=seed,
            train=RewardTrainConfig(epochs=epochs, patience=patience, lr=lr, head_lr=head_lr,
                                    batch_size=batch_size, grad_accum=grad_accum, pairwise=pairwise,
                                    val_frac=val_frac, seed=seed, device=device))
    except ValidationError as e:
        raise validation_error(e, flags=True) from None
    info = build_reward_model(cfg, out, quiet=as_json, force=force, run_dir=run_dir)
    val = info["metrics"].get("val") or {}
    result = {"out": str(out), "kind": info["kind"], "reused": info["reused"], "params": info["params"],
              "base_model": info["base_model"], "data": info["data"], "val_accuracy": val.get("accuracy"),
              "val_auc": val.get("auc"), "val_outcome_auc": val.get("outcome_auc"),
              "val_within_problem_auc": val.get("within_problem_auc"), "val_loss": val.get("loss"),
              "epochs_run": info["metrics"]["epochs_run"], "best_epoch": info["metrics"].get("best_epoch"),
              "run_dir": info.get("run_dir"), "cost": info["cost"]}
    if as_json:
        print(json.dumps(result))
        return
    d = result["data"]
    if result["reused"]:
        stderr.print(f"{out} already holds this reward model (use --force to rebuild)")
    print(f"{result['kind'].upper()} from {d['solutions']} solutions to {d['problems']} train problems "
          f"({d['correct_rate']:.1%} correct), {d['labelled_positions']} labelled positions")

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    print(f"held-out train problems: accuracy {fmt(result['val_accuracy'])}  AUC {fmt(result['val_auc'])}  "
          f"outcome AUC {fmt(result['val_outcome_auc'])}  within-problem AUC "
          f"{fmt(result['val_within_problem_auc'])}  ({result['epochs_run']} epochs, best: "
          f"{result['best_epoch'] or '-'})")
    print(f"cost: {result['cost']['data_flops']:.3g} FLOPs of data, {result['cost']['train_flops']:.3g} of "
          f"training  ->  {out}")


def register(app_root: typer.Typer) -> None:
    """Add the `reward` command group to the root app."""
    app_root.add_typer(app, name="reward")
