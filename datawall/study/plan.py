"""From a study spec to the jobs that measure it: the baseline's pretraining runs, then what each enabled lever
adds (datawall.study.levers: pretraining settings, think runs on the baseline checkpoints, ...), deduplicated
by content key, with compute estimates checked against the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from datawall.counts import format_count
from datawall.errors import DatawallError
from datawall.study.jobs import KINDS, Job
from datawall.study.levers import LEVERS
from datawall.study.levers.base import Point, Setting

if TYPE_CHECKING:
    from datawall.study.spec import StudySpec

__all__ = ["Plan", "PlanBuilder", "Point", "Setting", "World", "make_plan", "measure_world", "pretrain_config"]


@dataclass(frozen=True)
class World:
    """What the plan measured about the task world before any training."""

    unique_examples: int
    unique_tokens: int  # tokens of the U examples (DataSpec.unique_tokens)
    tokens_per_epoch: int  # real input positions per pass (each example's length minus one)
    longest_example: int
    vocab_size: int
    prompt_tokens: float  # mean over held-out problems, bos included
    completion_tokens: float  # mean reference solution, eos included


@dataclass
class Plan:
    """The jobs of a study and what the report needs to put them on one compute axis."""

    spec: StudySpec
    world: World
    jobs: list[Job]
    points: list[Point]
    est_flops: dict[str, float] = field(default_factory=dict)  # job key -> estimated FLOPs (train or sampling)
    infer_flops: dict[str, float] = field(default_factory=dict)  # size -> FLOPs of one greedy query
    lever_of: dict[str, str] = field(default_factory=dict)  # job key -> "baseline" or the lever that added it

    @property
    def train_flops(self) -> float:
        """Estimated training FLOPs of all pretraining jobs."""
        return sum(self.est_flops[j.key] for j in self.jobs if j.kind == "pretrain")

    @property
    def flops(self) -> float:
        """Estimated FLOPs of every job: training plus the levers' sampling."""
        return sum(self.est_flops[j.key] for j in self.jobs)

    def flops_by_lever(self) -> dict[str, float]:
        """Estimated FLOPs per lever (a job shared by two levers counts for the one that added it first)."""
        out: dict[str, float] = {}
        for j in self.jobs:
            lever = self.lever_of.get(j.key, "baseline")
            out[lever] = out.get(lever, 0.0) + self.est_flops[j.key]
        return out

    def label(self, key: str) -> str:
        """A short name for a job in progress views: "pretrain 1m, 2 epochs, seed 0"."""
        job = next((j for j in self.jobs if j.key == key), None)
        if job is None:
            return key
        describe = KINDS[job.kind].describe
        if describe is not None and (words := describe(job.config)):
            return words
        if job.kind == "pretrain":
            epochs = job.config["train"]["tokens"] / self.world.tokens_per_epoch
            return f"pretrain {job.config['size']}, {epochs:.3g} epochs, seed {job.config['train']['seed']}"
        model = self.job(job.config["model"]) if any(j.key == job.config["model"] for j in self.jobs) else None
        size = f" {model.config['size']}" if model else ""
        return f"think{size}, n {job.config['n_max']}, seed {job.config['seed']}"

    def job(self, key: str) -> Job:
        """The job with this key."""
        return next(j for j in self.jobs if j.key == key)


def measure_world(spec: StudySpec) -> World:
    """Token counts of the U training examples and of a typical held-out query (char tokenizer)."""
    from datawall.data import Tokenizer, task_docs
    from datawall.tasks import get_task

    w = spec.world
    task = get_task(w.task, **w.task_args)
    tok = Tokenizer.for_chars(task.alphabet)
    docs = task_docs(task, tok, "train", count=w.unique_examples)
    lengths = [len(d) for d in docs]
    held = [task.problem("test", i) for i in range(min(w.eval_problems, 100))]
    prompts = tok.encode_batch([p.prompt for p in held])
    solutions = tok.encode_batch([task.solution(p) for p in held])
    return World(unique_examples=w.unique_examples, unique_tokens=sum(lengths),
                 tokens_per_epoch=sum(lengths) - len(lengths), longest_example=max(lengths),
                 vocab_size=tok.vocab_size, prompt_tokens=1 + sum(map(len, prompts)) / len(prompts),
                 completion_tokens=1 + sum(map(len, solutions)) / len(solutions))


def pretrain_config(spec: StudySpec, world: World, setting: Setting, seed: int) -> dict:
    """The RunSpec JSON of one pretraining run."""
    from datawall.train.config import OptimConfig, TrainConfig
    from datawall.train.run import DataSpec, RunSpec

    t = spec.train
    run = RunSpec(
        data=DataSpec(task=spec.world.task, task_args=spec.world.task_args, unique_tokens=world.unique_tokens),
        size=setting.size,
        train=TrainConfig(tokens=max(1, round(setting.epochs * world.tokens_per_epoch)), batch_size=t.batch_size,
                          seq_len=t.seq_len, seed=seed, device=t.device,
                          optim=OptimConfig(lr=t.lr_for(setting.size), schedule=t.schedule,
                                            weight_decay=t.weight_decay)),
        eval_problems=spec.world.eval_problems,
    )
    return run.model_dump(mode="json")


class PlanBuilder:
    """What a lever's `jobs` adds its jobs through: each job once, with its FLOP estimate and its lever."""

    def __init__(self, spec: StudySpec, world: World):
        self.spec, self.world = spec, world
        self.jobs: dict[str, Job] = {}
        self.est: dict[str, float] = {}
        self.lever_of: dict[str, str] = {}
        self.infer: dict[str, float] = {}

    def add(self, job: Job, flops: float, lever: str) -> str:
        """Add `job` (once; an identical job another lever added is shared) with its estimated FLOPs; its key."""
        self.jobs.setdefault(job.key, job)
        self.est[job.key] = flops
        self.lever_of.setdefault(job.key, lever)
        return job.key

    def pretrain(self, lever: str, setting: Setting) -> Point:
        """The point of a trained setting: one pretraining job per seed (the baseline's runs are shared)."""
        from datawall.model import model_config
        from datawall.model.flops import sample_flops, train_flops_per_token

        w, spec = self.world, self.spec
        cfg = model_config(setting.size, vocab_size=w.vocab_size, max_seq_len=spec.train.seq_len)
        self.infer[setting.size] = sample_flops(cfg, round(w.prompt_tokens), round(w.completion_tokens), n=1)
        per_token = train_flops_per_token(cfg, w.longest_example - 1)
        keys = []
        for seed in spec.world.seeds:
            job = Job("pretrain", pretrain_config(spec, w, setting, seed))
            keys.append(self.add(job, per_token * job.config["train"]["tokens"], lever))
        return Point(lever, setting, tuple(keys))

    def query_flops(self, size: str) -> float:
        """FLOPs of one greedy query (mean held-out prompt and reference solution) of a planned model size."""
        return self.infer[size]


def make_plan(spec: StudySpec, world: World | None = None) -> Plan:
    """The baseline's runs, then every enabled lever's, deduplicated, checked against the budget."""
    world = world or measure_world(spec)
    if world.longest_example - 1 > spec.train.seq_len:
        raise DatawallError(f"train.seq_len: {spec.train.seq_len} is shorter than the longest training example "
                            f"({world.longest_example} tokens); raise it")
    builder = PlanBuilder(spec, world)
    base = builder.pretrain("baseline", Setting(spec.baseline.size.lower(), float(spec.baseline.epochs)))
    points = [base]
    for name, lever in LEVERS.items():
        if getattr(spec.levers, name).enabled:
            points += lever.jobs(spec, builder, base)
    plan = Plan(spec, world, list(builder.jobs.values()), points, builder.est, builder.infer, builder.lever_of)
    _check_budget(plan)
    return plan


def _check_budget(plan: Plan) -> None:
    """Refuse a plan whose estimated compute is above the spec's caps, naming what needs the most."""
    b = plan.spec.budget
    pre = [j for j in plan.jobs if j.kind == "pretrain"]
    biggest = sorted(pre, key=lambda j: -plan.est_flops[j.key])[:2]
    names = ", ".join(f"{j.config['size']} x {format_count(j.config['train']['tokens'])} tokens" for j in biggest)
    if b.max_train_flops is not None and plan.train_flops > b.max_train_flops:
        raise DatawallError(f"budget.max_train_flops: the plan needs ~{plan.train_flops:.3g} training FLOPs over "
                            f"{len(pre)} runs, above the cap {b.max_train_flops:.3g} (biggest: {names}); drop sizes, "
                            "epochs or seeds, or raise the cap")
    tokens = sum(j.config["train"]["tokens"] for j in pre)
    if b.max_train_tokens is not None and tokens > b.max_train_tokens:
        raise DatawallError(f"budget.max_train_tokens: the plan trains {format_count(tokens)} tokens over {len(pre)} "
                            f"runs, above the cap {format_count(b.max_train_tokens)} (biggest: {names}); drop "
                            "sizes, epochs or seeds, or raise the cap")
    if b.max_flops is not None and plan.flops > b.max_flops:
        lever, most = max(plan.flops_by_lever().items(), key=lambda t: t[1])
        runs = sum(1 for j in plan.jobs if plan.lever_of.get(j.key) == lever)
        who = "the baseline" if lever == "baseline" else f"levers.{lever}"
        kinds: dict[str, float] = {}
        for j in plan.jobs:
            kinds[j.kind] = kinds.get(j.kind, 0.0) + plan.est_flops[j.key]
        parts = " + ".join(f"{v:.3g} {kind}" for kind, v in kinds.items())
        raise DatawallError(f"budget.max_flops: the plan needs ~{plan.flops:.3g} FLOPs ({parts}), above the cap "
                            f"{b.max_flops:.3g}; {who} alone needs ~{most:.3g} over {runs} runs; shrink that lever "
                            "(or the seeds) or raise the cap")
