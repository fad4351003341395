"""Executors on real tiny runs: the local pool, SIGKILL and resume, two studies sharing a run, and Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datawall.study.executors import get_executor
from datawall.study.jobs import Job
from datawall.study.locks import is_locked
from datawall.study.store import RunStore

# a study driver as a user writes one; the __main__ guard is required by spawned pool workers
DRIVER = """
import json, sys
from datawall.study.executors import get_executor
from datawall.study.jobs import Job
from datawall.study.store import RunStore

if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    jobs = [Job(j["kind"], j["config"], tuple(j["deps"])) for j in spec["jobs"]]
    ex = get_executor(spec["executor"], workers=spec["workers"])
    show = lambda e: print(json.dumps({"key": e.key, "status": e.status}), flush=True)
    results = ex.run(jobs, RunStore(spec["store"]), on_event=show, study=spec.get("study"))
    ex.close()
    print(json.dumps({"results": results}), flush=True)
"""

DETERMINISTIC = ("params", "tokens", "unique_tokens", "epochs", "flops", "train_loss", "eval_loss", "accuracy")


def pretrain(seed: int, tokens: int, checkpoint_every: int = 0) -> Job:
    """A 1-layer 100k-preset run on 2-digit arith: a couple of seconds on one core."""
    return Job("pretrain", {
        "data": {"task": "arith", "task_args": {"digits": "2"}, "heldout_problems": 16}, "size": "100k",
        "model_overrides": {"n_layers": 1}, "eval_problems": 8,
        "train": {"tokens": tokens, "batch_size": 8, "seq_len": 32, "seed": seed, "eval_every": 8,
                  "checkpoint_every": checkpoint_every}})


A = pretrain(0, 2000)
B = pretrain(1, 16000, checkpoint_every=4)  # long enough to be killed mid-way
T = Job("think", {"model": A.key, "task": "arith", "task_args": {"digits": "2"}, "problems": 4, "n_max": 2,
                  "n_boot": 20}, deps=(A.key,))
JOBS = [A, B, T]


def _spec(store: Path, jobs: list[Job], executor: str = "local", workers: int | None = 1) -> str:
    return json.dumps({"store": str(store), "executor": executor, "workers": workers,
                       "jobs": [{"kind": j.kind, "config": j.config, "deps": list(j.deps)} for j in jobs]})


def _driver(tmp_path: Path, spec: str) -> subprocess.Popen:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), spec], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _finish(proc: subprocess.Popen) -> tuple[list[dict], dict]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [x for x in lines if "status" in x], lines[-1]["results"]


def _metrics(run_dir: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["tokens"], r["flops"], r["train_loss"], r.get("eval_loss")) for r in rows]


def _same(a: dict, b: dict) -> None:
    for k in DETERMINISTIC:
        assert a[k] == b[k], k


@pytest.fixture(scope="module")
def local_store(tmp_path_factory):
    """The job list run uninterrupted, inline in this process (one torch thread per run, as in a pool worker)."""
    store = RunStore(tmp_path_factory.mktemp("local") / "store")
    events = []
    results = get_executor("local", workers=0).run(JOBS, store, on_event=events.append, study="ref")
    return store, results, events


def test_jobs_run_in_dependency_order(local_store):
    store, results, events = local_store
    assert set(results) == {A.key, B.key, T.key}
    done = [e.key for e in events if e.status == "done"]
    assert sorted(done) == sorted(results) and done.index(A.key) < done.index(T.key)
    assert results[T.key]["strategies"]["greedy"][0]["n"] == 1
    for job in JOBS:
        assert (store.dir_for(job) / "DONE").exists() and (store.dir_for(job) / "job.json").exists()
    assert results[A.key]["tokens"] >= 2000 and results[B.key]["tokens"] >= 16000


def test_rerun_reuses_every_finished_run(local_store):
    store, results, _ = local_store
    stamps = {j.key: (store.dir_for(j) / "DONE").stat().st_mtime_ns for j in JOBS}
    events = []
    again = get_executor("local", workers=2).run(JOBS, store, on_event=events.append)  # starts no worker
    assert again == results
    assert [e.status for e in events] == ["reused"] * 3
    assert stamps == {j.key: (store.dir_for(j) / "DONE").stat().st_mtime_ns for j in JOBS}


def test_sigkill_loses_no_finished_run_and_resumes_the_interrupted_one(local_store, tmp_path):
    ref_store, ref, _ = local_store
    store = RunStore(tmp_path / "store")
    a_dir, b_dir = store.dir_for(A), store.dir_for(B)  # keys computed here must match the driver's (stability)
    proc = _driver(tmp_path, _spec(store.root, [A, B], workers=1))  # a pool of one spawned worker
    deadline = time.monotonic() + 240
    while not ((a_dir / "DONE").exists() and (b_dir / "checkpoint" / "trainer_state.pt").exists()):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the driver never got to the second run"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lock = store.locks_dir / f"{B.name}.lock"
    while is_locked(lock):  # the pool worker dies with its driver and drops the lock
        assert time.monotonic() < deadline, "the worker outlived its killed driver"
        time.sleep(0.05)
    assert not (b_dir / "DONE").exists(), "B finished before the kill; make it longer"
    a_done = (a_dir / "DONE").stat().st_mtime_ns
    step = json.loads((b_dir / "checkpoint" / "datawall.json").read_text())["step"]
    kept = [line for line in (b_dir / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= step]
    assert [r["status"] for r in store.list() if r["key"] == B.key] == ["interrupted"]

    events = []  # start again (here, inline: the pool was tested by the killed driver)
    results = get_executor("local", workers=0).run([A, B], store, on_event=events.append)
    assert {e.key: e.status for e in events if e.status in ("reused", "done")} == {A.key: "reused", B.key: "done"}
    assert (a_dir / "DONE").stat().st_mtime_ns == a_done
    # resumed, not restarted: the log up to the checkpoint is byte for byte the killed run's (wall times too)
    assert (b_dir / "metrics.jsonl").read_text().splitlines()[:len(kept)] == kept
    assert _metrics(b_dir) == _metrics(ref_store.dir_for(B))  # and it continues exactly as an unbroken run
    _same(results[B.key], ref[B.key])
    _same(results[A.key], ref[A.key])


def test_two_studies_sharing_a_run_compute_it_once(tmp_path):
    store = RunStore(tmp_path / "store")
    job = pretrain(2, 8000)
    other = _driver(tmp_path, _spec(store.root, [job], workers=0))  # the other study runs it in its process
    lock = store.locks_dir / f"{job.name}.lock"
    deadline = time.monotonic() + 240
    while not is_locked(lock):
        assert other.poll() is None, other.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    events = []  # this study wants the same run while the other holds it: it waits, then reuses the result
    mine = get_executor("local", workers=0).run([job], store, on_event=events.append)
    theirs, results = _finish(other)
    assert [e.status for e in events] == ["queued", "running", "reused"]
    assert [e["status"] for e in theirs if e["status"] in ("done", "reused")] == ["done"]
    _same(mine[job.key], results[job.key])
    steps = [s for s, *_ in _metrics(store.dir_for(job))]
    assert steps == sorted(set(steps))  # one writer: no step logged twice


@pytest.mark.slow
def test_ray_gives_the_same_runs_as_the_local_pool(local_store, tmp_path):
    ray = pytest.importorskip("ray")
    ref_store, ref, _ = local_store
    store = RunStore(tmp_path / "store")
    ex = get_executor("ray", workers=1)  # the jobs form a chain: one worker process keeps the test quick
    try:
        results = ex.run([A, T], store)
    finally:
        ex.close()
    assert not ray.is_initialized()
    assert sorted(p.name for p in store.runs_dir.iterdir()) == sorted([A.name, T.name])
    _same(results[A.key], ref[A.key])
    assert _metrics(store.dir_for(A)) == _metrics(ref_store.dir_for(A))
    acc = {name: [r["accuracy"] for r in rows] for name, rows in results[T.key]["strategies"].items()}
    assert acc == {name: [r["accuracy"] for r in rows] for name, rows in ref[T.key]["strategies"].items()}
    assert [json.loads(x)["completion"] for x in (store.dir_for(T) / "samples.jsonl").read_text().splitlines()] \
        == [json.loads(x)["completion"] for x in (ref_store.dir_for(T) / "samples.jsonl").read_text().splitlines()]


def test_the_live_view_weighs_progress_by_flops_and_leaves_reused_runs_out_of_the_rate():
    from datawall.study.executors import Event
    from datawall.study.progress import RunsView

    view = RunsView("ladder", {"a": "c1e9_small", "b": "c1e9_big"}, {"a": 1.0, "b": 3.0}, disable=True)
    view(Event("a", "pretrain", "reused", {}))
    view(Event("b", "pretrain", "running", progress=0.5))
    assert view.flops_done() == pytest.approx(2.5 / 4)  # reused work counts as done
    view.started -= 10  # ten seconds for half of the one run computed now
    assert view.rate() == pytest.approx(0.15, rel=1e-2) and view.eta() == pytest.approx(10, rel=1e-2)
    assert view.line().startswith("ladder: 0 done, 1 running, 0 queued, 1 reused, 0 failed of 2 runs | 62% of FLOPs, "
                                  "0.15 FLOP/s | 0:10 elapsed, eta ~0:10")
    view(Event("b", "pretrain", "done", {}, progress=1.0))
    assert view.flops_done() == 1.0 and view.line().endswith("elapsed, finished")
