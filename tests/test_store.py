"""The run store: content hashes, DONE reuse, locks, the index, failures and gc (fast: a counting job kind)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest

from datawall.errors import DatawallError
from datawall.study.executors import get_executor
from datawall.study.jobs import KINDS, Job, Kind, job_key
from datawall.study.locks import RunLock
from datawall.study.store import NUMBERS, RunStore, result_problem

PRETRAIN = {"data": {"task": "arith", "task_args": {"digits": "2"}}, "size": "100k",
            "train": {"tokens": 2000, "batch_size": 8, "seq_len": 32}}


def _count_run(config: dict, run_dir: Path, dep_dirs: dict[str, Path], quiet: bool) -> dict:
    """A job that records each execution in a shared log, optionally sleeps or fails, and sums its deps."""
    with open(config["log"], "a") as f:
        f.write(run_dir.name + "\n")
    if config.get("started"):
        Path(config["started"]).touch()
    time.sleep(config.get("sleep", 0))
    if config.get("fail"):
        raise ValueError("boom")
    (run_dir / "out.txt").write_text(str(config["value"]))
    deps = sum(int((d / "out.txt").read_text()) for d in dep_dirs.values())
    return {"value": config["value"] + deps}


@pytest.fixture
def count_kind(monkeypatch):
    monkeypatch.setitem(KINDS, "count", Kind(version="1", run=_count_run))


def _log(tmp_path: Path) -> list[str]:
    path = tmp_path / "log.txt"
    return path.read_text().split() if path.exists() else []


def test_key_ignores_key_order_and_filled_in_defaults():
    short = Job("pretrain", PRETRAIN)
    full = Job("pretrain", json.loads(json.dumps(short.config)))  # the resolved config, every default spelled out
    reordered = Job("pretrain", dict(reversed(list(PRETRAIN.items()))))
    assert short.key == full.key == reordered.key == job_key(short)
    assert short == full and len({short, full, reordered}) == 1  # usable in sets and as dict keys
    assert len(short.key) == 16 and short.name == f"pretrain-{short.key}"
    assert short.config["train"]["optim"]["lr"] == 3e-3  # defaults are part of the identity


def test_key_changes_with_config_kind_version_and_deps(monkeypatch):
    base = Job("pretrain", PRETRAIN)
    other = Job("pretrain", {**PRETRAIN, "train": {**PRETRAIN["train"], "seed": 1}})
    assert other.key != base.key
    think = Job("think", {"model": base.key, "task": "arith"}, deps=(base.key,))
    think_other = Job("think", {"model": other.key, "task": "arith"}, deps=(other.key,))
    assert think.key != think_other.key
    before = base.key
    monkeypatch.setitem(KINDS, "pretrain", dataclasses.replace(KINDS["pretrain"], version="999"))
    assert Job("pretrain", PRETRAIN).key != before  # new code version -> new run directory


def test_bad_job_configs_are_one_clear_error():
    with pytest.raises(DatawallError, match="train.tokns: unknown key"):
        Job("pretrain", {**PRETRAIN, "train": {"tokens": 5, "tokns": 5}})
    with pytest.raises(DatawallError, match="not in its deps"):
        Job("think", {"model": "abcd", "task": "arith"})
    with pytest.raises(DatawallError, match="think job config: n: unknown key"):
        Job("think", {"model": "abcd", "task": "arith", "n": 3}, deps=("abcd",))
    with pytest.raises(DatawallError, match="bad setting digits=abc"):  # caught before anything runs
        Job("pretrain", {**PRETRAIN, "data": {"task": "arith", "task_args": {"digits": "abc"}}})
    with pytest.raises(DatawallError, match="unknown job kind"):
        Job("interpretive-dance", {})


def test_second_run_reuses_done_runs_without_work(count_kind, tmp_path):
    store = RunStore(tmp_path / "store")
    a = Job("count", {"log": str(tmp_path / "log.txt"), "value": 2})
    b = Job("count", {"log": str(tmp_path / "log.txt"), "value": 3}, deps=(a.key,))
    events = []
    results = get_executor("local", workers=0).run([b, a], store, on_event=events.append, study="s1")
    assert results == {b.key: {"value": 5}, a.key: {"value": 2}}
    assert _log(tmp_path) == [a.name, b.name]  # dependency order, whatever the list order
    assert {(e.name, e.status) for e in events} >= {(a.name, "done"), (b.name, "done")}
    done_mtime = (store.dir_for(b) / "DONE").stat().st_mtime_ns

    events.clear()
    again = get_executor("local", workers=0).run([a, b], store, on_event=events.append, study="s2")
    assert again == results and _log(tmp_path) == [a.name, b.name]  # nothing ran twice
    assert [e.status for e in events] == ["reused", "reused"]
    assert (store.dir_for(b) / "DONE").stat().st_mtime_ns == done_mtime
    rows = {r["key"]: r for r in store.list()}
    assert rows[b.key]["status"] == "done" and rows[b.key]["metrics"] == {"value": 5}
    assert rows[b.key]["studies"] == ["s1", "s2"]
    assert json.loads((store.dir_for(b) / "job.json").read_text())["deps"] == [a.key]


def test_a_waiter_on_a_held_run_reuses_its_result(count_kind, tmp_path):
    store = RunStore(tmp_path / "store")
    job = Job("count", {"log": str(tmp_path / "log.txt"), "value": 1, "sleep": 1.0,
                        "started": str(tmp_path / "started")})
    first: dict = {}
    worker = threading.Thread(target=lambda: first.update(out=store.execute(job, {})))
    worker.start()
    while not (tmp_path / "started").exists():
        time.sleep(0.01)
    assert not store.lock_for(job).acquire(blocking=False)
    second = store.execute(job, {})  # blocks on the lock until the first finishes, then reuses it
    worker.join()
    assert first["out"] == ("done", {"value": 1}) and second == ("reused", {"value": 1})
    assert _log(tmp_path) == [job.name]


def test_failure_names_the_run_and_keep_going_runs_the_rest(count_kind, tmp_path):
    store = RunStore(tmp_path / "store")
    log = str(tmp_path / "log.txt")
    bad = Job("count", {"log": log, "value": 1, "fail": True})
    child = Job("count", {"log": log, "value": 2}, deps=(bad.key,))
    fine = Job("count", {"log": log, "value": 3})
    with pytest.raises(DatawallError, match=rf"run {bad.name} failed: ValueError: boom; 2 job\(s\) not run"):
        get_executor("local", workers=0).run([bad, child, fine], store)
    assert (store.dir_for(bad) / "error.txt").read_text().rstrip().endswith("ValueError: boom")
    with pytest.raises(DatawallError, match="1 job"):
        get_executor("local", workers=0).run([bad, child, fine], store, keep_going=True)
    assert store.is_done(fine) and not store.is_done(child)
    status = {r["key"]: r["status"] for r in store.list()}
    assert status[bad.key] == "failed" and status[child.key] == "queued" and status[fine.key] == "done"


def test_index_is_rebuilt_from_run_dirs(count_kind, tmp_path):
    store = RunStore(tmp_path / "store")
    job = Job("count", {"log": str(tmp_path / "log.txt"), "value": 4})
    get_executor("local", workers=0).run([job], store)
    store.index_path.unlink()  # e.g. killed between DONE and the index update, or the index was lost
    fresh = RunStore(tmp_path / "store")
    [row] = fresh.list()
    assert row["key"] == job.key and row["status"] == "done" and row["metrics"] == {"value": 4}
    assert fresh.show(job.key[:6])["result"] == {"value": 4}
    assert fresh.find(job.name)["key"] == job.key
    with pytest.raises(DatawallError, match="no run"):
        fresh.find("ffffffff")


def test_gc_removes_unfinished_unlocked_runs_only(count_kind, tmp_path):
    store = RunStore(tmp_path / "store")
    log = str(tmp_path / "log.txt")
    done, dead, held = (Job("count", {"log": log, "value": v}) for v in (1, 2, 3))
    get_executor("local", workers=0).run([done], store)
    for job in (dead, held):  # started, then killed: job.json and a partial file, no DONE
        store.dir_for(job).mkdir()
        (store.dir_for(job) / "job.json").write_text(json.dumps(
            {"kind": "count", "version": "1", "key": job.key, "config": job.config, "deps": []}))
        (store.dir_for(job) / "partial").write_bytes(b"x" * 100)
        store.record(job, "running")
    lock = store.lock_for(held)
    assert lock.acquire()
    try:
        preview = store.gc(dry_run=True)
        assert preview["removed_dirs"] == [dead.name] and preview["running"] == [held.name]
        assert store.dir_for(dead).exists()
        status = {r["key"]: r["status"] for r in store.list()}
        assert status == {done.key: "done", dead.key: "interrupted", held.key: "running"}
        out = store.gc()
    finally:
        lock.release()
    assert out["removed_dirs"] == [dead.name] and out["removed_rows"] == [dead.name] and out["freed_bytes"] > 100
    assert not store.dir_for(dead).exists() and store.dir_for(held).exists() and store.is_done(done)
    assert {r["key"] for r in store.list()} == {done.key, held.key}


def test_a_lock_removed_while_waited_on_is_retaken(tmp_path):
    path = tmp_path / "x.lock"
    holder = RunLock(path)
    assert holder.acquire()
    got = threading.Event()
    waiter = RunLock(path)
    t = threading.Thread(target=lambda: (waiter.acquire(), got.set()))
    t.start()
    time.sleep(0.2)
    holder.unlink()  # gc removes the lock file while a waiter sits on it
    holder.release()
    t.join(5)
    assert got.is_set() and path.exists()
    assert not RunLock(path).acquire(blocking=False)  # the waiter holds the new file's lock
    waiter.release()


@pytest.mark.parametrize("text", ["[]", "{}", '{"value": "two"}', '{"value": true}', "{not json", None])
def test_a_done_run_whose_result_is_damaged_is_moved_aside_and_recomputed(count_kind, monkeypatch, tmp_path, text):
    monkeypatch.setitem(NUMBERS, "count", (("value",), ()))  # what readers of a count result index
    store = RunStore(tmp_path / "store")
    warnings: list[str] = []
    store.warn = warnings.append
    job = Job("count", {"log": str(tmp_path / "log.txt"), "value": 7})
    get_executor("local", workers=0).run([job], store)
    result = store.dir_for(job) / "result.json"
    if text is None:
        result.unlink()
    else:
        result.write_text(text)
    assert store.is_done(job) and not store.list()[0]["error"]  # indexed as done before: the cache says done
    again = get_executor("local", workers=0).run([job], store)
    assert again == {job.key: {"value": 7}} and _log(tmp_path) == [job.name, job.name]  # computed once more
    assert json.loads(result.read_text()) == {"value": 7} and store.is_done(job)
    [line] = warnings
    assert line.startswith(f"{result} ") and "computing the run again" in line
    aside = list(store.dir_for(job).glob("result.json.corrupt-*"))
    if text is None:
        assert "is missing" in line and not aside
    else:
        assert [p.read_text() for p in aside] == [text] and aside[0].name in line


def test_a_damaged_result_is_listed_as_failed_until_a_run_recomputes_it(count_kind, monkeypatch, tmp_path):
    monkeypatch.setitem(NUMBERS, "count", (("value",), ()))
    store = RunStore(tmp_path / "store")
    job = Job("count", {"log": str(tmp_path / "log.txt"), "value": 1})
    get_executor("local", workers=0).run([job], store)
    store.index_path.unlink()  # re-indexed from the directory, which now holds a bad result
    (store.dir_for(job) / "result.json").write_text("[]")
    fresh = RunStore(tmp_path / "store")
    [row] = fresh.list()
    assert row["status"] == "failed" and row["error"].startswith("result.json holds an array, not a JSON object")
    shown = fresh.show(job.key)
    assert shown["result"] is None and shown["status"] == "failed"
    assert (store.dir_for(job) / "result.json").read_text() == "[]"  # reading commands change no run


def test_result_problem_names_what_readers_would_trip_on():
    config = Job("pretrain", PRETRAIN).config  # a task world scored on held-out problems: accuracy is read
    good = {"params": 10, "params_non_embedding": 5, "tokens": 2000, "unique_tokens": 900, "epochs": 2.2,
            "flops": 1e9, "wall_seconds": 1.5, "train_loss": 1.0, "eval_loss": None, "accuracy": 0.5}
    assert result_problem("pretrain", config, good) is None
    assert result_problem("pretrain", config, []) == "holds an array, not a JSON object"
    assert result_problem("pretrain", config, {}) == "has no 'params'"
    assert result_problem("pretrain", config, {**good, "flops": "1e9"}) == "has 'flops' = \"1e9\", not a number"
    assert result_problem("pretrain", config, {**good, "tokens": True}) == "has 'tokens' = true, not a number"
    assert result_problem("pretrain", config, {**good, "eval_loss": [1]}) == "has 'eval_loss' = [1], not a number"
    no_acc = {k: v for k, v in good.items() if k != "accuracy"}
    assert result_problem("pretrain", config, no_acc) == "has no 'accuracy'"
    corpus = Job("pretrain", {**PRETRAIN, "data": {"corpus": "stdlib"}}).config  # no task: no accuracy
    assert result_problem("pretrain", corpus, no_acc) is None
    row = {"n": 1, "accuracy": 0.5, "ci_low": None, "ci_high": None, "tokens_per_query": 3.0,
           "flops_per_query": 9.0, "dollars_per_query": None}
    assert result_problem("think", {}, {"strategies": {"greedy": [row]}}) is None
    assert result_problem("think", {}, {"strategies": {}}) == "has no 'strategies' object"
    assert result_problem("think", {}, {"strategies": {"greedy": [{**row, "n": "1"}]}}) == \
        "has a malformed row in strategies.greedy"


@pytest.mark.parametrize("damage", [b"\x8b\x1f" + bytes(range(256)) * 16, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_a_corrupt_index_is_moved_aside_and_rebuilt_from_the_run_dirs(count_kind, tmp_path, damage):
    store = RunStore(tmp_path / "store")
    job = Job("count", {"log": str(tmp_path / "log.txt"), "value": 4})
    get_executor("local", workers=0).run([job], store, study="s1")
    store.index_path.write_bytes(damage)
    fresh = RunStore(tmp_path / "store")
    warnings: list[str] = []
    fresh.warn = warnings.append
    [row] = fresh.list()
    assert row["key"] == job.key and row["status"] == "done" and row["metrics"] == {"value": 4}
    assert row["studies"] == []  # the one thing the run directories do not hold
    [aside] = fresh.root.glob("index.sqlite.corrupt-*")
    assert aside.read_bytes() == damage
    [line] = warnings
    assert line.startswith(f"{fresh.index_path} was not a readable SQLite database (") and aside.name in line
    get_executor("local", workers=0).run([job], fresh, study="s2")  # the executor writes the new index
    assert fresh.list()[0]["studies"] == ["s2"] and len(warnings) == 1
    assert RunStore(tmp_path / "store").list()[0]["studies"] == ["s2"]  # a healthy index: nothing moved again
    assert len(list(fresh.root.glob("index.sqlite.corrupt-*"))) == 1


def test_damaged_job_records_are_skipped_by_the_index(count_kind, tmp_path):
    store = RunStore(tmp_path / "store")
    job = Job("count", {"log": str(tmp_path / "log.txt"), "value": 4})
    get_executor("local", workers=0).run([job], store)
    for name, text in (("count-0000000000000000", "[]"), ("count-1111111111111111", '{"kind": "count"}'),
                       ("count-2222222222222222", "\x00\x01")):
        (store.runs_dir / name).mkdir()
        (store.runs_dir / name / "job.json").write_text(text)
    assert [r["key"] for r in store.list()] == [job.key]
