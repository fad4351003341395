"""Prompting real models: few-shot examples from train, chat templates in every backend, task stop sequences."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi import FastAPI, Request
from hf_llama import random_llama
from local_server import running
from scripted_llama import SCRIPT, scripted_llama
from tiny_arith import random_checkpoint
from typer.testing import CliRunner

from datawall.cli import app
from datawall.data.tokenizer import Tokenizer
from datawall.errors import DatawallError
from datawall.sampling.backends.hf import HFBackend
from datawall.sampling.backends.local import LocalBackend
from datawall.sampling.sample_cache import SampleCache
from datawall.tasks import get_task
from datawall.tasks.prompting import as_messages, build_prompt, fewshot_examples, stop_sequences
from datawall.tasks.reasoning_gym import ReasoningGymTask

transformers = pytest.importorskip("transformers")

TRAIN = [("what is 3 plus 4?", "3 + 4 = 7\n#### 7"), ("what is 10 plus 5?", "10 + 5 = 15\n#### 15"),
         ("what is 6 plus 6?", "6 + 6 = 12\n#### 12"), ("what is 9 plus 1?", "9 + 1 = 10\n#### 10")]
TEST = [("what is 40 plus 2?", "42"), ("what is 20 plus 22?", "42"), ("what is 41 plus 1?", "42")]
QUESTION_STOP = "\n\nQuestion:"


@pytest.fixture(scope="module")
def gsm(tmp_path_factory):
    """A GSM8K-style file: four solved train problems, three test problems whose answer is 42."""
    path = tmp_path_factory.mktemp("prompting") / "gsm.jsonl"
    rows = [{"question": q, "answer": s, "split": "train"} for q, s in TRAIN]
    rows += [{"question": q, "answer": a, "split": "test"} for q, a in TEST]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """The HF model that answers '#### 42' and then runs on into '\\n\\nQuestion: 7'."""
    return scripted_llama(tmp_path_factory.mktemp("scripted") / "m")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A random-weight HF Llama with a BPE tokenizer and a ChatML template (every token of a prompt matters)."""
    return random_llama(tmp_path_factory.mktemp("llama") / "m")


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def run_json(*args: str) -> dict:
    result = run(*args, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])


def rows_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- few-shot examples and prompts -------------------------------------------------------------------------

def test_fewshot_examples_are_train_problems_chosen_by_seed_never_the_asked_one(gsm):
    task = get_task(f"jsonl:{gsm}")
    train_keys = {q for q, _ in TRAIN}
    for p in task.problems("test", 3):
        shots = fewshot_examples(task, p, 3)
        assert len({s.key for s in shots}) == 3 and {s.key for s in shots} <= train_keys
        assert all(s.split == "train" for s in shots)
        # the same in another process (a fresh task), whichever problems are asked with it
        again = fewshot_examples(get_task(f"jsonl:{gsm}"), p, 3)
        assert [s.key for s in again] == [s.key for s in shots]
    picks = {tuple(s.key for s in fewshot_examples(task, task.problem("test", 0), 2, seed)) for seed in range(8)}
    assert len(picks) > 1  # the seed chooses
    # a train problem asked (eval --split train) never sees itself, and K = all the others still works
    for q in task.problems("train", 4):
        shots = fewshot_examples(task, q, 3)
        assert q.key not in {s.key for s in shots} and len(shots) == 3
    with pytest.raises(DatawallError, match=r"--fewshot 4: jsonl:.* has only 3 train problems"):
        fewshot_examples(task, task.problem("train", 0), 4)


def test_plain_prompt_is_solved_blocks_then_the_question_and_chat_is_alternating_turns(gsm):
    task = get_task(f"jsonl:{gsm}")
    p = task.problem("test", 1)
    a, b = fewshot_examples(task, p, 2)
    text = build_prompt(task, p, 2)
    assert text == (f"{a.prompt}{task.solution(a)}\n\n{b.prompt}{task.solution(b)}\n\n"
                    f"Question: what is 20 plus 22?\nAnswer:\n")
    assert text.count("Question:") == 3 and task.solution(a) in text  # e.g. '3 + 4 = 7\n#### 7'
    # a model that continues past its answer writes what follows each solution: the stop sequence
    assert f"{task.solution(a)}{QUESTION_STOP}" in text
    assert build_prompt(task, p, 2, chat=True) == [
        {"role": "user", "content": a.prompt}, {"role": "assistant", "content": task.solution(a)},
        {"role": "user", "content": b.prompt}, {"role": "assistant", "content": task.solution(b)},
        {"role": "user", "content": p.prompt}]
    assert build_prompt(task, p) == p.prompt
    assert build_prompt(task, p, chat=True) == as_messages(p.prompt) == [{"role": "user", "content": p.prompt}]


def test_generated_worlds_take_shots_from_their_train_split(tmp_path):
    task = get_task("arith", digits=1)
    for i in range(5):
        q = task.problem("train", i)
        shots = fewshot_examples(task, q, 5)
        assert q.key not in {s.key for s in shots} and len({s.key for s in shots}) == 5
        assert build_prompt(task, q, 5).endswith("\n\n" + q.prompt)  # "\n" is in every world's alphabet
    test_keys = {p.key for p in task.problems("test", task.size("test"))}
    assert not test_keys & {s.key for p in task.problems("test", 5) for s in fewshot_examples(task, p, 5)}


def test_fewshot_without_train_problems_or_out_of_range_is_one_line(gsm, tmp_path):
    bench = get_task(f"jsonl:{gsm}", split="all")  # a benchmark file: every row held out
    with pytest.raises(DatawallError, match=r"has only 0 train problems to show \(a split=all file"):
        build_prompt(bench, bench.problem("test", 0), 1)
    task = get_task(f"jsonl:{gsm}")
    for k in (-1, 256):
        with pytest.raises(DatawallError, match=r"--fewshot must be between 0 and 255"):
            fewshot_examples(task, task.problem("test", 0), k)


def test_stop_sequences_are_the_tasks_then_the_callers(gsm):
    assert get_task(f"jsonl:{gsm}").stop == ReasoningGymTask.stop == (QUESTION_STOP,)
    for name in ("arith", "trace", "countdown"):  # datawall's own worlds end at eos
        assert get_task(name).stop == ()
    task = get_task(f"jsonl:{gsm}")
    assert stop_sequences(task) == [QUESTION_STOP]
    assert stop_sequences(task, ["END", QUESTION_STOP, "", "END"]) == [QUESTION_STOP, "END"]
    assert stop_sequences(get_task("arith")) == []


# --- stop sequences cut a real model's completions ---------------------------------------------------------

@pytest.mark.parametrize("backend", [HFBackend, LocalBackend])
def test_stop_sequence_cuts_a_model_running_into_the_next_question(scripted, gsm, backend):
    task = get_task(f"jsonl:{gsm}")
    b = backend(scripted)
    p = task.problem("test", 0)
    for prompt in (p.prompt, build_prompt(task, p, 2), build_prompt(task, p, 2, chat=True)):
        (free,), = b.sample([prompt], 1, 16, 0.0, None, None, 0)
        assert free.text == SCRIPT == "#### 42\n\nQuestion: 7"
        (cut,), = b.sample([prompt], 1, 16, 0.0, None, stop_sequences(task), 0)
        assert cut.text == "#### 42" and task.verify(p, cut.text) == 1.0


def test_think_and_eval_stop_at_the_tasks_sequence_end_to_end(scripted, gsm, tmp_path):
    res = run_json("think", "--hf", str(scripted), "--task", f"jsonl:{gsm}", "--problems", "3", "--n-max", "2",
                   "--temperature", "0", "--max-tokens", "16", "--out", str(tmp_path / "t"))
    assert res["stop"] == [QUESTION_STOP] and res["fewshot"] == 0 and res["chat"] is False
    rows = rows_of(tmp_path / "t" / "samples.jsonl") + rows_of(tmp_path / "t" / "greedy.jsonl")
    assert {r["completion"] for r in rows} == {"#### 42"} and all(r["reward"] == 1.0 for r in rows)
    assert res["strategies"]["greedy"][0]["accuracy"] == 1.0
    # datawall's own engine reads the same HF directory
    ev = run_json("eval", "--model", str(scripted), "--task", f"jsonl:{gsm}", "--fewshot", "2", "--stop", "END")
    assert ev["accuracy"] == 1.0 and ev["problems"] == 3 and ev["stop"] == [QUESTION_STOP, "END"]
    assert ev["fewshot"] == 2 and ev["chat"] is False
    ev = run_json("eval", "--model", str(scripted), "--task", f"jsonl:{gsm}", "--fewshot", "2", "--chat")
    assert ev["accuracy"] == 1.0 and ev["chat"] is True
    task = get_task(f"jsonl:{gsm}")
    assert ev["prompt_tokens"] == sum(len(template_ids(scripted, build_prompt(task, p, 2, chat=True)))
                                      for p in task.problems("test", 3))


# --- chat templates ---------------------------------------------------------------------------------------

MESSAGES = [{"role": "user", "content": "Question: what is 3 plus 4?\nAnswer:\n"},
            {"role": "assistant", "content": "#### 7"}, {"role": "user", "content": "Question: and 1 plus 1?\n"}]


def template_ids(directory, messages) -> list[int]:
    tok = transformers.AutoTokenizer.from_pretrained(directory)
    return list(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))


def test_hf_backend_samples_exactly_apply_chat_templates_ids(llama):
    ids = template_ids(llama, MESSAGES)
    backend = HFBackend(llama)
    assert backend.prompt_ids(MESSAGES) == ids
    bos = backend.tokenizer.bos_token_id
    assert ids[0] == bos and ids[1] != bos  # the template's own bos, not a second one
    (c,), = backend.sample([MESSAGES], 1, 12, 0.0, None, None, 0)
    assert c.prompt_tokens == len(ids)
    with torch.no_grad():  # what transformers itself generates from those ids
        x = torch.tensor([ids])
        out = backend.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=12, do_sample=False,
                                     pad_token_id=backend.tokenizer.pad_token_id)
    assert c.text == backend.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
    # a plain prompt is not a chat: the template's turn tokens appear only for messages
    assert backend.prompt_ids("hello") == transformers.AutoTokenizer.from_pretrained(llama)("hello").input_ids


def test_local_backend_renders_the_chat_template_as_transformers(llama):
    ids = template_ids(llama, MESSAGES)
    local = LocalBackend(llama)
    assert local.tokenizer.encode_chat(MESSAGES) == ids
    (ours,), = local.sample([MESSAGES], 1, 12, 0.0, None, None, 0)
    (theirs,), = HFBackend(llama).sample([MESSAGES], 1, 12, 0.0, None, None, 0)
    assert ours.prompt_tokens == len(ids) and ours.text == theirs.text


def test_chat_and_fewshot_are_prompt_tokens_and_part_of_the_run(scripted, gsm, tmp_path):
    task = get_task(f"jsonl:{gsm}")
    args = ("think", "--hf", str(scripted), "--task", f"jsonl:{gsm}", "--problems", "2", "--n-max", "1",
            "--max-tokens", "16", "--strategies", "majority")
    bare = run_json(*args, "--out", str(tmp_path / "bare"))
    res = run_json(*args, "--chat", "--fewshot", "2", "--out", str(tmp_path / "chat"))
    assert (res["chat"], res["fewshot"], res["fewshot_seed"]) == (True, 2, 1234)
    for r in rows_of(tmp_path / "chat" / "samples.jsonl"):
        p = task.problem("test", r["problem"])
        assert r["prompt_tokens"] == len(template_ids(scripted, build_prompt(task, p, 2, chat=True)))
        assert r["completion"] == "#### 42"
    more, less = res["strategies"]["majority"][0], bare["strategies"]["majority"][0]
    assert more["tokens_per_query"] > less["tokens_per_query"] and more["flops_per_query"] > less["flops_per_query"]
    # a directory's samples were drawn with its prompts: other prompts are refused, the same ones are free
    for other, name in ((("--chat", "--fewshot", "1"), "fewshot"), (("--fewshot", "2"), "chat"),
                        (("--chat", "--fewshot", "2", "--fewshot-seed", "7"), "fewshot_seed"),
                        (("--chat", "--fewshot", "2", "--stop", "END"), "stop")):
        result = run(*args, *other, "--out", str(tmp_path / "chat"), "--json")
        assert isinstance(result.exception, DatawallError) and f"({name}:" in str(result.exception), other
    again = run_json(*args, "--chat", "--fewshot", "2", "--out", str(tmp_path / "chat"))
    assert again["sampling"]["drawn"] == 0


def test_chat_without_a_template_is_one_line(tmp_path, gsm):
    bare = scripted_llama(tmp_path / "bare", chat_template=None)
    with pytest.raises(DatawallError, match=r"--chat: this model has no chat template"):
        HFBackend(bare).sample([MESSAGES], 1, 4, 0.0, None, None, 0)
    result = run("think", "--hf", str(bare), "--chat", "--task", f"jsonl:{gsm}", "--problems", "1", "--n-max", "1",
                 "--out", str(tmp_path / "t"), "--json")
    assert isinstance(result.exception, DatawallError) and "no chat template" in str(result.exception)
    # datawall's own checkpoints are base models with no template
    task = get_task("arith", digits=1)
    ckpt = random_checkpoint(tmp_path / "chars", task.alphabet, max_seq_len=64)
    for args in (("eval", "--model", str(ckpt), "--task", "arith", "--task-args", "digits=1", "--problems", "2",
                  "--chat"), ("sample", "--model", str(ckpt), "--prompt", "1+2=", "--chat", "--max-tokens", "2")):
        result = run(*args)
        assert isinstance(result.exception, DatawallError) and "no chat template" in str(result.exception), args


def test_sample_chat_sends_one_user_turn(llama):
    out = run_json("sample", "--model", str(llama), "--prompt", "Question: hi?", "--chat", "--temperature", "0",
                   "--max-tokens", "6")
    (c,), = HFBackend(llama).sample([[{"role": "user", "content": "Question: hi?"}]], 1, 6, 0.0, None, None, 0)
    assert out["chat"] is True and out["samples"][0]["text"] == c.text


def test_sample_cache_keys_chat_apart_from_text():
    text = "Question: hi?\nAnswer:\n"
    chat = as_messages(text)
    assert SampleCache.key("m", chat, "{}") != SampleCache.key("m", text, "{}")
    assert SampleCache.key("m", chat, "{}") == SampleCache.key("m", [dict(chat[0])], "{}")
    assert SampleCache.key("m", chat, "{}") != SampleCache.key("m", [*chat, *chat], "{}")


# --- endpoints get the multi-turn list ---------------------------------------------------------------------

class Recorder:
    """/v1/completions and /v1/chat/completions that keep every request body and answer `text`."""

    def __init__(self, text: str = "#### 42"):
        self.bodies: list[dict] = []
        self.text = text
        self.app = FastAPI()
        self.app.get("/health")(lambda: {"ok": True})
        self.app.post("/v1/completions")(self.answer)
        self.app.post("/v1/chat/completions")(self.answer)

    async def answer(self, request: Request) -> dict:
        body = await request.json()
        self.bodies.append(body)
        choice = {"message": {"role": "assistant", "content": self.text}} if "messages" in body else \
            {"text": self.text}
        return {"choices": [{"index": i, "finish_reason": "stop", **choice} for i in range(body["n"])],
                "usage": {"prompt_tokens": 50, "completion_tokens": 3 * body["n"], "total_tokens": 50 + 3 * body["n"]}}


@pytest.mark.parametrize("chat", [True, False])
def test_endpoint_gets_the_fewshot_prompt_and_the_stop_sequences(gsm, tmp_path, chat):
    task = get_task(f"jsonl:{gsm}")
    server = Recorder()
    with running(server.app) as port:
        res = run_json("think", "--endpoint", f"http://127.0.0.1:{port}/v1", "--api-model", "m",
                       *(["--chat"] if chat else []), "--fewshot", "3", "--stop", "END", "--task", f"jsonl:{gsm}",
                       "--problems", "3", "--n-max", "2", "--max-tokens", "8", "--out", str(tmp_path / "t"))
    assert res["strategies"]["greedy"][0]["accuracy"] == 1.0
    assert len(server.bodies) == 6  # the pool and the greedy answer of each problem
    wanted = [build_prompt(task, p, 3, chat=chat) for p in task.problems("test", 3)]
    sent = [b["messages"] if chat else b["prompt"] for b in server.bodies]
    assert sorted(map(json.dumps, sent)) == sorted(map(json.dumps, wanted * 2))
    if chat:
        assert [m["role"] for m in sent[0]] == ["user", "assistant"] * 3 + ["user"]
    assert all(b["stop"] == [QUESTION_STOP, "END"] for b in server.bodies)


def test_think_reads_answers_strictly_or_flexibly_from_the_same_samples(gsm, tmp_path):
    server = Recorder("40 plus 2 makes 42, so the answer is 42.")  # no '#### ' line: strict reads nothing
    with running(server.app) as port:
        args = ("think", "--endpoint", f"http://127.0.0.1:{port}/v1", "--api-model", "m", "--task", f"jsonl:{gsm}",
                "--problems", "3", "--n-max", "2", "--max-tokens", "8")
        strict = run_json(*args, "--out", str(tmp_path / "strict"))
        flexible = run_json(*args, "--extract", "flexible", "--cache", str(tmp_path / "strict" / "cache.sqlite"),
                            "--out", str(tmp_path / "flexible"))
        refused = run(*args, "--extract", "flexible", "--out", str(tmp_path / "strict"), "--json")
    assert (strict["extract"], flexible["extract"]) == ("strict", "flexible")
    assert strict["strategies"]["greedy"][0]["accuracy"] == strict["strategies"]["majority"][-1]["accuracy"] == 0.0
    assert flexible["strategies"]["greedy"][0]["accuracy"] == flexible["strategies"]["majority"][-1]["accuracy"] == 1.0
    assert flexible["sampling"] == {"drawn": 0, "from_cache": 9, "from_files": 0} and len(server.bodies) == 6
    assert {r["answer"] for r in rows_of(tmp_path / "strict" / "samples.jsonl")} == {None}
    assert {r["answer"] for r in rows_of(tmp_path / "flexible" / "samples.jsonl")} == {"42"}
    assert isinstance(refused.exception, DatawallError) and "(extract: 'strict'" in str(refused.exception)


# --- what goes with what ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (("--fewshot", "2", "--strategies", "beam"), "the beam strategy works on plain prompts"),
    (("--chat", "--thinking-budgets", "8"), "--thinking-budgets continue the prompt's text, which --chat"),
    (("--fewshot", "-1"), "--fewshot: Input should be greater than or equal to 0"),
])
def test_combinations_that_cannot_work_are_one_line(gsm, tmp_path, args, message):
    result = run("think", "--endpoint", "http://127.0.0.1:9/v1", "--api-model", "m", "--task", f"jsonl:{gsm}",
                 "--out", str(tmp_path / "t"), *args)
    assert isinstance(result.exception, DatawallError), result.output
    assert message in str(result.exception)


def test_eval_counts_fewshot_examples_as_prompt_tokens(tmp_path):
    task = get_task("arith", digits=1)
    ckpt = random_checkpoint(tmp_path / "chars", task.alphabet, max_seq_len=128)
    tok = Tokenizer.load(ckpt)
    base = ("eval", "--model", str(ckpt), "--task", "arith", "--task-args", "digits=1", "--problems", "4")
    for split in ("test", "train"):
        for k in (0, 3):
            ev = run_json(*base, "--split", split, "--fewshot", str(k))
            want = sum(len(tok.encode_prompt(build_prompt(task, p, k))) for p in task.problems(split, 4))
            assert ev["prompt_tokens"] == want and ev["problems"] == 4 and ev["stop"] == []
            assert ev["completion_tokens"] > 0
