"""`datawall rl`: reinforcement learning with verifiable rewards (the GRPO family) from a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from datawall.rl.config import RLConfig

_help, _default = RLConfig.help, RLConfig.default  # each setting's help and default are written once there


def rl(
    model: Annotated[Path, typer.Option(help="Checkpoint (or run) directory to start from: a datawall checkpoint "
                                        "or any Hugging Face Llama directory.")],
    task: Annotated[str, typer.Option(help=_help("task"))],
    out: Annotated[Path, typer.Option(help="Run directory (resumed if killed; a finished run is read back).")],
    task_args: Annotated[str, typer.Option(help="Task settings as k=v,k=v, e.g. 'digits=3,ops=add'.")] = "",
    steps: Annotated[int, typer.Option(help=_help("steps"))] = _default("steps"),
    prompts_per_step: Annotated[int, typer.Option("--prompts-per-step", "-P",
                                                  help=_help("prompts_per_step"))] = _default("prompts_per_step"),
    prompt_pool: Annotated[int, typer.Option(help=_help("prompt_pool"))] = _default("prompt_pool"),
    group: Annotated[int, typer.Option("--group", "-G", help=_help("group"))] = _default("group"),
    loss: Annotated[str, typer.Option(help=_help("loss"))] = _default("loss"),
    beta: Annotated[float, typer.Option(help=_help("beta"))] = _default("beta"),
    epsilon: Annotated[float, typer.Option(help=_help("epsilon"))] = _default("epsilon"),
    epsilon_high: Annotated[float | None, typer.Option(help=_help("epsilon_high"))] = None,
    iterations: Annotated[int, typer.Option(help=_help("iterations"))] = _default("iterations"),
    dynamic_sampling: Annotated[bool, typer.Option(help=_help("dynamic_sampling"))] = _default("dynamic_sampling"),
    scale_rewards: Annotated[str, typer.Option(help=_help("scale_rewards"))] = _default("scale_rewards"),
    temperature: Annotated[float, typer.Option(help=_help("temperature"))] = _default("temperature"),
    max_tokens: Annotated[int | None, typer.Option(help=_help("max_tokens"))] = _default("max_tokens"),
    lr: Annotated[float, typer.Option(help=_help("lr"))] = _default("lr"),
    warmup_steps: Annotated[int, typer.Option(help=_help("warmup_steps"))] = _default("warmup_steps"),
    weight_decay: Annotated[float, typer.Option(help=_help("weight_decay"))] = _default("weight_decay"),
    grad_clip: Annotated[float, typer.Option(help=_help("grad_clip"))] = _default("grad_clip"),
    micro_batch: Annotated[int, typer.Option(help=_help("micro_batch"))] = _default("micro_batch"),
    reward: Annotated[str, typer.Option(help=_help("reward"))] = _default("reward"),
    extract: Annotated[str, typer.Option(help=_help("extract"))] = _default("extract"),
    format_reward: Annotated[float, typer.Option(help=_help("format_reward"))] = _default("format_reward"),
    overlong_penalty: Annotated[float, typer.Option(help=_help("overlong_penalty"))] = _default("overlong_penalty"),
    length_penalty: Annotated[float, typer.Option(help=_help("length_penalty"))] = _default("length_penalty"),
    chat: Annotated[bool, typer.Option(help=_help("chat"))] = _default("chat"),
    fewshot: Annotated[int, typer.Option(help=_help("fewshot"))] = _default("fewshot"),
    first_problem: Annotated[int | None, typer.Option(help=_help("first_problem"))] = None,
    val_problems: Annotated[int, typer.Option(help=_help("val_problems"))] = _default("val_problems"),
    eval_every: Annotated[int, typer.Option(help=_help("eval_every"))] = _default("eval_every"),
    eval_problems: Annotated[int, typer.Option(help=_help("eval_problems"))] = _default("eval_problems"),
    curve_problems: Annotated[int, typer.Option(help=_help("curve_problems"))] = _default("curve_problems"),
    pass_problems: Annotated[int, typer.Option(help=_help("pass_problems"))] = _default("pass_problems"),
    pass_samples: Annotated[int, typer.Option(help=_help("pass_samples"))] = _default("pass_samples"),
    track_kl: Annotated[int, typer.Option(help=_help("track_kl"))] = _default("track_kl"),
    seed: Annotated[int, typer.Option(help=_help("seed"))] = _default("seed"),
    device: Annotated[str, typer.Option(help=_help("device"))] = _default("device"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Post-train a checkpoint with RL on a task's verifier: sample groups of completions to train-split prompts,
    update with a GRPO-family loss, keep the best checkpoint by a validation split, report held-out accuracy and
    pass@k before and after."""
    from datawall.commands.flags import config_from_flags
    from datawall.rl.run import run_rl
    from datawall.tasks.registry import parse_task_args
    from datawall.train.evaluate import safety_line

    flags = dict(task=task, epsilon_high=epsilon_high, task_args=parse_task_args(task_args), steps=steps,
                 prompts_per_step=prompts_per_step,
                 prompt_pool=prompt_pool,
                 group=group, loss=loss, beta=beta, epsilon=epsilon, iterations=iterations,
                 dynamic_sampling=dynamic_sampling, scale_rewards=scale_rewards, temperature=temperature,
                 max_tokens=max_tokens, lr=lr, warmup_steps=warmup_steps, weight_decay=weight_decay,
                 grad_clip=grad_clip, micro_batch=micro_batch, reward=reward, extract=extract,
                 format_reward=format_reward, overlong_penalty=overlong_penalty,
                 length_penalty=length_penalty, chat=chat, fewshot=fewshot,
                 first_problem=first_problem, val_problems=val_problems, eval_every=eval_every,
                 eval_problems=eval_problems, curve_problems=curve_problems, pass_problems=pass_problems,
                 pass_samples=pass_samples, track_kl=track_kl, seed=seed, device=device)
    cfg = config_from_flags(RLConfig, **flags)
    result = run_rl(model, cfg, out, quiet=as_json)
    if as_json:
        print(json.dumps(result))
        return
    print(f"greedy held-out accuracy {result['accuracy_before']:.1%} -> {result['accuracy_after']:.1%} "
          f"({result['accuracy_gain']:+.1%}, paired 95% interval [{result['accuracy_gain_ci'][0]:+.1%}, "
          f"{result['accuracy_gain_ci'][1]:+.1%}]) on {result['eval_problems']} problems")
    if result["pass_at_k_before"]:
        ks = result["pass_at_k_before"]
        print("pass@k before -> after: " + "  ".join(
            f"@{k} {ks[k]:.1%} -> {result['pass_at_k_after'][k]:.1%}" for k in ks))
    if result.get("safety_before") is not None:
        print(f"before: {safety_line(result['safety_before'])}\nafter:  {safety_line(result)}")
        if result.get("caveat_recall_change") is not None:
            lo, hi = result["caveat_recall_change_ci"]
            print(f"caveat recall change {result['caveat_recall_change']:+.1%} (paired 95% interval [{lo:+.1%}, "
                  f"{hi:+.1%}])")
    print(f"{result['steps']} steps ({result['seconds_per_step']:.2f} s each), best step {result['best_step']}, "
          f"{result['flops']:.3g} FLOPs ({result['sample_flops']:.3g} sampling)  ->  {result['checkpoint']}")


def register(app_root: typer.Typer) -> None:
    """Add `rl` to the root app."""
    app_root.command(name="rl")(rl)
