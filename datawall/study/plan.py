"""From a study spec to the jobs that measure it: one pretraining run per (size, epochs, seed), one think
run per baseline checkpoint, deduplicated by content key, with compute estimates checked against the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datawall.counts import format_count
from datawall.errors import DatawallError
from datawall.study.jobs import Job
from datawall.study.spec import StudySpec

LEVERS = ("scale", "repetition", "test_time")


@dataclass(frozen=True)
class Setting:
    """One trained configuration: a model size and passes over the U unique examples."""

    size: str
    epochs: float


@dataclass(frozen=True)
class Point:
    """One measured point of a lever: a setting trained once per seed (plus, for test_time, sampled)."""

    lever: str  # "baseline", "scale", "repetition" or "test_time"
    setting: Setting
    pretrain: tuple[str, ...]  # pretrain job key per seed
    think: tuple[str, ...] = ()  # think job key per seed (test_time only)


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

    @property
    def train_flops(self) -> float:
        """Estimated training FLOPs of all pretraining jobs."""
        return sum(self.est_flops[j.key] for j in self.jobs if j.kind == "pretrain")

    def label(self, key: str) -> str:
        """A short name for a job in progress views: "pretrain 1m, 2 epochs, seed 0"."""
        job = next((j for j in self.jobs if j.key == key), None)
        if job is None:
            return key
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


def settings(spec: StudySpec) -> list[tuple[str, Setting]]:
    """(lever, setting) pairs: the baseline first, then each enabled training lever's settings."""
    base = Setting(spec.baseline.size.lower(), float(spec.baseline.epochs))
    out = [("baseline", base)]
    if spec.levers.scale.enabled:
        out += [("scale", Setting(s.lower(), base.epochs)) for s in spec.levers.scale.sizes]
    if spec.levers.repetition.enabled:
        out += [("repetition", Setting(base.size, float(e))) for e in spec.levers.repetition.epochs]
    return out


def pretrain_config(spec: StudySpec, world: World, setting: Setting, seed: int) -> dict:
    """The RunSpec JSON of one pretraining run."""
    from datawall.train.config import OptimConfig, TrainConfig
    from datawall.train.run import DataSpec, RunSpec

    t = spec.train
    run = RunSpec(
        data=DataSpec(task=spec.world.task, task_args=spec.world.task_args, unique_tokens=world.unique_tokens),
        size=setting.size,
        train=TrainConfig(tokens=max(1, round(setting.epochs * world.tokens_per_epoch)), batch_size=t.batch_size,
                          seq_len=t.seq_len, optim=OptimConfig(lr=t.lr, schedule=t.schedule), seed=seed,
                          device=t.device),
        eval_problems=spec.world.eval_problems,
    )
    return run.model_dump(mode="json")


def think_config(spec: StudySpec, model_key: str, seed: int) -> dict:
    """The think job config sampling the baseline checkpoint `model_key`."""
    tt = spec.levers.test_time
    return {"model": model_key, "task": spec.world.task, "task_args": dict(spec.world.task_args),
            "problems": spec.test_problems, "n_max": max(tt.n), "strategies": ["greedy", *tt.strategies],
            "temperature": tt.temperature, "seed": seed, "device": spec.train.device,
            # the problems every pretraining run is evaluated on (repeats included), so levers share one test set
            "distinct": False}


def make_plan(spec: StudySpec, world: World | None = None) -> Plan:
    """Every job of the study, deduplicated (the baseline run appears once), checked against the budget."""
    from datawall.model import model_config
    from datawall.model.flops import sample_flops, train_flops_per_token

    world = world or measure_world(spec)
    if world.longest_example - 1 > spec.train.seq_len:
        raise DatawallError(f"train.seq_len: {spec.train.seq_len} is shorter than the longest training example "
                            f"({world.longest_example} tokens); raise it")
    jobs: dict[str, Job] = {}
    est: dict[str, float] = {}
    infer: dict[str, float] = {}
    points: list[Point] = []
    seeds = spec.world.seeds
    for lever, setting in settings(spec):
        cfg = model_config(setting.size, vocab_size=world.vocab_size, max_seq_len=spec.train.seq_len)
        infer[setting.size] = sample_flops(cfg, round(world.prompt_tokens), round(world.completion_tokens), n=1)
        keys = []
        for seed in seeds:
            job = Job("pretrain", pretrain_config(spec, world, setting, seed))
            jobs.setdefault(job.key, job)
            est[job.key] = train_flops_per_token(cfg, world.longest_example - 1) * job.config["train"]["tokens"]
            keys.append(job.key)
        points.append(Point(lever, setting, tuple(keys)))
    if spec.levers.test_time.enabled:
        base = points[0]
        thinks = []
        for seed, key in zip(seeds, base.pretrain, strict=True):
            job = Job("think", think_config(spec, key, seed), deps=(key,))
            jobs.setdefault(job.key, job)
            samples = spec.test_problems * (max(spec.levers.test_time.n) + 1)
            est[job.key] = samples * infer[base.setting.size]
            thinks.append(job.key)
        points.append(Point("test_time", base.setting, base.pretrain, tuple(thinks)))
    plan = Plan(spec, world, list(jobs.values()), points, est, infer)
    _check_budget(plan)
    return plan


def _check_budget(plan: Plan) -> None:
    """Refuse a plan whose estimated training compute is above the spec's caps, naming the biggest runs."""
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
