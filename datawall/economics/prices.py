"""Price table: dollars per query for each backend (API tokens, GPU-hours, or FLOPs), and dollars per comparison
for each kind of grader (preference pairs), overridable by file."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from datawall.errors import DatawallError, validation_error

DEFAULT_PRICES = Path(__file__).with_name("default_prices.toml")
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Price(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    note: str = ""


class ApiPrice(_Price):
    """Dollars per million input and output tokens."""

    kind: Literal["api"]
    input_per_million: NonNegative
    output_per_million: NonNegative

    def dollars(self, input_tokens: float, output_tokens: float, flops: float = math.nan,
                seconds: float = math.nan) -> float:
        """Cost of a query that read input_tokens and wrote output_tokens."""
        return (input_tokens * self.input_per_million + output_tokens * self.output_per_million) / 1e6


class GpuHourPrice(_Price):
    """Dollars per GPU-hour times measured wall time."""

    kind: Literal["gpu-hour"]
    dollars_per_hour: NonNegative
    gpus: int = Field(1, ge=1)

    def dollars(self, input_tokens: float, output_tokens: float, flops: float = math.nan,
                seconds: float = math.nan) -> float:
        """Cost of a query that took `seconds` of wall time (NaN when the time was not measured)."""
        return seconds / 3600.0 * self.dollars_per_hour * self.gpus


class FlopsPrice(_Price):
    """Dollars per FLOP, from the hourly price of a machine and the FLOP/s it sustains."""

    kind: Literal["flops"]
    dollars_per_hour: NonNegative
    sustained_flops: Annotated[float, Field(gt=0, allow_inf_nan=False)]

    def dollars(self, input_tokens: float, output_tokens: float, flops: float = math.nan,
                seconds: float = math.nan) -> float:
        """Cost of a query that took `flops` FLOPs (NaN when they are unknown)."""
        return flops / self.sustained_flops / 3600.0 * self.dollars_per_hour


class ComparisonPrice(_Price):
    """Dollars per pairwise comparison a grader judges (a person, or a simulated one standing in for a person)."""

    kind: Literal["comparison"]
    dollars_per_comparison: NonNegative

    def per_comparison(self, comparisons: float) -> float:
        """Cost of `comparisons` judged comparisons."""
        return comparisons * self.dollars_per_comparison

    def dollars(self, input_tokens: float, output_tokens: float, flops: float = math.nan,
                seconds: float = math.nan) -> float:
        """A grader's price cannot price a query's tokens, FLOPs or time."""
        raise DatawallError("a per-comparison (grader) price cannot price tokens, FLOPs or time; use an api, "
                            "gpu-hour or flops entry")


Price = Annotated[ApiPrice | GpuHourPrice | FlopsPrice | ComparisonPrice, Field(discriminator="kind")]
KINDS = ("api", "gpu-hour", "flops", "comparison")


class PriceTable(BaseModel):
    """Named backends and the one used when none is named."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    default: str
    backends: dict[str, Price]

    @model_validator(mode="after")
    def _default_exists(self) -> PriceTable:
        if self.default not in self.backends:
            raise ValueError(f"default backend {self.default!r} is not in backends ({', '.join(self.backends)})")
        if self.backends[self.default].kind == "comparison":
            raise ValueError(f"default backend {self.default!r} is a grader's price (per comparison), which cannot "
                             "price a query")
        return self

    def get(self, name: str | None = None) -> ApiPrice | GpuHourPrice | FlopsPrice | ComparisonPrice:
        """The price of backend `name` (the table's default when None)."""
        key = self.default if name is None else name
        if key not in self.backends:
            raise DatawallError(f"no price for backend {key!r}; known: {', '.join(sorted(self.backends))}")
        return self.backends[key]


def _read(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise DatawallError(f"{path}: cannot read price table ({e.strerror})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise DatawallError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {e}") from None
    if not isinstance(data, dict):
        raise DatawallError(f"{path}: a price table must be an object with 'backends' (and optionally 'default')")
    return data


def _validate(data: dict, source: str) -> PriceTable:
    try:
        return PriceTable.model_validate(data)
    except ValidationError as e:
        raise validation_error(e, source, describe=_describe) from None


def _describe(err: dict) -> str:
    loc = [str(p) for p in err["loc"]]
    if len(loc) > 2 and loc[0] == "backends" and loc[2] in KINDS:
        del loc[2]  # pydantic puts the discriminator's value in the path
    msg = f"missing 'kind' (one of {', '.join(KINDS)})" if err["type"] == "union_tag_not_found" else err["msg"]
    return f"{'.'.join(loc) or '(top level)'}: {msg}"


def load_prices(path: str | Path | None = None) -> PriceTable:
    """The default price table, with the backends (and default) of a TOML/JSON file at `path` laid over it."""
    data = _read(DEFAULT_PRICES)
    if path is not None:
        path = Path(path)
        override = _read(path)
        unknown = set(override) - {"default", "backends"}
        if unknown:
            raise DatawallError(f"{path}: unknown key {sorted(unknown)[0]!r}; expected 'default' and 'backends'")
        backends = override.get("backends", {})
        if not isinstance(backends, dict):
            raise DatawallError(f"{path}: backends must be a table of named prices")
        data = {"default": override.get("default", data["default"]), "backends": {**data["backends"], **backends}}
        return _validate(data, str(path))
    return _validate(data, str(DEFAULT_PRICES))


def grader_price(name: str, path: str | Path | None = None) -> ComparisonPrice:
    """The per-comparison price of grader entry `name` (DatawallError naming it if it is not one)."""
    price = load_prices(path).get(name)
    if not isinstance(price, ComparisonPrice):
        raise DatawallError(f"price entry {name!r} is a {price.kind} price, not a grader's (kind = \"comparison\", "
                            "dollars_per_comparison)")
    return price
