"""`datawall pretrain`, `datawall eval` and `datawall sample`: train a model, score it, read its samples."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from datawall.counts import parse_count
from datawall.errors import DatawallError, validation_error
from datawall.progress import stderr
from datawall.tasks.prompting import FEWSHOT_SEED

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout (logs go to stderr).")]
TaskArgs = Annotated[str, typer.Option(help="Task settings as k=v,k=v, e.g. 'digits=5,ops=add'.")]
ChatFlag = Annotated[bool, typer.Option(help="Send the prompt as chat messages rendered by the checkpoint's chat "
                                        "template (its special tokens included).")]
StopFlag = Annotated[list[str] | None, typer.Option(help="Stop string (repeatable).")]
CompileFlag = Annotated[bool, typer.Option("--compile", help="Decode through a torch.compile'd step: faster per token "
                                           "on small models after a one-off compilation of tens of seconds per "
                                           "process; logits equal the eager step's up to float rounding, so a seed "
                                           "rarely gives a different sample (off: the default, exact samples).")]


def _print_json(obj: dict) -> None:
    print(json.dumps(obj))


def pretrain(
    out: Annotated[Path, typer.Option(help="Run directory (resumed if it holds an unfinished run).")],
    task: Annotated[str | None, typer.Option(help="Task world: arith, trace, countdown or jsonl:PATH.")] = None,
    task_args: TaskArgs = "",
    corpus: Annotated[str | None, typer.Option(help="Text corpus: 'stdlib' or a file/dir/.jsonl.")] = None,
    size: Annotated[str, typer.Option(help="Model preset: 100k, 300k, 1m, 5m, 25m.")] = "1m",
    tokens: Annotated[str, typer.Option(help="Training tokens D, e.g. 2M.")] = "2M",
    unique_tokens: Annotated[str | None, typer.Option(help="Cap U on unique training tokens (repeats data).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Sequences per optimizer step "
                                                   "(default 128 task examples or 32 corpus rows).")] = None,
    seq_len: Annotated[int, typer.Option(help="Tokens per training sequence.")] = 256,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 3e-3,
    schedule: Annotated[str, typer.Option(help="cosine, wsd or constant.")] = "cosine",
    warmup: Annotated[float, typer.Option(help="Fraction of steps spent warming up.")] = 0.05,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per step.")] = 1,
    eval_problems: Annotated[int, typer.Option(help="Held-out problems for greedy accuracy (tasks).")] = 200,
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size for corpora.")] = 4096,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed for init and data order.")] = 0,
    init: Annotated[Path | None, typer.Option(help="Start from this checkpoint (weights, tokenizer, shape): "
                                              "supervised fine-tuning; --size is then ignored.")] = None,
    synthetic: Annotated[list[Path] | None, typer.Option(help="A `datawall synth generate` run directory whose kept "
                                                         "rows are trained on besides the U real examples "
                                                         "(repeatable: read in order).")] = None,
    synthetic_examples: Annotated[str | None, typer.Option(help="S: the first S kept synthetic rows (default: "
                                                           "all).")] = None,
    synthetic_ratio: Annotated[float | None, typer.Option(help="Share of training rows that are synthetic (default "
                                                          "S / (U + S): the same epochs over each).")] = None,
    synthetic_epochs: Annotated[float | None, typer.Option(help="Passes over the S synthetic examples within "
                                                           "--tokens; the real examples take the rest.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Pretrain a model on a task world or a corpus under a token budget D with at most U unique tokens.

    With --synthetic DIR the U real examples are mixed with S teacher-written ones (from `datawall synth generate`);
    the result's flops then count the teacher's generation of the S examples used (synthetic_flops) besides this
    run's training (train_flops).
    """
    from datawall.model import checkpoint_dir
    from datawall.tasks.registry import parse_task_args
    from datawall.train.config import OptimConfig, TrainConfig
    from datawall.train.evaluate import safety_line
    from datawall.train.run import DataSpec, RunSpec, execute

    batch_size = batch_size or (128 if task else 32)
    from datawall.device import require_device

    require_device(device)
    syn = _synthetic_spec(synthetic, synthetic_examples, synthetic_ratio, synthetic_epochs, task, task_args)
    try:
        spec = RunSpec(
            data=DataSpec(task=task, task_args=parse_task_args(task_args), corpus=corpus,
                          unique_tokens=parse_count(unique_tokens, "--unique-tokens") if unique_tokens else None,
                          vocab_size=vocab_size, synthetic=syn),
            size=size,
            init=str(checkpoint_dir(init).resolve()) if init else None,
            train=TrainConfig(tokens=parse_count(tokens, "--tokens"), batch_size=batch_size, seq_len=seq_len,
                              grad_accum=grad_accum, seed=seed, device=device,
                              optim=OptimConfig(lr=lr, schedule=schedule, warmup_frac=warmup)),
            eval_problems=eval_problems if task else 0,
        )
    except ValidationError as e:
        raise validation_error(e) from None
    if batch_size % grad_accum:
        raise DatawallError(f"--batch-size {batch_size} is not divisible by --grad-accum {grad_accum}")
    result = execute(spec, out, quiet=False)
    if as_json:
        _print_json(result)
        return
    stderr.print(f"run {result['run_dir']}: {result['params']:,} params "
                 f"({result['params_non_embedding']:,} non-embedding), {result['tokens']:,} tokens "
                 f"({result['epochs']:.2f} epochs of {result['unique_tokens']:,} unique), "
                 f"{result['flops']:.3g} FLOPs, {result['wall_seconds']:.0f} s")
    if "synthetic_examples" in result:
        teacher = result["synthetic_flops"]
        stderr.print(f"synthetic: {result['synthetic_examples']:,} examples ({result['synthetic_share']:.1%} of rows, "
                     f"{result['synthetic_epochs']:.2f} epochs; real {result['epochs']:.2f} epochs); FLOPs "
                     f"{result['train_flops']:.3g} training + "
                     + ("unknown" if teacher is None else f"{teacher:.3g}") + " teacher generation")
    line = f"eval loss {result['eval_loss']:.4f}"
    if "accuracy" in result:
        line += (f"  held-out accuracy {result['accuracy']:.1%} "
                 f"[{result['ci_low']:.1%}, {result['ci_high']:.1%}] on {result['eval_problems']} problems")
    print(line)
    if safety := safety_line(result):  # a world with hazard cases
        print(safety)


def _synthetic_spec(paths: list[Path] | None, examples: str | None, ratio: float | None, epochs: float | None,
                    task: str | None, task_args: str):
    """DataSpec.synthetic of the --synthetic* flags (None without --synthetic), its rows read and digested now, so
    a resumed run refuses data that changed; a bad flag is one line naming it."""
    from datawall.data.synthetic import SyntheticSpec, read_synthetic
    from datawall.tasks.registry import parse_task_args

    if not paths:
        given = [f for f, v in (("--synthetic-examples", examples), ("--synthetic-ratio", ratio),
                                ("--synthetic-epochs", epochs)) if v is not None]
        if given:
            raise DatawallError(f"{given[0]} goes with --synthetic DIR")
        return None
    if task is None:
        raise DatawallError("--synthetic goes with --task (synthetic examples are worked solutions of a task world)")
    if ratio is not None and not 0 < ratio <= 1:
        raise DatawallError(f"--synthetic-ratio must be in (0, 1], got {ratio}")
    if epochs is not None and not (math.isfinite(epochs) and epochs > 0):
        raise DatawallError(f"--synthetic-epochs must be positive, got {epochs}")
    if ratio is not None and epochs is not None:
        raise DatawallError("give --synthetic-ratio or --synthetic-epochs, not both (each decides the mix)")
    spec = SyntheticSpec(paths=[str(p.resolve()) for p in paths], ratio=ratio, epochs=epochs,
                         examples=parse_count(examples, "--synthetic-examples") if examples else None)
    rows = read_synthetic(spec, task, parse_task_args(task_args))
    return spec.model_copy(update={"sha256": rows.digest})


def evaluate(
    model: Annotated[Path, typer.Option(help="Checkpoint directory (or a run directory).")],
    task: Annotated[str | None, typer.Option(help="Task world; default: the one the model was trained on.")] = None,
    task_args: TaskArgs = "",
    problems: Annotated[int, typer.Option(help="Held-out problems to score.")] = 200,
    split: Annotated[str, typer.Option(help="Split to score: test (held-out) or train.")] = "test",
    fewshot: Annotated[int, typer.Option(help="Solved train-split examples before each prompt (in chat: "
                                         "alternating user/assistant turns).")] = 0,
    fewshot_seed: Annotated[int, typer.Option(help="Seed that picks the few-shot examples of each "
                                              "problem.")] = FEWSHOT_SEED,
    chat: ChatFlag = False,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string besides the task's own (jsonl and rg tasks "
                                                   "stop at '\\n\\nQuestion:'); repeatable.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    as_json: JsonFlag = False,
) -> None:
    """Greedy, verifier-scored accuracy of a checkpoint on a task, with a 95% Wilson interval.

    Answers are read two ways from the same completions: strict (the last '#### N' line, the format datawall's
    worked solutions teach) and flexible (a \\boxed{} answer, '#### N', "the answer is N", else the last
    number; `$` and commas dropped), as lm-eval reports GSM8K. --fewshot K puts K solved train problems before
    each prompt (never the problem itself) and --chat applies the checkpoint's chat template, as lm-eval's
    --num_fewshot, --apply_chat_template and --fewshot_as_multiturn.
    """
    from datawall.device import require_device
    from datawall.model import checkpoint_dir, load_checkpoint
    from datawall.tasks import get_task
    from datawall.tasks.prompting import stop_sequences
    from datawall.tasks.registry import parse_task_args
    from datawall.tasks.splits import check_split
    from datawall.train.evaluate import safety_line, task_accuracy

    require_device(device)
    if problems <= 0:
        raise DatawallError(f"--problems must be positive, got {problems}")
    check_split(split)
    ckpt = load_checkpoint(checkpoint_dir(model))
    name = task or ckpt.meta.get("task")
    if not name:
        raise DatawallError(f"{model}: no --task given and the checkpoint names none")
    settings = parse_task_args(task_args) if task_args or task else dict(ckpt.meta.get("task_args") or {})
    world = get_task(name, **settings)
    size = world.size(split)
    if size is not None and problems > size:  # a file's split may hold fewer: score all of them, and say so
        if size == 0:
            raise DatawallError(f"{world.name}: the {split} split has no problems")
        stderr.print(f"{world.name}: the {split} split has {size} problems; scoring all {size} "
                     f"(--problems {problems})", markup=False, highlight=False)
        problems = size
    result = task_accuracy(ckpt.model.to(device), ckpt.tokenizer, world, problems=problems, split=split,
                           device=device, quiet=as_json, flexible=True, fewshot=fewshot, fewshot_seed=fewshot_seed,
                           chat=chat, stop=stop)
    result |= {"task": name, "task_args": settings, "split": split, "model": str(model), "fewshot": fewshot,
               "fewshot_seed": fewshot_seed, "chat": chat, "stop": stop_sequences(world, stop)}
    if as_json:
        _print_json(result)
    else:
        print(f"{name} {split}: accuracy {result['accuracy']:.1%} [{result['ci_low']:.1%}, "
              f"{result['ci_high']:.1%}] strict ('#### N'), {result['flexible_accuracy']:.1%} "
              f"[{result['flexible_ci_low']:.1%}, {result['flexible_ci_high']:.1%}] flexible on "
              f"{result['problems']} problems")
        if safety := safety_line(result):  # a world with hazard cases
            print(safety)


def sample(
    model: Annotated[Path, typer.Option(help="Checkpoint directory (or a run directory).")],
    prompt: Annotated[str, typer.Option(help="Prompt text.")],
    n: Annotated[int, typer.Option(help="Samples of the prompt (one shared prefill).")] = 1,
    temperature: Annotated[float, typer.Option(help="0 for greedy (so is anything below 1e-5).")] = 1.0,
    top_k: Annotated[int | None, typer.Option(help="Keep the k most likely tokens.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling mass in (0, 1]; a tiny one keeps the "
                                                "most likely token only.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Max new tokens per sample.")] = 128,
    stop: StopFlag = None,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible samples.")] = None,
    chat: ChatFlag = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    compile_step: CompileFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Sample completions of a prompt from a checkpoint (with --chat, of the prompt as one user message)."""
    from datawall.device import require_device

    require_device(device)  # one line, before a checkpoint is read
    from datawall.model import checkpoint_dir, load_checkpoint
    from datawall.model.sampler import generate
    from datawall.tasks.prompting import as_messages

    if n <= 0 or max_tokens <= 0:
        raise DatawallError(f"--n and --max-tokens must be positive, got {n} and {max_tokens}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise DatawallError(f"--temperature must be a finite number >= 0 (0 is greedy), got {temperature}")
    if top_p is not None and not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise DatawallError(f"--top-p must be in (0, 1], got {top_p}")
    if top_k is not None and top_k < 1:
        raise DatawallError(f"--top-k must be >= 1, got {top_k}")
    ckpt = load_checkpoint(checkpoint_dir(model))
    given = ckpt.tokenizer.encode_chat(as_messages(prompt)) if chat else prompt
    outs = generate(ckpt.model.to(device), ckpt.tokenizer, [given], n=n, max_new_tokens=max_tokens,
                    temperature=temperature, top_k=top_k, top_p=top_p, stop=stop, seed=seed, device=device,
                    compile_step=compile_step)[0]
    if as_json:
        _print_json({"prompt": prompt, "chat": chat, "samples": [
            {"text": s.text, "finish_reason": s.finish_reason, "completion_tokens": s.completion_tokens,
             "logprob": float(sum(s.logprobs)) if s.logprobs is not None else None} for s in outs]})
        return
    for i, s in enumerate(outs):
        stderr.print(f"[dim]--- sample {i} ({s.finish_reason}, {s.completion_tokens} tokens)[/dim]")
        print(s.text if chat else prompt + s.text)  # a chat reply does not continue the prompt's text


def register(app: typer.Typer) -> None:
    """Add the model commands to the root app."""
    app.command("pretrain")(pretrain)
    app.command("eval")(evaluate)
    app.command("sample")(sample)
