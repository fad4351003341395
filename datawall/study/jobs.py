"""Jobs: one unit of a study (a pretraining run, a think run on its checkpoint), named by a content hash.

A job's key hashes its kind, the version of the code that defines the kind's result, its fully resolved
config and the keys of the jobs it depends on, so a changed setting, a changed default or a bumped kind
version gives a new run directory, and an unchanged job always finds its finished run again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pydantic import Field, field_validator

from datawall.atomic import atomic_write_json
from datawall.device import DeviceName
from datawall.errors import DatawallError, validation_error
from datawall.rl.config import RLConfig
from datawall.testtime.strategies import VERIFIER_ONLY
from datawall.testtime.think_config import ThinkConfig


@dataclass(frozen=True)
class Job:
    """A kind, its config (resolved to a canonical JSON-able dict on creation) and the jobs it needs."""

    kind: str
    config: dict
    deps: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DatawallError(f"unknown job kind {self.kind!r}; known: {', '.join(KINDS)}")
        object.__setattr__(self, "deps", tuple(self.deps))
        object.__setattr__(self, "config", KINDS[self.kind].resolve(dict(self.config)))
        missing = [d for d in KINDS[self.kind].needs(self.config) if d not in self.deps]
        if missing:
            raise DatawallError(f"{self.kind} job: its config refers to {missing[0]!r}, which is not in its deps")

    def __hash__(self) -> int:  # the config is a dict; the key stands for all three fields
        return hash(self.key)

    @cached_property
    def key(self) -> str:
        """The content hash naming this job's run (see job_key)."""
        return job_key(self)

    @property
    def name(self) -> str:
        """The run directory's name: <kind>-<key>."""
        return f"{self.kind}-{self.key}"


@dataclass(frozen=True)
class Kind:
    """What a job kind does: resolve a config, run it, summarise and gauge its result."""

    version: str
    run: Callable[[dict, Path, dict[str, Path], bool], dict]
    resolve: Callable[[dict], dict] = field(default=lambda config: config)
    # keys of other jobs the config names (they must be in the job's deps)
    needs: Callable[[dict], list[str]] = field(default=lambda config: [])
    # a few scalar metrics for the index and `datawall runs list`
    summary: Callable[[dict], dict] = field(default=lambda result: _scalars(result))
    # fraction done of an unfinished run, read from its directory (None when unknown)
    progress: Callable[[dict, Path], float | None] = field(default=lambda config, run_dir: None)
    # a short name for progress views ("synth 1000 problems, seed 0"); None (or a None answer): the plan names it
    describe: Callable[[dict], str | None] | None = None


def canonical_json(obj) -> str:
    """Key-sorted, whitespace-free JSON: equal objects give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def job_key(job: Job) -> str:
    """sha256 (first 16 hex digits) of canonical JSON of (kind, kind version, config, deps)."""
    payload = canonical_json([job.kind, KINDS[job.kind].version, job.config, list(job.deps)])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _scalars(result: dict) -> dict:
    return {k: v for k, v in result.items() if isinstance(v, int | float | str | bool) or v is None}


# --- pretrain: config = RunSpec JSON ---------------------------------------------------------------------

PRETRAIN_METRICS = ("params", "params_non_embedding", "tokens", "unique_tokens", "epochs", "flops", "train_loss",
                    "eval_loss", "accuracy", "ci_low", "ci_high")


def _pretrain_resolve(config: dict) -> dict:
    from pydantic import ValidationError

    from datawall.train.run import RunSpec

    try:
        spec = RunSpec.model_validate(config)
    except ValidationError as e:
        raise validation_error(e, "pretrain job config") from None
    if spec.data.task is not None:
        _check_task(spec.data.task, spec.data.task_args)
    return spec.model_dump(mode="json")


def _check_task(name: str, args: dict) -> None:
    """Fail when the job is made, not when it runs, on an unknown task or a bad task setting."""
    from datawall.tasks import get_task

    get_task(name, **args)


JOB_PATH = "job:"  # a synthetic-data path naming the synth job whose run directory holds the data


def _pretrain_needs(config: dict) -> list[str]:
    """The synth jobs a student's synthetic data comes from (paths "job:KEY")."""
    syn = config["data"].get("synthetic") or {}
    return [p.removeprefix(JOB_PATH) for p in syn.get("paths", []) if p.startswith(JOB_PATH)]


def _pretrain_run(config: dict, run_dir: Path, dep_dirs: dict[str, Path], quiet: bool) -> dict:
    from datawall.train.run import RunSpec, execute

    spec = RunSpec.model_validate(config)
    if spec.data.synthetic is not None and _pretrain_needs(config):
        spec = _with_synth_dirs(spec, dep_dirs)
    return execute(spec, run_dir, quiet=quiet)


def _with_synth_dirs(spec, dep_dirs: dict[str, Path]):
    """The spec with "job:KEY" paths replaced by the synth runs' directories, and S cut to the rows they kept (a
    teacher whose filter kept fewer than S gives all it kept; the result says how many were used)."""
    syn = spec.data.synthetic
    paths = [str(dep_dirs[p.removeprefix(JOB_PATH)]) if p.startswith(JOB_PATH) else p for p in syn.paths]
    examples = syn.examples
    if examples is not None:
        kept = sum(json.loads((Path(p) / "result.json").read_text(encoding="utf-8"))["kept"] for p in paths)
        examples = min(examples, kept)
    data = spec.data.model_copy(update={"synthetic": syn.model_copy(update={"paths": paths, "examples": examples})})
    return spec.model_copy(update={"data": data})


def _pretrain_describe(config: dict) -> str | None:
    """A student's name: its tokens cover U + S, so epochs of U would mislead (None for other runs)."""
    syn = config["data"].get("synthetic")
    if not syn:
        return None
    return f"pretrain {config['size']} + {syn.get('examples') or 'all'} synthetic, seed {config['train']['seed']}"


def _pretrain_progress(config: dict, run_dir: Path) -> float | None:
    last = _last_jsonl(run_dir / "metrics.jsonl")
    if last is None:
        return 0.0
    return min(1.0, last.get("tokens", 0) / config["train"]["tokens"])


def _last_jsonl(path: Path) -> dict | None:
    """The last complete JSON line of a file (reads only its tail)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 4096))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


# --- think: config = ThinkConfig fields + "model" (the pretrain key), "device", "price" --------------------

class ThinkJob(ThinkConfig):
    """A think run of a study: ThinkConfig's settings on the checkpoint of the pretrain job `model`."""

    model: str = Field(min_length=1, description="key of the pretrain job whose checkpoint is sampled")
    device: DeviceName = Field("cpu", description="cpu, cuda or cuda:N")
    price: str | None = Field(None, description="price-table entry (default: the backend's)")

    @field_validator("strategies")
    @classmethod
    def _no_reward_model(cls, v: list[str]) -> list[str]:
        needs = [s for s in v if s not in VERIFIER_ONLY]
        if needs:
            raise ValueError(f"{needs[0]!r} needs a reward model, which a study's think job does not load (yet); "
                             f"use {', '.join(VERIFIER_ONLY)}")
        return v


THINK_EXTRA = ("model", "device", "price")  # the ThinkJob keys that are not ThinkConfig settings
THINK_LATER = ("chat", "fewshot", "fewshot_seed", "stop", "extract")  # prompting and answer reading


def _think_resolve(config: dict) -> dict:
    from pydantic import ValidationError

    try:
        job = ThinkJob.model_validate(config)
    except ValidationError as e:
        raise validation_error(e, "think job config") from None
    _check_task(job.task, job.task_args)
    resolved = job.model_dump(mode="json")
    # settings added after think jobs had keys are left out at their defaults, so that those runs keep their keys
    for k in THINK_LATER:
        if resolved[k] == ThinkConfig.default(k):
            del resolved[k]
    return {**{k: resolved.pop(k) for k in THINK_EXTRA}, **resolved}  # job.json lists the job's own keys first


def _think_run(config: dict, run_dir: Path, dep_dirs: dict[str, Path], quiet: bool) -> dict:
    from datawall.sampling.backends.local import LocalBackend
    from datawall.testtime.think import run_think

    model_dir = dep_dirs[config["model"]] / "checkpoint"  # the run dir's own config.json is the run's, not HF's
    backend = LocalBackend(model_dir, device=config["device"], price=config["price"])
    cfg = ThinkConfig(**{k: v for k, v in config.items() if k not in THINK_EXTRA})
    result = run_think(backend, cfg, run_dir, quiet=quiet)
    atomic_write_json(run_dir / "result.json", result)
    return result


def _think_summary(result: dict) -> dict:
    out = {k: result[k] for k in ("task", "problems", "n_max", "temperature") if k in result}
    for name, rows in result.get("strategies", {}).items():
        if rows:
            out[f"{name}@{rows[-1]['n']}"] = rows[-1]["accuracy"]
    return out


def _think_progress(config: dict, run_dir: Path) -> float | None:
    total = config["problems"] * (config["n_max"] + ("greedy" in config["strategies"]))
    done = 0
    for name in ("samples.jsonl", "greedy.jsonl"):
        try:
            with open(run_dir / name, "rb") as f:
                done += sum(1 for _ in f)
        except FileNotFoundError:
            pass
    return min(1.0, done / max(1, total))


# --- synth: config = GenerateConfig fields + "model" (the teacher's pretrain key), "device", "price", "prices" ------

SYNTH_EXTRA = ("model", "device", "price", "prices")


def _synth_resolve(config: dict) -> dict:
    from pydantic import ValidationError

    from datawall.synth.generate_config import GenerateConfig

    extra = {k: config.pop(k, None) for k in SYNTH_EXTRA}
    if not isinstance(extra["model"], str) or not extra["model"]:
        raise DatawallError("synth job config: 'model' must be the key of the teacher's pretrain job")
    try:
        cfg = GenerateConfig.model_validate(config)
    except ValidationError as e:
        raise validation_error(e, "synth job config") from None
    if cfg.orm is not None:
        raise DatawallError("synth job config: a study's synth job loads no reward model (orm); use the verifier or "
                            "majority filter")
    _check_task(cfg.task, cfg.task_args)
    return {**extra, "device": extra["device"] or "cpu", **cfg.settings()}  # newer settings only when set


def _synth_run(config: dict, run_dir: Path, dep_dirs: dict[str, Path], quiet: bool) -> dict:
    from datawall.sampling.backends.local import LocalBackend
    from datawall.synth.generate import run_generate
    from datawall.synth.generate_config import GenerateConfig

    backend = LocalBackend(dep_dirs[config["model"]] / "checkpoint", device=config["device"], price=config["price"],
                           prices=config["prices"])
    cfg = GenerateConfig(**{k: v for k, v in config.items() if k not in SYNTH_EXTRA})
    return run_generate(backend, cfg, run_dir, quiet=quiet)


def _synth_progress(config: dict, run_dir: Path) -> float | None:
    return 1.0 if (run_dir / "synthetic.jsonl").exists() else None


# --- synth-compare: config = "student", "teacher" (pretrain keys), task, task_args, problems, device -------------

def _compare_resolve(config: dict) -> dict:
    need = {"student": str, "teacher": str, "task": str, "problems": int}
    for key, kind in need.items():
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
            raise DatawallError(f"synth-compare job config: {key!r} must be a {kind.__name__}")
    _check_task(config["task"], config.get("task_args") or {})
    return {"student": config["student"], "teacher": config["teacher"], "task": config["task"],
            "task_args": dict(config.get("task_args") or {}), "problems": config["problems"],
            "device": config.get("device") or "cpu"}


def _compare_run(config: dict, run_dir: Path, dep_dirs: dict[str, Path], quiet: bool) -> dict:
    from datawall.atomic import atomic_write_text
    from datawall.synth.compare import compare

    result, rows = compare(dep_dirs[config["student"]] / "checkpoint", dep_dirs[config["teacher"]] / "checkpoint",
                           config["task"], config["task_args"], config["problems"], device=config["device"],
                           quiet=quiet)
    atomic_write_text(run_dir / "problems.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_json(run_dir / "result.json", result)
    return result


COMPARE_METRICS = ("student_accuracy", "teacher_accuracy", "error_agreement", "error_agreement_of_errors", "kl",
                   "exceeds_teacher")


# --- prefer: config = datawall.prefer.job.PreferJob (pairs graded, DPO, held-out accuracy) ------------------

def _prefer_resolve(config: dict) -> dict:
    from pydantic import ValidationError

    from datawall.prefer.job import PreferJob

    try:
        job = PreferJob.model_validate(config)
    except ValidationError as e:
        raise validation_error(e, "prefer job config") from None
    _check_task(job.task, job.task_args)
    return job.model_dump(mode="json")


def _prefer_run(config: dict, run_dir: Path, dep_dirs: dict[str, Path], quiet: bool) -> dict:
    from datawall.prefer.job import run_prefer_job

    return run_prefer_job(config, run_dir, dep_dirs, quiet)


def _prefer_progress(config: dict, run_dir: Path) -> float | None:
    from datawall.prefer.job import prefer_progress

    return prefer_progress(config, run_dir)


# --- rl: config = RLConfig fields + "model" (the pretrain key) ------------------------------------------------

class RLJob(RLConfig):
    """An rl run of a study: RLConfig's settings on the checkpoint of the pretrain job `model`."""

    model: str = Field(min_length=1, description="key of the pretrain job whose checkpoint is trained")


def _rl_resolve(config: dict) -> dict:
    from pydantic import ValidationError

    try:
        job = RLJob.model_validate(config)
    except ValidationError as e:
        raise validation_error(e, "rl job config") from None
    _check_task(job.task, job.task_args)
    resolved = job.identity()  # settings added later are left out at their default: stored runs keep their keys
    return {"model": resolved.pop("model"), **resolved}


def _rl_run(config: dict, run_dir: Path, dep_dirs: dict[str, Path], quiet: bool) -> dict:
    from datawall.rl.run import run_rl

    cfg = RLConfig(**{k: v for k, v in config.items() if k != "model"})
    return run_rl(dep_dirs[config["model"]] / "checkpoint", cfg, run_dir, quiet=quiet)


RL_METRICS = ("accuracy_before", "accuracy_after", "accuracy_gain", "steps", "best_step", "flops",
              "seconds_per_step")


def _rl_progress(config: dict, run_dir: Path) -> float | None:
    last = _last_jsonl(run_dir / "metrics.jsonl")
    return 0.0 if last is None else min(1.0, last.get("step", 0) / config["steps"])


KINDS: dict[str, Kind] = {
    "pretrain": Kind(version="2", run=_pretrain_run, resolve=_pretrain_resolve,  # 2: splits never repeat a problem
                     needs=_pretrain_needs, summary=lambda r: {k: r[k] for k in PRETRAIN_METRICS if k in r},
                     progress=_pretrain_progress, describe=_pretrain_describe),
    # version 2: results carry vs_greedy and problem_indices; `distinct` chooses the held-out problems
    "think": Kind(version="3", run=_think_run, resolve=_think_resolve, needs=lambda c: [c["model"]],  # 3: no repeats
                  summary=_think_summary, progress=_think_progress),
    "synth": Kind(version="1", run=_synth_run, resolve=_synth_resolve, needs=lambda c: [c["model"]],
                  summary=lambda r: {k: r.get(k) for k in ("generated", "kept", "kept_precision", "teacher_accuracy",
                                                            "flops")},
                  progress=_synth_progress,
                  describe=lambda c: f"synth {c['problems']} problems ({c['strategy']}, {c['filter']}), seed "
                                     f"{c['seed']}"),
    "synth-compare": Kind(version="1", run=_compare_run, resolve=_compare_resolve,
                          needs=lambda c: [c["student"], c["teacher"]],
                          summary=lambda r: {k: r.get(k) for k in COMPARE_METRICS},
                          describe=lambda c: f"compare student {c['student'][:8]} with teacher {c['teacher'][:8]}"),


    "prefer": Kind(version="1", run=_prefer_run, resolve=_prefer_resolve, needs=lambda c: [c["model"]],
                   summary=lambda r: {k: r.get(k) for k in ("accuracy", "accuracy_before", "delta", "pairs",
                                                            "label_accuracy", "grader_dollars")},
                   progress=_prefer_progress,
                   describe=lambda c: f"prefer {c['prompts']} prompts, graders flip {c['grader']['noise']:g}, "
                                      f"seed {c['seed']}"),
    "rl": Kind(version="1", run=_rl_run, resolve=_rl_resolve, needs=lambda c: [c["model"]],
               summary=lambda r: {k: r[k] for k in RL_METRICS if k in r}, progress=_rl_progress,
               describe=lambda c: f"rl {c['loss']}, {c['steps']} steps of {c['prompts_per_step']} x {c['group']}, "
                                  f"seed {c['seed']}"),
}


def check_deps(jobs: list[Job]) -> None:
    """Refuse duplicate-free lists whose dependencies form a cycle (names one job on the cycle)."""
    by_key = {j.key: j for j in jobs}
    state: dict[str, int] = {}

    def visit(key: str) -> None:
        if state.get(key) == 1:
            raise DatawallError(f"jobs depend on each other in a cycle through {by_key[key].name}")
        if state.get(key) == 2 or key not in by_key:
            return
        state[key] = 1
        for d in by_key[key].deps:
            visit(d)
        state[key] = 2

    for k in by_key:
        visit(k)
