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

ANCHORS = Path(__file__).resolve().parents[1].parent / "shared" / "anchors"
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


@pytest.mark.skipif(not (ANCHORS / "datablations_runs.csv").exists(), reason=f"anchor data {ANCHORS} not found")
def test_fit_data_constrained_json():
    out = ok_json("fit", str(ANCHORS / "datablations_runs.csv"), "--form", "data-constrained")
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
