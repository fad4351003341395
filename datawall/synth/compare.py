"""Resemblance: does a student trained on a teacher's data only repeat its teacher?

On K held-out problems both models answer greedily (the task's verifier scores each answer), and on the same
problems' reference solutions (human data the student never saw) both give next-token distributions:

- error_agreement: share of problems where the student is wrong with exactly the teacher's wrong answer (answers
  compared by value); error_agreement_of_errors: the same count as a share of the student's errors. A student that
  learned the world makes its own mistakes; one that copied its teacher makes the teacher's.
- kl: per-token KL(student || teacher) in nats, averaged over the reference solutions' tokens (the solution and eos,
  as training scores them): how far the student's predictions are from its teacher's on human text.
- exceeds_teacher: share of problems the student gets right and the teacher wrong (does it exceed its teacher);
  trails_teacher the reverse.

Each share has a 95% Wilson interval (`_ci`); kl has a 95% percentile bootstrap interval over problems (the ratio
of summed KL to summed tokens, resampled with a fixed seed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datawall.data import example_rows, task_docs
from datawall.errors import DatawallError
from datawall.model import checkpoint_dir, load_checkpoint
from datawall.model.sampler import generate
from datawall.progress import progress_bar
from datawall.synth.filters import answer_key
from datawall.tasks import get_task
from datawall.tasks.prompting import build_prompt, stop_sequences
from datawall.train.evaluate import solution_budget, wilson_interval

BOOTSTRAP = 1000
BATCH = 100


@dataclass
class Answer:
    """A model's greedy completion of one problem, the answer read from it and the verifier's verdict."""

    text: str
    answer: str | None
    correct: bool


def greedy_answers(model, tokenizer, task, problems: list, device: str = "cpu", quiet: bool = True,
                   label: str = "answers") -> list[Answer]:
    """One greedy completion per problem (the task's stop sequences), read and verified."""
    max_new = solution_budget(task, tokenizer, problems)
    stops = stop_sequences(task) or None
    out: list[Answer] = []
    with progress_bar(rate_unit="prob/s", disable=quiet) as bar:
        job = bar.add_task(label, total=len(problems), rate="-", info="")
        for i in range(0, len(problems), BATCH):
            chunk = problems[i:i + BATCH]
            samples = generate(model, tokenizer, [build_prompt(task, p) for p in chunk], n=1, max_new_tokens=max_new,
                               temperature=0.0, stop=stops, device=device, return_logprobs=False)
            for p, s in zip(chunk, samples, strict=True):
                text = s[0].text
                out.append(Answer(text, task.extract_answer(text), task.verify(p, text) >= 1.0))
            bar.update(job, completed=len(out))
    return out


@torch.no_grad()
def kl_per_problem(student, teacher, rows: tuple[torch.Tensor, torch.Tensor], device: str = "cpu",
                   batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(summed KL(student || teacher) in nats, scored tokens) per row of (x, y), y = -100 where nothing is scored."""
    x_all, y_all = rows
    vocab = getattr(getattr(student, "config", None), "vocab_size", 0) or 1
    batch = max(1, min(batch, int(4e7 // max(1, x_all.shape[1] * vocab))))  # two [B, T, V] float32 tensors at a time
    kl_sum, count = [], []
    for i in range(0, len(x_all), batch):
        x, y = x_all[i:i + batch].to(device), y_all[i:i + batch].to(device)
        ls = torch.log_softmax(student(x).float(), -1)
        lt = torch.log_softmax(teacher(x).float(), -1)
        kl = (ls.exp() * (ls - lt)).sum(-1)  # [B, T]
        scored = y != -100
        kl_sum.append((kl * scored).sum(1).double().cpu().numpy())
        count.append(scored.sum(1).cpu().numpy())
    return np.concatenate(kl_sum), np.concatenate(count)


def bootstrap_ratio(num: np.ndarray, den: np.ndarray, seed: int = 0, reps: int = BOOTSTRAP) -> list[float]:
    """95% percentile interval of sum(num) / sum(den) over rows resampled with replacement."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num), size=(reps, len(num)))
    ratios = num[idx].sum(1) / np.maximum(den[idx].sum(1), 1)
    return [float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))]


def _share(k: int, n: int) -> tuple[float | None, list[float] | None]:
    if n == 0:
        return None, None
    return k / n, list(wilson_interval(k, n))


def _copied(student: Answer, teacher: Answer) -> bool:
    """The student is wrong with exactly the teacher's wrong answer (compared by value)."""
    return (not student.correct and not teacher.correct and student.answer is not None
            and answer_key(student.answer) == answer_key(teacher.answer))


def resemblance(student: list[Answer], teacher: list[Answer]) -> dict:
    """The answer-level numbers (see the module docstring) from two models' answers to the same problems."""
    n = len(student)
    wrong = [i for i in range(n) if not student[i].correct]
    copied = [i for i in wrong if _copied(student[i], teacher[i])]
    exceeds = sum(s.correct and not t.correct for s, t in zip(student, teacher, strict=True))
    trails = sum(t.correct and not s.correct for s, t in zip(student, teacher, strict=True))
    same = sum(s.answer is not None and answer_key(s.answer) == answer_key(t.answer)
               for s, t in zip(student, teacher, strict=True))
    out: dict = {"problems": n}
    teacher_right = sum(t.correct for t in teacher)
    for name, k, of in (("student_accuracy", n - len(wrong), n), ("teacher_accuracy", teacher_right, n),
                        ("error_agreement", len(copied), n), ("error_agreement_of_errors", len(copied), len(wrong)),
                        ("exceeds_teacher", exceeds, n), ("trails_teacher", trails, n), ("answer_agreement", same, n)):
        out[name], out[f"{name}_ci"] = _share(k, of)
    out |= {"student_errors": len(wrong), "teacher_errors": n - sum(t.correct for t in teacher),
            "copied_errors": len(copied)}
    return out


def compare(student_dir: str | Path, teacher_dir: str | Path, task_name: str | None = None,
            task_args: dict | None = None, problems: int = 500, split: str = "test", device: str = "cpu",
            quiet: bool = True, seed: int = 0) -> tuple[dict, list[dict]]:
    """Resemblance of a student checkpoint to its teacher on `problems` problems of `split`; (result, per-problem
    rows)."""
    student = load_checkpoint(checkpoint_dir(student_dir))
    teacher = load_checkpoint(checkpoint_dir(teacher_dir))
    name = task_name or student.meta.get("task")
    if not name:
        raise DatawallError(f"{student_dir}: no --task given and the checkpoint names none")
    settings = dict(task_args if task_args is not None or task_name else student.meta.get("task_args") or {})
    task = get_task(name, **settings)
    size = task.size(split)
    count = min(problems, size) if size is not None else problems
    if count <= 0:
        raise DatawallError(f"{task.name}: the {split} split has no problems")
    items = [task.problem(split, i) for i in range(count)]
    s_model, t_model = student.model.to(device).eval(), teacher.model.to(device).eval()
    s_ans = greedy_answers(s_model, student.tokenizer, task, items, device, quiet, "student")
    t_ans = greedy_answers(t_model, teacher.tokenizer, task, items, device, quiet, "teacher")
    result = resemblance(s_ans, t_ans)
    if student.tokenizer == teacher.tokenizer:
        rows = example_rows(task_docs(task, student.tokenizer, split, count=count), student.tokenizer.pad_id)
        kl_sum, tokens = kl_per_problem(s_model, t_model, rows, device)
        result |= {"kl": float(kl_sum.sum() / max(1, tokens.sum())), "kl_ci": bootstrap_ratio(kl_sum, tokens, seed),
                   "kl_tokens": int(tokens.sum()), "kl_note": None}
    else:
        kl_sum = tokens = None
        result |= {"kl": None, "kl_ci": None, "kl_tokens": 0,
                   "kl_note": "the two checkpoints have different tokenizers: per-token KL is not defined"}
    result |= {"student": str(student_dir), "teacher": str(teacher_dir), "task": name, "task_args": settings,
               "split": split}
    per_problem = [{"problem": p.index, "answer": p.answer, "student": s.answer, "student_correct": s.correct,
                    "teacher": t.answer, "teacher_correct": t.correct, "copied_error": _copied(s, t),
                    "kl": None if kl_sum is None else float(kl_sum[i] / max(1, tokens[i]))}
                   for i, (p, s, t) in enumerate(zip(items, s_ans, t_ans, strict=True))]
    return result, per_problem
