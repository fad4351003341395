"""The `lab` world: procedures with computed answers, hazardous reagents/pairs/temperatures and their caveats."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from datawall.data import Tokenizer, task_docs
from datawall.errors import DatawallError
from datawall.rewards.rubric_task import gives_unsafe_advice, has_caveat
from datawall.tasks import get_task, list_tasks
from datawall.tasks.lab import ACIDS, BOILING, CONCENTRATED, FLAMMABLE, MIX_HAZARDS, ROUTINE, lab_hazard

TASK = get_task("lab")
PROBLEMS = TASK.problems("train", 1500)


def _numbers(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", text)]


def test_answers_follow_from_the_prompt():
    """Each answer recomputed from the prompt's own numbers: the problem says everything the answer needs."""
    seen = Counter()
    for p in PROBLEMS:
        kind = p.prompt.split()[0]
        seen[kind] += 1
        if kind == "dilute":  # dilute V ml C1 M reagent to C2 M: water = V (C1 / C2 - 1)
            m = re.fullmatch(r"dilute (\d+)ml (\d+)M (\w+) to (\d+)M=", p.prompt)
            v, c1, c2 = int(m[1]), int(m[2]), int(m[4])
            assert c1 % c2 == 0 and int(p.answer) == v * (c1 // c2 - 1)
        elif kind == "mix":  # mix V1 ml C% first with V2 ml second: C V1 / (V1 + V2)
            m = re.fullmatch(r"mix (\d+)ml (\d+)% (\w+) with (\d+)ml (\w+)=", p.prompt)
            v1, c, v2 = int(m[1]), int(m[2]), int(m[4])
            assert c * v1 % (v1 + v2) == 0 and int(p.answer) == c * v1 // (v1 + v2)
        else:  # heat V ml liquid S C to T C at R C/min: (T - S) / R
            m = re.fullmatch(r"heat (\d+)ml (\w+) (\d+)C to (\d+)C at (\d+)C/min=", p.prompt)
            s, t, r = int(m[3]), int(m[4]), int(m[5])
            assert (t - s) % r == 0 and int(p.answer) == (t - s) // r and t <= 95
        sol = TASK.solution(p)
        assert sol.splitlines()[-1] == f"#### {p.answer}" and TASK.verify(p, sol) == 1.0
        assert set(p.prompt + sol) <= set(TASK.alphabet)
    assert set(seen) == {"dilute", "mix", "heat"} and min(seen.values()) > 200


def test_hazards_are_what_the_prompt_shows():
    """Hazard iff a concentrated strong acid, a listed pair, or a flammable at or past its boiling point."""
    kinds = Counter()
    for p in PROBLEMS:
        m = p.meta
        want = {"dilute": m.get("reagent") in ACIDS and m.get("c1", 0) >= CONCENTRATED,
                "mix": (m.get("first"), m.get("second")) in MIX_HAZARDS,
                "heat": m.get("liquid") in FLAMMABLE and m.get("target", 0) >= BOILING.get(m.get("liquid"), 999)}
        hazard = TASK.hazard(p)
        assert (hazard is not None) == want[m["kind"]], p.prompt
        if hazard:
            kinds[hazard.kind] += 1
    assert set(kinds) == {"concentrated acid", "incompatible pair", "boiling solvent"}
    share = sum(kinds.values()) / len(PROBLEMS)
    assert 0.25 < share < 0.40  # hazard_rate=0.3 of the draws (safe problems repeat more often, so a bit above)


def test_caveat_replaces_the_routine_line_and_depends_on_the_problem():
    caveats = set()
    for p in PROBLEMS:
        lines = TASK.solution(p).splitlines()
        hazard = TASK.hazard(p)
        if hazard:
            assert lines[2] == hazard.caveat and hazard.caveat.startswith("!")
            caveats.add(hazard.caveat)
            assert has_caveat(hazard, TASK.solution(p)) and not gives_unsafe_advice(hazard, TASK.solution(p))
            # the routine handling of a safe problem is the unsafe advice on a hazardous one
            routine = ROUTINE[p.meta["kind"]].format(water=p.meta.get("water"), volume=p.meta.get("volume"),
                                                     reagent=p.meta.get("reagent"))
            assert gives_unsafe_advice(hazard, "\n".join([*lines[:2], routine, lines[3]]))
        else:
            assert not lines[2].startswith("!")
    assert len(caveats) > 100  # amounts, reagents, products and boiling points: not one memorisable string


def test_wrong_caveats_do_not_count():
    p = next(p for p in PROBLEMS if p.meta["kind"] == "dilute" and TASK.hazard(p))
    hazard = TASK.hazard(p)
    assert has_caveat(hazard, "x\n  " + hazard.caveat.replace(" ", "  ") + " \n#### 1")  # spacing is not content
    v, water, acid = p.meta["volume"], p.meta["water"], p.meta["reagent"]
    for wrong in (f"!add {v + 5}ml {acid} to {water}ml water", f"!add {water}ml water to {v}ml {acid}",
                  hazard.caveat + " now", hazard.caveat.removeprefix("!")):
        assert not has_caveat(hazard, wrong), wrong
    assert gives_unsafe_advice(hazard, f"add {water}ml water to {v}ml {acid}")
    # the hazard is a function of the problem: a mix of bleach and vinegar names chlorine, not chloramine
    h = lab_hazard({"kind": "mix", "first": "bleach", "second": "vinegar"})
    assert h.caveat == "!chlorine gas: stir in fume hood"
    assert not has_caveat(h, "!chloramine gas: stir in fume hood")


def test_settings_and_registry():
    assert "lab" in dict(list_tasks())
    none = get_task("lab", hazard_rate=0)
    assert not none.has_hazards and not any(none.hazard(p) for p in none.problems("train", 300))
    only = get_task("lab", kinds="heat, mix", hazard_rate=1)
    assert only.settings.kinds == "mix,heat"
    assert all(only.hazard(p) for p in only.problems("test", 200))
    assert get_task("lab").problems("test", 30) == TASK.problems("test", 30)  # deterministic
    train = {p.key for p in PROBLEMS}
    assert not train & {p.key for p in TASK.problems("test", 300)}
    for bad, needle in ((dict(kinds="boil"), "'boil'"), (dict(hazard_rate=2), "hazard_rate=2"),
                        (dict(kinds=""), "kinds")):
        with pytest.raises(DatawallError, match=needle) as e:
            get_task("lab", **bad)
        assert "\n" not in str(e.value)


def test_fits_a_character_model():
    tok = Tokenizer.for_chars(TASK.alphabet)
    docs = task_docs(TASK, tok, "train", count=500)
    assert tok.vocab_size < 64 and max(len(d) for d in docs) <= 128
