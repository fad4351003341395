"""How `laws fit` scales with the number of rows: 10^3 .. 10^6 synthetic runs, time and peak memory.

Each size runs in a fresh process (so its peak resident memory is its own): write a CSV of synthetic runs
(N log-uniform in 1e7..1e10, D in 1e9..1e12, loss from Besiroglu et al.'s constants times 1% log-normal
noise), then read it and fit it as `datawall laws fit CSV --json` does, timing the two apart. Past
SCREEN_POINTS rows the grid of starts is screened on a sample; `--exact` also runs the unscreened full grid
on the smallest size and reports how far apart the two fits are.

    .venv/bin/python benchmarks/fit_scale.py [--sizes 1e3,1e4,1e5,1e6] [--exact]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from datawall.laws import ChinchillaLaw, fit_chinchilla, read_points  # noqa: E402
from datawall.laws import fit as fit_module  # noqa: E402
from datawall.laws.forms import CHINCHILLA_KEYS  # noqa: E402
from datawall.laws.published import BESIROGLU2024_LBFGS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit_speed import machine  # noqa: E402

TRUE = ChinchillaLaw(**BESIROGLU2024_LBFGS)


def write_csv(path: Path, n: int, seed: int = 0) -> None:
    """n synthetic runs: params, tokens, loss."""
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e12), n))
    L = TRUE.predict(N, D) * np.exp(rng.normal(0.0, 0.01, n))
    with open(path, "w") as f:
        f.write("params,tokens,loss\n")
        f.writelines(f"{a:.6g},{b:.6g},{c:.6f}\n" for a, b, c in zip(N, D, L, strict=True))


def one(csv: Path, full_grid: bool) -> dict:
    """Read and fit one CSV in this process; times, peak RSS and the constants."""
    if full_grid:
        fit_module.SCREEN_POINTS = 1 << 62  # every start on every point, as for the anchor data
    t0 = time.perf_counter()
    pts = read_points(csv)
    t1 = time.perf_counter()
    fit = fit_chinchilla(pts.N, pts.D, pts.L)
    t2 = time.perf_counter()
    return {"rows": len(pts), "read_s": t1 - t0, "fit_s": t2 - t1,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "screen_points": fit.screen_points, "objective": fit.objective, **fit.law.params()}


def run_child(csv: Path, full_grid: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--one", str(csv)] + (["--full-grid"] if full_grid else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e3,1e4,1e5,1e6")
    ap.add_argument("--exact", action="store_true", help="also fit the smallest size with the full grid")
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--full-grid", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.full_grid)))
        return
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    print(f"machine: {machine()}")
    print(f"synthetic runs from Besiroglu et al.'s constants x 1% noise; screen sample {fit_module.SCREEN_POINTS}, "
          f"stages x{fit_module.STAGE_GROWTH}; one fresh process per size\n")
    print(f"{'rows':>9} {'read s':>7} {'fit s':>7} {'total s':>8} {'peak RSS MB':>12}  "
          + "  ".join(f"{k:>8}" for k in CHINCHILLA_KEYS))
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for n in sizes:
            csv = Path(tmp) / f"runs_{n}.csv"
            write_csv(csv, n)
            r = results[n] = run_child(csv)
            print(f"{n:>9,} {r['read_s']:>7.1f} {r['fit_s']:>7.1f} {r['read_s'] + r['fit_s']:>8.1f} "
                  f"{r['peak_rss_mb']:>12.0f}  " + "  ".join(f"{r[k]:>8.5g}" for k in CHINCHILLA_KEYS), flush=True)
        if args.exact:
            n = sizes[0]
            full = run_child(Path(tmp) / f"runs_{n}.csv", full_grid=True)
            diff = max(abs(results[n][k] / full[k] - 1) for k in CHINCHILLA_KEYS)
            print(f"\nfull grid on all {n:,} rows: fit {full['fit_s']:.1f} s (screened: {results[n]['fit_s']:.1f} s); "
                  f"largest relative difference of the constants {diff:.1e}, objectives "
                  f"{full['objective']:.12g} vs {results[n]['objective']:.12g}")


if __name__ == "__main__":
    main()
