"""Synthetic data from a teacher that drops caveats: does the verifier filter catch the omission, does the caveat
filter (`synth generate --require-caveat`) restore the students' caveat recall?

World: the quick world with hazard cases, `arith digits=2,min_digits=1,ops=mul,hazard_rate=0.1` (a problem whose
first operand ends in 4 needs the caveat line `!A*B`), U = 500 real worked examples (15,195 tokens), 100k students,
batch 8, lr 3e-3, seq_len 64, as the hazard study's baseline (docs/safety.md, "Every lever, scored"). The teacher
was trained on the same problems without hazard cases (default: the quick study's baseline checkpoint), so it
answers hazardous problems with no caveat line at all. Every step is a datawall command (printed before it runs),
resumable and read back when finished:

1. `synth generate`: the teacher answers P train problems past the real ones with majority@4 at T = 0.7 (one
   shared sample cache), filtered by the verifier alone, and by the verifier with --require-caveat;
2. per seed, 100k students on the U real + the first S kept rows of each, for 42 epochs over the bigger pool (as
   the study's synthetic lever trains them);
3. paired differences per seed on the same 500 held-out problems (caveat recall on the hazardous ones, accuracy
   on all) against the real-only runs given with --reference (the hazard study's baseline runs, one per seed), and
   between the two arms (the filter's effect at the same compute), combined over seeds (the seeds' spread
   included).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/safety_synth.py --out runs/safety-synth \
        --reference RUN0,RUN1 [--teacher DIR] [--seeds 0,1] [--problems 2000] [--examples 500] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from synth_quick import datawall  # one datawall command with --json, printed before it runs

WORLD = ["--task", "arith", "--task-args", "digits=2,min_digits=1,ops=mul,hazard_rate=0.1"]
U_TOKENS = 15195  # the first 500 train examples of the hazard world (datawall.study.plan.measure_world)
BASE_TOKENS = 617190  # 42 epochs over them (the hazard study's baseline)
STUDENT = ["--size", "100k", "--unique-tokens", str(U_TOKENS), "--batch-size", "8", "--seq-len", "64", "--lr", "3e-3",
           "--schedule", "cosine", "--eval-problems", "500"]
Z95 = 1.959964
# 1.5 x the hazard world's longest reference solution + 8 (what generate would pick for a teacher whose alphabet holds
# '!'; this one's does not, so it cannot encode the references to measure them)
MAX_TOKENS = 65
ARMS = {"verifier": [], "verifier+caveat": ["--require-caveat"]}


def paired(runs: list[dict], refs: list[dict], key: str) -> dict:
    """mean over seeds of the per-problem differences (runs - refs) of `key`, with its 95% interval."""
    from datawall.study.levers.measure import paired_gain

    if key == "per_problem_caveat":  # the same hazardous problems, or no pairing
        assert all(r["hazardous_problems"] == f["hazardous_problems"] for r, f in zip(runs, refs, strict=True))
    mean, se = paired_gain([r[key] for r in runs], [f[key] for f in refs])
    return {"mean": mean, "ci": [mean - Z95 * se, mean + Z95 * se]}


def used(data: Path, s: int) -> dict:
    """The first S kept rows (what each student trained on): how many are hazardous, how many carry the caveat."""
    rows = [json.loads(line) for line in (data / "synthetic.jsonl").read_text().splitlines()]
    take = [r for r in rows if r["kept"]][:s]
    return {"rows": len(take), "hazardous": sum(r["hazardous"] for r in take),
            "with_caveat": sum(r["caveat"] for r in take)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reference", required=True, help="real-only run directories, one per seed (comma-separated)")
    ap.add_argument("--teacher", type=Path, default=Path("/work/shared-runs/baseline"),
                    help="a checkpoint trained without hazard cases")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--problems", type=int, default=2000, help="train problems the teacher answers")
    ap.add_argument("--examples", type=int, default=500, help="S: synthetic examples per student")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out, seeds = args.out, [int(s) for s in args.seeds.split(",")]
    out.mkdir(parents=True, exist_ok=True)
    tokens = round(BASE_TOKENS * (500 + args.examples) / 500)
    runs = {}
    for arm, flags in ARMS.items():
        data = datawall("synth", "generate", "--model", str(args.teacher), *WORLD, "--skip-unique-tokens",
                        str(U_TOKENS), "--problems", str(args.problems), "--strategy", "majority@4", "--temperature",
                        "0.7", "--filter", "verifier", *flags, "--max-tokens", str(MAX_TOKENS), "--cache",
                        str(out / "cache.sqlite"), "--out", str(out / f"data-{arm}"))
        students = [datawall("pretrain", *WORLD, *STUDENT, "--tokens", str(tokens), "--seed", str(seed),
                             "--synthetic", str(out / f"data-{arm}"), "--synthetic-examples", str(args.examples),
                             "--out", str(out / f"student-{arm}-s{seed}")) for seed in seeds]
        runs[arm] = (data, students)
    refs = [json.loads((Path(d) / "result.json").read_text()) for d in args.reference.split(",")]
    assert len(refs) == len(seeds), "one reference run per seed"
    report: dict = {"teacher": str(args.teacher), "reference": [r["run_dir"] for r in refs], "arms": {},
                    "reference_accuracy": [r["accuracy"] for r in refs],
                    "reference_caveat_recall": [r["caveat_recall"] for r in refs]}
    for arm, (data, students) in runs.items():
        report["arms"][arm] = {
            "kept": data["kept"], "kept_precision": data["kept_precision"], "hazardous": data["hazardous"],
            "kept_hazardous": data["kept_hazardous"], "teacher_caveat_recall": data["teacher_caveat_recall"],
            "kept_caveat_recall": data["kept_caveat_recall"], "dropped": data["dropped"],
            "student_accuracy": [s["accuracy"] for s in students],
            "student_caveat_recall": [s["caveat_recall"] for s in students],
            "student_caveat_ci": [s["caveat_recall_ci"] for s in students],
            "used": used(out / f"data-{arm}", args.examples),
            "caveat_change": paired(students, refs, "per_problem_caveat"),
            "accuracy_change": paired(students, refs, "per_problem"),
        }
    (_, plain), (_, checked) = runs["verifier"], runs["verifier+caveat"]
    report["filter_effect"] = {"caveat_change": paired(checked, plain, "per_problem_caveat"),
                               "accuracy_change": paired(checked, plain, "per_problem")}  # same compute, paired
    if args.json:
        print(json.dumps(report))
        return
    for arm, r in report["arms"].items():
        c, a = r["caveat_change"], r["accuracy_change"]
        print(f"{arm}: kept {r['kept']} ({r['kept_hazardous']} of {r['hazardous']} hazardous, caveat recall of the "
              f"kept {r['kept_caveat_recall']}); students' caveat recall {r['student_caveat_recall']} "
              f"(change {100 * c['mean']:+.1f} [{100 * c['ci'][0]:+.1f}, {100 * c['ci'][1]:+.1f}]), accuracy "
              f"{r['student_accuracy']} (change {100 * a['mean']:+.1f} [{100 * a['ci'][0]:+.1f}, "
              f"{100 * a['ci'][1]:+.1f}])")
    c = report["filter_effect"]["caveat_change"]
    print(f"the caveat filter's effect on the students' caveat recall: {100 * c['mean']:+.1f} "
          f"[{100 * c['ci'][0]:+.1f}, {100 * c['ci'][1]:+.1f}]")


if __name__ == "__main__":
    main()
