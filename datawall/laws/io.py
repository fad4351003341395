"""Reading fit points from CSV (column mapping, filters, validation) and saving/loading fitted laws as JSON."""

from __future__ import annotations

import csv
import json
import math
import operator
import re
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datawall.atomic import atomic_write_json
from datawall.errors import DatawallError
from datawall.laws.forms import CHINCHILLA_KEYS, DATA_CONSTRAINED_KEYS, ChinchillaLaw, DataConstrainedLaw, Law

# Candidate column names per role, compared case-insensitively after dropping a unit suffix
# (a trailing _k, _M, _B or _T means the column is in thousands, millions, billions or trillions).
CANDIDATES = {
    "N": ("n", "params", "parameters", "n_params", "num_params", "model size", "model_size"),
    "D": ("d", "tokens", "training tokens", "training_tokens", "train_tokens", "n_tokens"),
    "C": ("c", "flops", "training flop", "training flops", "training_flops", "compute"),
    "L": ("loss", "l", "val_loss", "eval_loss", "final_loss", "validation_loss"),
    "U": ("u", "unique_tokens", "unique tokens", "unique"),
}
ROLE_NAMES = {"N": "parameters N", "D": "training tokens D", "C": "training compute C",
              "L": "loss", "U": "unique tokens U"}
_UNIT = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
_SUFFIX = re.compile(r"^(.*?)[ _]\(?([kKmMbBtT])\)?$")
_OPS = {">=": operator.ge, "<=": operator.le, "!=": operator.ne, "==": operator.eq, "=": operator.eq,
        ">": operator.gt, "<": operator.lt}
_FILTER = re.compile(r"^\s*(.+?)\s*(>=|<=|!=|==|=|>|<)\s*(.+?)\s*$")


@dataclass
class Points:
    """Fit points: arrays N, D, L (and U), with the CSV line each came from (1-based, header is line 1)."""

    N: np.ndarray
    D: np.ndarray
    L: np.ndarray
    U: np.ndarray | None
    lines: np.ndarray
    source: str = ""
    columns: dict[str, str] = field(default_factory=dict)
    excluded_lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.L)

    @property
    def C(self) -> np.ndarray:
        """Training compute 6 N D."""
        return 6.0 * self.N * self.D

    def subset(self, mask: np.ndarray) -> Points:
        """The points where mask is true."""
        U = None if self.U is None else self.U[mask]
        return Points(self.N[mask], self.D[mask], self.L[mask], U, self.lines[mask], self.source,
                      self.columns, self.excluded_lines)


def _split_unit(name: str) -> tuple[str, float]:
    """'params_B' -> ('params', 1e9); names without a unit suffix have scale 1."""
    m = _SUFFIX.match(name.strip())
    if m and m.group(1):
        return m.group(1), _UNIT[m.group(2).lower()]
    return name.strip(), 1.0


ROLE_FLAGS = {"N": "--n-col", "D": "--d-col", "C": "--c-col", "L": "--loss-col", "U": "--u-col"}


def _find_column(header: list[str], role: str, given: str | None, path: str) -> tuple[str | None, float]:
    """The column that holds `role` (the given one, or the one whose name matches) and its unit scale."""
    available = ", ".join(repr(h) for h in header)
    if given is not None:
        if given not in header:
            raise DatawallError(f"{path}: no column {given!r} for {ROLE_NAMES[role]}; available: {available}")
        return given, _split_unit(given)[1]
    found = []
    for h in header:
        base, scale = _split_unit(h)
        if h.strip().lower() in CANDIDATES[role] or base.lower() in CANDIDATES[role]:
            found.append((h, 1.0 if h.strip().lower() in CANDIDATES[role] else scale))
    if len(found) > 1:
        _check_unique(header, [found[0][0]], path)  # one name given twice: say so
        names = " and ".join(repr(h) for h, _ in found)
        raise DatawallError(f"{path}: columns {names} could each be the {ROLE_NAMES[role]}; this is ambiguous, "
                            f"choose one with {ROLE_FLAGS[role]}")
    return found[0] if found else (None, 1.0)


def _check_unique(header: list[str], names: list[str], path: str) -> None:
    """Refuse a column we read whose name the header gives twice: which one is meant is ambiguous."""
    for name in dict.fromkeys(names):
        where = [i + 1 for i, h in enumerate(header) if h == name]
        if len(where) > 1:
            raise DatawallError(f"{path}: the header names column {name!r} {len(where)} times (columns "
                                f"{', '.join(map(str, where))}); which one is meant is ambiguous: rename them")


def parse_value(text: str) -> float:
    """A number as written in a CSV cell: '1.5e9', '1.5B', '200k', '3M'."""
    try:
        return float(text)  # the common case, fast; float() already ignores surrounding whitespace
    except ValueError:
        pass
    s = text.strip().replace("_", "").replace(",", "")
    if s and s[-1].lower() in _UNIT and s[:-1]:
        return float(s[:-1]) * _UNIT[s[-1].lower()]
    return float(s)


def _parse_filter(expr: str, header: list[str], path: str):
    """(column, comparison, target) of one --filter expression; target is a number unless it cannot be one."""
    m = _FILTER.match(expr)
    if not m:
        raise DatawallError(f"--filter {expr!r}: expected COLUMN OP VALUE with OP one of >=, <=, ==, !=, >, <")
    col, op, value = m.groups()
    if col not in header:
        raise DatawallError(f"--filter {expr!r}: {path} has no column {col!r}; available: {', '.join(header)}")
    try:
        target: float | str = parse_value(value)
    except ValueError:
        if op not in ("==", "=", "!="):
            raise DatawallError(f"--filter {expr!r}: {value!r} is not a number") from None
        target = value
    return col, _OPS[op], target


def _keep(row: list[str], filters) -> bool:
    """Whether a row passes every filter, given as (column index, comparison, target)."""
    for col, op, target in filters:
        cell = row[col].strip()
        if isinstance(target, str):
            ok = op(cell, target)
        else:
            try:
                ok = op(parse_value(cell), target)
            except ValueError:
                ok = False
        if not ok:
            return False
    return True


def _columns(header: list[str], p: str, n_col, d_col, c_col, loss_col, u_col, need_u: bool, filters):
    """role -> (column name, column index, unit scale) and the parsed filters, from the header row."""
    if not any(h.strip() for h in header):
        raise DatawallError(f"{p}: empty file (expected a header row)")
    available = ", ".join(repr(h) for h in header)
    cols: dict[str, tuple[str, float]] = {}
    for role, given in (("N", n_col), ("L", loss_col)):
        name, scale = _find_column(header, role, given, p)
        if name is None:
            raise DatawallError(f"{p}: no column for {ROLE_NAMES[role]} (pass {ROLE_FLAGS[role]}); "
                                f"available: {available}")
        cols[role] = (name, scale)
    d_name, d_scale = _find_column(header, "D", d_col, p) if c_col is None else (None, 1.0)
    if d_name is not None:
        cols["D"] = (d_name, d_scale)
    else:
        c_name, c_scale = _find_column(header, "C", c_col, p)
        if c_name is None:
            raise DatawallError(f"{p}: no column for training tokens D or compute C (pass --d-col or --c-col);"
                                f" available: {available}")
        cols["C"] = (c_name, c_scale)
    u_name, u_scale = _find_column(header, "U", u_col, p)
    if u_name is None and need_u:
        raise DatawallError(f"{p}: no column for unique tokens U, which the data-constrained form needs "
                            f"(pass --u-col); available: {available}")
    if u_name is not None:
        cols["U"] = (u_name, u_scale)
    flt = [_parse_filter(e, header, p) for e in filters]
    _check_unique(header, [name for name, _ in cols.values()] + [col for col, _, _ in flt], p)
    located = {role: (name, header.index(name), scale) for role, (name, scale) in cols.items()}
    return located, [(header.index(col), op, target) for col, op, target in flt]


def _read_rows(reader, header: list[str], cols: dict, flt: list, p: str):
    """role -> float64 array of values and the CSV line of each kept row; every row must match the header.

    One pass, values kept as packed doubles (a million rows take ~30 MB, not the ~1 GB of row dicts).
    """
    width = len(header)
    values = {role: array("d") for role in cols}
    lines = array("q")
    used = [(values[role], index, scale, name, role) for role, (name, index, scale) in cols.items()]
    for row in reader:
        line = reader.line_num  # the row's last line: quoted cells may span lines
        if not any(cell.strip() for cell in row):
            continue  # a blank line (or one of separators only)
        if len(row) != width:
            raise DatawallError(f"{p} line {line}: {len(row)} fields, but the header has {width} "
                                f"({', '.join(header)}); fix the row or the header")
        if flt and not _keep(row, flt):
            continue
        for out, index, scale, name, role in used:
            cell = row[index]
            try:
                v = parse_value(cell) * scale
            except ValueError:
                raise DatawallError(f"{p} line {line}: column {name!r} = {cell.strip()!r} is not a number") from None
            if not (math.isfinite(v) and v > 0):
                raise DatawallError(f"{p} line {line}: column {name!r} = {cell.strip()!r}; "
                                    f"{ROLE_NAMES[role]} must be positive and finite")
            out.append(v)
        lines.append(line)
    return ({role: np.frombuffer(v, dtype=np.float64).copy() for role, v in values.items()},
            np.frombuffer(lines, dtype=np.int64).astype(int))


def read_points(path: str | Path, n_col: str | None = None, d_col: str | None = None, c_col: str | None = None,
                loss_col: str | None = None, u_col: str | None = None, need_u: bool = False,
                filters: list[str] | tuple[str, ...] = (), exclude_top_loss: int = 0) -> Points:
    """Read (N, D, loss[, U]) points from a CSV; D comes from a tokens column or from compute as C / (6 N)."""
    path = Path(path)
    if not path.is_file():
        raise DatawallError(f"{path}: no such file")
    if d_col is not None and c_col is not None:
        raise DatawallError("give either --d-col or --c-col, not both (D = C / (6 N) when C is given)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            cols, flt = _columns(header, str(path), n_col, d_col, c_col, loss_col, u_col, need_u, filters)
            values, lines = _read_rows(reader, header, cols, flt, str(path))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DatawallError(f"{path}: not a readable CSV file ({e})") from None
    arr = values
    N = arr["N"]
    D = arr["D"] if "D" in arr else arr["C"] / (6.0 * N)
    columns = {role: name for role, (name, _, _) in cols.items()}
    pts = Points(N, D, arr["L"], arr.get("U"), lines, str(path), columns)
    if exclude_top_loss:
        if exclude_top_loss < 0 or exclude_top_loss >= len(pts):
            raise DatawallError(f"--exclude-top-loss {exclude_top_loss}: must be in [0, {len(pts) - 1}] "
                                f"for {len(pts)} points")
        order = np.argsort(pts.L, kind="stable")
        keep = np.zeros(len(pts), dtype=bool)
        keep[order[: len(pts) - exclude_top_loss]] = True
        excluded = sorted(int(x) for x in pts.lines[~keep])
        pts = pts.subset(keep)
        pts.excluded_lines = excluded
    return pts


def law_to_json(law: Law) -> dict:
    """The law's constants, form, name and bootstrap replicates as a JSON-ready dict."""
    out: dict = {"form": law.form, "name": law.name, **law.params()}
    if law.samples is not None:
        out["samples"] = [[float(v) for v in row] for row in law.samples]
    return out


def law_from_json(obj: dict, where: str = "law") -> Law:
    """Rebuild a law from `law_to_json` output, or from `laws fit --json` output."""
    if not isinstance(obj, dict):
        raise DatawallError(f"{where}: expected a JSON object")
    form = obj.get("form") or ("data-constrained" if "R_D_star" in obj else "chinchilla")
    cls, keys = {"chinchilla": (ChinchillaLaw, CHINCHILLA_KEYS),
                 "data-constrained": (DataConstrainedLaw, DATA_CONSTRAINED_KEYS)}.get(form, (None, ()))
    if cls is None:
        raise DatawallError(f"{where}: unknown form {form!r} (chinchilla or data-constrained)")
    kw = {}
    for k in keys:
        v = obj.get(k)
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
            raise DatawallError(f"{where}: key {k!r} must be a finite number, got {v!r}")
        kw[k] = float(v)
    samples = obj.get("samples")
    if samples is not None:
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 2 or samples.shape[1] != len(keys):
            raise DatawallError(f"{where}: 'samples' must be rows of {len(keys)} numbers ({', '.join(keys)})")
    return cls(**kw, name=str(obj.get("name", where)), samples=samples)


def load_law(path: str | Path) -> Law:
    """Read a saved fit JSON file."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatawallError(f"{path}: cannot read a fit JSON file ({e})") from None
    obj.setdefault("name", path.stem)
    return law_from_json(obj, str(path))


def save_json(path: str | Path, obj: dict) -> None:
    """Write a JSON object atomically."""
    atomic_write_json(path, obj)
