"""Task worlds: determinism, disjoint splits, sound solutions and verifiers, alphabets, settings, jsonl files."""

from __future__ import annotations

import json
import math
import random

import pytest

from datawall.errors import DatawallError
from datawall.tasks import Problem, TaskIndexError, get_task, list_tasks, parse_task_args
from datawall.tasks.arith import add_scratch, mul_method_scratch, mul_scratch, sub_scratch
from datawall.tasks.base import answers_match, extract_final_answer
from datawall.tasks.splits import split_of
from datawall.tasks.trace import TraceError, parse_program, render, run

# (name, settings, problems per split): every generated world the tests sweep.
WORLDS = [
    ("arith", {}, 3000),
    ("arith", {"digits": 5, "min_digits": 1, "ops": "add,sub,mul"}, 3000),
    ("arith", {"digits": 1, "ops": "sub"}, 300),  # a tiny problem space: 100 problems in all, each split asked for all
    ("trace", {}, 1000),
    ("trace", {"statements": 8, "variables": 4, "loop_bound": 5, "max_value": 999}, 300),
    ("countdown", {}, 1500),
    ("countdown", {"count": 6, "max_number": 50, "max_target": 1000}, 300),
]


@pytest.fixture(scope="module", params=WORLDS, ids=lambda w: f"{w[0]}-{len(w[1])}")
def world(request):
    name, settings, n = request.param
    task = get_task(name, **settings)
    return task, {split: task.problems(split, min(n, task.size(split) or n)) for split in ("train", "test")}


def test_same_index_same_problem_in_fresh_tasks(world):
    task, problems = world
    again = get_task(task.name, **task.settings.model_dump())
    for split in ("train", "test"):
        for i in (0, 1, 7, len(problems[split]) - 1):
            assert again.problem(split, i) == problems[split][i]


def test_splits_never_share_a_problem(world):
    task, problems = world
    keys = {split: {p.key for p in ps} for split, ps in problems.items()}
    assert keys["train"] and keys["test"]
    assert not keys["train"] & keys["test"]
    assert not {p.prompt for p in problems["train"]} & {p.prompt for p in problems["test"]}
    for split, ps in problems.items():
        assert all(split_of(task.name, p.key) == split and p.split == split for p in ps)
    assert all(len(keys[split]) == len(ps) for split, ps in problems.items())  # a split never repeats a problem


def test_reference_solutions_verify(world):
    task, problems = world
    for p in problems["train"] + problems["test"]:
        solution = task.solution(p)
        assert solution.splitlines()[-1] == f"#### {p.answer}"
        assert task.extract_answer(solution) == p.answer
        assert task.verify(p, solution) == 1.0
        assert task.verify(p, p.prompt + solution + "\n") == 1.0
        assert task.verify(p, solution, "flexible") == 1.0  # a worked solution reads the same both ways


def test_wrong_answers_score_zero(world):
    task, problems = world
    for p in problems["test"][:300]:
        solution = task.solution(p)
        assert task.verify(p, "") == 0.0
        assert task.verify(p, solution.rsplit("####", 1)[0]) == 0.0  # no answer line
        if task.name == "countdown":
            assert task.verify(p, f"#### {p.meta['target']}") == 0.0
            assert task.verify(p, f"#### {p.answer}+1") == 0.0
            assert task.verify(p, "#### " + "+".join(map(str, p.meta["numbers"] * 2))) == 0.0
        else:
            assert task.verify(p, f"#### {int(p.answer) + 1}") == 0.0
            assert task.verify(p, solution + f"\n#### {int(p.answer) - 1}") == 0.0  # the last line counts


def test_alphabet_covers_prompts_and_solutions(world):
    task, problems = world
    alphabet = set(task.alphabet)
    assert len(alphabet) == len(task.alphabet) and list(task.alphabet) == sorted(task.alphabet)
    used = {c for p in problems["train"] + problems["test"] for c in p.prompt + task.solution(p)}
    assert used <= alphabet, sorted(used - alphabet)


def test_describe_and_size(world):
    task, problems = world
    line = task.describe()
    assert "\n" not in line and task.name in line
    for split, ps in problems.items():  # known for a world small enough to count (then all of it was asked for)
        assert task.size(split) in (None, len(ps))
    assert get_task("arith", digits=1, ops="sub").size("test") == 18 and get_task("arith").size("test") is None


# --- arith ---------------------------------------------------------------------------------------------


def test_arith_scratchpad_examples():
    assert add_scratch(123, 489) == ".cc\n.cc\n.cc"
    assert add_scratch(455, 545) == "ppc\npcc\nccc"
    assert add_scratch(150, 849) == "pp.\np..\n..."
    assert add_scratch(99, 1) == "pc\ncc"
    assert add_scratch(0, 0) == "." and add_scratch(5, 7) == "c"
    assert add_scratch(49999, 50001) == "ppppc\npppcc\npcccc\nccccc"
    assert sub_scratch(512, 139) == "><<\n><<\n><<"
    assert sub_scratch(123, 120) == "==>\n=>>\n>>>"
    assert sub_scratch(7, 25) == "<>\n<>"
    assert sub_scratch(5, 5) == "="
    assert mul_scratch(123, 45) == "5:516 516\n4:0294 5355"
    assert mul_scratch(7, 10) == "0:0 0\n1:07 07"
    task = get_task("arith", ops="add")
    p = Problem(prompt="123+489=", answer="612", meta={"op": "add", "a": 123, "b": 489})
    assert task.solution(p) == ".cc\n.cc\n.cc\n#### 612"


def _read_reversed(digits: str) -> int:
    return int(digits[::-1])


def _sign(x: int) -> str:
    return "<" if x < 0 else "=" if x == 0 else ">"


def test_arith_scratchpads_are_sound():
    """Each status line means what the docstring says, computed here from the integers themselves."""
    rng = random.Random(0)
    pairs = [(a, b) for a in range(0, 100, 7) for b in range(0, 100, 3)]
    pairs += [(rng.randint(0, 10**k), rng.randint(0, 10**k)) for k in range(1, 13) for _ in range(50)]
    pairs += [(10**k - 1, 1) for k in range(1, 13)] + [(5 * 10**k - 1, 5 * 10**k + 1) for k in range(1, 12)]
    for a, b in pairs:
        n = max(len(str(a)), len(str(b)))
        lines = add_scratch(a, b).splitlines()
        assert len(lines) == 1 + math.ceil(math.log2(n)) and all(len(line) == n for line in lines)
        tails = [10 ** (n - j) for j in range(n)]  # position j and everything right of it
        assert lines[-1] == "".join("c" if a % t + b % t >= t else "." for t in tails)
        digit_sums = [int(x) + int(y) for x, y in zip(str(a).zfill(n), str(b).zfill(n), strict=True)]
        assert lines[0] == "".join("c" if s >= 10 else "p" if s == 9 and j < n - 1 else "."
                                   for j, s in enumerate(digit_sums))
        lines = sub_scratch(a, b).splitlines()
        assert lines[-1] == "".join(_sign(a % t - b % t) for t in tails)
        digit_diffs = [int(x) - int(y) for x, y in zip(str(a).zfill(n), str(b).zfill(n), strict=True)]
        assert lines[0] == "".join(map(_sign, digit_diffs))
        lines = mul_scratch(a, b).splitlines()
        assert len(lines) == len(str(b))
        partials = [_read_reversed(line.split(":")[1].split()[0]) for line in lines]
        assert sum(partials) == a * b
        assert _read_reversed(lines[-1].split()[-1]) == a * b


def test_arith_multiplication_methods_are_sound():
    """Every method walks the digits it names, in the order it names, and sums to the product."""
    assert mul_method_scratch(123, 45, 0) == "123*45>\n" + mul_scratch(123, 45)
    assert mul_method_scratch(123, 45, 3) == "45*123<\n1:54 54\n2:09 045\n3:531 5355"
    rng = random.Random(1)
    for a, b in [(rng.randint(0, 10**k), rng.randint(0, 10**k)) for k in range(1, 7) for _ in range(40)]:
        for method in range(4):
            header, *lines = mul_method_scratch(a, b, method).splitlines()
            x, y = (int(v) for v in header[:-1].split("*"))
            assert {x, y} == {a, b} and (x, y) == ((a, b) if method % 2 == 0 else (b, a))
            walked = [int(line.split(":")[0]) for line in lines]
            digits = [int(c) for c in str(y)]
            assert walked == (digits[::-1] if header[-1] == ">" else digits)
            partials = [_read_reversed(line.split(":")[1].split()[0]) for line in lines]
            assert partials == [x * d * (10**i if header[-1] == ">" else 1) for i, d in enumerate(walked)]
            assert _read_reversed(lines[-1].split()[-1]) == a * b


def test_arith_paths_change_solutions_not_problems():
    one = get_task("arith", digits=2, min_digits=1, ops="mul")
    four = get_task("arith", digits=2, min_digits=1, ops="mul", paths=4)
    for split in ("train", "test"):
        assert one.problems(split, 50) == four.problems(split, 50)
    methods = [four.method(p) for p in four.problems("train", 200)]
    assert set(methods) == {0, 1, 2, 3}
    for p in four.problems("train", 40):
        assert four.solution(p) == mul_method_scratch(p.meta["a"], p.meta["b"], four.method(p)) + f"\n#### {p.answer}"
        assert one.solution(p) == mul_scratch(p.meta["a"], p.meta["b"]) + f"\n#### {p.answer}"
        assert set(four.solution(p)) <= set(four.alphabet)
    # the problem seeds of worlds without `paths` are those of earlier versions (run keys stay valid)
    assert [p.prompt for p in one.problems("test", 4)] == ["74*69=", "26*90=", "35*7=", "1*21="]


def test_arith_operands_respect_digits():
    task = get_task("arith", digits=4, min_digits="2", ops="add,sub")
    seen_lengths, seen_ops = set(), set()
    for p in task.problems("train", 400):
        a, b = p.meta["a"], p.meta["b"]
        seen_lengths |= {len(str(a)), len(str(b))}
        seen_ops.add(p.meta["op"])
        assert p.prompt == f"{a}{'+' if p.meta['op'] == 'add' else '-'}{b}="
    assert seen_lengths == {2, 3, 4} and seen_ops == {"add", "sub"}
    assert all(len(p.prompt) == 8 for p in get_task("arith").problems("test", 100))


def test_settings_are_validated_with_clear_errors():
    assert get_task("arith", digits="5").settings.digits == 5
    assert get_task("arith", ops="mul, add").settings.ops == "add,mul"
    cases = [
        (dict(digits=0), "digits"),
        (dict(digits="abc"), "bad setting digits=abc: "),
        (dict(digit=3), "unknown setting 'digit'"),
        (dict(ops="add,div"), "'div'"),
        (dict(digits=3, min_digits=4), "min_digits=4"),
        (dict(paths=5), "paths=5"),
    ]
    for settings, needle in cases:
        with pytest.raises(DatawallError, match=needle) as e:
            get_task("arith", **settings)
        assert "\n" not in str(e.value)
    with pytest.raises(DatawallError, match="count"):
        get_task("countdown", count=9)
    with pytest.raises(DatawallError,
                       match=r"unknown task 'arithmetic' \(known: arith, trace, countdown, lab, jsonl:PATH"):
        get_task("arithmetic")
    names = [name for name, _ in list_tasks()]
    assert names == ["arith", "trace", "countdown", "lab", "jsonl:PATH", "rg:NAME"] and all(desc for _, desc in
                                                                                           list_tasks())


def test_bad_split_and_index():
    task = get_task("arith")
    with pytest.raises(DatawallError, match="split"):
        task.problem("valid", 0)
    with pytest.raises(TaskIndexError):
        task.problem("train", -1)
    with pytest.raises(IndexError):
        task.problem("train", -1)


# --- answers -------------------------------------------------------------------------------------------


def test_extract_answer_reads_the_last_answer_line():
    assert extract_final_answer("2c1c6\n#### 612") == "612"
    assert extract_final_answer("#### 1\nmore\n#### 612  \t\n") == "612"
    assert extract_final_answer("####612") == "612"
    assert extract_final_answer("x #### 612") is None
    assert extract_final_answer("no answer") is None
    assert extract_final_answer("#### \n") is None


def test_answers_match_numbers_and_text():
    assert answers_match("1,234", "1234") and answers_match("612.0", "612") and answers_match("0612", "612")
    assert answers_match("3/4", "0.75") and answers_match("-18", "-18")
    assert not answers_match("613", "612") and not answers_match("1e999999999", "1")
    assert answers_match("1.0000001", "1", tolerance=1e-6) and not answers_match("1.01", "1", tolerance=1e-6)
    assert answers_match("Paris ", " Paris") and not answers_match("paris", "Paris")


def test_parse_task_args():
    assert parse_task_args("") == {}
    assert parse_task_args("digits=3, ops=add,sub") == {"digits": "3", "ops": "add,sub"}
    assert parse_task_args("a=1,b=x=y") == {"a": "1", "b": "x=y"}
    for bad in ("add", "=3", "a=1,a=2"):
        with pytest.raises(DatawallError):
            parse_task_args(bad)


# --- trace ---------------------------------------------------------------------------------------------


def test_trace_interpreter_matches_hand_computation():
    program, question = parse_program(
        "a=7\nb=a*3\nfor i in range(4):\n  a=a+i\n  if a>10:\n    b=b-a\n  else:\n    b=b+1\nc=b//4\nd=b%4\nprint(c)\n"
    )
    env, trace = run(program)
    a, b = 7, 21
    for i in range(4):
        a += i
        b = b - a if a > 10 else b + 1
    assert question == "c" and env == {"a": a, "b": b, "i": 3, "c": b // 4, "d": b % 4}
    assert trace[:6] == ["a=7", "b=21", "i=0", "a=7", "a>10:False", "b=22"]
    assert len(trace) == 2 + 4 * 4 + 2
    env, _ = run(parse_program("x=3\ny=x-10\nq=y//4\nr=y%4\n")[0])  # Python's floor semantics
    assert (env["q"], env["r"]) == (-7 // 4, -7 % 4) == (-2, 1)


def test_trace_generated_programs_round_trip_and_stay_small():
    task = get_task("trace", statements=6, loop_bound=4)
    for p in task.problems("train", 150):
        program, question = parse_program(p.prompt)
        assert render(program) == p.meta["program"] and question == p.meta["question"]
        env, trace = run(program, max_value=task.settings.max_value)
        assert trace == p.meta["trace"] and str(env[question]) == p.answer
        assert all(0 <= v <= 99 for v in env.values())


def test_trace_rejects_programs_outside_the_language():
    for source in ("import os", "while True:\n  a=1", "a=f(1)", "a=b.c", "for i in range(10**6):\n  a=1",
                   "a=1\nif a<2<3:\n  a=2", "a=-1", "a=1;del a", "a=(", "a=1.5"):
        with pytest.raises(TraceError):
            parse_program(source)
    with pytest.raises(TraceError, match="division by zero"):
        run(parse_program("a=0\nb=5//a")[0])
    with pytest.raises(TraceError, match="before it is assigned"):
        run(parse_program("a=b+1")[0])
    with pytest.raises(TraceError, match="steps"):
        run(parse_program("a=0\nfor i in range(1000):\n  for j in range(1000):\n    a=1")[0])


# --- countdown -----------------------------------------------------------------------------------------


def test_countdown_accepts_any_valid_expression():
    task = get_task("countdown")
    p = Problem(prompt="3 4 5 9 -> 23\n", answer="5*4+3", meta={"numbers": [3, 4, 5, 9], "target": 23})
    for good in ("5*4+3", "3+4*5", "9*3-4", "(5*4)+3", " 4*5+3 "):
        assert task.verify(p, f"#### {good}") == 1.0, good
    for bad in ("5*4+4", "9/3*5+4+4", "5*4+3+9-9-0", "23", "5*4+3.0", "5*4+-(-3)", "2**4+7", "9*3-4-0", "a+1",
                "__import__('os')", "9**9**9**9", "(" * 500 + "1" + ")" * 500, "1" * 10**6, "5*4+3=23"):
        assert task.verify(p, f"#### {bad}") == 0.0, bad
    assert task.check(p, "5*4+9") == "evaluates to 29, not 23"
    assert task.check(p, "5*4+4") == "uses 4 beyond the given numbers"
    p2 = Problem(prompt="3 4 6 -> 8\n", answer="", meta={"numbers": [3, 4, 6], "target": 8})
    assert task.verify(p2, "#### 4/(3/6)") == 1.0  # exact rational intermediates are fine


def test_countdown_problems_are_well_formed():
    task = get_task("countdown", count=5, max_number=10, max_target=150)
    for p in task.problems("train", 200):
        numbers, target = p.meta["numbers"], p.meta["target"]
        assert len(numbers) == 5 and all(1 <= n <= 10 for n in numbers) and numbers == sorted(numbers)
        assert 1 <= target <= 150 and target not in numbers
        assert p.prompt == f"{' '.join(map(str, numbers))} -> {target}\n"
        assert len(p.meta["steps"]) == 4 and p.meta["steps"][-1].endswith(f"={target}")


# --- jsonl ---------------------------------------------------------------------------------------------


def _write(tmp_path, rows, name="p.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_jsonl_problems_splits_and_gsm8k_rows(tmp_path):
    rows = [{"question": f"What is {i} plus {i}?", "answer": 2 * i} for i in range(200)]
    rows.append({"question": "Natalia sold 48 clips, then half as many. How many?",
                 "answer": "She sold 48/2 = <<48/2=24>>24 more.\n48+24 = <<48+24=72>>72\n#### 72"})
    rows.append({"question": "Big?", "answer": "1,000", "solution": "Count.\n#### 1,000", "split": "test"})
    rows.append({"question": "Capital of France?", "answer": "Paris", "split": "train", "id": 7})
    rows.append("   ")
    path = _write(tmp_path, rows)
    task = get_task(f"jsonl:{path}")
    n_train, n_test = task.size("train"), task.size("test")
    assert n_train + n_test == 203 and 15 < n_test < 70
    train, test = task.problems("train", n_train), task.problems("test", n_test)
    assert not {p.key for p in train} & {p.key for p in test}
    for p in train + test:
        assert p.prompt.startswith("Question: ") and p.prompt.endswith("\nAnswer:\n")
        assert task.verify(p, task.solution(p)) == 1.0
        assert task.extract_answer(task.solution(p)) is not None
        assert set(p.prompt + task.solution(p)) <= set(task.alphabet)
    by_q = {p.meta["question"]: p for p in train + test}
    gsm = by_q["Natalia sold 48 clips, then half as many. How many?"]
    assert gsm.answer == "72" and task.solution(gsm).startswith("She sold") and task.verify(gsm, "#### 72.0") == 1.0
    big = by_q["Big?"]
    assert big.split == "test" and big.answer == "1000" and task.verify(big, "#### 1,000") == 1.0
    paris = by_q["Capital of France?"]
    assert task.solution(paris) == "#### Paris" and task.verify(paris, "#### Paris") == 1.0
    assert task.verify(paris, "#### London") == 0.0
    with pytest.raises(TaskIndexError, match="past the end"):
        task.problem("test", n_test)
    assert get_task("jsonl", path=path, test_fraction=0).size("test") == 1  # only the explicit test row
    again = get_task(f"jsonl:{path}")
    assert again.problem("train", 5) == task.problem("train", 5)


def test_jsonl_benchmark_file_scored_whole_with_its_own_field_names(tmp_path):
    """split=all: every row is held out (a benchmark's test set, scored whole); MATH-style rows name their keys."""
    rows = [{"problem": f"What is {i} times 3?", "solution": f"{i} * 3 = {3 * i}, so \\boxed{{{3 * i}}}.",
             "split": "train" if i % 2 else "test"} for i in range(40)]
    rows.append({"problem": "Half of one?", "solution": "It is $\\boxed{\\frac{1}{2}}$."})
    path = _write(tmp_path, rows)
    task = get_task(f"jsonl:{path}", split="all", question_field="problem", answer_field="solution")
    assert task.size("test") == 41 and task.size("train") == 0  # the rows' own split fields do not apply
    with pytest.raises(TaskIndexError, match="past the end of the train split"):
        task.problem("train", 0)
    problems = task.problems("test", 41)
    assert [p.meta["line"] for p in problems] == list(range(1, 42))  # in file order
    p7 = problems[7]
    assert p7.prompt == "Question: What is 7 times 3?\nAnswer:\n" and p7.answer == "21"
    assert task.solution(p7) == "7 * 3 = 21, so \\boxed{21}.\n#### 21"  # the worked solution, then the answer line
    assert task.verify(p7, task.solution(p7)) == 1.0 and task.verify(p7, "so \\boxed{21}", "flexible") == 1.0
    half = problems[40]
    assert half.answer == "\\frac{1}{2}" and task.verify(half, "\\boxed{\\frac{1}{2}}", "flexible") == 1.0
    assert task.verify(half, "#### \\frac{1}{2}") == 1.0 and task.verify(half, "#### 1/3") == 0.0
    auto = get_task(f"jsonl:{path}", question_field="problem", answer_field="solution")
    assert {auto.size("train"), auto.size("test")} == {20, 21}  # the rows' split fields; the last row by hash
    with pytest.raises(DatawallError, match=r":1: missing key 'question'"):
        get_task(f"jsonl:{path}", split="all")
    with pytest.raises(DatawallError, match="bad setting split=every"):
        get_task(f"jsonl:{path}", split="every", question_field="problem", answer_field="solution")


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        (['{"question": "q", "answer": 1}', "{not json"], ":2: invalid JSON"),
        ([{"question": "q"}], ":1: missing key 'answer'"),
        ([{"question": "q", "answer": 1}, {"answer": 2}], ":2: missing key 'question'"),
        ([{"question": 5, "answer": 1}], ":1: 'question' must be a non-empty string"),
        ([{"question": "q", "answer": [1]}], ":1: 'answer' must be a string or a number"),
        ([{"question": "q", "answer": True}], ":1: 'answer' must be"),
        ([{"question": "q", "answer": 1, "split": "dev"}], ":1: 'split' must be one of"),
        ([{"question": "q", "answer": 1, "solution": "#### 2"}], ":1: the solution's final line gives '2'"),
        (["[1, 2]"], ":1: expected a JSON object"),
        ([{"question": "q", "answer": 1, "split": "train"}, {"question": "q", "answer": 1, "split": "test"}],
         ":2: this question is also in the train split (line 1)"),
        ([], "no problems"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, rows, needle):
    path = _write(tmp_path, rows)
    with pytest.raises(DatawallError) as e:
        get_task(f"jsonl:{path}")
    assert str(e.value).startswith(path) and needle in str(e.value)


def test_jsonl_missing_file_and_bad_names(tmp_path):
    with pytest.raises(DatawallError, match="no such file"):
        get_task(f"jsonl:{tmp_path / 'nope.jsonl'}")
    with pytest.raises(DatawallError, match="jsonl:PATH"):
        get_task("jsonl:")
    path = _write(tmp_path, [{"question": "q", "answer": 1}])
    with pytest.raises(DatawallError, match="unknown setting 'digits'"):
        get_task(f"jsonl:{path}", digits=3)
