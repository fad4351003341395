"""`datawall synth`: synthetic data written by teachers (generate | compare | iterate | collapse)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from datawall.progress import stderr
from datawall.synth.collapse_config import CollapseConfig
from datawall.synth.generate_config import GenerateConfig
from datawall.synth.iterate_config import IterateConfig

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
    require_caveat: Annotated[bool, typer.Option(help=_help("require_caveat"))] = _default("require_caveat"),
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
        min_agreement=min_agreement, require_caveat=require_caveat, dedup=dedup, dedup_threshold=dedup_threshold,
        dedup_on=dedup_on,
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
    if "kept_caveat_recall" in result:  # a world with hazard cases
        print(f"caveats: the teacher's {_share(result['teacher_caveat_recall'])} of {result['hazardous']} hazardous "
              f"problems, the kept data's {_share(result['kept_caveat_recall'])} of {result['kept_hazardous']}")
    print(f"FLOPs per kept example {flops}; dollars {result['dollars'] or 0:.3g}; data: {out / SYNTHETIC}")


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def generate_config(**flags) -> GenerateConfig:
    """The GenerateConfig of these flags; a bad value is one line naming its flag (`--strategy: ...`)."""
    from datawall.commands.flags import config_from_flags

    return config_from_flags(GenerateConfig, **flags)


@app.command()
def compare(
    student: Annotated[Path, typer.Argument(help="Student checkpoint (or run directory).")],
    teacher: Annotated[Path, typer.Argument(help="Teacher checkpoint (or run directory) whose data it trained on.")],
    task: Annotated[str | None, typer.Option(help="Task world (default: the student's).")] = None,
    task_args: Annotated[str, typer.Option(help="Task settings as k=v,k=v (default: the student's).")] = "",
    problems: Annotated[int, typer.Option(help="Held-out problems both models answer (at most the split's "
                                          "size).")] = 500,
    split: Annotated[str, typer.Option(help="test (held-out) or train.")] = "test",
    out: Annotated[Path | None, typer.Option(help="Also write the result (JSON) here, and the per-problem answers "
                                             "beside it (FILE.problems.jsonl).")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Does the student only resemble its teacher? Error agreement, per-token KL(student || teacher) on held-out
    reference solutions, and how often the student beats its teacher, each with a 95% interval."""
    from datawall.atomic import atomic_write_json, atomic_write_text
    from datawall.device import require_device
    from datawall.errors import DatawallError
    from datawall.synth.compare import compare as run_compare
    from datawall.tasks.registry import parse_task_args
    from datawall.tasks.splits import check_split

    require_device(device)
    check_split(split)
    if problems <= 0:
        raise DatawallError(f"--problems must be positive, got {problems}")
    result, rows = run_compare(student, teacher, task, parse_task_args(task_args) if task_args else None, problems,
                               split, device, quiet=as_json)
    if out is not None:
        atomic_write_text(out.with_name(out.name + ".problems.jsonl"), "".join(json.dumps(r) + "\n" for r in rows))
        atomic_write_json(out, result)
    if as_json:
        print(json.dumps(result))
        return

    def pct(key: str) -> str:
        v, ci = result[key], result[f"{key}_ci"]
        return "-" if v is None else f"{v:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]"

    print(f"{result['problems']} {split} problems: student {pct('student_accuracy')}, "
          f"teacher {pct('teacher_accuracy')}")
    print(f"error agreement {pct('error_agreement')} of problems, {pct('error_agreement_of_errors')} of the "
          f"student's {result['student_errors']} errors")
    print(f"exceeds its teacher on {pct('exceeds_teacher')}, trails it on {pct('trails_teacher')}")
    if result["kl"] is None:
        print(f"KL: {result['kl_note']}")
    else:
        print(f"KL(student || teacher) {result['kl']:.4f} nats/token [{result['kl_ci'][0]:.4f}, "
              f"{result['kl_ci'][1]:.4f}] on {result['kl_tokens']:,} reference-solution tokens")


_ch, _cd = CollapseConfig.help, CollapseConfig.default


@app.command()
def collapse(
    out: Annotated[Path, typer.Option(help="Run directory (resumed from its finished pieces).")],
    task: Annotated[str, typer.Option(help=_ch("task"))] = _cd("task"),
    task_args: Annotated[str, typer.Option(help=_ch("task_args") + " As k=v,k=v.")] = ",".join(
        f"{k}={v}" for k, v in _cd("task_args").items()),
    size: Annotated[str, typer.Option(help=_ch("size"))] = _cd("size"),
    real_examples: Annotated[int, typer.Option(help=_ch("real_examples"))] = _cd("real_examples"),
    tokens: Annotated[str, typer.Option(help=_ch("tokens") + " Accepts 300k.")] = str(_cd("tokens")),
    generations: Annotated[int, typer.Option(help=_ch("generations"))] = _cd("generations"),
    mode: Annotated[list[str] | None, typer.Option(help="replace (only the last generation's samples), accumulate "
                                                   "(real + every generation's samples) or mix (the last "
                                                   "generation's samples + --real-frac real); repeatable or "
                                                   "comma-separated (default: all three).")] = None,
    real_frac: Annotated[float, typer.Option(help=_ch("real_frac"))] = _cd("real_frac"),
    samples: Annotated[int | None, typer.Option(help=_ch("samples"))] = None,
    temperature: Annotated[float, typer.Option(help=_ch("temperature"))] = _cd("temperature"),
    seeds: Annotated[str, typer.Option(help=_ch("seeds") + " Comma-separated.")] = ",".join(
        map(str, _cd("seeds"))),
    batch_size: Annotated[int, typer.Option(help=_ch("batch_size"))] = _cd("batch_size"),
    lr: Annotated[float, typer.Option(help=_ch("lr"))] = _cd("lr"),
    seq_len: Annotated[int, typer.Option(help=_ch("seq_len"))] = _cd("seq_len"),
    eval_problems: Annotated[int, typer.Option(help=_ch("eval_problems"))] = _cd("eval_problems"),
    tail_share: Annotated[float, typer.Option(help=_ch("tail_share"))] = _cd("tail_share"),
    workers: Annotated[int, typer.Option(help="Processes (one torch thread each): the seeds' generation 0, then the "
                                         "(mode, seed) chains side by side.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print collapse.json's object.")] = False,
) -> None:
    """Model collapse over generations: replace degrades, accumulate stays bounded, a real share slows the decay.

    Generation 0 learns from the U real examples; each later generation trains from scratch on samples the one
    before wrote for fresh problems (temperature 1, unchecked). Per generation: held-out loss on the real reference
    solutions, accuracy, tail accuracy and the samples' share in the tail classes, diversity. Writes OUT/collapse.json
    (`runs`: {mode, seed, generation, heldout_loss, accuracy, tail_accuracy, diversity, ...}) and OUT/collapse.png.
    """
    from datawall.commands.flags import config_from_flags
    from datawall.counts import parse_count
    from datawall.errors import DatawallError
    from datawall.synth.collapse import run_collapse
    from datawall.tasks.registry import parse_task_args

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise DatawallError(f"--seeds: give integers separated by commas, got {seeds!r}") from None
    modes = [m.strip() for given in (mode or ["replace,accumulate,mix"]) for m in given.split(",") if m.strip()]
    cfg = config_from_flags(CollapseConfig, task=task, task_args=parse_task_args(task_args), size=size,
                            real_examples=real_examples, tokens=parse_count(tokens, "--tokens"),
                            generations=generations, modes=modes, real_frac=real_frac, samples=samples,
                            temperature=temperature, seeds=seed_list, batch_size=batch_size, lr=lr, seq_len=seq_len,
                            eval_problems=eval_problems, tail_share=tail_share)
    if workers < 1:
        raise DatawallError(f"--workers must be at least 1, got {workers}")
    result = run_collapse(cfg, out, workers=workers, quiet=as_json)
    if as_json:
        print(json.dumps(result))
        return
    for name, points in result["summary"].items():
        line = "  ".join(f"g{p['generation']} {p['accuracy']:.1%}/{p['heldout_loss']:.3f}" for p in points)
        print(f"{name:>10}: accuracy/held-out loss by generation: {line}")
    print(f"plot: {result['plot']}")


_ih, _id = IterateConfig.help, IterateConfig.default


@app.command()
def iterate(
    model: Annotated[Path, typer.Option(help="The base checkpoint (or run directory): round 1's teacher.")],
    task: Annotated[str, typer.Option(help=_ih("task"))],
    out: Annotated[Path, typer.Option(help="Run directory (resumed at its first unfinished round).")],
    task_args: Annotated[str, typer.Option(help=_ih("task_args") + " As k=v,k=v.")] = "",
    rounds: Annotated[int, typer.Option(help=_ih("rounds"))] = _id("rounds"),
    start_from: Annotated[str, typer.Option("--from", help=_ih("start_from"))] = _id("start_from"),
    problems: Annotated[int, typer.Option(help=_ih("problems"))] = _id("problems"),
    strategy: Annotated[str, typer.Option(help=_ih("strategy"))] = _id("strategy"),
    filter: Annotated[str, typer.Option(help=_ih("filter"))] = _id("filter"),
    temperature: Annotated[float, typer.Option(help=_ih("temperature"))] = _id("temperature"),
    real_tokens: Annotated[str | None, typer.Option(help=_ih("real_tokens"))] = None,
    real: Annotated[bool, typer.Option(help=_ih("real"))] = _id("real"),
    tokens: Annotated[str, typer.Option(help=_ih("tokens") + " Accepts 200k.")] = str(_id("tokens")),
    batch_size: Annotated[int, typer.Option(help="Sequences per optimizer step.")] = _id("batch_size"),
    lr: Annotated[float, typer.Option(help=_ih("lr"))] = _id("lr"),
    seq_len: Annotated[int, typer.Option(help="Model context in tokens (at most the base model's).")] = _id("seq_len"),
    eval_problems: Annotated[int, typer.Option(help=_ih("eval_problems"))] = _id("eval_problems"),
    seed: Annotated[int, typer.Option(help=_ih("seed"))] = _id("seed"),
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print iterate.json's object.")] = False,
) -> None:
    """Self-improvement (STaR / ReST-EM): the model writes solutions, the verifier keeps the right ones, it is
    fine-tuned on them; K rounds, accuracy and FLOPs per round.

    --from base (ReST-EM) fine-tunes the base model every round on the data the last round's model wrote; --from
    last fine-tunes the last round's model. Each round is a synth generate run and a training run under OUT/round-R,
    so a killed run resumes at its first unfinished piece.
    """
    from datawall.commands.flags import config_from_flags
    from datawall.counts import parse_count
    from datawall.device import require_device
    from datawall.synth.iterate import run_iterate
    from datawall.tasks.registry import parse_task_args

    require_device(device)
    if start_from not in ("base", "last"):  # the setting is start_from; the flag is --from
        from datawall.errors import DatawallError

        raise DatawallError(f"--from: give base (ReST-EM) or last (continue), got {start_from!r}")
    cfg = config_from_flags(IterateConfig, task=task, task_args=parse_task_args(task_args), rounds=rounds,
                            start_from=start_from, problems=problems, strategy=strategy, filter=filter,
                            temperature=temperature, real=real, tokens=parse_count(tokens, "--tokens"),
                            real_tokens=parse_count(real_tokens, "--real-tokens") if real_tokens else None,
                            batch_size=batch_size, lr=lr, seq_len=seq_len, eval_problems=eval_problems, seed=seed)
    result = run_iterate(model, cfg, out, device=device, quiet=as_json)
    if as_json:
        print(json.dumps(result))
        return
    for row in result["rounds"]:
        extra = "" if row["round"] == 0 else (f"  kept {row['kept']}/{row['generated']}  round FLOPs "
                                              f"{row['flops']:.3g} (total {row['cumulative_flops']:.3g})")
        print(f"round {row['round']}: held-out accuracy {row['accuracy']:.1%} [{row['ci_low']:.1%}, "
              f"{row['ci_high']:.1%}]{extra}")
