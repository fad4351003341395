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


def _pretrain_run(config: dict, run_dir: Path, dep_dirs: dict[str, Path], quiet: bool) -> dict:
    from datawall.train.run import RunSpec, execute

    return execute(RunSpec.model_validate(config), run_dir, quiet=quiet)


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
    resolved = job.model_dump(mode="json")
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
                     summary=lambda r: {k: r[k] for k in PRETRAIN_METRICS if k in r},
                     progress=_pretrain_progress),
    # version 2: results carry vs_greedy and problem_indices; `distinct` chooses the held-out problems
    "think": Kind(version="3", run=_think_run, resolve=_think_resolve, needs=lambda c: [c["model"]],  # 3: no repeats
                  summary=_think_summary, progress=_think_progress),
    "rl": Kind(version="1", run=_rl_run, resolve=_rl_resolve, needs=lambda c: [c["model"]],
               summary=lambda r: {k: r[k] for k in RL_METRICS if k in r}, progress=_rl_progress),
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
