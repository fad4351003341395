"""A datawall checkpoint read unmodified by the ecosystem's tools: transformers' pipeline, lm-eval's `hf` model on
a local JSONL task, and lm-eval's `local-completions` against `datawall serve`, all giving the greedy answers
and the accuracy `datawall eval` gives."""

from __future__ import annotations

import json

import pytest
from local_server import running
from tiny_arith import TASK, trained_policy
from typer.testing import CliRunner

from datawall.cli import app
from datawall.model import generate, load_checkpoint
from datawall.serve.app import create_app
from datawall.train.evaluate import solution_budget

transformers = pytest.importorskip("transformers")
lm_eval = pytest.importorskip("lm_eval")
PROBLEMS = 40
TASK_NAME = "datawall_arith_local"


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return trained_policy(tmp_path_factory.getbasetemp(), steps=800)


@pytest.fixture(scope="module")
def ours(policy):
    """datawall's greedy completions of the first PROBLEMS test problems, as `datawall eval` draws them."""
    ckpt = load_checkpoint(policy)
    problems = [TASK.problem("test", i) for i in range(PROBLEMS)]
    max_new = solution_budget(TASK, ckpt.tokenizer, problems)
    outs = generate(ckpt.model, ckpt.tokenizer, [p.prompt for p in problems], n=1, max_new_tokens=max_new,
                    temperature=0.0)
    texts = [row[0].text for row in outs]
    return problems, texts, [TASK.verify(p, t) for p, t in zip(problems, texts, strict=True)], max_new


def test_datawall_eval_scores_those_completions(policy, ours):
    _, _, rewards, _ = ours
    args = ["eval", "--model", str(policy), "--task", "arith", "--task-args", "digits=2", "--problems",
            str(PROBLEMS), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["accuracy"] == pytest.approx(sum(rewards) / PROBLEMS)
    assert 0 < sum(rewards) < PROBLEMS  # a model that is sometimes right: agreement means something


def test_transformers_pipeline_gives_the_same_greedy_answers(policy, ours):
    problems, texts, _, max_new = ours
    pipe = transformers.pipeline("text-generation", str(policy), device="cpu")
    for p, text in zip(problems[:12], texts, strict=False):
        (out,) = pipe(p.prompt, max_new_tokens=max_new, do_sample=False, return_full_text=False)
        assert out["generated_text"] == text, p.prompt


def _lm_eval_task(directory, problems, max_new: int):
    """A generate_until task over a local JSONL file: the answer after '#### ', exact match."""
    data = directory / "arith.jsonl"
    data.write_text("".join(json.dumps({"prompt": p.prompt, "answer": p.answer}) + "\n" for p in problems))
    (directory / "arith.yaml").write_text(f"""task: {TASK_NAME}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
generation_kwargs:
  until: ["<eos>"]
  do_sample: false
  temperature: 0.0
  max_gen_toks: {max_new}
filter_list:
  - name: strict
    filter:
      - function: regex
        regex_pattern: "#### (-?[0-9]+)"
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""")
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(directory))


def _run_lm_eval(monkeypatch, tmp_path, ours, model: str, model_args: str) -> tuple[float, list[str]]:
    """lm-eval's accuracy and raw greedy responses (in problem order) for the task above."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    problems, _, _, max_new = ours
    manager = _lm_eval_task(tmp_path, problems, max_new)
    out = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[TASK_NAME], task_manager=manager,
                                  batch_size=1, log_samples=True)
    samples = sorted(out["samples"][TASK_NAME], key=lambda s: s["doc_id"])
    return out["results"][TASK_NAME]["exact_match,strict"], [s["resps"][0][0] for s in samples]


@pytest.mark.slow
def test_lm_eval_hf_model_reads_the_checkpoint_unmodified(monkeypatch, tmp_path, policy, ours):
    _, texts, rewards, _ = ours
    args = f"pretrained={policy},dtype=float32,device=cpu"
    accuracy, responses = _run_lm_eval(monkeypatch, tmp_path, ours, "hf", args)
    assert responses == texts
    assert accuracy == pytest.approx(sum(rewards) / PROBLEMS)


@pytest.mark.slow
def test_lm_eval_local_completions_against_datawall_serve(monkeypatch, tmp_path, policy, ours):
    _, texts, rewards, _ = ours
    with running(create_app(policy)) as port:
        args = (f"model={policy.name},eos_string=<eos>,base_url=http://127.0.0.1:{port}/v1/completions,tokenized_requests=False,"
                f"tokenizer_backend=None,num_concurrent=1,max_retries=1")
        accuracy, responses = _run_lm_eval(monkeypatch, tmp_path, ours, "local-completions", args)
    assert responses == texts
    assert accuracy == pytest.approx(sum(rewards) / PROBLEMS)
