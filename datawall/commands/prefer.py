"""`datawall prefer`: preference tuning from graders (pairs | train | reward | overopt)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from datawall.commands.flags import config_from_flags
from datawall.errors import DatawallError
from datawall.prefer.config import DPOConfig, PairsConfig, RewardPairsConfig
from datawall.prefer.graders import GraderConfig

app = typer.Typer(help="Preference tuning from graders: sample and grade pairs (simulated graders with noise and "
                  "bias, or an LLM judge), tune a policy on them with the DPO family, fit a Bradley-Terry reward "
                  "model, and measure its over-optimisation under best-of-n.", no_args_is_help=True)

_p, _pd = PairsConfig.help, PairsConfig.default
_g = GraderConfig.model_fields
_t, _td = DPOConfig.help, DPOConfig.default
_r, _rd = RewardPairsConfig.help, RewardPairsConfig.default
JSON_HELP = "Print one JSON object on stdout (progress stays on stderr)."


def _task_args(text: str) -> dict:
    from datawall.tasks.registry import parse_task_args

    return parse_task_args(text)


@app.command()
def pairs(
    model: Annotated[Path, typer.Option(help=_p("model"))],
    task: Annotated[str, typer.Option(help=_p("task"))],
    out: Annotated[Path, typer.Option(help="Pairs file to write (JSONL), with its description OUT.json beside it "
                                      "(task, graders, label accuracy, dollars).")],
    task_args: Annotated[str, typer.Option(help="Task settings as k=v,k=v, e.g. 'digits=5,ops=add'.")] = "",
    problems: Annotated[int, typer.Option(help=_p("problems"))] = _pd("problems"),
    first_problem: Annotated[int, typer.Option(help=_p("first_problem"))] = _pd("first_problem"),
    n: Annotated[int, typer.Option(help=_p("n"))] = _pd("n"),
    comparisons: Annotated[int | None, typer.Option(help=_p("comparisons"))] = None,
    temperature: Annotated[float, typer.Option(help=_p("temperature"))] = _pd("temperature"),
    max_tokens: Annotated[int | None, typer.Option(help=_p("max_tokens"))] = None,
    graders: Annotated[int, typer.Option(help=_p("graders"))] = _pd("graders"),
    noise: Annotated[float, typer.Option(help=_g["noise"].description)] = 0.0,
    bias: Annotated[str, typer.Option(help=_g["bias"].description)] = "none",
    strength: Annotated[float, typer.Option(help=_g["strength"].description)] = 0.0,
    aggregate: Annotated[str, typer.Option(help=_p("aggregate"))] = _pd("aggregate"),
    judge_endpoint: Annotated[str | None, typer.Option(help=_p("judge_endpoint"))] = None,
    judge_model: Annotated[str | None, typer.Option(help=_p("judge_model"))] = None,
    judge_api_key_env: Annotated[str | None, typer.Option(help=_p("judge_api_key_env"))] = None,
    judge_price: Annotated[str, typer.Option(help=_p("judge_price"))] = _pd("judge_price"),
    price: Annotated[str, typer.Option(help=_p("price"))] = _pd("price"),
    policy_price: Annotated[str | None, typer.Option(help=_p("policy_price"))] = None,
    prices: Annotated[Path | None, typer.Option(help=_p("prices"))] = None,
    seed: Annotated[int, typer.Option(help=_p("seed"))] = _pd("seed"),
    device: Annotated[str, typer.Option(help=_p("device"))] = _pd("device"),
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Sample N answers per train-split prompt, have graders compare distinct answers, write the pairs."""
    from datawall.prefer.make_pairs import describe, make_pairs

    if not model.is_dir():
        raise DatawallError(f"--model {model}: no such directory")
    grader = config_from_flags(GraderConfig, noise=noise, bias=bias, strength=strength)
    cfg = config_from_flags(
        PairsConfig, model=str(model), task=task, task_args=_task_args(task_args), problems=problems,
        first_problem=first_problem, n=n, comparisons=comparisons, temperature=temperature, max_tokens=max_tokens,
        graders=graders, grader=grader, aggregate=aggregate, judge_endpoint=judge_endpoint, judge_model=judge_model,
        judge_api_key_env=judge_api_key_env, judge_price=judge_price, price=price, policy_price=policy_price,
        prices=str(prices) if prices else None, seed=seed, device=device)
    meta = make_pairs(cfg, out, quiet=as_json)
    if as_json:
        print(json.dumps(meta))
        return
    print(describe(meta))
    print(f"-> {out}")


@app.command("train")
def train_cmd(
    pairs: Annotated[Path, typer.Option(help=_t("pairs"))],
    model: Annotated[Path, typer.Option(help=_t("model"))],
    out: Annotated[Path, typer.Option(help="Run directory: config.json, metrics.jsonl, checkpoint/ (the tuned "
                                      "policy), result.json, DONE; rerun to resume, read back when done.")],
    reference: Annotated[Path | None, typer.Option(help=_t("reference"))] = None,
    loss: Annotated[str, typer.Option(help=_t("loss"))] = _td("loss"),
    beta: Annotated[float, typer.Option(help=_t("beta"))] = _td("beta"),
    label_smoothing: Annotated[float, typer.Option(help=_t("label_smoothing"))] = _td("label_smoothing"),
    nll: Annotated[float, typer.Option(help=_t("nll"))] = _td("nll"),
    length_alpha: Annotated[float, typer.Option(help=_t("length_alpha"))] = _td("length_alpha"),
    epochs: Annotated[float, typer.Option(help=_t("epochs"))] = _td("epochs"),
    batch_size: Annotated[int, typer.Option(help=_t("batch_size"))] = _td("batch_size"),
    grad_accum: Annotated[int, typer.Option(help=_t("grad_accum"))] = _td("grad_accum"),
    lr: Annotated[float, typer.Option(help=_t("lr"))] = _td("lr"),
    weight_decay: Annotated[float, typer.Option(help=_t("weight_decay"))] = _td("weight_decay"),
    val_frac: Annotated[float, typer.Option(help=_t("val_frac"))] = _td("val_frac"),
    task: Annotated[str | None, typer.Option(help=_t("task"))] = None,
    task_args: Annotated[str | None, typer.Option(help=_t("task_args") + " As k=v,k=v.")] = None,
    eval_problems: Annotated[int, typer.Option(help=_t("eval_problems"))] = _td("eval_problems"),
    eval_every: Annotated[int, typer.Option(help=_t("eval_every"))] = _td("eval_every"),
    price: Annotated[str | None, typer.Option(help=_t("price"))] = None,
    prices: Annotated[Path | None, typer.Option(help=_t("prices"))] = None,
    seed: Annotated[int, typer.Option(help=_t("seed"))] = _td("seed"),
    device: Annotated[str, typer.Option(help=_t("device"))] = _td("device"),
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Tune a policy on preference pairs (DPO, IPO, hinge, robust; RPO's NLL; R-DPO's length term)."""
    from datawall.prefer.train import train_dpo

    for flag, path in (("--model", model), ("--reference", reference)):
        if path is not None and not path.is_dir():
            raise DatawallError(f"{flag} {path}: no such directory")
    cfg = config_from_flags(
        DPOConfig, pairs=str(pairs), model=str(model), reference=str(reference) if reference else None, loss=loss,
        beta=beta, label_smoothing=label_smoothing, nll=nll, length_alpha=length_alpha, epochs=epochs,
        batch_size=batch_size, grad_accum=grad_accum, lr=lr, weight_decay=weight_decay, val_frac=val_frac,
        task=task, task_args=_task_args(task_args) if task_args is not None else None, eval_problems=eval_problems,
        eval_every=eval_every, price=price, prices=str(prices) if prices else None, seed=seed, device=device)
    result = train_dpo(cfg, out, quiet=as_json)
    if as_json:
        print(json.dumps(result))
        return
    if result["reused"]:
        print(f"{out} already holds this finished run")
    print(f"{result['loss']} beta {result['beta']:g}: {result['train_pairs']} pairs, {result['steps']} steps, "
          f"held-out implicit-reward accuracy {result.get('val_accuracy', float('nan')):.1%}")
    if "accuracy_after" in result:
        print(f"held-out accuracy {result['accuracy_before']:.1%} -> {result['accuracy_after']:.1%} "
              f"(change {result['delta']:+.1%}, paired 95% [{result['delta_ci_low']:+.1%}, "
              f"{result['delta_ci_high']:+.1%}]); answer length {result['completion_tokens_before']:.1f} -> "
              f"{result['completion_tokens_after']:.1f} tokens")
    if result.get("safety_before") is not None:
        from datawall.train.evaluate import safety_line

        print(f"before: {safety_line(result['safety_before'])}\nafter:  {safety_line(result)}")
    print(f"-> {result['checkpoint']}")


@app.command()
def reward(
    pairs: Annotated[Path, typer.Option(help=_r("pairs"))],
    model: Annotated[Path, typer.Option(help=_r("model"))],
    out: Annotated[Path, typer.Option(help="Reward-model directory to write (atomically, when training ends); its "
                                      "training run is OUT.run (resumed if killed).")],
    epochs: Annotated[int, typer.Option(help=_r("epochs"))] = _rd("epochs"),
    patience: Annotated[int, typer.Option(help=_r("patience"))] = _rd("patience"),
    lr: Annotated[float, typer.Option(help=_r("lr"))] = _rd("lr"),
    head_lr: Annotated[float, typer.Option(help=_r("head_lr"))] = _rd("head_lr"),
    batch_size: Annotated[int, typer.Option(help=_r("batch_size"))] = _rd("batch_size"),
    val_frac: Annotated[float, typer.Option(help=_r("val_frac"))] = _rd("val_frac"),
    seed: Annotated[int, typer.Option(help=_r("seed"))] = _rd("seed"),
    device: Annotated[str, typer.Option(help=_r("device"))] = _rd("device"),
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Fit a Bradley-Terry reward model to the pairs (an ORM directory: `think --orm OUT` reads it)."""
    from datawall.prefer.reward import train_pair_reward_model

    if not model.is_dir():
        raise DatawallError(f"--model {model}: no such directory")
    cfg = config_from_flags(RewardPairsConfig, pairs=str(pairs), model=str(model), epochs=epochs, patience=patience,
                            lr=lr, head_lr=head_lr, batch_size=batch_size, val_frac=val_frac, seed=seed,
                            device=device)
    result = train_pair_reward_model(cfg, out, quiet=as_json)
    if as_json:
        print(json.dumps(result))
        return
    acc = result.get("val_pair_accuracy")
    print(f"Bradley-Terry reward model on {result['train_pairs']} pairs: held-out pair accuracy "
          f"{'-' if acc is None else f'{acc:.1%}'} ({result['epochs_run']} epochs, best {result.get('best_epoch')})")
    print(f"-> {out}")


@app.command()
def overopt(
    run_dir: Annotated[Path, typer.Argument(help="A `datawall think --orm RM --strategies best-of-n` output "
                                            "directory (samples.jsonl, scores.jsonl), or a `datawall rl --reward RM "
                                            "--track-kl N` run directory.")],
    plot: Annotated[Path | None, typer.Option(help="Also draw the curve and its fit to this PNG file.")] = None,
    max_d: Annotated[float | None, typer.Option(help="RL only: fit the points with d <= this (all are listed): "
                                                "the form is for the regime before the gold reward reaches its "
                                                "floor.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Gold (verifier) and proxy (reward model) reward against d = sqrt(KL), Gao et al.'s fit and its peak: of
    best-of-n (KL = log n - (n-1)/n) from a think directory, R = d (alpha - beta d); of RL (KL measured) from an rl
    run, R = d (alpha - beta log d)."""
    from datawall.prefer import overopt as o

    rl = o.is_rl_run(run_dir)
    if max_d is not None and not rl:
        raise DatawallError(f"--max-d: {run_dir} is a best-of-n directory, whose d ends at sqrt(KL(n_max)); "
                            "--max-d is for an rl run")
    result = o.rl_curve(run_dir, max_d) if rl else o.best_of_n_curve(run_dir)
    if plot is not None:
        (o.plot_rl_curve if rl else o.plot_curve)(result, plot)
    if as_json:
        print(json.dumps(result))
        return
    print((o.describe_rl_curve if rl else o.describe_curve)(result))


def register(app_root: typer.Typer) -> None:
    """Add the `prefer` command group to the root app."""
    app_root.add_typer(app, name="prefer")
