"""`datawall laws ladder`: a tiny IsoFLOP grid end to end through the run store, re-runs that reuse or resume,
runs shared with studies, the fits on hand-built runs, and clear errors."""

from __future__ import annotations

import csv
import json
import math
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
from datawall.laws.forms import ChinchillaLaw, DataConstrainedLaw
from datawall.laws.io import read_points
from datawall.study import ladder_report
from datawall.study.executors import get_executor
from datawall.study.ladder import (
    CSV_COLUMNS,
    LadderResult,
    LadderSpec,
    _check_data,
    ladder_runs,
    ladder_spec,
    pick_sizes,
)
from datawall.study.ladder_report import budget_optima, write_report
from datawall.study.store import RunStore

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


def planned(corpus: Path, **fields):
    """The runs the CLI plans for the tiny spec plus these fields (as ladder_runs sees them)."""
    spec = ladder_spec("quick", corpus=str(corpus), **(TINY | fields))
    return ladder_runs(spec, *_check_data(spec))


@pytest.fixture(scope="module")
def tiny(corpus, tmp_path_factory):
    """A finished tiny ladder: (out dir, its --json summary, the CLI args that made it, its store)."""
    tmp = tmp_path_factory.mktemp("ladder")
    args = ["--corpus", str(corpus), "--spec", str(spec_file(tmp)), "--budgets", "2e8,6e8", "--sizes", "3",
            "--out", str(tmp / "out"), "--store", str(tmp / "store"), "--workers", "1"]
    return tmp / "out", ladder(*args), args, RunStore(tmp / "store")


def test_tiny_ladder_writes_csv_figures_and_report_and_keeps_runs_in_the_store(tiny, corpus):
    out, summary, _, store = tiny
    rows = read_csv(out / "ladder.csv")
    runs = planned(corpus, budgets=[2e8, 6e8], sizes=3)
    assert [r["name"] for r in rows] == [r.name for r in runs]
    assert [r["series"] for r in rows] == ["isoflop"] * 6 + ["epochs"] * 3
    assert summary["runs"] == 9 and summary["computed"] == 9 and summary["reused"] == 0
    assert summary["store"] == str(store.root)
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
    # each run is the store's ordinary pretrain job, and OUT/runs/NAME links to its directory there
    for r, run in zip(rows, runs, strict=True):
        link = out / "runs" / r["name"]
        assert r["run_dir"] == str(store.dir_for(run.job)) and store.is_done(run.job)
        assert link.is_symlink() and link.resolve() == store.dir_for(run.job).resolve()
        assert (link / "DONE").exists() and (link / "job.json").exists()
    listed = store.list(study="ladder:out")
    assert sorted(x["key"] for x in listed) == sorted(r.job.key for r in runs)
    assert {x["kind"] for x in listed} == {"pretrain"} and {x["status"] for x in listed} == {"done"}
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 1 and "IsoFLOP" in html and str(store.root) in html
    assert Path(summary["files"]["isoflop"]).stat().st_size > 1000
    assert [o["compute"] for o in summary["optima"]] == [2e8, 6e8]
    assert set(summary["fits"]) == {"chinchilla", "data_constrained"}  # what is fitted: tests on hand-built runs
    assert isinstance(summary["interior_minimum"], bool) and summary["files"]["csv"] == str(out / "ladder.csv")
    # ladder.csv is a valid input of `laws fit`: its columns are found by name
    pts = read_points(out / "ladder.csv")
    assert len(pts) == 9 and pts.columns == {"N": "params", "L": "eval_loss", "D": "tokens", "U": "unique_tokens"}


def _store_files(store: RunStore) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in store.runs_dir.rglob("*") if p.is_file()}


def test_rerun_recomputes_nothing_and_a_study_reuses_the_ladders_runs(tiny, corpus):
    out, summary, args, store = tiny
    files = _store_files(store)
    before = (out / "ladder.csv").read_text()
    again = ladder(*args)
    assert again["computed"] == 0 and again["reused"] == 9
    assert _store_files(store) == files  # no run directory was touched
    assert (out / "ladder.csv").read_text() == before
    assert again["optima"] == summary["optima"]
    # a study needing one of the ladder's runs builds the same job and finds it finished
    jobs = [r.job for r in planned(corpus, budgets=[2e8, 6e8], sizes=3)]
    events = []
    results = get_executor("local", workers=0).run(jobs, store, on_event=events.append, study="mine")
    assert {e.status for e in events} == {"reused"} and len(events) == 9
    for job, row in zip(jobs, read_csv(out / "ladder.csv"), strict=True):
        assert results[job.key]["eval_loss"] == pytest.approx(float(row["eval_loss"]), rel=1e-5)
    assert _store_files(store) == files
    assert {x["key"] for x in store.list(study="mine")} == {j.key for j in jobs}


def test_a_lost_result_is_recomputed_and_an_old_ladders_run_dir_moves_into_the_store(tiny, corpus):
    out, _, args, store = tiny
    rows = {r["name"]: r for r in read_csv(out / "ladder.csv")}
    victim, old = sorted(rows)[2], sorted(rows)[4]
    (out / "runs" / victim / "DONE").unlink()
    (out / "runs" / victim / "result.json").unlink()
    # a ladder from before the run store kept the run directory itself in OUT/runs/NAME
    moved = Path(rows[old]["run_dir"])
    (out / "runs" / old).unlink()
    moved.rename(out / "runs" / old)
    (out / "runs" / old / "job.json").unlink()
    again = ladder(*args)
    assert again["computed"] == 1 and again["reused"] == 8
    assert (out / "runs" / victim / "DONE").exists()
    redone = {r["name"]: r for r in read_csv(out / "ladder.csv")}
    # resumed from its final checkpoint: same weights, so the same tokens and loss
    assert redone[victim]["tokens"] == rows[victim]["tokens"]
    assert float(redone[victim]["eval_loss"]) == pytest.approx(float(rows[victim]["eval_loss"]), rel=1e-5)
    assert (out / "runs" / old).is_symlink() and (moved / "DONE").exists() and (moved / "job.json").exists()
    assert redone[old] == rows[old]  # read back as it was


def test_capped_ladder_repeats_data_and_notes_why_the_repetition_form_is_not_fitted(corpus, tmp_path):
    """U = 3k: 4 runs see each token at most once, so stage 1 (5 single-epoch runs) certainly cannot be fitted.

    One of its runs was computed before by a study (the same job through the same store): the ladder reuses it.
    """
    store = RunStore(tmp_path / "store")
    runs = planned(corpus, budgets=[2e8, 6e8], sizes=3, unique_tokens=3000)
    shared = runs[0].job
    get_executor("local", workers=0).run([shared], store, study="earlier")
    files = _store_files(store)
    out = tmp_path / "out"
    s = ladder("--corpus", str(corpus), "--spec", str(spec_file(tmp_path)), "--budgets", "2e8,6e8", "--sizes", "3",
               "--unique-tokens", "3k", "--out", str(out), "--store", str(store.root), "--workers", "0")
    assert s["runs"] == 9 and s["reused"] == 1 and s["computed"] == 8
    assert {p: m for p, m in _store_files(store).items() if p in files} == files
    assert (out / "runs" / runs[0].name).resolve() == store.dir_for(shared).resolve()
    assert {x["key"] for x in store.list(study="earlier")} <= {x["key"] for x in store.list(study="ladder:out")}
    rows = read_csv(out / "ladder.csv")
    assert [r["series"] for r in rows].count("epochs") == 3
    assert all(int(r["unique_tokens"]) == 3000 for r in rows)
    epochs = sorted(float(r["epochs"]) for r in rows if r["series"] == "epochs")
    assert epochs == pytest.approx([1, 2, 4], rel=0.06)  # the stream counts seq_len of every seq_len + 1 tokens
    assert any(float(r["epochs"]) > 1.5 for r in rows if r["series"] == "isoflop")
    fresh = sum(int(r["tokens"]) <= 3000 for r in rows)
    assert fresh == 4  # token counts are a function of the spec, not of training: fewer than stage 1 needs
    assert s["fits"]["data_constrained"] is None
    assert f"Data-constrained fit not made: its stage 1 needs a Chinchilla fit on at least 5 single-epoch runs, " \
           f"and {fresh} runs see each token at most once." in s["notes"]


def _hand_built_rows(law: DataConstrainedLaw, noise: float = 0.003) -> list[dict]:
    """Ladder rows whose losses come from a known law (times a fixed wiggle): an IsoFLOP grid on fresh tokens
    and a repetition series at one size over U = 200k tokens."""
    rows, i = [], 0

    def row(name, series, budget, N, D, U, epochs):
        nonlocal i
        loss = float(law.predict(N, D, U)) * (1 + noise * math.sin(7 * i))
        i += 1
        rows.append({"name": name, "series": series, "budget": budget, "dim": 0, "n_layers": 0, "n_heads": 0,
                     "lr": 0.0, "params": N, "params_non_embedding": N, "tokens": D, "unique_tokens": U,
                     "epochs": epochs, "flops": 6 * N * D, "eval_loss": loss, "train_loss": loss,
                     "wall_seconds": 1.0, "run_dir": ""})

    for C in (1e12, 3e12, 1e13):
        for N in (2e4, 4e4, 8e4, 1.6e5, 3.2e5):
            row(f"c{C:g}_n{N:g}", "isoflop", C, N, C / (6 * N), 1e9, C / (6 * N) / 1e9)
    for e in (1, 2, 4, 8, 16, 32, 64):
        row(f"u200k_e{e}", "epochs", "", 5e4, e * 2e5, 2e5, e)
    return rows


def test_both_forms_are_fitted_on_runs_that_follow_a_known_law(tmp_path, monkeypatch):
    truth = DataConstrainedLaw.from_base(ChinchillaLaw(E=1.8, A=400.0, B=2000.0, alpha=0.45, beta=0.4), 8.0, 1e9)
    monkeypatch.setattr(ladder_report, "BOOTSTRAP", 8)  # the fits are the point here, not their intervals
    spec = LadderSpec(budgets=[1e12, 3e12, 1e13], repeat_tokens=200_000)
    s = write_report(LadderResult(spec, tmp_path, _hand_built_rows(truth)))
    ch, dc = s["fits"]["chinchilla"], s["fits"]["data_constrained"]
    assert ch["points"] == 15 and ch["alpha"] == pytest.approx(0.45, abs=0.05)
    assert ch["E"] == pytest.approx(1.8, abs=0.2)
    assert dc["points"] == 22 and dc["R_D_star"] == pytest.approx(8.0, rel=0.2) and dc["R_N_star"] == 1e9
    assert "Chinchilla form fitted on the 15 IsoFLOP runs that see each token at most once." in s["notes"]
    assert any(n.startswith("Data-constrained form: R_N* is not identified (all repeated runs have one model size)")
               for n in s["notes"])
    assert {"isoflop", "law", "epochs", "extrapolation", "law_chinchilla", "law_data_constrained"} <= set(s["files"])
    pred = runner.invoke(app, ["laws", "predict", "--law", s["files"]["law_data_constrained"], "--params", "50k",
                               "--tokens", "6.4M", "--unique-tokens", "200k", "--json"])
    assert pred.exit_code == 0, pred.output
    assert json.loads(pred.stdout)["loss"] == pytest.approx(float(truth.predict(5e4, 6.4e6, 2e5)), rel=0.02)
    assert [r["name"] for r in read_csv(tmp_path / "ladder.csv")] == [r["name"] for r in _hand_built_rows(truth)]
    assert list(read_csv(tmp_path / "ladder.csv")[0]) == list(CSV_COLUMNS)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupted_ladder_keeps_finished_runs_and_a_rerun_continues(corpus, tmp_path, how):
    """Ctrl-C (SIGINT to the process group) or `kill` (SIGTERM to the command alone) during a 2-worker ladder,
    then the same command again."""
    for attempt in range(3):  # on a loaded machine the last run may finish between the check and the signal: again
        out = tmp_path / f"out{attempt}"
        store = tmp_path / f"store{attempt}"
        cmd = [DATAWALL, "laws", "ladder", "--corpus", str(corpus),
               "--spec", str(spec_file(tmp_path, repeat_tokens=None)), "--budgets", "1e9", "--sizes", "3",
               "--out", str(out), "--store", str(store), "--workers", "2", "--json"]
        # as from a terminal: SIGINT at its default (a SIGINT ignored by this test process, as some libraries leave it
        # in a pytest worker, is inherited through exec and Python then never raises KeyboardInterrupt)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            done = list(out.glob("runs/*/DONE"))
            running = [d for d in out.glob("runs/*") if (d / "checkpoint").is_dir() and not (d / "DONE").exists()]
            if done and running:
                break
            time.sleep(0.05)
        if proc.poll() is not None:
            pytest.fail(f"ladder finished before it could be interrupted (exit {proc.returncode}): "
                        f"{proc.stderr.read()}")
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
        if not (proc.returncode == 0 and len(list(out.glob("runs/*/DONE"))) == 3):
            break  # the signal landed while a run was still going
    assert proc.returncode == 130 and "run the same command again" in err and "Traceback" not in err, err[-3000:]
    finished = {d.parent.name: (d.parent / "metrics.jsonl").stat().st_mtime_ns for d in out.glob("runs/*/DONE")}
    assert finished and len(finished) < 3  # one budget x three sizes
    # unfinished runs kept their progress: a checkpoint part-way through and the log up to it (a run that
    # had only just started when the signal came may have nothing to keep yet)
    partial = {}
    for d in out.glob("runs/*"):
        if not (d / "DONE").exists() and (d / "checkpoint").is_dir():
            step = json.loads((d / "checkpoint" / "datawall.json").read_text())["step"]
            if step > 0 and (d / "metrics.jsonl").exists():  # a run may not have logged a step yet
                partial[d.name] = (d / "metrics.jsonl").read_text().splitlines()[0]
    status = {x["key"]: x["status"] for x in RunStore(store).list()}
    assert "running" not in status.values() and list(status.values()).count("done") == len(finished)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    s = json.loads(again.stdout)
    assert s["reused"] == len(finished) and s["computed"] == 3 - len(finished)
    assert {n: (out / "runs" / n / "metrics.jsonl").stat().st_mtime_ns for n in finished} == finished
    assert len(read_csv(out / "ladder.csv")) == 3
    for name, first_line in partial.items():  # resumed, not restarted (wall_seconds would differ)
        assert (out / "runs" / name / "metrics.jsonl").read_text().splitlines()[0] == first_line


def test_dry_run_lists_the_runs_and_their_store_jobs_without_training(corpus, tmp_path):
    result = runner.invoke(app, ["laws", "ladder", "--corpus", str(corpus), "--spec", str(spec_file(tmp_path)),
                                 "--budgets", "2e8,6e8", "--sizes", "3", "--out", str(tmp_path / "out"),
                                 "--store", str(tmp_path / "store"), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    runs = planned(corpus, budgets=[2e8, 6e8], sizes=3)
    assert [line.split()[0] for line in lines] == [r.name for r in runs]
    assert [line.split()[-1] for line in lines] == [r.job.name for r in runs]
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()


@pytest.mark.parametrize("args, needle", [
    (["--preset", "huge"], "unknown ladder preset 'huge'"),
    (["--unique-tokens", "50M"], "cannot take"),
    (["--budgets", "1e9,lots"], "--budgets"),
    (["--executor", "slurm"], "unknown executor 'slurm'"),
    (["--workers", "-1"], "--workers must be >= 0"),
    (["--device", "tpu"], "--device"),
    (["--store", "FILE"], "cannot create it"),
])
def test_bad_input_gets_one_clear_line(corpus, tmp_path, args, needle):
    (tmp_path / "FILE").write_text("a file, not a store")
    args = [str(tmp_path / a) if a == "FILE" else a for a in args]
    proc = subprocess.run([DATAWALL, "laws", "ladder", "--corpus", str(corpus), "--spec", str(spec_file(tmp_path)),
                           "--out", str(tmp_path / "out"), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
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
