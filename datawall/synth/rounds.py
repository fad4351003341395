"""What self-improvement (`synth iterate`) and model collapse (`synth collapse`) are made of: a checkpoint writes
data (a `synth generate` run on it), a model trains on real + synthetic examples (a pretraining run with
DataSpec.synthetic), and a model is measured on held-out problems (greedy accuracy, its accuracy on the rarest
problem classes, and how varied its samples are). Each piece is a run directory with DONE, so a rerun skips it.

Tail classes: a problem's class is the length of its answer's value in characters (arith: the digits of the
product or sum, plus a minus sign; countdown, trace: the same reading of their answers). The tail is the rarest
classes among the held-out problems, taken rarest first until they hold at least `share` of the problems (the
quick world `arith digits=2,min_digits=1,ops=mul`: 1- and 2-digit products, 24% of its first 300 held-out problems).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from datawall.errors import DatawallError
from datawall.model import checkpoint_dir, load_checkpoint
from datawall.model.sampler import generate
from datawall.synth.compare import greedy_answers
from datawall.synth.diversity import diversity
from datawall.synth.filters import answer_key
from datawall.synth.generate import run_generate
from datawall.synth.generate_config import GenerateConfig
from datawall.tasks.prompting import build_prompt, stop_sequences
from datawall.train.evaluate import solution_budget, wilson_interval
from datawall.train.run import RunSpec, execute

TAIL_SHARE = 0.15


def write_data(teacher: str | Path, cfg: GenerateConfig, out: Path, device: str = "cpu", quiet: bool = True) -> dict:
    """A `synth generate` run of the checkpoint `teacher` into `out` (read back when it is DONE); its result."""
    from datawall.sampling.backends.local import LocalBackend

    if (out / "DONE").exists():
        import json

        return json.loads((out / "result.json").read_text(encoding="utf-8"))
    return run_generate(LocalBackend(teacher, device=device), cfg, out, quiet=quiet)


def train(spec: RunSpec, out: Path, quiet: bool = True) -> dict:
    """A training run (resumed, or read back when DONE); its result."""
    return execute(spec, out, quiet=quiet)


def answer_class(answer: str | None) -> int | None:
    """A problem's (or a sample's) class: the length of its answer's value in characters; None without an answer."""
    key = answer_key(answer)
    return None if key is None else len(key)


def tail_classes(problems: list, share: float = TAIL_SHARE) -> list[int]:
    """The rarest answer classes of these problems, rarest first, until they hold at least `share` of them."""
    counts = Counter(answer_class(p.answer) for p in problems)
    out, held = [], 0
    for cls, n in sorted(counts.items(), key=lambda t: (t[1], t[0])):
        if held >= share * len(problems):
            break
        out.append(cls)
        held += n
    return sorted(out)


@dataclass
class Measure:
    """Held-out problems and their tail, measured the same way for every model of a run."""

    task: object
    problems: list
    tail: list[int]
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def of(cls, task, count: int, share: float = TAIL_SHARE, seed: int = 0, device: str = "cpu") -> Measure:
        """The first `count` held-out problems (all of a smaller split) and their tail classes."""
        size = task.size("test")
        count = min(count, size) if size is not None else count
        if count <= 0:
            raise DatawallError(f"{task.name}: the test split has no problems to measure on")
        problems = [task.problem("test", i) for i in range(count)]
        return cls(task, problems, tail_classes(problems, share), seed, device)

    def __call__(self, model_dir: str | Path, quiet: bool = True) -> dict:
        """Greedy accuracy (all problems, tail problems) and one temperature-1 sample per problem: the samples'
        diversity and the share of them whose answer falls in a tail class (beside the problems' own share)."""
        ckpt = load_checkpoint(checkpoint_dir(model_dir))
        model, tok = ckpt.model.to(self.device).eval(), ckpt.tokenizer
        answers = greedy_answers(model, tok, self.task, self.problems, self.device, quiet)
        in_tail = [answer_class(p.answer) in self.tail for p in self.problems]
        right = sum(a.correct for a in answers)
        tail_right = sum(a.correct for a, t in zip(answers, in_tail, strict=True) if t)
        tails = sum(in_tail)
        samples = generate(model, tok, [build_prompt(self.task, p) for p in self.problems], n=1,
                           max_new_tokens=solution_budget(self.task, tok, self.problems), temperature=1.0,
                           stop=stop_sequences(self.task) or None, seed=self.seed, device=self.device,
                           return_logprobs=False)
        texts = [s[0].text for s in samples]
        stated = [self.task.extract_answer(t) for t in texts]
        return {"accuracy": right / len(answers), "accuracy_ci": list(wilson_interval(right, len(answers))),
                "tail_accuracy": tail_right / tails if tails else None,
                "tail_accuracy_ci": list(wilson_interval(tail_right, tails)) if tails else None,
                "tail_problems": tails, "tail_classes": self.tail,
                "tail_share": sum(answer_class(a) in self.tail for a in stated) / len(stated),
                "tail_share_real": tails / len(self.problems),
                "sample_accuracy": sum(self.task.verify(p, t) >= 1.0 for p, t in zip(self.problems, texts,
                                                                                      strict=True)) / len(texts),
                "diversity": diversity(texts, stated, self.seed), "problems": len(self.problems)}
