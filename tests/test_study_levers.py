"""The lever registry: kept in sync with the spec, the presets and the docs, free of lever names outside the
levers package, and open to a new lever that touches only its own module (checked with a toy lever end to end).
"""

from __future__ import annotations

import inspect
import json
import math
import re
import tomllib
from pathlib import Path

import pytest
from pydantic import create_model

import datawall.study.analysis
import datawall.study.plan
import datawall.study.report
import datawall.study.spec
from datawall.study import spec as spec_module
from datawall.study.levers import LEVERS, RESERVED, Lever
from datawall.study.levers.base import Float, LeverSection, Setting
from datawall.study.levers.measure import pretrain_point
from datawall.study.plan import make_plan
from datawall.study.report import write_report
from datawall.study.spec import PRESETS, Levers, StudySpec, parse_spec, preset_text

DOCS = Path(__file__).resolve().parent.parent / "docs" / "study.md"


def test_registry_spec_presets_and_docs_agree():
    assert not set(LEVERS) & set(RESERVED)
    # the [levers] model is the registry, in its order, then the reserved levers
    assert list(Levers.model_fields) == [*LEVERS, *RESERVED]
    for name, lever in LEVERS.items():
        assert lever.name == name and Levers.model_fields[name].annotation is lever.section
        assert lever.title and lever.noun and lever.section.__doc__
        assert issubclass(lever.section, LeverSection) and isinstance(lever.section().enabled, bool)
    assert len({lever.color for lever in LEVERS.values()}) == len(LEVERS)
    docs = DOCS.read_text()
    for name in PRESETS:
        data = tomllib.loads(preset_text(name))
        assert list(data["levers"]) == [*LEVERS, *RESERVED], name  # every lever has its commented section
        assert all(data["levers"][r] == {"enabled": False} for r in RESERVED)
    for name in (*LEVERS, *RESERVED):
        assert f"[levers.{name}]" in docs, f"docs/study.md does not describe [levers.{name}]"


@pytest.mark.parametrize("module", [datawall.study.spec, datawall.study.plan, datawall.study.analysis,
                                    datawall.study.report])
def test_no_lever_is_named_outside_the_levers_package(module):
    code = inspect.getsource(module)
    code = re.sub(r'"""[\s\S]*?"""', "", code)  # docstrings may give examples
    for name in (*LEVERS, *RESERVED):
        assert not re.search(rf"[\"']{name}[\"']", code), f"{module.__name__} names the lever {name!r}"


# --- a toy lever, added the way a new one would be: a section, jobs, points, labels -------------------------

class Longer(LeverSection):
    """Train the baseline's size longer, by factors of the baseline's epochs."""

    factors: list[Float] = [2.0]


def _jobs(spec, plan, base):
    return [plan.pretrain("longer", Setting(base.setting.size, base.setting.epochs * f))
            for f in spec.levers.longer.factors]


def _points(plan, mine, base, results, price):
    return [pretrain_point(plan, p, results, price) for p in mine]


TOY = Lever(name="longer", section=Longer, title="Longer training (toy)", noun="longer training", color="C7",
            jobs=_jobs, points=_points, label=lambda p, base: f"training {p['epochs'] / base['epochs']:g}x longer",
            tag=lambda p: f"{p['epochs']:g} ep")


def _fake_result(job) -> dict:
    # accuracy rising with diminishing returns in training tokens: the smallest step buys the most per FLOP
    tokens = job.config["train"]["tokens"]
    acc = 0.1 * math.log10(tokens)
    return {"accuracy": acc, "ci_low": acc - 0.02, "ci_high": acc + 0.02, "flops": 1e6 * tokens,
            "wall_seconds": tokens / 1e4, "eval_loss": 1.0 + 1e4 / tokens, "params": 1e5}


def test_a_new_lever_needs_only_its_module(monkeypatch, tmp_path):
    monkeypatch.setitem(LEVERS, "longer", TOY)
    toy_levers = spec_module.levers_model()
    ToySpec = create_model("StudySpec", __base__=StudySpec, levers=(toy_levers, toy_levers()))
    monkeypatch.setattr(spec_module, "StudySpec", ToySpec)
    data = {"world": {"task": "arith", "task_args": {"digits": 1}, "unique_examples": 60, "eval_problems": 15},
            "train": {"seq_len": 32}, "baseline": {"epochs": 2},
            "levers": {"scale": {"enabled": False}, "test_time": {"enabled": False}, "synthetic": {"enabled": False},
                       "preference": {"enabled": False},
                       "repetition": {"epochs": [1, 2, 3]}, "longer": {"factors": [2, 4]}}}
    with pytest.raises(Exception, match=r"levers\.longer\.factorz: unknown key"):
        parse_spec({"levers": {"longer": {"factorz": [2]}}}, "toy.toml")
    spec = parse_spec(data, "toy.toml")
    assert spec.levers.longer.factors == [2.0, 4.0]
    plan = make_plan(spec)
    assert [p.lever for p in plan.points] == ["baseline", *["repetition"] * 3, "longer", "longer"]
    assert set(plan.flops_by_lever()) == {"baseline", "repetition", "longer"}
    results = {j.key: _fake_result(j) for j in plan.jobs}
    summary = write_report(plan, results, tmp_path)
    assert list(summary["levers"]) == ["repetition", "longer"]
    assert [p["label"] for p in summary["levers"]["longer"]] == ["training 2x longer", "training 4x longer"]
    assert summary["steps"]["longer"]["label"] == "training 2x longer"
    assert "loss_vs_train_compute" not in summary["laws"]["longer"]  # only the laws a lever asks for
    assert "## Longer training (toy)" in (tmp_path / "summary.md").read_text()
    assert json.loads((tmp_path / "summary.json").read_text())["levers"]["longer"][0]["lever"] == "longer"
    rec = summary["recommendation"]  # 3 epochs instead of 2 is a smaller step than 2x longer (4 epochs)
    assert rec["lever"] == "repetition" and "more than longer training" in rec["sentence"]
