"""reasoning-gym datasets as tasks (rg:NAME): the split contract of generated worlds, the datasets' own
scorers thresholded to a 0/1 reward, and one-line errors. reasoning-gym is a dev dependency: no skip."""

from __future__ import annotations

import pytest

from datawall.errors import DatawallError
from datawall.tasks import get_task
from datawall.tasks.answers import strict_answer
from datawall.tasks.reasoning_gym import dataset_names


def test_gsm_symbolic_splits_never_share_or_repeat_a_question_and_are_deterministic():
    task = get_task("rg:gsm_symbolic")
    train, test = task.problems("train", 150), task.problems("test", 40)
    assert len({p.key for p in train}) == 150 and len({p.key for p in test}) == 40
    assert not {p.key for p in train} & {p.key for p in test}
    again = get_task("rg:gsm_symbolic")
    assert [p.prompt for p in again.problems("test", 40)] == [p.prompt for p in test]
    p = test[0]
    assert p.prompt.startswith("Question: ") and p.prompt.endswith("\nAnswer:\n") and p.split == "test"
    assert task.size("test") is None  # unbounded: as many as asked for


def test_the_datasets_scorer_decides_the_reward():
    task = get_task("rg:gsm_symbolic")
    for p in task.problems("test", 20):
        solution = task.solution(p)  # the dataset's worked solution, ending with one answer line
        assert strict_answer(solution) == p.answer and solution.count("#### ") == 1
        assert task.verify(p, solution) == 1.0 and task.verify(p, solution, "flexible") == 1.0
        assert task.verify(p, f"#### {int(p.answer) + 1}") == 0.0
        assert task.verify(p, f"Adding up, the answer is {p.answer}.") == 0.0  # strict wants '#### N'
        assert task.verify(p, f"Adding up, the answer is {p.answer}.", "flexible") == 1.0
        assert task.verify(p, "no answer at all") == 0.0


def test_partial_scores_are_thresholded_to_a_reward():
    """countdown scores a valid but wrong expression 0.05 and nonsense 0.01: the threshold says which count."""
    exact, lenient = get_task("rg:countdown"), get_task("rg:countdown", threshold=0.05)
    assert [p.key for p in exact.problems("train", 5)] == [p.key for p in lenient.problems("train", 5)]
    for p in exact.problems("train", 10):
        assert exact.verify(p, exact.solution(p)) == lenient.verify(p, lenient.solution(p)) == 1.0
        assert exact.verify(p, "#### 1 + 1") == 0.0 and lenient.verify(p, "#### 1 + 1") == 1.0
        assert lenient.verify(p, "#### zzz") == 0.0
        # an expression's answer: the flexible reading does not fall back to the text's last number
        assert exact.extract_answer(f"it makes {p.answer}", "flexible") is None


@pytest.mark.parametrize("name,settings,needle", [
    ("rg:no_such_dataset", {}, "rg:no_such_dataset: not a reasoning-gym dataset"),
    ("rg:", {}, "rg task needs a reasoning-gym dataset: rg:NAME"),
    ("rg:countdown", {"dataset": "gsm_symbolic"}, "the name gives dataset 'countdown'"),
    ("rg:countdown", {"threshold": "1.5"}, "bad setting threshold=1.5"),
    ("rg:countdown", {"digits": "2"}, "unknown setting 'digits'"),
])
def test_bad_names_and_settings_are_one_line(name, settings, needle):
    with pytest.raises(DatawallError) as e:
        get_task(name, **settings)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_the_installed_datasets_are_listed():
    names = dataset_names()
    assert len(names) > 100 and {"gsm_symbolic", "countdown"} <= set(names)
    assert get_task("rg", dataset="gsm_symbolic").name == "rg:gsm_symbolic"
