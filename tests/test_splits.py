"""A generated split never repeats a problem: problem i is the i-th distinct one, the same everywhere."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading

import pytest
from tiny_arith import random_checkpoint

from datawall.data import Tokenizer, task_docs
from datawall.errors import DatawallError
from datawall.model import load_checkpoint
from datawall.tasks import TaskIndexError, get_task
from datawall.tasks.splits import clear_walks, split_of
from datawall.train.evaluate import task_accuracy

# Worlds small enough to list every problem of both splits; trace cannot count its keys (found by repeats).
TINY = [
    ("arith", {"digits": 1, "ops": "sub"}, {"test": 18, "train": 82}),
    ("arith", {"digits": 1, "ops": "add,mul"}, {"test": 45, "train": 155}),
    ("countdown", {"count": 3, "max_number": 3, "max_target": 10}, {"test": 7, "train": 30}),
    ("trace", {"statements": 1, "variables": 1, "loop_bound": 0, "max_value": 9}, {"test": 2, "train": 8}),
]
SMALL = ("arith", {"digits": 2, "min_digits": 1, "ops": "mul"})  # the quick study's world: 2001 test problems


def _all(task, split):
    """Every problem of the split, asked for until the TaskIndexError."""
    out = []
    while True:
        try:
            out.append(task.problem(split, len(out)))
        except TaskIndexError as e:
            return out, str(e)


@pytest.mark.parametrize(("name", "settings", "sizes"), TINY, ids=lambda v: v if isinstance(v, str) else None)
def test_tiny_world_lists_each_problem_once_then_says_how_many(name, settings, sizes):
    task = get_task(name, **settings)
    keys = {}
    for split, size in sizes.items():
        problems, error = _all(task, split)
        keys[split] = [p.key for p in problems]
        assert len(problems) == size and len(set(keys[split])) == size
        assert [p.index for p in problems] == list(range(size)) and {p.split for p in problems} == {split}
        assert f"the {split} split has only {size} distinct problems" in error and "\n" not in error
        assert task.size(split) == size
        for bad in (size, size + 1, 10**6):
            with pytest.raises(TaskIndexError, match=f"{split} split has only {size} distinct"):
                task.problem(split, bad)
        for p in problems:
            assert task.verify(p, task.solution(p)) == 1.0
    assert not set(keys["train"]) & set(keys["test"])
    everything = task._all_keys(10**6)
    if everything is not None:  # the count agrees with what the generator really draws
        for split in sizes:
            assert set(keys[split]) == {k for k in everything if split_of(name, k) == split}


def test_problem_i_is_the_ith_distinct_candidate_and_unrepeated_worlds_keep_their_problems():
    task = get_task(SMALL[0], **SMALL[1])
    candidates = [task._draw("test", j) for j in range(700)]  # the per-index draws, repeats and all
    seen, distinct, repeats = set(), [], []
    for j, c in enumerate(candidates):
        (repeats if c.key in seen else distinct).append(j if c.key in seen else c)
        seen.add(c.key)
    first_repeat = repeats[0]
    got = task.problems("test", len(distinct))
    assert [p.key for p in got] == [c.key for c in distinct] and len({p.key for p in got}) == len(got)
    assert first_repeat > 5 and len(distinct) < 650  # the world does repeat itself within these draws...
    assert [p.prompt for p in got[:first_repeat]] == [c.prompt for c in candidates[:first_repeat]]  # ...not before
    big = get_task("arith", digits=6)  # no repeat in its first problems: the same problems as per-index draws
    assert [p.key for p in big.problems("train", 300)] == [big._draw("train", j).key for j in range(300)]


_CHILD = """
import json, sys
from datawall.tasks import get_task
name, settings = json.loads(sys.argv[1])
task = get_task(name, **settings)
order = json.loads(sys.argv[2])
print(json.dumps({i: task.problem("test", i).prompt for i in order}))
"""


def test_same_problems_in_other_processes_whatever_the_hash_seed_and_order():
    name, settings = SMALL
    task = get_task(name, **settings)
    want = {i: task.problem("test", i).prompt for i in range(1200)}
    for seed, order in (("0", [1199, 0, 600]), ("12345", list(range(1200)))):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps([name, settings]), json.dumps(order)],
                             capture_output=True, text=True, env=env, timeout=300, check=True)
        assert {int(k): v for k, v in json.loads(out.stdout).items()} == {i: want[i] for i in order}


def test_access_order_and_threads_do_not_change_the_problems():
    task = get_task(SMALL[0], **SMALL[1])
    clear_walks()
    ascending = [task.problem("train", i).key for i in range(800)]
    order = list(range(800))
    random.Random(3).shuffle(order)
    clear_walks()
    shuffled = {i: task.problem("train", i).key for i in order}
    assert [shuffled[i] for i in range(800)] == ascending
    clear_walks()
    results: dict[int, list[str]] = {}

    def ask(worker: int) -> None:
        indices = range(799, -1, -1) if worker % 2 else range(800)
        results[worker] = [get_task(SMALL[0], **SMALL[1]).problem("train", i).key for i in indices]

    threads = [threading.Thread(target=ask, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w, keys in results.items():
        assert (keys[::-1] if w % 2 else keys) == ascending


def test_paths_worlds_pose_the_very_same_problems():
    name, settings = SMALL
    one, four = get_task(name, **settings), get_task(name, **settings, paths=4)
    for split in ("train", "test"):
        assert one.problems(split, 900) == four.problems(split, 900)
    assert one.size("test") == four.size("test") == 2001
    assert {four.method(p) for p in four.problems("test", 100)} == {0, 1, 2, 3}


def test_unique_examples_are_distinct_and_a_world_too_small_for_u_says_so():
    task = get_task("arith", digits=1, ops="sub")
    tok = Tokenizer.for_chars(task.alphabet)
    docs = task_docs(task, tok, "train", count=82)
    assert len(docs) == 82 and len({d.ids.tobytes() for d in docs}) == 82
    assert sum(map(len, task_docs(task, tok, "train", unique_tokens=sum(map(len, docs))))) == sum(map(len, docs))
    with pytest.raises(DatawallError, match=r"train split has only 82 distinct problems.*83 examples"):
        task_docs(task, tok, "train", count=83)
    with pytest.raises(DatawallError, match="unique tokens"):
        task_docs(task, tok, "test", unique_tokens=10**6)
    small = get_task(SMALL[0], **SMALL[1])  # 500 draws of its test split held 310 distinct problems
    docs = task_docs(small, Tokenizer.for_chars(small.alphabet), "test", count=500)
    assert len({d.ids.tobytes() for d in docs}) == 500


def test_accuracy_of_a_tiny_world_scores_all_of_its_split(tmp_path):
    task = get_task("arith", digits=1, ops="sub")
    ckpt = load_checkpoint(random_checkpoint(tmp_path / "m", task.alphabet, max_seq_len=64))
    result = task_accuracy(ckpt.model, ckpt.tokenizer, task, problems=200)  # the test split has 18
    assert result["problems"] == 18 and 0 <= result["accuracy"] <= 1
    assert task_accuracy(ckpt.model, ckpt.tokenizer, task, problems=5, start=15)["problems"] == 3
    with pytest.raises(DatawallError, match="no test problems from problem 18 on"):
        task_accuracy(ckpt.model, ckpt.tokenizer, task, problems=5, start=18)
