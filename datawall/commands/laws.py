"""`datawall laws fit | predict | plan`: fit scaling laws to runs, evaluate them, plan compute under a data cap."""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from datawall.counts import format_count, parse_count
from datawall.errors import DatawallError, validation_error

app = typer.Typer(help="Fit, evaluate and plan with scaling laws (Chinchilla and data-constrained).",
                  no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout (progress goes to stderr).")]
LawOpt = Annotated[str, typer.Option("--law", help="Published law name or a saved fit JSON file.")]
FORMS = ("chinchilla", "data-constrained")
SCALES = ("A", "B", "R_D_star", "R_N_star")


def _print_json(obj: dict) -> None:
    print(json.dumps(_finite(obj), allow_nan=False))  # NaN and Infinity are not JSON: null where undefined


def _finite(obj):
    """obj with every non-finite float replaced by None (JSON null), for results where a value can be undefined."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _quantity(text: str, flag: str, compute: bool = False) -> float:
    """A count as typed ('1.5B', '2e9', '300k'), unrounded, checked to lie in the range a law is evaluated on."""
    from datawall.laws.forms import MAX_COMPUTE, MAX_COUNT, check_count
    from datawall.laws.io import parse_value

    try:
        value = parse_value(text)
    except ValueError:
        value = float(parse_count(text, flag))  # its suffixes (G) or its one-line error
    return check_count(value, flag, MAX_COMPUTE if compute else MAX_COUNT)


def _non_finite(obj, path: str = "") -> str | None:
    """The key path of the first non-finite float in obj, or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return path or "the result"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list | tuple) else ()
    for k, v in items:
        found = _non_finite(v, f"{path}.{k}" if path else str(k))
        if found:
            return found
    return None


def _as_count(x: float) -> int | float:
    """An integral count as an int (JSON 1000000000, not 1e9 as a float)."""
    return int(x) if x.is_integer() and abs(x) < 2**63 else x


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


@app.command()
def fit(
    csv_path: Annotated[Path, typer.Argument(metavar="CSV", help="One run per row: N, D (or C), loss, [U].")],
    form: Annotated[str, typer.Option(help="chinchilla or data-constrained (Muennighoff et al. 2023).")]
    = "chinchilla",
    n_col: Annotated[str | None, typer.Option(help="Column of parameters N (suffix _B etc. = units).")] = None,
    d_col: Annotated[str | None, typer.Option(help="Column of training tokens D.")] = None,
    c_col: Annotated[str | None, typer.Option(help="Column of training FLOPs C; then D = C / (6 N).")] = None,
    loss_col: Annotated[str | None, typer.Option(help="Column of final loss.")] = None,
    u_col: Annotated[str | None, typer.Option(help="Column of unique tokens U (data-constrained).")] = None,
    exclude_top_loss: Annotated[int, typer.Option(help="Drop the K points with the highest loss.")] = 0,
    filters: Annotated[list[str] | None, typer.Option("--filter", help="Keep rows where 'COL OP VALUE' "
                                                       "(OP: >= <= == != > <); repeatable.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap replicates K for confidence intervals.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap resampling.")] = 0,
    level: Annotated[float, typer.Option(help="Confidence level of the intervals.")] = 0.95,
    compute: Annotated[str | None, typer.Option(help="Report the compute-optimal N, D at C FLOPs.")] = None,
    base: Annotated[str | None, typer.Option(help="data-constrained: hold this law (NAME|FILE) as the base "
                                                  "instead of fitting it on the single-epoch rows.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", "--out", help="Write fit.png, report.html and "
                                                                     "fit.json (usable as --law) here.")] = None,
    name: Annotated[str | None, typer.Option(help="Name of the fitted law (default: the CSV's stem).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta (or the data-constrained form) with a robust Huber fit."""
    from datawall.laws import bootstrap as bs
    from datawall.laws.fit import SCREEN_POINTS, fit_chinchilla, fit_data_constrained, fit_notes
    from datawall.laws.io import read_points
    from datawall.laws.published import get_law
    from datawall.report.law_report import fit_summary

    if form not in FORMS:
        raise DatawallError(f"--form {form!r}: expected one of {', '.join(FORMS)}")
    if bootstrap < 0:
        raise DatawallError(f"--bootstrap {bootstrap}: must be >= 0")
    if not 0 < level < 1:
        raise DatawallError(f"--level {level}: must be between 0 and 1")
    C = None if compute is None else _quantity(compute, "--compute", compute=True)
    dc = form == "data-constrained"
    t0 = time.perf_counter()
    pts = read_points(csv_path, n_col, d_col, c_col, loss_col, u_col, need_u=dc, filters=filters or (),
                      exclude_top_loss=exclude_top_loss)
    label = name or csv_path.stem

    def progress(message: str) -> None:  # stages of a large fit; stdout stays one JSON object
        print(f"[{time.perf_counter() - t0:6.1f} s] {message}", file=sys.stderr, flush=True)

    if len(pts) > SCREEN_POINTS:
        progress(f"read {len(pts):,} points from {csv_path}")
    if dc:
        base_law = None if base is None else get_law(base)
        if base_law is not None and base_law.form != "chinchilla":
            base_law = base_law.base  # type: ignore[union-attr]
        result = fit_data_constrained(pts.N, pts.D, pts.U, pts.L, base=base_law, name=label, progress=progress)
    else:
        if len(pts) < 5:
            raise DatawallError(f"{pts.source}: {len(pts)} points after filtering cannot determine 5 parameters")
        result = fit_chinchilla(pts.N, pts.D, pts.L, name=label, progress=progress)
    if bootstrap:
        with _bootstrap_bar(bootstrap) as advance:
            if dc:
                samples = bs.bootstrap_data_constrained(pts.N, pts.D, pts.U, pts.L, result, bootstrap, seed,
                                                        progress=advance)
            else:
                samples = bs.bootstrap_chinchilla(pts.N, pts.D, pts.L, result, bootstrap, seed, progress=advance)
        result.law = result.law.with_samples(samples)
    summary = fit_summary(result, pts, C, level, seed if bootstrap else None)
    summary["screen_points"] = result.screen_points
    summary["notes"] = fit_notes(result, pts.N, pts.D, pts.U if dc else None)
    summary = _finite(summary)
    if plot is not None:
        from datawall.report.law_report import write_fit_report

        summary["files"] = write_fit_report(plot, result, pts, summary)
    if as_json:
        _print_json(summary)
        return
    _print_fit(summary)


@contextmanager
def _bootstrap_bar(total: int):
    """A rich progress bar on stderr; yields advance(n)."""
    from datawall.progress import progress_bar

    with progress_bar(rate_unit="fits/s") as bar:
        task = bar.add_task("bootstrap", total=total, rate="", info="")
        t0 = time.perf_counter()

        def advance(n: int) -> None:
            bar.advance(task, n)
            done = bar.tasks[0].completed
            bar.update(task, rate=f"{done / max(time.perf_counter() - t0, 1e-9):.0f}")

        yield advance


def _print_fit(s: dict) -> None:
    console = Console()
    boot = s["bootstrap"]["replicates"]
    t = Table(title=f"{s['form']} fit of {s['points']} points", caption=s.get("source"))
    t.add_column("constant")
    t.add_column("estimate", justify="right")
    t.add_column(f"{s['bootstrap']['level']:.0%} interval" if boot else "interval", justify="right")
    t.add_column("bootstrap SE", justify="right")
    keys = ["E", "A", "B", "alpha", "beta"] + (["R_D_star", "R_N_star"] if "R_D_star" in s else [])
    se = s["standard_errors"] or {}
    for k in keys:
        iv = s["intervals"].get(k)
        spread = _fmt(se.get(k), 3)
        if k in SCALES and (s.get("geometric_errors") or {}).get(k) is not None:
            spread = f"x/ {s['geometric_errors'][k]:.3g}"  # scale constants spread over orders of magnitude
        t.add_row(k, _fmt(s[k], 6), "-" if iv is None else f"[{_fmt(iv[0])}, {_fmt(iv[1])}]", spread)
    console.print(t)
    console.print(f"Huber objective (delta {s['huber_delta']:g}, log-loss): {s['objective']:.6g}; "
                  f"{s['starts_at_best']} of {s['starts']} starts ended at the best fit")
    if s.get("excluded_lines"):
        console.print(f"excluded CSV lines (highest loss): {s['excluded_lines']}")
    if boot:
        b = s["bootstrap"]
        console.print(f"bootstrap: {boot} replicates (seed {b['seed']}), {b['failed']} failed")
    if "optimal" in s:
        o = s["optimal"]
        console.print(f"compute-optimal at C = {o['compute']:.3g} FLOPs: N = {format_count(o['params'])}, "
                      f"D = {format_count(o['tokens'])}, {o['tokens_per_param']:.1f} tokens/parameter, "
                      f"loss {o['loss']:.4f}")
    for note in s.get("notes") or []:
        console.print(f"note: {note}", style="yellow", markup=False, highlight=False)
    if "files" in s:
        console.print(f"wrote {s['files']['png']}, {s['files']['html']}, {s['files']['json']}")


@app.command()
def predict(
    law: LawOpt,
    params: Annotated[str, typer.Option("--params", help="Parameters N, e.g. 1.5B.")],
    tokens: Annotated[str, typer.Option("--tokens", help="Training tokens D, e.g. 300B.")],
    unique_tokens: Annotated[str | None, typer.Option(help="Unique tokens U (data-constrained laws).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Evaluate a law at N parameters, D tokens and (optionally) U unique tokens."""
    import numpy as np

    from datawall.laws.forms import DataConstrainedLaw, predict_interval, predict_point
    from datawall.laws.published import get_law

    model = get_law(law)
    N, D = _quantity(params, "--params"), _quantity(tokens, "--tokens")
    U = None if unique_tokens is None else _quantity(unique_tokens, "--unique-tokens")
    loss = predict_point(model, N, D, U, names=("--params", "--tokens", "--unique-tokens"))
    iv = predict_interval(model, N, D, U)
    out = {"law": model.name, "form": model.form, "params": _as_count(N), "tokens": _as_count(D),
           "unique_tokens": None if U is None else _as_count(U), "loss": loss,
           "loss_interval": None if iv is None else [float(iv[0]), float(iv[1])]}
    if isinstance(model, DataConstrainedLaw):
        with np.errstate(all="ignore"):
            out["effective_params"] = float(model.effective_params(N, D, U))
            out["effective_tokens"] = float(model.effective_data(D, U))
    out = _finite(out)
    if as_json:
        _print_json(out)
        return
    iv = out["loss_interval"]
    extra = "" if iv is None else f" (95% interval {iv[0]:.4f} to {iv[1]:.4f})"
    note = ""
    if U is not None and model.form == "chinchilla":
        note = " (U ignored: the Chinchilla form has no repetition term)"
    Console().print(f"{model.name}: L(N={format_count(N)}, D={format_count(D)}"
                    f"{'' if U is None else f', U={format_count(U)}'}) = {loss:.6f}{extra}{note}")


@app.command()
def plan(
    compute: Annotated[str, typer.Option("--compute", help="Training compute C in FLOPs, e.g. 1e21.")],
    unique_tokens: Annotated[str, typer.Option("--unique-tokens", help="Unique tokens U available.")],
    inference_tokens: Annotated[str | None, typer.Option(help="Tokens T the model will serve.")] = None,
    law: Annotated[str, typer.Option("--law", help="Published law name or a saved fit JSON file.")]
    = "datablations-muennighoff2023",
    as_json: JsonFlag = False,
) -> None:
    """Optimal N, D and epochs for C FLOPs and U unique tokens; marginal returns; inference-aware optimum."""
    import numpy as np

    from datawall.laws.plan import plan as make_plan
    from datawall.laws.published import get_law

    model = get_law(law)
    C = _quantity(compute, "--compute", compute=True)
    U = _quantity(unique_tokens, "--unique-tokens")
    T = 0.0 if inference_tokens in (None, "0") else _quantity(inference_tokens, "--inference-tokens")
    with np.errstate(all="ignore"):
        p = make_plan(model, C, U, T)
    bad = _non_finite(p)
    if bad:
        raise DatawallError(f"{model.name}: no finite plan for --compute {compute} and --unique-tokens "
                            f"{unique_tokens} ({bad} is not finite); try values nearer the law's range")
    if as_json:
        _print_json(p)
        return
    _print_plan(p)


def _print_plan(p: dict) -> None:
    console = Console()
    t = Table(title=f"plan for C = {p['compute']:.3g} FLOPs, U = {format_count(p['unique_tokens'])} unique tokens "
                    f"({p['law']})")
    for col in ("allocation", "params N", "tokens D", "epochs", "tokens/param", "loss", "train+inference FLOPs"):
        t.add_column(col, justify="right")
    o, f, i = p["optimal"], p["unconstrained"], p["inference_aware"]
    iv = o["loss_interval"]
    loss = f"{o['loss']:.4f}" + ("" if iv is None else f" [{iv[0]:.4f}, {iv[1]:.4f}]")
    t.add_row("compute-optimal (capped)", format_count(o["params"]), format_count(o["tokens"]),
              f"{o['epochs']:.2f}", f"{o['tokens_per_param']:.1f}", loss, f"{i['compute_optimal_total_flops']:.3g}")
    t.add_row("no data cap", format_count(f["params"]), format_count(f["tokens"]), "-",
              f"{f['tokens_per_param']:.1f}", f"{f['loss']:.4f}", "-")
    t.add_row(f"inference-aware (T = {format_count(p['inference_tokens'])})" if p["inference_tokens"]
              else "inference-aware (T = 0)", format_count(i["params"]), format_count(i["tokens"]),
              f"{i['epochs']:.2f}", f"{i['tokens_per_param']:.1f}", f"{i['loss']:.4f}", f"{i['total_flops']:.3g}")
    console.print(t)
    m = p["marginal"]
    console.print(f"marginal return dL/dln C: {m['dloss_dlnC']:.4g} with the data cap, "
                  f"{m['dloss_dlnC_no_cap']:.4g} without (per doubling: {m['dloss_dlnC'] * 0.6931:.4g} vs "
                  f"{m['dloss_dlnC_no_cap'] * 0.6931:.4g})")
    console.print(f"inference-aware saves {i['savings']:.1%} of total FLOPs; repetition model: {p['repetition']}")


@app.command()
def ladder(
    out: Annotated[Path, typer.Option("--out", help="Ladder directory: ladder.csv, report.html, figures, and "
                                                    "runs/NAME linking each run to its directory in the store.")],
    preset: Annotated[str, typer.Option(help="quick (25 runs, ~3 min on 2 cores) or standard (43 runs, "
                                              "~10-17 min).")] = "quick",
    corpus: Annotated[str, typer.Option(help="'stdlib' or a text file, .jsonl or directory.")] = "stdlib",
    unique_tokens: Annotated[str | None, typer.Option(help="Cap U: every run draws from the first U tokens; "
                                                           "adds a series repeating them 1, 2, 4, ... times.")] = None,
    budgets: Annotated[str | None, typer.Option(help="Override the preset's budgets, e.g. '3e11,1e12'.")] = None,
    sizes: Annotated[int | None, typer.Option(help="Override the model sizes per budget.")] = None,
    spec_file: Annotated[Path | None, typer.Option("--spec", help="JSON file of LadderSpec fields over the preset "
                                                                  "(seq_len, vocab_size, lr, ...).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for init, data order and the held-out split.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda.")] = None,
    store: Annotated[Path | None, typer.Option(help="Run store (default: $DATAWALL_HOME or ~/.datawall, as for "
                                               "`datawall study`); finished runs in it are reused, unfinished "
                                               "ones resumed.")] = None,
    executor: Annotated[str, typer.Option(help="local (a process pool) or ray.")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (with --executor ray).")] = None,
    workers: Annotated[int | None, typer.Option(help="Runs at once (default: cores // threads; 0 = one at a time "
                                                "in this process).")] = None,
    threads: Annotated[int, typer.Option(help="Torch threads per run (1 is fastest on shared cores).")] = 1,
    dry_run: Annotated[bool, typer.Option(help="Print the runs (name, tokens, lr, FLOPs, store run) and stop.")]
    = False,
    as_json: JsonFlag = False,
) -> None:
    """Run an IsoFLOP grid of pretraining runs, fit both law forms, plot them; re-runs reuse finished runs."""
    from pydantic import ValidationError

    from datawall.study.executors import get_executor
    from datawall.study.ladder import describe, ladder_spec, run_ladder
    from datawall.study.ladder_report import write_report
    from datawall.study.store import RunStore

    overrides: dict = {}
    if spec_file is not None:
        try:
            overrides = json.loads(spec_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DatawallError(f"--spec {spec_file}: cannot read a JSON object ({e})") from None
        if not isinstance(overrides, dict):
            raise DatawallError(f"--spec {spec_file}: expected a JSON object of LadderSpec fields")
    if budgets is not None:
        overrides["budgets"] = [float(parse_count(b, "--budgets")) for b in budgets.split(",") if b.strip()]
    flags = {"corpus": corpus, "sizes": sizes, "seed": seed, "device": device,
             "unique_tokens": parse_count(unique_tokens, "--unique-tokens") if unique_tokens else None}
    overrides |= {k: v for k, v in flags.items() if v is not None}
    try:
        spec = ladder_spec(preset, **overrides)
    except ValidationError as e:
        raise validation_error(e, "ladder spec") from None
    if dry_run:
        print(describe(spec))
        return
    runner = get_executor(executor, workers=workers, address=address, threads=threads)
    if executor == "local":
        from datawall.device import require_device

        require_device(spec.device, "--device")
    try:
        result = run_ladder(spec, out, store=RunStore(store), runner=runner)  # progress on stderr, even with --json
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept and unfinished ones checkpointed; "
              "run the same command again to continue", file=sys.stderr)
        raise typer.Exit(130) from None
    finally:
        runner.close()
    summary = write_report(result)
    if as_json:
        _print_json(summary)
        return
    _print_ladder(summary)


def _print_ladder(s: dict) -> None:
    console = Console()
    t = Table(title=f"IsoFLOP ladder: {s['runs']} runs ({s['computed']} trained now, {s['reused']} read back), "
                    f"{s['wall_seconds']:.0f} s")
    for col in ("budget C", "best N", "loss", "interior", "parabola N*", "law N*", "law loss"):
        t.add_column(col, justify="right")
    for o in s["optima"]:
        b, p, lo = o["best_run"], o["parabola"], o.get("law")
        t.add_row(f"{o['compute']:.3g}", format_count(b["params"]), f"{b['loss']:.4f}",
                  "yes" if b["interior"] else "no", format_count(p["params"]) if p else "-",
                  format_count(lo["params"]) if lo else "-", f"{lo['loss']:.4f}" if lo else "-")
    console.print(t)
    for key, f in s["fits"].items():
        if f is not None:
            extra = f", R_D* {f['R_D_star']:.4g}, R_N* {f['R_N_star']:.4g}" if "R_D_star" in f else ""
            console.print(f"{key} fit ({f['points']} runs): E {f['E']:.4g}, A {f['A']:.4g}, B {f['B']:.4g}, "
                          f"alpha {f['alpha']:.4g}, beta {f['beta']:.4g}{extra}")
    for note in s["notes"]:
        console.print(f"note: {note}")
    console.print("wrote " + ", ".join(v for v in s["files"].values()))
