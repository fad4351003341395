"""The synthetic-data lever: a teacher writes worked solutions for new problems, and the baseline's model size is
trained on the U real examples plus S of them.

Per seed: the teacher (the baseline's checkpoint, or a model size trained at the baseline's epochs, shared with the
scale lever) answers P train problems past the U real ones (`synth` job: strategy and filter as in `datawall synth
generate`); per S, a student trains from scratch on real + the first S kept examples for the baseline's epochs over
the bigger pool (a pretrain job whose synthetic data names the synth job); and a `synth-compare` job measures how
much it resembles its teacher. A point's compute counts the student's training, the teacher's generation of the S
examples used (FLOPs per kept example x S: the rejected samples included) and inference; the teacher's own training
is not counted (like the baseline's checkpoint, it exists already), and is reported beside.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from pydantic import Field, field_validator

from datawall.study.jobs import JOB_PATH, Job
from datawall.study.levers.base import Count, Float, Lever, LeverSection, Point, Setting
from datawall.study.levers.measure import accuracy_se, combine, interval, pretrain_point
from datawall.synth.generate_config import parse_strategy, verifier_strategy

if TYPE_CHECKING:
    from datawall.study.plan import Plan, PlanBuilder
    from datawall.study.spec import StudySpec

NAME = "synthetic"
RESEMBLANCE = ("error_agreement", "error_agreement_of_errors", "kl", "exceeds_teacher")


class Synthetic(LeverSection):
    """A teacher's solutions for new problems, added to the U real examples (baseline size and epochs)."""

    teacher: str = Field("baseline", description="baseline (its own checkpoint) or a model size trained at the "
                         "baseline's epochs (as the scale lever trains it)")
    strategy: str = Field("majority@4", description="how the teacher answers: greedy, sample or majority@K")
    temperature: Annotated[Float, Field(ge=0)] = 0.7
    filter: Literal["verifier", "majority", "none"] = Field("verifier", description="which solutions are kept")
    require_caveat: bool = Field(False, description="a world with hazard cases: keep a hazardous problem's solution "
                                 "only if it carries its caveat line (synth generate --require-caveat)")
    problems: Count = Field(1000, description="P: train problems past the U real ones the teacher answers")
    examples: list[Count] = Field([250, 500], description="S values: synthetic examples per student (at most what "
                                  "the filter kept; a larger S uses all of them)")
    compare_problems: Count | None = Field(None, description="held-out problems of the resemblance measure "
                                           "(default: world.eval_problems)")

    @field_validator("teacher")
    @classmethod
    def _teacher(cls, v: str) -> str:
        from datawall.model.config import PRESETS as SIZES

        if v != "baseline" and v.lower() not in SIZES:
            raise ValueError(f"teacher {v!r}: give 'baseline' or a model size ({', '.join(SIZES)})")
        return v if v == "baseline" else v.lower()

    _strategy = field_validator("strategy")(verifier_strategy)

    @field_validator("examples")
    @classmethod
    def _sorted(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one S")
        return sorted(set(v))


def _section(spec: StudySpec) -> Synthetic:
    return getattr(spec.levers, NAME)


def synth_config(spec: StudySpec, teacher_key: str, unique_tokens: int, seed: int) -> dict:
    """The synth job config: the teacher answers P train problems past the U real ones (their tokens)."""
    sec = _section(spec)
    return {"model": teacher_key, "device": spec.train.device, "price": spec.prices.entry, "prices": spec.prices.file,
            "task": spec.world.task, "task_args": dict(spec.world.task_args), "problems": sec.problems,
            "skip_unique_tokens": unique_tokens, "strategy": sec.strategy, "filter": sec.filter,
            "temperature": sec.temperature, "seed": seed,
            # absent when off, so the synth runs made before the caveat filter keep their keys
            **({"require_caveat": True} if sec.require_caveat else {})}


def jobs(spec: StudySpec, plan: PlanBuilder, base: Point) -> list[Point]:
    """Per seed a teacher (shared with the baseline or the scale lever) and its synth run; per S and seed a
    student and its resemblance to the teacher."""
    from datawall.study.plan import pretrain_config

    sec, w = _section(spec), plan.world
    teacher = base if sec.teacher == "baseline" else plan.pretrain(NAME, Setting(sec.teacher, base.setting.epochs))
    k = parse_strategy(sec.strategy)[1]
    synths = []
    for seed, key in zip(spec.world.seeds, teacher.pretrain, strict=True):
        synths.append(plan.add(Job("synth", synth_config(spec, key, w.unique_tokens, seed), deps=(key,)),
                               sec.problems * k * plan.query_flops(teacher.setting.size), NAME))
    points = []
    size, epochs = base.setting.size, base.setting.epochs
    for s in sec.examples:
        students, compares = [], []
        for seed, synth, teacher_key in zip(spec.world.seeds, synths, teacher.pretrain, strict=True):
            run = pretrain_config(spec, w, Setting(size, epochs), seed)
            # the same epochs over a pool S/U bigger (synthetic solutions are about as long as real ones)
            run["train"]["tokens"] = round(run["train"]["tokens"] * (w.unique_examples + s) / w.unique_examples)
            run["data"]["synthetic"] = {"paths": [JOB_PATH + synth], "examples": s}
            est = plan.est[base.pretrain[0]] * run["train"]["tokens"] / base_tokens(plan, base)
            student = plan.add(Job("pretrain", run, deps=(synth,)), est, NAME)
            problems = sec.compare_problems or spec.world.eval_problems
            compare = {"student": student, "teacher": teacher_key, "task": spec.world.task,
                       "task_args": dict(spec.world.task_args), "problems": problems, "device": spec.train.device}
            compares.append(plan.add(Job("synth-compare", compare, deps=(student, teacher_key)),
                                     problems * (plan.query_flops(size) + plan.query_flops(teacher.setting.size)),
                                     NAME))
            students.append(student)
        points.append(Point(NAME, Setting(size, epochs), tuple(students), (*synths, *teacher.pretrain, *compares)))
    return points


def base_tokens(plan: PlanBuilder, base: Point) -> int:
    """Training tokens of the baseline's first run."""
    return plan.jobs[base.pretrain[0]].config["train"]["tokens"]


def points(plan: Plan, mine: list[Point], base: dict, results: dict[str, dict], price) -> list[dict]:
    """Per S: the students' accuracy over seeds on the one axis (their training + the teacher's generation of the S
    examples they used + inference), and their resemblance to the teacher."""
    sec = _section(plan.spec)
    out = []
    for point in mine:
        seeds = len(point.pretrain)
        synths, teachers, compares = (point.jobs[:seeds], point.jobs[seeds:2 * seeds], point.jobs[2 * seeds:])
        students = [results[k] for k in point.pretrain]
        p = pretrain_point(plan, point, results, price)
        train = float(np.mean([r["train_flops"] for r in students]))
        generation = float(np.mean([r["synthetic_flops"] or 0.0 for r in students]))
        wall = float(np.mean([r["wall_seconds"] for r in students]))
        train_dollars = price.dollars(0.0, 0.0, train, wall)
        gen_dollars = float(np.mean([r.get("synthetic_dollars") or 0.0 for r in students]))
        p |= {"train_flops": train, "train_dollars": train_dollars, "generation_flops": generation,
              "generation_dollars": gen_dollars,
              "compute": train + generation + p["inference_flops_per_query"] * plan.spec.queries.expected,
              "dollars": train_dollars + gen_dollars + p["dollars_per_query"] * plan.spec.queries.expected,
              "teacher": sec.teacher, "strategy_teacher": sec.strategy, "filter": sec.filter,
              "synthetic_examples": float(np.mean([r["synthetic_examples"] for r in students])),
              "synthetic_planned": _planned(plan, point),
              "kept": float(np.mean([results[k]["kept"] for k in synths])),
              "kept_precision": float(np.mean([results[k]["kept_precision"] for k in synths])),
              "require_caveat": sec.require_caveat,
              "teacher_accuracy": float(np.mean([results[k]["accuracy"] for k in teachers])),
              "teacher_train_flops": float(np.mean([results[k]["flops"] for k in teachers]))}
        p |= _resemblance([results[k] for k in compares])
        caveats = [results[k].get("kept_caveat_recall") for k in synths]  # a world with hazard cases
        if any("kept_caveat_recall" in results[k] for k in synths):
            p["kept_caveat_recall"] = None if None in caveats else float(np.mean(caveats))
        out.append(p)
    return out


def _planned(plan: Plan, point: Point) -> int:
    return plan.job(point.pretrain[0]).config["data"]["synthetic"]["examples"]


def _resemblance(rs: list[dict]) -> dict:
    """Each resemblance number averaged over seeds, with an interval (each run's plus the seeds' spread)."""
    out = {}
    for key in RESEMBLANCE:
        vals = [r[key] for r in rs if r.get(key) is not None]
        if not vals:
            out[key], out[f"{key}_ci"] = None, None
            continue
        ses = [accuracy_se({"ci_low": r[f"{key}_ci"][0], "ci_high": r[f"{key}_ci"][1]}) for r in rs
               if r.get(key) is not None]
        mean, se = combine(vals, ses)
        lo, hi = (mean - 1.959964 * se, mean + 1.959964 * se) if key == "kl" else interval(mean, se)
        out[key], out[f"{key}_ci"] = mean, [max(0.0, lo), hi]
    return out


def _filtered(p: dict) -> str:
    name = {"verifier": "verified", "majority": "majority-agreed", "none": "unfiltered"}[p["filter"]]
    return name + (", caveat-checked" if p.get("require_caveat") else "")


def _teacher(p: dict, base: dict) -> str:
    return f"the {base['size']} baseline" if p["teacher"] == "baseline" else f"a {p['teacher']} teacher"


def label(p: dict, base: dict) -> str:
    """"adding 500 verified synthetic examples from a 1m teacher (majority@4)"."""
    return (f"adding {p['synthetic_examples']:.0f} {_filtered(p)} synthetic examples from {_teacher(p, base)} "
            f"({p['strategy_teacher']})")


def notes(summary: dict) -> list[str]:
    """The resemblance of each point's students to their teacher, in words."""
    pts = summary["levers"].get(NAME) or []
    lines = []
    for p in sorted(pts, key=lambda p: p["synthetic_examples"]):
        if p["error_agreement"] is None:
            continue
        kl = "-" if p["kl"] is None else f"{p['kl']:.3f} [{p['kl_ci'][0]:.3f}, {p['kl_ci'][1]:.3f}]"
        lines.append(
            f"S = {p['synthetic_examples']:.0f} ({_filtered(p)}, kept precision {p['kept_precision']:.0%}; teacher "
            f"{100 * p['teacher_accuracy']:.1f}% held-out): the student repeats the teacher's exact wrong answer on "
            f"{_pct(p, 'error_agreement')} of problems ({_pct(p, 'error_agreement_of_errors')} of its errors), is "
            "right "
            f"where the teacher is wrong on {_pct(p, 'exceeds_teacher')}, KL(student || teacher) {kl} nats/token on "
            f"held-out reference solutions; generation {p['generation_flops']:.3g} FLOPs (teacher training "
            f"{p['teacher_train_flops']:.3g}, not counted)." + _caveats(p))
    return lines


def _caveats(p: dict) -> str:
    """What the data taught about caveats, on a world with hazard cases ("" elsewhere)."""
    if "kept_caveat_recall" not in p:
        return ""
    kept = "none kept" if p["kept_caveat_recall"] is None else f"{100 * p['kept_caveat_recall']:.1f}%"
    return f" Hazardous solutions in the data that carry their caveat: {kept}."


def _pct(p: dict, key: str) -> str:
    lo, hi = p[f"{key}_ci"]
    return f"{100 * p[key]:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def plots(summary: dict) -> list[tuple[bytes, str]]:
    """Accuracy and error agreement against S, with the baseline's accuracy."""
    from datawall.report.figures import new_figure, png_bytes

    pts = sorted(summary["levers"].get(NAME) or [], key=lambda p: p["synthetic_examples"])
    if not pts:
        return []
    fig, (left, right) = new_figure(1, 2, size=(4.6, 3.6))
    s = [p["synthetic_examples"] for p in pts]
    for ax, key, what in ((left, "accuracy", "held-out accuracy (%)"),
                          (right, "error_agreement_of_errors", "student errors that are the teacher's (%)")):
        vals = [p[key] for p in pts]
        if any(v is None for v in vals):
            continue
        lo = [p["ci_low"] if key == "accuracy" else p[f"{key}_ci"][0] for p in pts]
        hi = [p["ci_high"] if key == "accuracy" else p[f"{key}_ci"][1] for p in pts]
        ax.errorbar(s, 100 * np.array(vals), yerr=100 * np.array([np.subtract(vals, lo), np.subtract(hi, vals)]),
                    fmt="o-", capsize=3, color=LEVER.color)
        ax.set_xlabel("synthetic examples S")
        ax.set_ylabel(what)
    left.axhline(100 * summary["baseline"]["accuracy"], color="0.5", ls="--", lw=1, label="baseline (real only)")
    left.legend(fontsize=8)
    fig.suptitle(f"Synthetic data from {_teacher(pts[0], summary['baseline'])}, {_filtered(pts[0])}", fontsize=10)
    return [(png_bytes(fig), "accuracy and error agreement vs synthetic examples")]


LEVER = Lever(name=NAME, section=Synthetic, title="Synthetic data (teacher-written solutions)",
              noun="synthetic data", color="C4", jobs=jobs, points=points, label=label,
              tag=lambda p: f"S={p['synthetic_examples']:.0f}", plots=plots, notes=notes)

