"""`datawall laws fit | predict | plan` through the CLI: JSON contracts, reports, and clear errors for bad CSVs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from datawall.cli import app
from datawall.errors import DatawallError
from datawall.laws import ChinchillaLaw

TRUE = ChinchillaLaw(E=1.8, A=450.0, B=2000.0, alpha=0.34, beta=0.36)
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["laws", *args])


def ok_json(*args: str) -> dict:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)  # exactly one JSON object on stdout


@pytest.fixture(scope="module")
def runs_csv(tmp_path_factory) -> Path:
    """30 synthetic runs from a known law with 0.5% multiplicative noise; counts written as '125M' etc."""
    rng = np.random.default_rng(0)
    rows = ["params,tokens,loss,unique_tokens"]
    for n in (1e7, 3e7, 1e8, 3e8, 1e9):
        for d in (2e8, 1e9, 5e9, 2e10, 1e11, 4e11):
            loss = float(TRUE.predict(n, d)) * float(np.exp(rng.normal(0, 0.005)))
            rows.append(f"{n / 1e6:g}M,{d:.4g},{loss:.6f},1e12")
    path = tmp_path_factory.mktemp("laws") / "runs.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_fit_json_has_the_contract_keys(runs_csv):
    out = ok_json("fit", str(runs_csv), "--compute", "1e21", "--bootstrap", "8", "--seed", "3")
    for k in ("E", "A", "B", "alpha", "beta", "intervals", "objective", "points", "optimal"):
        assert k in out, k
    assert out["points"] == 30 and set(out["intervals"]) == {"E", "A", "B", "alpha", "beta"}
    assert all(len(v) == 2 and v[0] <= v[1] for v in out["intervals"].values())
    assert set(out["optimal"]) >= {"compute", "params", "tokens", "tokens_per_param"}
    assert 6 * out["optimal"]["params"] * out["optimal"]["tokens"] == pytest.approx(1e21)
    assert out["E"] == pytest.approx(TRUE.E, rel=0.05) and out["alpha"] == pytest.approx(TRUE.alpha, rel=0.1)
    again = ok_json("fit", str(runs_csv), "--compute", "1e21", "--bootstrap", "8", "--seed", "3")
    assert again["intervals"] == out["intervals"]  # seeded


def test_fit_writes_a_self_contained_report_and_a_reusable_law(runs_csv, tmp_path):
    out_dir = tmp_path / "fit"
    result = invoke("fit", str(runs_csv), "--bootstrap", "5", "--out", str(out_dir))
    assert result.exit_code == 0, result.output
    assert "alpha" in result.stdout and "bootstrap" in result.stdout
    page = (out_dir / "report.html").read_text()
    assert "data:image/png;base64," in page and "<img" in page and "src='http" not in page
    assert (out_dir / "fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out_dir / "fit.json").read_text())
    assert saved["form"] == "chinchilla" and len(saved["samples"]) == 5
    pred = ok_json("predict", "--law", str(out_dir / "fit.json"), "--params", "1B", "--tokens", "20B")
    by_hand = saved["E"] + saved["A"] / 1e9 ** saved["alpha"] + saved["B"] / 2e10 ** saved["beta"]
    assert pred["loss"] == pytest.approx(by_hand)
    lo, hi = pred["loss_interval"]
    assert lo <= pred["loss"] <= hi
    plan = ok_json("plan", "--compute", "1e21", "--unique-tokens", "5B", "--law", str(out_dir / "fit.json"))
    assert plan["optimal"]["loss_interval"] is not None


def test_predict_published_law(runs_csv):
    out = ok_json("predict", "--law", "datablations-muennighoff2023", "--params", "1e9", "--tokens", "100B",
                  "--unique-tokens", "10B")
    law_loss = 2.4376920100488912  # the README formula at these values (see test_laws_forms)
    assert out["loss"] == pytest.approx(law_loss, abs=1e-9) and out["loss_interval"] is None
    assert out["effective_tokens"] < 100e9
    human = invoke("predict", "--law", "chinchilla-hoffmann2022", "--params", "70B", "--tokens", "1.4T")
    assert human.exit_code == 0 and "chinchilla-hoffmann2022" in human.stdout


def test_plan_json():
    out = ok_json("plan", "--compute", "1e22", "--unique-tokens", "50B", "--inference-tokens", "1T")
    opt, inf = out["optimal"], out["inference_aware"]
    assert 6 * opt["params"] * opt["tokens"] == pytest.approx(1e22)
    assert opt["epochs"] == pytest.approx(opt["tokens"] / 50e9)
    assert inf["params"] < opt["params"] and inf["tokens"] > opt["tokens"]
    assert out["marginal"]["dloss_dlnC"] < 0 and out["marginal"]["dloss_dlnC_no_cap"] < 0
    human = invoke("plan", "--compute", "1e22", "--unique-tokens", "50B")
    assert human.exit_code == 0 and "inference-aware" in human.stdout


def test_fit_data_constrained_json(datablations_csv):
    out = ok_json("fit", str(datablations_csv), "--form", "data-constrained")
    assert out["form"] == "data-constrained" and out["points"] == 182
    assert out["R_D_star"] > 1 and "R_N_star" in out and set(out["intervals"]) >= {"R_D_star", "R_N_star"}


@pytest.mark.parametrize("cells,line,message", [
    (["1e8,1e9,3.1", "2e8,1e9,-2.9", "3e8,1e9,2.8"], 3, "must be positive and finite"),
    (["1e8,1e9,3.1", "2e8,1e9,2.9", "3e8,oops,2.8"], 4, "is not a number"),
    (["1e8,1e9,3.1", "2e8,1e9,inf"], 3, "must be positive and finite"),
])
def test_bad_rows_are_named_by_line(tmp_path, cells, line, message):
    path = tmp_path / "bad.csv"
    path.write_text("params,tokens,loss\n" + "\n".join(cells) + "\n")
    result = invoke("fit", str(path), "--json")
    assert isinstance(result.exception, DatawallError) and result.stdout == ""
    assert f"line {line}" in str(result.exception) and message in str(result.exception)


def test_missing_columns_and_too_few_points(tmp_path):
    path = tmp_path / "cols.csv"
    path.write_text("size,tokens,final\n1e8,1e9,3.0\n")
    result = invoke("fit", str(path))
    assert isinstance(result.exception, DatawallError)
    assert "parameters N" in str(result.exception) and "'size', 'tokens', 'final'" in str(result.exception)
    result = invoke("fit", str(path), "--n-col", "size", "--loss-col", "final")
    assert "1 points" in str(result.exception) and "5" in str(result.exception)
    result = invoke("fit", str(path), "--n-col", "size", "--loss-col", "nope")
    assert "no column 'nope'" in str(result.exception)


def test_console_script_prints_one_error_line_and_exits_2(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("params,tokens,loss\n1e8,1e9,3.1\n2e8,0,2.9\n")
    exe = Path(sys.executable).parent / "datawall"
    proc = subprocess.run([str(exe), "laws", "fit", str(path), "--json"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and "line 3" in proc.stderr and "Traceback" not in proc.stderr


def test_row_filters_and_column_flags(runs_csv):
    out = ok_json("fit", str(runs_csv), "--filter", "params>=100M", "--filter", "tokens<1e11")
    assert out["points"] == 3 * 4
    out = ok_json("fit", str(runs_csv), "--n-col", "params", "--d-col", "tokens", "--loss-col", "loss",
                  "--exclude-top-loss", "3")
    assert out["points"] == 27 and len(out["excluded_lines"]) == 3
    result = invoke("fit", str(runs_csv), "--filter", "params>>1")
    assert isinstance(result.exception, DatawallError) and "--filter" in str(result.exception)
    result = invoke("fit", str(runs_csv), "--d-col", "tokens", "--c-col", "tokens")
    assert "either --d-col or --c-col" in str(result.exception)


# --- bad CSVs, degenerate data, insane predict values (issue 17 item 7) --------------------------------


def _csv(tmp_path, text: str, name: str = "runs.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(*args: str) -> str:
    result = invoke(*args)
    assert isinstance(result.exception, DatawallError), (result.output, result.exception)
    assert result.stdout == "" and "\n" not in str(result.exception)
    return str(result.exception)


def test_a_duplicated_column_name_is_ambiguous(tmp_path, runs_csv):
    lines = runs_csv.read_text().splitlines()
    path = _csv(tmp_path, "\n".join(["params,tokens,loss,loss"] + [f"{r.rsplit(',', 1)[0]},2.0" for r in lines[1:]]))
    for extra in ([], ["--loss-col", "loss"]):
        message = _error("fit", str(path), *extra)
        assert "names column 'loss' 2 times (columns 3, 4)" in message and "ambiguous" in message


def test_two_columns_that_could_each_be_the_loss_must_be_chosen(tmp_path, runs_csv):
    lines = runs_csv.read_text().splitlines()
    path = _csv(tmp_path, "\n".join([lines[0] + ",val_loss"] + [r + ",9.9" for r in lines[1:]]))
    message = _error("fit", str(path))
    assert "columns 'loss' and 'val_loss' could each be the loss" in message and "--loss-col" in message
    out = ok_json("fit", str(path), "--loss-col", "loss")
    assert out["columns"]["L"] == "loss" and out["E"] == pytest.approx(TRUE.E, rel=0.05)


@pytest.mark.parametrize("rows,line,fields", [
    (["1e8,1e9,3.1", "2e8,1e9,2.9,7", "3e8,1e9,2.8"], 3, 4),  # an extra field
    (["1e8,1e9,3.1", "2e8,1e9,2.9", "3e8,2.8"], 4, 2),  # a missing one
    (["1e8,1e9,3.1", "", "2e8,1e9,2.9", "3e8,1e9,2.8,"], 5, 4),  # after a blank line: lines still counted
])
def test_rows_that_do_not_match_the_header_are_named(tmp_path, rows, line, fields):
    path = _csv(tmp_path, "params,tokens,loss\n" + "\n".join(rows) + "\n")
    message = _error("fit", str(path))
    assert f"line {line}: {fields} fields, but the header has 3 (params, tokens, loss)" in message


def test_identical_runs_are_refused_not_fitted(tmp_path):
    path = _csv(tmp_path, "params,tokens,loss\n" + "1e8,1e9,3.1\n" * 20)
    assert "every point has N = 1e+08; with no spread in N" in _error("fit", str(path))


def test_a_non_positive_exponent_is_flagged_in_the_notes(tmp_path):
    rows = [f"{n:g},{d:g},{2.0 + 1e-3 * n**0.1 + 300.0 / d**0.3:.6f}" for n in (1e8, 2e8, 4e8)
            for d in (1e9, 3e9, 1e10, 3e10)]
    path = _csv(tmp_path, "params,tokens,loss\n" + "\n".join(rows) + "\n")
    out = ok_json("fit", str(path))
    assert out["alpha"] <= 0 and any(n.startswith("alpha = ") and "is not positive" in n for n in out["notes"])
    human = invoke("fit", str(path))
    assert human.exit_code == 0 and "note: alpha = " in human.stdout


def test_fit_json_carries_notes_and_screening(runs_csv):
    out = ok_json("fit", str(runs_csv))
    assert out["notes"] == [] and out["screen_points"] is None


def _strict_json(text: str) -> dict:
    def refuse(name):
        raise AssertionError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("params", ["0.4", "1e-300", "1e308", "nan", "inf", "-3", "0", "1e31"])
def test_predict_refuses_counts_outside_the_sane_range(params):
    message = _error("predict", "--law", "chinchilla-besiroglu2024", "--params", params, "--tokens", "20B", "--json")
    assert message.startswith("--params: must be a finite number from 1 to 1e+30")
    message = _error("predict", "--law", "datablations-muennighoff2023", "--params", "1B", "--tokens", "20B",
                     "--unique-tokens", params)
    assert message.startswith("--unique-tokens: must be a finite number")


def test_predict_at_the_edges_of_the_range_is_finite_valid_json():
    for law in ("chinchilla-besiroglu2024", "datablations-muennighoff2023"):
        for n, d, u in (("1", "1", "1"), ("1e30", "1e30", "1e30"), ("1e30", "1", "1"), ("1", "1e30", "1")):
            result = invoke("predict", "--law", law, "--params", n, "--tokens", d, "--unique-tokens", u, "--json")
            assert result.exit_code == 0, (result.output, result.exception)
            out = _strict_json(result.stdout)
            assert np.isfinite(out["loss"]) and out["params"] == int(float(n))


def test_predict_with_a_law_that_overflows_is_one_line_not_infinity(tmp_path):
    law = tmp_path / "odd.json"
    law.write_text(json.dumps({"form": "chinchilla", "E": 1.0, "A": 1.0, "B": 1.0, "alpha": -40.0, "beta": 0.3}))
    message = _error("predict", "--law", str(law), "--params", "1e12", "--tokens", "1e9", "--json")
    assert "no finite loss at N=1e+12, D=1e+09" in message


def test_plan_refuses_insane_budgets():
    assert _error("plan", "--compute", "0.5", "--unique-tokens", "1e9").startswith("--compute: must be a finite")
    assert _error("plan", "--compute", "1e61", "--unique-tokens", "1e9").startswith("--compute: must be a finite")
    assert _error("plan", "--compute", "1e21", "--unique-tokens", "nan").startswith("--unique-tokens: must be")
    out = _strict_json(invoke("plan", "--compute", "1e60", "--unique-tokens", "1", "--json").stdout)
    assert np.isfinite(out["optimal"]["loss"])


def test_console_script_predict_of_a_fraction_of_a_parameter_exits_2(tmp_path):
    exe = Path(sys.executable).parent / "datawall"
    proc = subprocess.run([str(exe), "laws", "predict", "--law", "chinchilla-besiroglu2024", "--params", "0.4",
                           "--tokens", "20B", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: --params: ") and "Traceback" not in proc.stderr


def test_a_large_csv_reports_progress_on_stderr_and_one_object_on_stdout(tmp_path):
    rng = np.random.default_rng(0)
    n = 3000
    N, D = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n)), np.exp(rng.uniform(np.log(1e9), np.log(1e12), n))
    L = TRUE.predict(N, D) * np.exp(rng.normal(0, 0.005, n))
    rows = "".join(f"{a:.6g},{b:.6g},{c:.6f}\n" for a, b, c in zip(N, D, L, strict=True))
    path = _csv(tmp_path, "params,tokens,loss\n" + rows)
    exe = Path(sys.executable).parent / "datawall"
    proc = subprocess.run([str(exe), "laws", "fit", str(path), "--json"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = _strict_json(proc.stdout)
    assert out["points"] == n and out["screen_points"] == 256 and out["alpha"] == pytest.approx(TRUE.alpha, rel=0.05)
    assert f"read {n:,} points" in proc.stderr and "screening 5,400 starts on a sample of 256" in proc.stderr
    assert f"on all {n:,} points" in proc.stderr and any("screened on a seeded sample" in x for x in out["notes"])


def test_every_laws_json_output_is_strict_json(capsys):
    from datawall.commands.laws import _print_json

    _print_json({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf"), "e": 2}})
    assert _strict_json(capsys.readouterr().out) == {"a": None, "b": [1.0, None], "c": {"d": None, "e": 2}}
