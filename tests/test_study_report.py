"""The study report on a tiny real study: three files, numbers that agree with each other, the recommendation
checked against summary.json's own numbers, and a self-contained report.html (checked in Chromium when present).
"""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import subprocess

import numpy as np
import pytest
from study_tiny import tiny_study
from summary_check import check_summary

from datawall.study.analysis import recommend


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study(tmp_path_factory)


def test_writes_three_files_and_json_matches_stdout(study):
    root, printed = study
    out = root / "out"
    for name in ("report.html", "summary.md", "summary.json"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "summary.json").read_text())
    assert saved == printed
    assert set(saved["levers"]) == {"scale", "repetition", "test_time"}
    md = (out / "summary.md").read_text()
    assert saved["recommendation"]["sentence"] in md
    assert "## Frontier" in md and "## Fitted laws" in md


def test_points_put_training_and_inference_on_one_axis(study):
    _, s = study
    q = s["queries"]
    assert q == 1e5
    for lever, pts in s["levers"].items():
        for p in pts:
            assert math.isclose(p["compute"], p["train_flops"] + p["inference_flops_per_query"] * q, rel_tol=1e-9)
            assert math.isclose(p["dollars"], p["train_dollars"] + p["dollars_per_query"] * q, rel_tol=1e-9)
            assert 0 <= p["ci_low"] <= p["accuracy"] <= p["ci_high"] <= 1
            if lever != "test_time":
                assert p["eval_loss"] > 0
    sizes = {p["size"]: p for p in s["levers"]["scale"]}
    assert sizes["1m"]["train_flops"] > 5 * sizes["100k"]["train_flops"]
    epochs = {p["epochs"]: p for p in s["levers"]["repetition"]}
    assert epochs[2.0]["train_flops"] > 1.5 * epochs[1.0]["train_flops"]
    greedy = next(p for p in s["levers"]["test_time"] if p["strategy"] == "greedy")
    assert math.isclose(greedy["compute"], s["baseline"]["compute"], rel_tol=1e-9)
    votes = sorted((p for p in s["levers"]["test_time"] if p["strategy"] == "majority"), key=lambda p: p["n"])
    assert [p["n"] for p in votes] == [1, 2, 4]
    assert votes[0]["compute"] < votes[1]["compute"] < votes[2]["compute"]
    assert all(p["oracle"] for p in s["levers"]["test_time"] if p["strategy"] == "pass@k")


def test_recommendation_agrees_with_the_numbers(study):
    _, s = study
    check_summary(s)
    rec, base = s["recommendation"], s["baseline"]
    steps = {lv: st for lv, st in s["steps"].items() if st is not None}
    assert steps, "every lever has a point costing more than the baseline"
    # each step is the best point of its lever, and its gain per FLOP is recomputable from the points
    for lever, st in steps.items():
        eligible = [p for p in s["levers"][lever] if p["gain_per_flop"] is not None]
        best = max(eligible, key=lambda p: p["gain_per_flop"])
        assert st["label"] == best["label"] and st["gain_per_flop"] == best["gain_per_flop"]
        assert not best["oracle"] and best["extra_compute"] > 0
        assert st["gain_per_flop_ci"][0] <= st["gain_per_flop"] <= st["gain_per_flop_ci"][1]
    ref = {"scale": base, "repetition": base,
           "test_time": next(p for p in s["levers"]["test_time"] if p["strategy"] == "greedy")}
    for lever, pts in s["levers"].items():
        for p in pts:
            if p["gain_per_flop"] is not None:
                gain = p["accuracy"] - ref[lever]["accuracy"]
                assert math.isclose(p["gain_per_flop"], gain / (p["compute"] - ref[lever]["compute"]), rel_tol=1e-9)
    top = max(steps, key=lambda lv: steps[lv]["gain_per_flop"])
    if steps[top]["gain_per_flop"] > 0:
        assert rec["lever"] == top
        assert rec["gain_per_flop"] == max(st["gain_per_flop"] for st in steps.values())
        assert steps[top]["label"] in rec["sentence"]
    else:
        assert rec["lever"] is None and "no lever raised" in rec["sentence"]
    assert f"{100 * base['accuracy']:.0f}% held-out" in rec["sentence"]


def test_frontier_rises_with_compute(study):
    _, s = study
    fr = s["frontier"]
    assert fr and all(a["compute"] <= b["compute"] and a["accuracy"] < b["accuracy"]
                      for a, b in zip(fr, fr[1:], strict=False))
    every = [s["baseline"], *(p for pts in s["levers"].values() for p in pts if not p["oracle"])]
    for p in every:  # nothing measured beats the frontier at its own compute
        reach = max(f["accuracy"] for f in fr if f["compute"] <= p["compute"])
        assert p["accuracy"] <= reach + 1e-12


def test_laws_are_fitted_or_say_why(study):
    _, s = study
    for lever, laws in s["laws"].items():
        law = laws["accuracy_vs_compute"]
        assert law["fit"] is not None or "too" in law["reason"], (lever, law)
    assert "need 4" in s["laws"]["scale"]["loss_vs_train_compute"]["reason"]  # 2 sizes: honest, no fit


def step(lever, g, lo, hi, extra=1e12):
    return {"label": f"step of {lever}", "gain": g * extra, "gain_ci": [lo * extra, hi * extra],
            "gain_per_flop": g, "gain_per_flop_ci": [lo, hi], "gain_per_dollar": g * 1e12,
            "gain_per_dollar_ci": [lo * 1e12, hi * 1e12], "extra_compute": extra, "extra_dollars": extra / 1e12,
            "compute": 3e12 + extra, "dollars": 3 + extra / 1e12}


BASE = {"compute": 3.1e13, "dollars": 3.0, "accuracy": 0.4, "size": "1m", "epochs": 2.0}


def test_recommend_picks_the_highest_gain_per_flop():
    steps = {"scale": step("scale", 2e-15, 1e-15, 3e-15), "test_time": step("test_time", 1.4e-14, 9e-15, 1.9e-14),
             "repetition": None}
    rec = recommend(steps, steps, BASE)
    assert rec["lever"] == "test_time" and rec["gain_per_flop"] == 1.4e-14
    assert rec["sentence"].startswith("At 3.1e13 FLOPs (baseline 1m model, 2 epochs, 40% held-out), step of "
                                      "test_time buys the most: +1.4 points [0.9, 1.9] per 1e12 extra FLOPs, "
                                      "7.0x more than a bigger model.")
    assert "Per dollar, the same lever" in rec["sentence"]


def test_recommend_is_honest_about_noise_and_losses():
    rec = recommend({"scale": step("scale", 1e-15, -1e-15, 3e-15)}, {}, BASE)
    assert rec["lever"] == "scale" and "interval includes zero" in rec["sentence"]
    rec = recommend({"scale": step("scale", -1e-15, -2e-15, 0.0)}, {}, BASE)
    assert rec["lever"] is None and "no lever raised held-out accuracy" in rec["sentence"]
    rec = recommend({"scale": None}, {}, BASE)
    assert rec["lever"] is None


def test_html_is_self_contained(study):
    root, _ = study
    page = (root / "out" / "report.html").read_text()
    assert not re.search(r"https?://|<script|<link|@import|url\(", page, re.I)
    srcs = re.findall(r"src='([^']*)'", page)
    assert len(srcs) >= 3
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


CHECK = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.src) || e)),
                        true);
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => i.naturalWidth);
  document.body.setAttribute('data-check', JSON.stringify({imgs, errors: window.__errors}));
});
</script>"""


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (apt-get install -y chromium) for the "
                                                "headless-browser check of report.html")
def test_report_renders_in_headless_chromium(study, tmp_path):
    root, _ = study
    page = (root / "out" / "report.html").read_text()
    # the check script is injected into a copy: the report itself carries no script
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + CHECK, 1))
    proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    m = re.search(r"data-check=\"([^\"]*)\"", proc.stdout)
    assert m, (proc.returncode, proc.stderr[-2000:])
    check = json.loads(m.group(1).replace("&quot;", '"'))
    assert check["errors"] == []
    assert len(check["imgs"]) >= 3 and all(w > 0 for w in check["imgs"])
    assert "Uncaught" not in proc.stderr and ":CONSOLE(" not in proc.stderr


def test_seed_spread_and_gain_eligibility():
    from datawall.study.analysis import add_gains
    from datawall.study.levers.measure import combine

    acc, se = combine([0.2, 0.4], [0.02, 0.02])
    assert acc == pytest.approx(0.3) and se == pytest.approx(math.sqrt(0.0004 / 2 + 0.02 / 2))
    assert combine([0.5], [0.03]) == (0.5, pytest.approx(0.03))
    ref = {"accuracy": 0.3, "accuracy_se": 0.01, "compute": 100.0, "dollars": 1.0, "oracle": False}
    pts = [{"accuracy": 0.5, "accuracy_se": 0.01, "compute": 200.0, "dollars": 2.0, "oracle": False},
           {"accuracy": 0.6, "accuracy_se": 0.01, "compute": 50.0, "dollars": 0.5, "oracle": False},
           {"accuracy": 0.9, "accuracy_se": 0.01, "compute": 300.0, "dollars": 3.0, "oracle": True}]
    add_gains(pts, ref)
    assert pts[0]["gain_per_flop"] == pytest.approx(0.2 / 100) and pts[0]["gain_per_dollar"] == pytest.approx(0.2)
    lo, hi = pts[0]["gain_per_flop_ci"]
    assert lo == pytest.approx((0.2 - 1.959964 * math.sqrt(2) * 0.01) / 100)
    assert hi == pytest.approx((0.2 + 1.959964 * math.sqrt(2) * 0.01) / 100)
    assert pts[1]["gain_per_flop"] is None  # cheaper than the reference: on the frontier, not a step
    assert pts[2]["gain_per_flop"] is None  # oracle: never a step


def test_paired_gain_uses_the_per_problem_differences():
    from datawall.study.analysis import add_gains
    from datawall.study.levers.measure import paired_gain

    rng = np.random.default_rng(0)
    base = [rng.integers(0, 2, 400).astype(float) for _ in range(2)]
    # the point gets right what the baseline got right, plus 10% of the problems it got wrong
    better = [np.maximum(b, rng.random(400) < 0.1).astype(float) for b in base]
    gain, se = paired_gain([list(x) for x in better], [list(x) for x in base])
    assert gain == pytest.approx(float(np.mean([x.mean() for x in better]) - np.mean([x.mean() for x in base])))
    unpaired = math.hypot(*(math.sqrt(0.25 / 400) for _ in range(2)))
    assert 0 < se < unpaired / 2  # the two models agree on most problems: the paired interval is much narrower
    assert paired_gain([list(better[0])], [list(base[0]), list(base[1])]) is None  # seeds do not line up
    assert paired_gain([None], [list(base[0])]) is None
    ref = {"accuracy": 0.5, "accuracy_se": 0.02, "compute": 100.0, "dollars": 1.0, "oracle": False,
           "per_problem_seeds": [list(b) for b in base]}
    pt = {"accuracy": float(np.mean([x.mean() for x in better])), "accuracy_se": 0.02, "compute": 200.0,
          "dollars": 2.0, "oracle": False, "per_problem_seeds": [list(b) for b in better]}
    add_gains([pt], ref)
    assert pt["paired"] and pt["gain_ci"][0] > 0


def test_ranking_orders_every_lever_and_names_the_runner_up_ratio(study):
    _, s = study
    for axis in ("flop", "dollar"):
        ranking = s["ranking"][axis]
        assert {r["lever"] for r in ranking} == set(s["levers"])
        key = f"gain_per_{axis}"
        measured = [r for r in ranking if r["label"] is not None]
        assert [r[key] for r in measured] == sorted((r[key] for r in measured), reverse=True)
        for r in measured:
            step = s["steps"][r["lever"]]
            assert r["label"] == step["label"] and r[key] == step[key]
        for this, nxt in zip(measured, measured[1:], strict=False):
            if this[key] > 0 and nxt[key] > 0:
                assert this["ratio_to_next"] == pytest.approx(this[key] / nxt[key])
    if s["recommendation"]["lever"] is not None:
        assert s["ranking"]["flop"][0]["lever"] == s["recommendation"]["lever"]
    md = (study[0] / "out" / "summary.md").read_text()
    assert "## Levers ranked by accuracy per extra FLOP" in md
    assert all("per_problem_seeds" not in p for pts in s["levers"].values() for p in pts)
