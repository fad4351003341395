"""Speed of `laws fit`: the full Hoffmann grid on the 240 Chinchilla points, and 1,000 bootstrap refits.

Compared against the naive way: scipy.optimize.minimize(method="L-BFGS-B") called once per grid start
with numerical gradients (what Besiroglu et al.'s notebook does). The naive run over all 5,400 starts
takes minutes, so by default a seeded random subset of starts is timed and the total extrapolated.

    .venv/bin/python benchmarks/fit_speed.py [--bootstrap 1000] [--naive-starts 300] [--naive-full]
"""

from __future__ import annotations

import os

# BLAS single-threaded for both contenders: scipy's L-BFGS-B makes tiny BLAS calls that stall for
# seconds when OpenBLAS threads compete for shared cores (datawall's fit makes none)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy.optimize import minimize  # noqa: E402
from scipy.special import huber, logsumexp  # noqa: E402

from datawall.laws import HOFFMANN_GRID, bootstrap_chinchilla, fit_chinchilla, read_points, standard_errors  # noqa: E402
from datawall.laws.bootstrap import CORNER_GRID, resample_counts  # noqa: E402
from datawall.laws.fit import fit_weighted_chinchilla  # noqa: E402
from datawall.laws.forms import CHINCHILLA_KEYS  # noqa: E402
from datawall.laws.objective import chinchilla_objective  # noqa: E402
from datawall.laws.published import BESIROGLU2024_LBFGS  # noqa: E402

ANCHORS = Path(__file__).resolve().parents[1].parent / "shared" / "anchors"
BESIROGLU_SE = {"E": 0.03, "alpha": 0.02, "beta": 0.02}  # their reported standard errors (rounded)


def machine() -> str:
    """CPU model, cores available to this process, load, numpy/scipy versions."""
    cpu = platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else ""
    blas = os.environ["OPENBLAS_NUM_THREADS"]
    return (f"{cpu}; {cores} cores available (of {os.cpu_count()}){load}; Python {platform.python_version()}, "
            f"numpy {np.__version__}, scipy {scipy.__version__}, OPENBLAS_NUM_THREADS={blas}")


def scipy_per_start(N, D, L, starts: np.ndarray, analytic: bool) -> tuple[float, np.ndarray, float]:
    """scipy L-BFGS-B once per start, default tolerances: (seconds, best theta, best Huber objective).

    analytic=False is the naive way (numerical gradients, as Besiroglu et al.'s notebook); analytic=True
    hands scipy datawall's objective and gradient, to separate the gain of gradients from that of batching.
    """
    lN, lD, lL = np.log(N), np.log(D), np.log(L)
    ones = np.ones_like(lN)

    def objective(p):
        a, b, e, alpha, beta = p
        pred = logsumexp([a - alpha * lN, b - beta * lD, e * ones], axis=0)
        return np.sum(huber(1e-3, pred - lL))

    fg, one = chinchilla_objective(N, D, L), np.zeros(1, dtype=int)

    def with_gradient(p):
        f, g = fg(p[None, :], one)
        return float(f[0]) * 1e-3, g[0] * 1e-3  # back to the unscaled Huber sum

    t0 = time.perf_counter()
    if analytic:
        results = [minimize(with_gradient, x0, jac=True, method="L-BFGS-B") for x0 in starts]
    else:
        results = [minimize(objective, x0, method="L-BFGS-B") for x0 in starts]
    seconds = time.perf_counter() - t0
    best = min(results, key=lambda r: r.fun)
    return seconds, best.x, float(best.fun)


def params_line(p: dict) -> str:
    return ", ".join(f"{k} {p[k]:.5g}" for k in CHINCHILLA_KEYS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--naive-starts", type=int, default=300, help="random grid starts timed for the naive run")
    ap.add_argument("--naive-full", action="store_true", help="time the naive run on all 5,400 starts")
    args = ap.parse_args()
    csv = ANCHORS / "chinchilla_epoch_svg_extracted.csv"
    if not csv.exists():
        sys.exit(f"skipped: anchor data {csv} not found")
    pts = read_points(csv, c_col="Training FLOP", exclude_top_loss=5)
    N, D, L = pts.N, pts.D, pts.L
    print(f"machine: {machine()}")
    print(f"data: {len(pts)} points ({csv.name}, 5 highest losses excluded), grid of {len(HOFFMANN_GRID)} starts")

    times, fit = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fit = fit_chinchilla(N, D, L)
        times.append(time.perf_counter() - t0)
    p = fit.law.params()
    print(f"\nfull-grid fit: min {min(times):.2f} s, median {statistics.median(times):.2f} s over {args.repeats} runs"
          f" ({fit.starts_at_best} of {fit.starts} starts end at the best fit)")
    print(f"  datawall  : {params_line(p)}; Huber objective {fit.objective:.10g}")
    print(f"  Besiroglu : {params_line(BESIROGLU2024_LBFGS)}")
    print("  rel. diff : " + ", ".join(f"{k} {p[k] / BESIROGLU2024_LBFGS[k] - 1:+.2%}" for k in CHINCHILLA_KEYS))

    if args.bootstrap:
        t0 = time.perf_counter()
        samples = bootstrap_chinchilla(N, D, L, fit, args.bootstrap, seed=0)
        boot_s = time.perf_counter() - t0
        se = standard_errors(samples, CHINCHILLA_KEYS)
        print(f"\nbootstrap: {args.bootstrap} refits in {boot_s:.1f} s ({args.bootstrap / boot_s:.0f} fits/s); "
              f"each from the full-data fit + 32 corner starts, all batched")
        print("  standard errors: " + ", ".join(f"{k} {se[k]:.4g}" for k in CHINCHILLA_KEYS)
              + "  (Besiroglu et al.: E ~0.03, alpha ~0.02, beta ~0.02)")
        W = resample_counts(len(L), args.bootstrap, seed=0)
        t0 = time.perf_counter()
        warm, f_warm = fit_weighted_chinchilla(N, D, L, W, fit.theta[None, :])
        warm_s = time.perf_counter() - t0
        _, f_all = fit_weighted_chinchilla(N, D, L, W, np.vstack([fit.theta, CORNER_GRID]))
        better = int(np.sum(f_all < f_warm * (1 - 1e-6)))
        print(f"  warm start only: {warm_s:.1f} s; the 32 extra starts found a better minimum (by >1e-6 relative) "
              f"in {better} of {args.bootstrap} replicates")

    rng = np.random.default_rng(0)
    n = len(HOFFMANN_GRID) if args.naive_full else min(args.naive_starts, len(HOFFMANN_GRID))
    subset = HOFFMANN_GRID[rng.choice(len(HOFFMANN_GRID), n, replace=False)]
    how = f"all {n} starts" if n == len(HOFFMANN_GRID) else f"{n} random starts (seed 0)"
    for analytic, label in ((False, "naive: numerical gradients"), (True, "analytic gradients")):
        secs, x, fbest = scipy_per_start(N, D, L, subset, analytic)
        total = secs * len(HOFFMANN_GRID) / n
        extrapolated = "" if n == len(HOFFMANN_GRID) else " (extrapolated)"
        print(f"\nscipy L-BFGS-B per start, {label}: {secs:.1f} s for {how}, {secs / n * 1e3:.1f} ms per start"
              f" -> {total:.0f} s for all {len(HOFFMANN_GRID)} starts{extrapolated}")
        a, b, e, alpha, beta = x
        best = {"E": np.exp(e), "A": np.exp(a), "B": np.exp(b), "alpha": alpha, "beta": beta}
        print(f"  best of these starts: {params_line(best)}; Huber objective {fbest:.10g}")
        print(f"  datawall's batched full-grid fit is {total / min(times):.0f}x faster")

if __name__ == "__main__":
    main()
