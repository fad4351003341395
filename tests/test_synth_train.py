"""Training on real + synthetic examples: the mixed stream, `pretrain --synthetic` end to end on a real synth generate
run, the teacher's FLOPs in the result, unchanged keys for runs without synthetic data, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_run import one_line_error, run, run_json
from tiny_arith import TASK, one_thread, random_checkpoint

from datawall.data import Tokenizer, task_docs
from datawall.data.mix import MixStream
from datawall.data.synthetic import SyntheticSpec, read_synthetic
from datawall.study.jobs import Job
from datawall.train.config import TrainConfig
from datawall.train.run import DataSpec, RunSpec

WORLD = ("--task", "arith", "--task-args", "digits=2")
TINY = ("--size", "100k", "--tokens", "6k", "--unique-tokens", "2k", "--batch-size", "8", "--seq-len", "48",
        "--eval-problems", "20")





def dataset(path, rows: list[tuple[str, str, bool]], task_args=None, flops_per_kept=1e6, done=True):
    """A synth generate run directory written by hand: (prompt, solution, kept) rows."""
    path.mkdir(parents=True)
    lines = [json.dumps({"problem": 1000 + i, "prompt": p, "solution": s, "answer": None, "correct": False, "kept": k,
                         "dropped": None if k else "wrong", "samples": 1, "agreement": None, "score": None})
             for i, (p, s, k) in enumerate(rows)]
    (path / "synthetic.jsonl").write_text("".join(line + "\n" for line in lines))
    (path / "result.json").write_text(json.dumps({"task": "arith", "task_args": task_args or {"digits": 2},
                                                  "flops_per_kept": flops_per_kept, "dollars_per_kept": 1e-9}))
    if done:
        (path / "DONE").write_text("")
    return path


def docs_of(n: int, start: int = 0):
    tok = Tokenizer.for_chars(TASK.alphabet)
    return task_docs(TASK, tok, "train", count=n, start=start), tok


# --- the mixed stream ------------------------------------------------------------------------------------------

def test_mix_stream_holds_the_share_exactly_and_passes_over_each_pool_in_its_own_epochs():
    real, tok = docs_of(30)
    synth, _ = docs_of(10, start=500)
    stream = MixStream(real, synth, tok.pad_id, seed=3, share=0.25)
    def key(ids) -> tuple[int, ...]:  # a doc without bos, eos and padding
        return tuple(int(t) for t in ids if t not in (tok.pad_id, tok.bos_id, tok.eos_id))

    real_ids = {key(d.ids) for d in real}
    synth_ids = {key(d.ids) for d in synth}
    seen = {"real": [], "synth": []}
    for step in range(20):
        x, _ = stream.batch(step, 4)
        for row_x in x.numpy():
            doc = key(row_x)  # x holds every token but the last, which is eos or padding
            kind = "synth" if doc in synth_ids else "real"
            assert doc in (synth_ids if kind == "synth" else real_ids)
            seen[kind].append(doc)
    assert len(seen["synth"]) == 20 == int(np.floor(80 * 0.25))  # exactly floor(R p) of R rows
    # each pool in whole passes: the first 10 synthetic rows are the 10 docs once, the next 10 again
    assert len(set(seen["synth"][:10])) == 10 and set(seen["synth"][10:]) == set(seen["synth"][:10])
    assert len(set(seen["real"][:30])) == 30
    assert stream.passes(80) == (pytest.approx(60 / 30), pytest.approx(20 / 10))
    # a pure function of the step: a new stream gives the same batches
    again = MixStream(real, synth, tok.pad_id, seed=3, share=0.25)
    for step in (0, 7, 19):
        assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(stream.batch(step, 4), again.batch(step, 4),
                                                                        strict=True))
    only = MixStream([], synth, tok.pad_id, seed=0, share=1.0)
    assert only.real is None and only.passes(30) == (0.0, 3.0)


def test_a_run_without_synthetic_data_keeps_its_config_and_job_key():
    spec = RunSpec(data=DataSpec(task="arith", unique_tokens=5000), size="100k", train=TrainConfig(tokens=10_000))
    dump = spec.model_dump(mode="json")
    assert "synthetic" not in dump["data"]
    explicit = {**dump, "data": {**dump["data"], "synthetic": None}}
    assert Job("pretrain", explicit).key == Job("pretrain", dump).key
    with_syn = {**dump, "data": {**dump["data"], "synthetic": {"paths": ["/x"]}}}
    assert Job("pretrain", with_syn).key != Job("pretrain", dump).key
    assert RunSpec.model_validate(with_syn).data.synthetic.paths == ["/x"]


# --- reading synthetic data ------------------------------------------------------------------------------------

def test_reader_takes_the_first_s_kept_rows_in_source_order_and_charges_flops_per_kept(tmp_path):
    a = dataset(tmp_path / "a", [("12+30=", "#### 42", True), ("1+1=", "x", False), ("2+2=", "#### 4", True)])
    b = dataset(tmp_path / "b", [("3+3=", "#### 6", True)], task_args={"digits": "2"}, flops_per_kept=5e6)
    rows = read_synthetic(SyntheticSpec(paths=[str(a), str(b)]), "arith", {"digits": "2"})
    assert rows.prompts == ["12+30=", "2+2=", "3+3="] and rows.kept == 3
    assert rows.flops == pytest.approx(2 * 1e6 + 5e6)
    two = read_synthetic(SyntheticSpec(paths=[str(a), str(b)], examples=2), "arith", {"digits": 2})
    assert two.prompts == ["12+30=", "2+2="] and two.flops == pytest.approx(2e6) and two.digest != rows.digest


@pytest.mark.parametrize("make, words", [
    (lambda p: dataset(p, [("1+1=", "#### 2", True)], done=False), ("no DONE",)),
    (lambda p: dataset(p, [("1+1=", "#### 2", False)]), ("no kept rows",)),
    (lambda p: dataset(p, []), ("no kept rows",)),
    (lambda p: dataset(p, [("1+1=", "#### 2", True)], task_args={"digits": 3}), ("arith(digits=3)",)),
    (lambda p: p, ("no such synthetic-data directory",)),
])
def test_bad_synthetic_sources_are_one_line(tmp_path, make, words):
    src = make(tmp_path / "src")
    result = run("pretrain", *WORLD, *TINY, "--synthetic", str(src), "--out", str(tmp_path / "run"))
    one_line_error(result, *words)
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_malformed_rows_name_their_line(tmp_path):
    src = dataset(tmp_path / "src", [("1+1=", "#### 2", True)])
    with open(src / "synthetic.jsonl", "a") as f:
        f.write('{"problem": 3, "prompt": "2+2=", "solution": 4, "kept": true}\n')
    one_line_error(run("pretrain", *WORLD, *TINY, "--synthetic", str(src), "--out", str(tmp_path / "r")),
                   "synthetic.jsonl:2", "'solution' must be a str")
    (src / "synthetic.jsonl").write_text("not json\n")
    one_line_error(run("pretrain", *WORLD, *TINY, "--synthetic", str(src), "--out", str(tmp_path / "r")),
                   "synthetic.jsonl:1", "not a JSON object")


@pytest.mark.parametrize("extra, words", [
    (("--synthetic-examples", "5"), ("--synthetic-examples 5", "only 1 kept rows")),
    (("--synthetic-ratio", "1.5"), ("--synthetic-ratio must be in (0, 1]",)),
    (("--synthetic-ratio", "0.5", "--synthetic-epochs", "2"), ("not both",)),
    (("--synthetic-epochs", "1e6"), ("--synthetic-epochs", "raise --tokens")),
])
def test_bad_mix_flags_are_one_line(tmp_path, extra, words):
    src = dataset(tmp_path / "src", [("12+30=", "42\n#### 42", True)])
    one_line_error(run("pretrain", *WORLD, *TINY, "--synthetic", str(src), *extra, "--out", str(tmp_path / "r")),
                   *words)


def test_flags_without_synthetic_and_foreign_characters_are_one_line(tmp_path):
    one_line_error(run("pretrain", *WORLD, *TINY, "--synthetic-ratio", "0.5", "--out", str(tmp_path / "r")),
                   "--synthetic-ratio goes with --synthetic DIR")
    src = dataset(tmp_path / "src", [("12+30=", "forty-two\n#### 42", True)])
    one_line_error(run("pretrain", *WORLD, *TINY, "--synthetic", str(src), "--out", str(tmp_path / "r2")),
                   "problem 1000", "not in the character vocabulary")


# --- end to end: a real teacher's rows, trained on --------------------------------------------------------------

@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A synth generate run of an untrained teacher (filter none: every row kept), with known FLOPs."""
    root = tmp_path_factory.mktemp("synth_train")
    teacher = random_checkpoint(root / "teacher", TASK.alphabet, max_seq_len=48)
    with one_thread():
        r = run_json("synth", "generate", "--model", str(teacher), *WORLD, "--problems", "24", "--start", "400",
                     "--strategy", "greedy", "--filter", "none", "--no-dedup", "--max-tokens", "12",
                     "--out", str(root / "gen"))
    assert r["kept"] == 24 and r["flops"] > 0
    return root / "gen", r


def test_pretrain_on_real_plus_synthetic_counts_both_flops_and_records_the_mix(generated, tmp_path):
    gen, made = generated
    with one_thread():
        r = run_json("pretrain", *WORLD, *TINY, "--synthetic", str(gen), "--synthetic-examples", "20",
                     "--synthetic-ratio", "0.5", "--out", str(tmp_path / "run"))
    assert r["synthetic_examples"] == 20 and r["synthetic_share"] == 0.5
    assert r["synthetic_flops"] == pytest.approx(20 * made["flops_per_kept"])
    assert r["flops"] == pytest.approx(r["train_flops"] + r["synthetic_flops"])
    assert r["synthetic_dollars"] == pytest.approx(20 * made["dollars_per_kept"])
    # half the rows are synthetic: epochs over 20 synthetic examples vs over the ~2k real tokens' examples
    real_docs = task_docs(TASK, Tokenizer.for_chars(TASK.alphabet), "train", unique_tokens=2000)
    rows = r["synthetic_epochs"] * 20 + r["epochs"] * len(real_docs)
    assert r["synthetic_epochs"] * 20 == pytest.approx(rows / 2, abs=1)
    assert r["synthetic_overlap_real"] == 0 and r["accuracy"] is not None
    config = json.loads((tmp_path / "run" / "config.json").read_text())["run"]["data"]["synthetic"]
    assert config["paths"] == [str(gen.resolve())] and config["examples"] == 20 and len(config["sha256"]) == 64
    meta = json.loads((tmp_path / "run" / "checkpoint" / "datawall.json").read_text())
    assert meta["synthetic"]["examples"] == 20
    # a finished run is read back; data that changed under an unfinished one is refused
    assert run_json("pretrain", *WORLD, *TINY, "--synthetic", str(gen), "--synthetic-examples", "20",
                    "--synthetic-ratio", "0.5", "--out", str(tmp_path / "run")) == r


def test_synthetic_epochs_decide_the_share_and_changed_data_is_refused(generated, tmp_path):
    gen, _ = generated
    with one_thread():
        r = run_json("pretrain", *WORLD, *TINY, "--synthetic", str(gen), "--synthetic-epochs", "4",
                     "--out", str(tmp_path / "run"))
    assert r["synthetic_epochs"] == pytest.approx(4, abs=0.2) and r["synthetic_examples"] == 24
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("synthetic.jsonl", "result.json", "DONE", "config.json"):
        (copy / name).write_bytes((gen / name).read_bytes())
    spec = SyntheticSpec(paths=[str(copy)])
    digest = read_synthetic(spec, "arith", {"digits": 2}).digest
    rows = (copy / "synthetic.jsonl").read_text().splitlines()
    first = json.loads(rows[0]) | {"solution": "1\n#### 1"}
    (copy / "synthetic.jsonl").write_text("\n".join([json.dumps(first), *rows[1:]]) + "\n")
    with pytest.raises(Exception, match="changed since this run was made"):
        read_synthetic(spec.model_copy(update={"sha256": digest}), "arith", {"digits": 2})
