"""`datawall runs list | show | gc` on a store holding a real finished run and an interrupted one."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datawall.commands.runs import app
from datawall.study.executors import get_executor
from datawall.study.jobs import Job
from datawall.study.store import RunStore, job_record

DATAWALL = str(Path(sys.executable).parent / "datawall")


def tiny(seed: int) -> Job:
    return Job("pretrain", {"data": {"task": "arith", "task_args": {"digits": "2"}, "heldout_problems": 8},
                            "size": "100k", "model_overrides": {"n_layers": 1}, "eval_problems": 4,
                            "train": {"tokens": 1200, "batch_size": 8, "seq_len": 32, "seed": seed}})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A store with one finished pretraining run, used by the study 'demo'."""
    root = tmp_path_factory.mktemp("runs") / "store"
    job = tiny(0)
    get_executor("local", workers=0).run([job], RunStore(root), study="demo")
    return root, job


@pytest.fixture
def store(finished, tmp_path):
    """A copy of the finished store plus an interrupted run (job.json and a partial log, no DONE)."""
    root = tmp_path / "store"
    shutil.copytree(finished[0], root)
    s = RunStore(root)
    dead = tiny(1)
    s.dir_for(dead).mkdir(parents=True)
    (s.dir_for(dead) / "job.json").write_text(json.dumps(job_record(dead)))
    (s.dir_for(dead) / "metrics.jsonl").write_text(json.dumps({"step": 1, "tokens": 300}) + "\n")
    s.record(dead, "running", study="demo")
    return root, finished[1], dead


def cli(*args: str) -> dict:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_list_shows_status_what_and_metrics(store):
    root, done, dead = store
    out = cli("list", "--store", str(root), "--json")
    rows = {r["key"]: r for r in out["runs"]}
    assert rows[done.key]["status"] == "done" and rows[dead.key]["status"] == "interrupted"
    assert rows[done.key]["metrics"]["tokens"] >= 1200 and "eval_loss" in rows[done.key]["metrics"]
    assert rows[done.key]["studies"] == ["demo"] and rows[done.key]["config"] == done.config
    only = cli("list", "--store", str(root), "--status", "done", "--json")["runs"]
    assert [r["key"] for r in only] == [done.key]
    assert cli("list", "--store", str(root), "--study", "other", "--json")["runs"] == []
    assert len(cli("list", "--store", str(root), "--study", "demo", "--kind", "pretrain", "--json")["runs"]) == 2
    table = CliRunner().invoke(app, ["list", "--store", str(root)], env={"COLUMNS": "200"}).stdout
    assert done.key[:12] in table and "100k arith D=1.2k" in table and "1 done, 1 interrupted" in table


def test_show_by_prefix_gives_config_result_and_files(store):
    root, done, dead = store
    out = cli("show", done.key[:6], "--store", str(root), "--json")
    assert out["key"] == done.key and out["result"]["eval_loss"] == out["metrics"]["eval_loss"]
    assert {"DONE", "job.json", "result.json", "metrics.jsonl", "checkpoint/"} <= set(out["files"])
    partial = cli("show", dead.name, "--store", str(root), "--json")
    assert partial["status"] == "interrupted" and partial["result"] is None
    assert partial["progress"] == pytest.approx(300 / 1200)
    text = CliRunner().invoke(app, ["show", done.key, "--store", str(root)]).stdout
    assert f"pretrain-{done.key}" in text and '"eval_loss"' in text


def test_gc_dry_run_then_removes_the_interrupted_run(store):
    root, done, dead = store
    preview = cli("gc", "--store", str(root), "--dry-run", "--json")
    assert preview["removed_dirs"] == [dead.name] and preview["dry_run"]
    assert (root / "runs" / dead.name).exists()
    out = cli("gc", "--store", str(root), "--json")
    assert out["removed_dirs"] == [dead.name] and out["removed_rows"] == [dead.name]
    assert not (root / "runs" / dead.name).exists() and (root / "runs" / done.name / "DONE").exists()
    assert [r["key"] for r in cli("list", "--store", str(root), "--json")["runs"]] == [done.key]


def test_bad_references_are_one_line_errors(store, monkeypatch):
    root, *_ = store
    monkeypatch.setenv("DATAWALL_HOME", str(root))  # the default store
    proc = subprocess.run([DATAWALL, "runs", "show", "0000ffff"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no run '0000ffff'")
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([DATAWALL, "runs", "list", "--status", "bogus"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown status 'bogus'" in proc.stderr
    proc = subprocess.run([DATAWALL, "runs", "list", "--store", str(root / "nope")], capture_output=True, text=True)
    assert proc.returncode == 2 and "no run store at" in proc.stderr and not (root / "nope").exists()


def test_a_corrupt_index_is_moved_aside_rebuilt_and_said_so_on_one_line(store):
    root, done, dead = store
    (root / "index.sqlite").write_bytes(random.Random(0).randbytes(8192))
    proc = subprocess.run([DATAWALL, "runs", "list", "--store", str(root), "--json"], capture_output=True, text=True)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    [line] = proc.stderr.splitlines()
    [aside] = root.glob("index.sqlite.corrupt-*")
    assert line.startswith(f"warning: {root / 'index.sqlite'} was not a readable SQLite database (file is not a "
                           "database); moved it to index.sqlite.corrupt-") and aside.name in line
    status = {r["key"]: r["status"] for r in json.loads(proc.stdout)["runs"]}
    assert status == {done.key: "done", dead.key: "interrupted"}
    again = subprocess.run([DATAWALL, "runs", "show", done.key, "--store", str(root)], capture_output=True, text=True)
    assert again.returncode == 0 and again.stderr == "" and done.key in again.stdout  # rebuilt once, then healthy


def test_a_damaged_result_is_shown_as_failed_and_recomputed_by_the_next_run_that_needs_it(store):
    root, done, _ = store
    run_dir = root / "runs" / done.name
    before = json.loads((run_dir / "result.json").read_text())
    (run_dir / "result.json").write_text("{}")
    shown = cli("show", done.key, "--store", str(root), "--json")
    assert shown["status"] == "failed" and shown["result"] is None
    assert shown["error"] == "result.json has no 'params'; the next run that needs it recomputes it"
    warnings: list[str] = []
    s = RunStore(root)
    s.warn = warnings.append
    results = get_executor("local", workers=0).run([done], s, study="demo")  # resumes from the final checkpoint
    for key in ("params", "tokens", "flops", "accuracy"):
        assert results[done.key][key] == before[key], key
    assert results[done.key]["eval_loss"] == pytest.approx(before["eval_loss"], rel=1e-5)
    assert json.loads((run_dir / "result.json").read_text()) == results[done.key]
    [aside] = run_dir.glob("result.json.corrupt-*")
    assert aside.read_text() == "{}" and len(warnings) == 1 and "has no 'params'" in warnings[0]
    assert cli("show", done.key, "--store", str(root), "--json")["status"] == "done"


def test_list_names_a_model_shape_that_overrides_its_preset(tmp_path):
    s = RunStore(tmp_path / "store")
    job = Job("pretrain", {"data": {"corpus": "stdlib"}, "size": "1m", "train": {"tokens": 4096},
                           "model_overrides": {"dim": 48, "n_layers": 2, "n_heads": 1}})
    s.dir_for(job).mkdir(parents=True)
    (s.dir_for(job) / "job.json").write_text(json.dumps(job_record(job)))
    table = CliRunner().invoke(app, ["list", "--store", str(s.root)], env={"COLUMNS": "200"}).stdout
    assert "48x2 stdlib D=4.1k" in table
