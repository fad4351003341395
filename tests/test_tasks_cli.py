"""`datawall tasks list|show|export` through the real app (CliRunner) and the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datawall.cli import app
from datawall.errors import DatawallError
from datawall.tasks import get_task

runner = CliRunner()
DATAWALL = Path(sys.executable).parent / "datawall"


def test_list_human_and_json():
    result = runner.invoke(app, ["tasks", "list"])
    assert result.exit_code == 0, result.output
    assert "arith" in result.output and "countdown" in result.output and "jsonl:PATH" in result.output
    result = runner.invoke(app, ["tasks", "list", "--json"])
    assert result.exit_code == 0
    tasks = {t["name"]: t for t in json.loads(result.stdout)["tasks"]}
    assert set(tasks) == {"arith", "trace", "countdown", "lab", "jsonl:PATH", "rg:NAME"}
    assert tasks["arith"]["settings"]["digits"]["default"] == 3


def test_show_json_is_one_object_of_verified_problems():
    args = ["tasks", "show", "arith", "--n", "4", "--split", "test", "--start", "10", "--task-args",
            "digits=5,ops=add,sub", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["task"] == "arith" and out["split"] == "test" and out["settings"]["ops"] == "add,sub"
    assert [p["index"] for p in out["problems"]] == [10, 11, 12, 13]
    task = get_task("arith", digits=5, ops="add,sub")
    for row in out["problems"]:
        p = task.problem("test", row["index"])
        assert row["prompt"] == p.prompt and row["answer"] == p.answer and row["solution"] == task.solution(p)


def test_show_human_prints_prompt_solution_answer():
    result = runner.invoke(app, ["tasks", "show", "trace", "--n", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.count("answer:") == 2 and "print(" in result.output and "####" in result.output


def test_show_jsonl_file_clamps_to_its_size(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "2+2?", "answer": 4, "split": "test"}) + "\n")
    result = runner.invoke(app, ["tasks", "show", f"jsonl:{path}", "--split", "test", "--n", "5", "--json"])
    assert result.exit_code == 0, result.output
    assert [p["answer"] for p in json.loads(result.stdout)["problems"]] == ["4"]
    result = runner.invoke(app, ["tasks", "show", f"jsonl:{path}", "--split", "test", "--start", "3"])
    assert isinstance(result.exception, DatawallError) and "past the end" in str(result.exception)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["nope"], "unknown task 'nope'"),
        (["arith", "--task-args", "digits=99"], "digits=99"),
        (["arith", "--task-args", "colour=red"], "unknown setting 'colour'"),
        (["arith", "--split", "dev"], "--split"),
        (["arith", "--n", "0"], "--n"),
    ],
)
def test_show_bad_input_is_a_datawall_error(args, needle):
    result = runner.invoke(app, ["tasks", "show", *args])
    assert isinstance(result.exception, DatawallError), result.output
    assert needle in str(result.exception)


def test_console_script_exit_codes():
    ok = subprocess.run([str(DATAWALL), "tasks", "show", "arith", "--n", "2"], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("####") == 2
    bad = subprocess.run([str(DATAWALL), "tasks", "show", "arithmetic"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: unknown task 'arithmetic'")
    assert "Traceback" not in bad.stderr


def test_export_writes_a_benchmark_file_that_split_all_scores_whole(tmp_path):
    out = tmp_path / "bench" / "arith.jsonl"
    result = runner.invoke(app, ["tasks", "export", "arith", "--n", "5", "--start", "2", "--task-args", "digits=4",
                                 "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"task": "arith", "split": "test", "start": 2, "problems": 5, "out": str(out)}
    source = get_task("arith", digits=4)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["answer"] for r in rows] == [p.answer for p in source.problems("test", 5, 2)]
    bench = get_task(f"jsonl:{out}", split="all")
    assert bench.size("test") == 5 and bench.size("train") == 0
    for p, row in zip(bench.problems("test", 5), rows, strict=True):
        assert bench.verify(p, row["solution"]) == 1.0 and row["question"] in p.prompt
    assert not list(out.parent.glob(".*"))  # written atomically: no temporary left
    result = runner.invoke(app, ["tasks", "export", "arith", "--n", "0", "--out", str(out)])
    assert isinstance(result.exception, DatawallError) and "--n must be at least 1" in str(result.exception)
