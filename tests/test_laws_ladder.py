"""`datawall laws ladder`: a tiny IsoFLOP grid end to end, re-runs that skip or resume, and clear errors."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datawall.cli import app
from datawall.laws.io import read_points
from datawall.study.ladder import LadderSpec, _check_data, ladder_runs, ladder_spec, pick_sizes
from datawall.study.ladder_report import budget_optima

DATAWALL = str(Path(sys.executable).parent / "datawall")
runner = CliRunner()
WORDS = ("def return self value import class for in if else print data range list dict None True x y total "
         "while break yield lambda with open read write path name").split()
# tiny models and budgets: 2 budgets x 3 sizes, ~5k to ~60k tokens each, and a 4k-token series repeated 1-4x
TINY = {"seq_len": 32, "vocab_size": 300, "heldout_tokens": 1024, "min_dim": 16, "max_dim": 48,
        "tokens_per_param": 2, "batch_size": 4, "repeat_tokens": 4000, "epochs": [1, 2, 4]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """~100 kB of seeded pseudo-code: enough for a 1k-token held-out set and a ~40k-token training pool."""
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) + (":" if rng.random() < 0.3 else "")
             for _ in range(3000)]
    path = tmp_path_factory.mktemp("corpus") / "code.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def spec_file(tmp_path: Path, **extra) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(TINY | extra))
    return path


def ladder(*args: str) -> dict:
    result = runner.invoke(app, ["laws", "ladder", *args, "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny(corpus, tmp_path_factory):
    """A finished tiny ladder: (out dir, its --json summary, the CLI args that made it)."""
    tmp = tmp_path_factory.mktemp("ladder")
    args = ["--corpus", str(corpus), "--spec", str(spec_file(tmp)), "--budgets", "2e8,6e8", "--sizes", "3",
            "--out", str(tmp / "out"), "--workers", "1"]
    return tmp / "out", ladder(*args), args


def test_tiny_ladder_writes_csv_figures_and_report(tiny, corpus):
    out, summary, _ = tiny
    rows = read_csv(out / "ladder.csv")
    spec = ladder_spec("quick", corpus=str(corpus), budgets=[2e8, 6e8], sizes=3, **TINY)
    assert [r["name"] for r in rows] == [r.name for r in ladder_runs(spec, *_check_data(spec))]
    assert [r["series"] for r in rows] == ["isoflop"] * 6 + ["epochs"] * 3
    assert summary["runs"] == 9 and summary["computed"] == 9
    for col in ("name", "params", "params_non_embedding", "tokens", "unique_tokens", "epochs", "flops",
                "eval_loss", "wall_seconds"):
        assert all(r[col] != "" for r in rows), col
    for r in rows[:6]:  # every run of a budget costs the budget, to within one optimizer step; no repetition
        step_flops = float(r["flops"]) / float(r["tokens"]) * 4 * 32
        assert abs(float(r["flops"]) - float(r["budget"])) <= step_flops / 2 + 1
        assert float(r["epochs"]) <= 1.0 and 0 < float(r["eval_loss"]) < 10
    assert [round(float(r["epochs"])) for r in rows[6:]] == [1, 2, 4]
    assert all(int(r["unique_tokens"]) == 4000 for r in rows[6:])
    assert len({r["params"] for r in rows[6:]}) == 1
    assert all((out / r["run_dir"] / "DONE").exists() for r in rows)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 1 and "IsoFLOP" in html
    assert Path(summary["files"]["isoflop"]).stat().st_size > 1000
    assert [o["compute"] for o in summary["optima"]] == [2e8, 6e8]
    assert set(summary["fits"]) == {"chinchilla", "data_constrained"}
    for form in ("chinchilla", "data_constrained"):  # fitted, or a note says why not
        assert summary["fits"][form] is not None or any(n.startswith(form.split("_")[0].capitalize())
                                                        for n in summary["notes"])
    assert isinstance(summary["interior_minimum"], bool) and summary["files"]["csv"] == str(out / "ladder.csv")
    if summary["fits"]["chinchilla"] is not None:  # the saved law works wherever a law is asked for
        pred = runner.invoke(app, ["laws", "predict", "--law", summary["files"]["law_chinchilla"], "--params", "20k",
                                   "--tokens", "100k", "--json"])
        assert pred.exit_code == 0 and json.loads(pred.stdout)["loss"] > 0
    # ladder.csv is a valid input of `laws fit`: its columns are found by name
    pts = read_points(out / "ladder.csv")
    assert len(pts) == 9 and pts.columns == {"N": "params", "L": "eval_loss", "D": "tokens", "U": "unique_tokens"}


def test_rerun_recomputes_nothing(tiny):
    out, summary, args = tiny
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*") if p.is_file()}
    before = (out / "ladder.csv").read_text()
    again = ladder(*args)
    assert again["computed"] == 0 and again["reused"] == 9
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert (out / "ladder.csv").read_text() == before
    assert again["optima"] == summary["optima"]


def test_a_run_that_lost_its_result_is_completed_by_a_rerun(tiny):
    out, _, args = tiny
    rows = {r["name"]: r for r in read_csv(out / "ladder.csv")}
    victim = sorted(rows)[2]
    (out / "runs" / victim / "DONE").unlink()
    (out / "runs" / victim / "result.json").unlink()
    again = ladder(*args)
    assert again["computed"] == 1 and again["reused"] == 8
    assert (out / "runs" / victim / "DONE").exists()
    redone = {r["name"]: r for r in read_csv(out / "ladder.csv")}[victim]
    # resumed from its final checkpoint: same weights, so the same tokens and loss
    assert redone["tokens"] == rows[victim]["tokens"]
    assert float(redone["eval_loss"]) == pytest.approx(float(rows[victim]["eval_loss"]), rel=1e-5)


def test_capped_ladder_repeats_data_and_fits_or_explains_the_repetition_form(corpus, tmp_path):
    out = tmp_path / "out"
    s = ladder("--corpus", str(corpus), "--spec", str(spec_file(tmp_path)), "--budgets",
               "2e8,6e8", "--sizes", "3", "--unique-tokens", "6k", "--out", str(out), "--workers", "1")
    rows = read_csv(out / "ladder.csv")
    assert [r["series"] for r in rows].count("epochs") == 3 and s["runs"] == 9
    assert all(int(r["unique_tokens"]) == 6000 for r in rows)
    epochs = sorted(float(r["epochs"]) for r in rows if r["series"] == "epochs")
    assert epochs == pytest.approx([1, 2, 4], rel=0.06)  # the stream counts seq_len of every seq_len + 1 tokens
    assert any(float(r["epochs"]) > 1.5 for r in rows if r["series"] == "isoflop")
    dc = s["fits"]["data_constrained"]
    if dc is None:  # too few single-epoch runs for stage 1: said so, not crashed
        assert any("Data-constrained fit not made" in n for n in s["notes"])
    else:
        assert dc["R_D_star"] > 0 and "epochs" in s["files"]


def test_interrupted_ladder_keeps_finished_runs_and_a_rerun_continues(corpus, tmp_path):
    """Ctrl-C (SIGINT to the process group) during a 2-worker ladder, then the same command again."""
    out = tmp_path / "out"
    cmd = [DATAWALL, "laws", "ladder", "--corpus", str(corpus), "--spec", str(spec_file(tmp_path, repeat_tokens=None)),
           "--budgets", "1e9,3e9", "--sizes", "3", "--out", str(out), "--workers", "2", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        done = list(out.glob("runs/*/DONE"))
        running = [d for d in out.glob("runs/*") if (d / "checkpoint").is_dir() and not (d / "DONE").exists()]
        if done and running:
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.fail(f"ladder finished before it could be interrupted (exit {proc.returncode}): {proc.stderr.read()}")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command again" in err and "Traceback" not in err
    finished = {d.parent.name: (d.parent / "metrics.jsonl").stat().st_mtime_ns for d in out.glob("runs/*/DONE")}
    assert finished and len(finished) < 6
    # unfinished runs kept their progress: a checkpoint part-way through and the log up to it (a run that
    # had only just started when the signal came may have nothing to keep yet)
    partial = {}
    for d in out.glob("runs/*"):
        if not (d / "DONE").exists() and (d / "checkpoint").is_dir():
            step = json.loads((d / "checkpoint" / "datawall.json").read_text())["step"]
            if step > 0 and (d / "metrics.jsonl").exists():  # a run may not have logged a step yet
                partial[d.name] = (d / "metrics.jsonl").read_text().splitlines()[0]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    s = json.loads(again.stdout)
    assert s["reused"] == len(finished) and s["computed"] == 6 - len(finished)
    assert {n: (out / "runs" / n / "metrics.jsonl").stat().st_mtime_ns for n in finished} == finished
    assert len(read_csv(out / "ladder.csv")) == 6
    for name, first_line in partial.items():  # resumed, not restarted (wall_seconds would differ)
        assert (out / "runs" / name / "metrics.jsonl").read_text().splitlines()[0] == first_line


@pytest.mark.parametrize("args, needle", [
    (["--preset", "huge"], "unknown ladder preset 'huge'"),
    (["--unique-tokens", "50M"], "cannot take"),
    (["--budgets", "1e9,lots"], "--budgets"),
])
def test_bad_input_gets_one_clear_line(corpus, tmp_path, args, needle):
    proc = subprocess.run([DATAWALL, "laws", "ladder", "--corpus", str(corpus), "--spec", str(spec_file(tmp_path)),
                           "--out", str(tmp_path / "out"), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and needle in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_sizes_bracket_the_guess_and_runs_never_repeat_data_without_a_cap():
    spec = LadderSpec(budgets=[5e11], sizes=5, span=4.0)
    runs = ladder_runs(spec, vocab_size=512, pool_tokens=2_000_000)
    assert len(runs) == 5 and len({r.name for r in runs}) == 5
    assert all(r.spec.train.tokens <= 2_000_000 for r in runs)
    params = [r.shape.params for r in runs]
    assert params == sorted(params) and params[-1] / params[0] > 4
    shapes = [r.shape for r in ladder_runs(LadderSpec(budgets=[1e12]), vocab_size=512)]
    assert pick_sizes(shapes, 1e5, 3, 2.0) == pick_sizes(shapes, 1e5, 3, 2.0)  # deterministic


def test_budget_optima_finds_interior_minima_and_parabola_vertices():
    def row(C, N, L):
        return {"series": "isoflop", "budget": C, "params": N, "tokens": C / (6 * N), "eval_loss": L, "name": f"{N}"}

    rows = [row(1e12, n, l) for n, l in ((1e4, 3.5), (3e4, 3.2), (1e5, 3.3))]
    rows += [row(1e13, n, l) for n, l in ((1e4, 3.0), (3e4, 3.1), (1e5, 3.2))]
    interior, edge = budget_optima(rows)
    assert interior["best_run"]["interior"] and 1e4 < interior["parabola"]["params"] < 1e5
    assert not edge["best_run"]["interior"] and edge["parabola"] is None
