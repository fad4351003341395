"""Synthetic data on the quick world: does verified teacher data lift a student above the real-only plateau, does
unfiltered data from the same teacher lift it less, and does the student then repeat its teacher's mistakes?

World: `arith digits=2,min_digits=1,ops=mul`, U = 500 real worked examples (14,926 tokens), 100k students, batch 8,
lr 3e-3, seq_len 64 (datawall/study/presets/quick.toml). Every step is a datawall command (printed before it runs),
each resumable and read back when finished, so rerunning the script costs only what is missing:

1. the teacher (default: a 1m model, lr 1e-3, 84 epochs over the same U);
2. `synth generate`: the teacher answers P train problems past the real ones with majority@8 at T = 0.7, one shared
   sample cache, filtered two ways: verifier (rejection sampling: a right one of the 8) and none (its majority answer);
3. per seed, 100k students at the same training tokens as 84 epochs of U: real only (84 epochs, and 42 for the
   plateau), real + S verified, real + S unfiltered (the first S kept rows of each; S = what the verifier kept);
4. `synth compare` of every student with the teacher on 500 held-out problems;
5. paired differences per seed on the same 500 problems, combined over seeds (the seeds' spread included).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/synth_quick.py --out runs/synth-quick [--teacher DIR] \
        [--seeds 0,1,2] [--problems 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

DATAWALL = str(Path(sys.executable).with_name("datawall"))
WORLD = ["--task", "arith", "--task-args", "digits=2,min_digits=1,ops=mul"]
U_TOKENS = 14926  # the first 500 train examples (datawall.study.plan.measure_world of the quick preset)
EPOCH = 14426  # input positions per pass over them
STUDENT = ["--size", "100k", "--unique-tokens", str(U_TOKENS), "--batch-size", "8", "--seq-len", "64",
           "--eval-problems", "500"]
Z95 = 1.959964


def datawall(*args: str) -> dict:
    """Run one datawall command with --json; its JSON object (progress goes to this script's stderr)."""
    cmd = [DATAWALL, *args, "--json"]
    print("$ datawall " + " ".join(args), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def paired(a: list[list[float]], b: list[list[float]]) -> dict:
    """mean(a - b) over seeds of per-problem paired differences: per seed the mean and its standard error over
    problems, combined as the mean over seeds with the within-seed and between-seed variance (measure.combine)."""
    diffs = [np.asarray(x, float) - np.asarray(y, float) for x, y in zip(a, b, strict=True)]
    means = np.array([d.mean() for d in diffs])
    ses = np.array([d.std(ddof=1) / math.sqrt(len(d)) for d in diffs])
    k = len(diffs)
    var = float(np.mean(ses**2)) / k + (float(np.var(means, ddof=1)) / k if k > 1 else 0.0)
    mean, se = float(means.mean()), math.sqrt(var)
    return {"mean": mean, "ci": [mean - Z95 * se, mean + Z95 * se], "per_seed": means.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--teacher", type=Path, help="teacher checkpoint or run directory (default: train the 1m one)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--problems", type=int, default=2000, help="train problems the teacher answers")
    ap.add_argument("--epochs", type=float, default=84, help="student training tokens, in passes over U")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out, seeds = args.out, [int(s) for s in args.seeds.split(",")]
    out.mkdir(parents=True, exist_ok=True)
    teacher = args.teacher or out / "teacher"
    if args.teacher is None:
        datawall("pretrain", *WORLD, "--size", "1m", "--lr", "1e-3", "--tokens", str(84 * EPOCH), "--unique-tokens",
                 str(U_TOKENS), "--batch-size", "8", "--seq-len", "64", "--eval-problems", "500", "--seed", "0",
                 "--out", str(teacher))
    data = {}
    for f in ("verifier", "none"):
        data[f] = datawall("synth", "generate", "--model", str(teacher), *WORLD, "--skip-unique-tokens",
                           str(U_TOKENS), "--problems", str(args.problems), "--strategy", "majority@8",
                           "--temperature", "0.7", "--filter", f, "--cache", str(out / "data" / "cache.sqlite"),
                           "--out", str(out / "data" / f))
    s = data["verifier"]["kept"]
    tokens = str(round(args.epochs * EPOCH))
    conditions = {"real_42": ["--tokens", str(42 * EPOCH)], "real": ["--tokens", tokens],
                  "verified": ["--tokens", tokens, "--synthetic", str(out / "data" / "verifier")],
                  "unfiltered": ["--tokens", tokens, "--synthetic", str(out / "data" / "none"),
                                 "--synthetic-examples", str(s)]}
    runs: dict[str, list[dict]] = {c: [] for c in conditions}
    for seed in seeds:
        for c, extra in conditions.items():
            run_dir = out / "students" / f"{c}-seed{seed}"
            r = datawall("pretrain", *WORLD, *STUDENT, *extra, "--seed", str(seed), "--out", str(run_dir))
            cmp_file = out / "compare" / f"{c}-seed{seed}.json"
            cmp_file.parent.mkdir(parents=True, exist_ok=True)
            if cmp_file.exists():
                cmp = json.loads(cmp_file.read_text())
            else:
                cmp = datawall("synth", "compare", str(run_dir), str(teacher), "--problems", "500", "--out",
                               str(cmp_file))
            rows = [json.loads(line) for line in cmp_file.with_name(cmp_file.name + ".problems.jsonl")
                    .read_text().splitlines()]
            runs[c].append({"seed": seed, "train": r, "compare": cmp, "rows": rows})
    summary = summarise(runs, data, teacher)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if args.json:
        print(json.dumps(summary))
    else:
        print(markdown(summary))


def _copied(rows: list[dict]) -> list[float]:
    return [float(r["copied_error"]) for r in rows]


def summarise(runs: dict[str, list[dict]], data: dict, teacher: Path) -> dict:
    """Per condition the mean over seeds; paired differences against real only (same tokens) and between filters."""
    table = {}
    for c, rs in runs.items():
        cmp = [r["compare"] for r in rs]
        table[c] = {"seeds": len(rs), "accuracy": [r["train"]["accuracy"] for r in rs],
                    **{k: float(np.mean([x[k] for x in cmp])) for k in
                       ("student_accuracy", "error_agreement", "error_agreement_of_errors", "kl", "exceeds_teacher",
                        "trails_teacher")},
                    "error_agreement_seeds": [x["error_agreement"] for x in cmp],
                    "error_agreement_of_errors_seeds": [x["error_agreement_of_errors"] for x in cmp],
                    "kl_seeds": [x["kl"] for x in cmp],
                    "flops": float(np.mean([r["train"]["flops"] for r in rs])),
                    "train_flops": float(np.mean([r["train"].get("train_flops", r["train"]["flops"]) for r in rs])),
                    "synthetic_flops": rs[0]["train"].get("synthetic_flops")}
    correct = {c: [[float(x["student_correct"]) for x in r["rows"]] for r in rs] for c, rs in runs.items()}
    copied = {c: [_copied(r["rows"]) for r in rs] for c, rs in runs.items()}
    return {
        "teacher": str(teacher), "teacher_accuracy": runs["real"][0]["compare"]["teacher_accuracy"],
        "data": {f: {k: d[k] for k in ("generated", "kept", "kept_precision", "teacher_accuracy", "sample_accuracy",
                                       "flops", "flops_per_kept", "dollars")} for f, d in data.items()},
        "conditions": table,
        "accuracy_gain": {f"{c} - real": paired(correct[c], correct["real"]) for c in ("verified", "unfiltered")}
        | {"real - real_42": paired(correct["real"], correct["real_42"]),
           "verified - unfiltered": paired(correct["verified"], correct["unfiltered"])},
        "error_agreement_gain": {f"{c} - real": paired(copied[c], copied["real"]) for c in ("verified", "unfiltered")}
        | {"unfiltered - verified": paired(copied["unfiltered"], copied["verified"])},
    }


def markdown(s: dict) -> str:
    """The tables docs/synthetic.md quotes."""
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    lines = [f"teacher {s['teacher']}: held-out accuracy {pct(s['teacher_accuracy'])}", "",
             "| data | generated | kept | kept precision | teacher FLOPs | FLOPs per kept |",
             "|---|---|---|---|---|---|"]
    for f, d in s["data"].items():
        lines.append(f"| {f} | {d['generated']} | {d['kept']} | {d['kept_precision']:.3f} | {d['flops']:.3g} | "
                     f"{d['flops_per_kept']:.3g} |")
    lines += ["", "| student | accuracy per seed | mean | error agreement (of problems) | (of its errors) | "
              "KL(student‖teacher) | exceeds teacher | FLOPs (train + teacher) |", "|---|---|---|---|---|---|---|---|"]
    for c, t in s["conditions"].items():
        flops = f"{t['train_flops']:.3g}" + (f" + {t['synthetic_flops']:.3g}" if t["synthetic_flops"] else "")
        lines.append(f"| {c} | {' / '.join(pct(a) for a in t['accuracy'])} | {pct(t['student_accuracy'])} | "
                     f"{pct(t['error_agreement'])} | {pct(t['error_agreement_of_errors'])} | {t['kl']:.3f} | "
                     f"{pct(t['exceeds_teacher'])} | {flops} |")
    lines += ["", "| paired difference (mean over seeds) | points | 95% interval |", "|---|---|---|"]
    for name, group in (("accuracy", s["accuracy_gain"]), ("error agreement", s["error_agreement_gain"])):
        for k, v in group.items():
            lo, hi = (100 * c for c in v["ci"])
            lines.append(f"| {name}: {k} | {100 * v['mean']:+.1f} | [{lo:+.1f}, {hi:+.1f}] |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
