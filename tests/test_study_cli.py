"""`datawall study`: init, errors, the dry-run plan, --json, reuse of a finished study, and the live view."""

from __future__ import annotations

import json
import re
import sys

import pytest
from study_tiny import run_study, tiny_study

from datawall.cli import main
from datawall.errors import DatawallError
from datawall.study.executors import Event
from datawall.study.plan import make_plan
from datawall.study.progress import StudyView
from datawall.study.spec import load_spec, parse_spec


def test_init_writes_a_loadable_spec_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "my.toml"
    result = run_study("init", str(path), "--preset", "standard")
    assert result.exit_code == 0, result.exception
    assert load_spec(path).name == "standard"
    result = run_study("init", str(path))
    assert isinstance(result.exception, DatawallError) and "exists; pass --force" in str(result.exception)
    assert run_study("init", str(path), "--force").exit_code == 0
    assert load_spec(path).name == "quick"


def test_needs_exactly_one_spec_source(tmp_path):
    for args in ([], ["--preset", "quick", str(tmp_path / "x.toml")]):
        result = run_study(*args)
        assert isinstance(result.exception, DatawallError)
        assert "give a study spec file or --preset" in str(result.exception)


def test_bad_spec_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "study.toml"
    bad.write_text("[levers.scale]\nsizes = ['100k', '7m']\n")
    monkeypatch.setattr(sys, "argv", ["datawall", "study", str(bad)])
    with pytest.raises(SystemExit) as e:
        main()  # the console script's entry point: expected mistakes become one line and exit code 2
    assert e.value.code == 2
    out = capsys.readouterr()
    assert out.err.strip() == ("error: study.toml: levers.scale.sizes.1: unknown model size '7m'; "
                               "sizes: 100k, 300k, 1m, 5m, 25m")
    assert out.out == ""


def test_dry_run_lists_the_plan(tmp_path):
    result = run_study("--preset", "quick", "--dry-run", "--json")
    assert result.exit_code == 0, result.exception
    plan = json.loads(result.stdout)
    assert plan["study"] == "quick" and plan["train_flops"] > 0
    kinds = [r["kind"] for r in plan["runs"]]
    from datawall.study.spec import load_preset

    spec = load_preset("quick")
    seeds = len(spec.world.seeds)
    # per seed: a think run, a synth run, an rl run on the baseline checkpoint, a prefer run per noise, a synth-compare
    # per student; the rest trains models: the baseline, scale, repetition and one student per S
    assert kinds.count("think") == kinds.count("synth") == kinds.count("rl") == seeds
    assert kinds.count("prefer") == seeds * len(spec.levers.preference.noise)
    students = seeds * len(spec.levers.synthetic.examples)
    assert kinds.count("synth-compare") == students
    sizes, epochs = spec.levers.scale.sizes, spec.levers.repetition.epochs
    assert kinds.count("pretrain") == seeds * (len(sizes) + len(epochs) - 1) + students  # the baseline is in both
    think = next(r for r in plan["runs"] if r["kind"] == "think")
    assert think["deps"][0] in {r["key"] for r in plan["runs"] if r["kind"] == "pretrain"}
    assert think["lever"] == "test_time" and think["est_flops"] > 0
    assert plan["flops"] == pytest.approx(sum(r["est_flops"] for r in plan["runs"]))
    assert plan["flops"] == pytest.approx(sum(plan["levers"].values())) and plan["flops"] > plan["train_flops"]


def test_dry_run_of_a_gpu_study_needs_no_gpu():
    result = run_study("--preset", "gpu", "--dry-run", "--json")
    assert result.exit_code == 0, result.exception
    assert json.loads(result.stdout)["study"] == "gpu"


def test_a_billion_samples_per_query_is_refused_with_one_line(tmp_path):
    from datawall.study.spec import preset_text

    path = tmp_path / "huge.toml"
    path.write_text(preset_text("quick").replace("n = [1, 2, 4, 8, 16]", "n = [1000000000]"))
    result = run_study(str(path), "--dry-run")
    assert isinstance(result.exception, DatawallError)
    assert re.match(r"budget.max_flops: the plan needs ~\d\.\d+e\+18 FLOPs", str(result.exception))
    assert "levers.test_time alone needs" in str(result.exception)


def test_rerun_reuses_every_run_and_gives_the_same_report(tmp_path_factory, tmp_path):
    root, first = tiny_study(tmp_path_factory)
    result = run_study(str(root / "tiny.toml"), "--store", str(root / "store"), "--out", str(tmp_path / "again"),
                       "--json")
    assert result.exit_code == 0, (result.stderr, result.exception)
    again = json.loads(result.stdout)
    assert again["recommendation"] == first["recommendation"]
    assert again["levers"] == first["levers"]
    assert (tmp_path / "again" / "report.html").exists()


def test_live_view_counts_and_eta():
    spec = parse_spec({"world": {"task": "arith", "task_args": {"digits": 1, "ops": "add,sub"}, "unique_examples": 100,
                                 "eval_problems": 10}, "train": {"seq_len": 32},
                       "levers": {"scale": {"sizes": ["100k"]}, "repetition": {"epochs": [1]}}}, "s.toml")
    plan = make_plan(spec)
    keys = [j.key for j in plan.jobs]
    view = StudyView(plan, disable=True)
    for k in keys:
        view(Event(k, plan.job(k).kind, "queued"))
    assert view.counts()["queued"] == len(keys) and view.eta() is None
    view(Event(keys[0], "pretrain", "reused", {}))
    view(Event(keys[1], "pretrain", "running", progress=0.5))
    c = view.counts()
    assert (c["reused"], c["running"], c["queued"]) == (1, 1, len(keys) - 2)
    view.started -= 10  # ten seconds for half of one run
    assert view.eta() == pytest.approx(10 * (sum(plan.est_flops[k] for k in keys[1:]) /
                                             (0.5 * plan.est_flops[keys[1]]) - 1), rel=1e-3)
    view(Event(keys[1], "pretrain", "done", {}, progress=1.0))
    for k in keys[2:]:
        view(Event(k, plan.job(k).kind, "done", {}))
    assert "finished" in view.line() and f"{len(keys) - 1} done" in view.line()


def test_a_damaged_run_is_recomputed_and_an_error_starts_on_its_own_line(tmp_path_factory, tmp_path, monkeypatch,
                                                                         capsys):
    """A run's result.json holding [] is moved aside and recomputed; here its config.json is damaged too, so the
    recomputation fails, and the error line that follows the live view must not be glued to its last frame."""
    import shutil

    root, _ = tiny_study(tmp_path_factory)
    store = tmp_path / "store"
    shutil.copytree(root / "store", store)
    run = sorted((store / "runs").glob("pretrain-*"))[0]
    (run / "result.json").write_text("[]")
    (run / "config.json").write_text("{")
    monkeypatch.setattr(sys, "argv", ["datawall", "study", str(root / "tiny.toml"), "--store", str(store),
                                      "--out", str(tmp_path / "out"), "--workers", "0"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert [x for x in lines if "warning:" in x] == [x for x in lines if x.startswith(f"warning: {run}/result.json "
                                                                                      "holds an array")]
    assert len([x for x in lines if "warning:" in x]) == 1
    errors = [x for x in lines if "error:" in x]
    assert len(errors) == 1 and errors[0].startswith(f"error: run {run.name} failed: {run}/config.json: not valid JSON")
    assert list(run.glob("result.json.corrupt-*")) and not (run / "DONE").exists()
