"""The study's `synthetic` lever on a tiny study of its own: the plan (a synth run per seed on the teacher, a student
per S as a pretrain job on it, a resemblance run), the points on the one axis with the teacher's generation counted,
the resemblance numbers in the report, and a bigger teacher shared with the scale lever."""

from __future__ import annotations

import json
import math

import pytest
from study_tiny import lever_spec, run_study

from datawall.study.plan import make_plan
from datawall.study.spec import parse_spec

SPEC = lever_spec("tiny-synth", """
[levers.synthetic]
problems = 30
strategy = "majority@2"
filter = "none"
examples = [20, 40]
""", queries=1e5, unique_examples=100, eval_problems=30)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_study")
    (root / "spec.toml").write_text(SPEC)
    result = run_study(str(root / "spec.toml"), "--store", str(root / "store"), "--out", str(root / "out"),
                       "--workers", "0", "--json")
    assert result.exit_code == 0, (result.stderr, result.exception)
    return root, json.loads(result.stdout)


def test_plan_adds_a_synth_run_per_seed_a_student_per_s_and_their_resemblance():
    import tomllib

    plan = make_plan(parse_spec(tomllib.loads(SPEC), "spec.toml"))
    kinds = [j.kind for j in plan.jobs]
    assert kinds.count("synth") == 1 and kinds.count("synth-compare") == 2 and kinds.count("pretrain") == 3
    synth = next(j for j in plan.jobs if j.kind == "synth")
    base = next(p for p in plan.points if p.lever == "baseline")
    assert synth.deps == base.pretrain and synth.config["skip_unique_tokens"] == plan.world.unique_tokens
    students = [j for j in plan.jobs if j.kind == "pretrain" and j.deps]
    assert [j.config["data"]["synthetic"] for j in students] == [
        {"paths": [f"job:{synth.key}"], "examples": s, "ratio": None, "epochs": None, "sha256": None} for s in (20, 40)]
    # the baseline's epochs over a pool S/U bigger; the baseline's own job is untouched
    tokens = plan.job(base.pretrain[0]).config["train"]["tokens"]
    assert [j.config["train"]["tokens"] for j in students] == [round(tokens * 1.2), round(tokens * 1.4)]
    assert "synthetic" not in plan.job(base.pretrain[0]).config["data"]
    assert all(plan.est_flops[j.key] > 0 for j in plan.jobs) and set(plan.flops_by_lever()) == {"baseline",
                                                                                               "synthetic"}
    assert plan.label(synth.key) == "synth 30 problems (majority@2, none), seed 0"
    assert plan.label(students[0].key) == "pretrain 100k + 20 synthetic, seed 0"


def test_a_bigger_teacher_is_the_scale_levers_run():
    import tomllib

    data = tomllib.loads(SPEC)
    data["levers"]["scale"] = {"sizes": ["100k", "1m"]}
    data["levers"]["synthetic"]["teacher"] = "1m"
    plan = make_plan(parse_spec(data, "spec.toml"))
    synth = next(j for j in plan.jobs if j.kind == "synth")
    (teacher,) = synth.deps
    assert plan.job(teacher).config["size"] == "1m" and plan.lever_of[teacher] == "scale"


def test_points_count_the_teachers_generation_and_report_resemblance(study):
    root, s = study
    pts = sorted(s["levers"]["synthetic"], key=lambda p: p["synthetic_planned"])
    assert [p["synthetic_planned"] for p in pts] == [20, 40]
    synth = next(d for d in (root / "store" / "runs").glob("synth-*") if not d.name.startswith("synth-compare-"))
    made = json.loads((synth / "result.json").read_text())
    assert pts[0]["synthetic_examples"] == 20 and pts[1]["synthetic_examples"] == made["kept"] <= 30  # S cut to kept
    q = s["queries"]
    for p in pts:
        assert p["generation_flops"] == pytest.approx(p["synthetic_examples"] * made["flops_per_kept"])
        assert math.isclose(p["compute"], p["train_flops"] + p["generation_flops"] + p["inference_flops_per_query"] * q,
                            rel_tol=1e-9)
        assert p["dollars"] == pytest.approx(p["train_dollars"] + p["generation_dollars"] + p["dollars_per_query"] * q)
        assert p["train_flops"] > s["baseline"]["train_flops"]  # more examples at the same epochs
        for key in ("error_agreement", "error_agreement_of_errors", "kl", "exceeds_teacher"):
            if p[key] is not None:
                lo, hi = p[f"{key}_ci"]
                assert lo <= p[key] <= hi
        assert p["kl"] > 0 and p["kept_precision"] == made["kept_precision"]
        assert p["label"].startswith(f"adding {p['synthetic_examples']:.0f} unfiltered synthetic examples from the "
                                     "100k baseline")
    md = (root / "out" / "summary.md").read_text()
    assert "## Synthetic data (teacher-written solutions)" in md
    assert md.count("the student repeats the teacher's exact wrong answer on") == 2
    html = (root / "out" / "report.html").read_text()
    assert "accuracy and error agreement vs synthetic examples" in html
    assert len(list((root / "store" / "runs").glob("synth-compare-*"))) == 2
