"""Cost per query (tokens, FLOPs, dollars) and the price table (defaults, overrides, validation)."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from datawall.errors import DatawallError
from datawall.model import model_config, sample_flops
from datawall.testtime import ApiPrice, CostModel, FlopsPrice, GpuHourPrice, load_prices

DOC = Path(__file__).resolve().parents[1] / "docs" / "test_time_compute.md"


@pytest.fixture(scope="module")
def cfg():
    return model_config("1m", vocab_size=40, max_seq_len=256)


FREE = ApiPrice(kind="api", input_per_million=0.0, output_per_million=0.0)


def test_query_flops_count_the_prompt_once(cfg):
    cost = CostModel(FREE, config=cfg)
    q = cost.query(12, [20, 20, 20, 20])
    assert q.flops == pytest.approx(sample_flops(cfg, 12, 20, n=4), rel=1e-12)
    assert q.tokens == 12 + 80
    # the prefill is shared: four completions cost less than four separate queries
    assert q.flops < 4 * cost.query(12, [20]).flops
    mixed = cost.query(12, [5, 30])
    assert mixed.flops == pytest.approx(sample_flops(cfg, 12, 5) + sample_flops(cfg, 12, 30, n=1)
                                        - sample_flops(cfg, 12, 30, n=0), rel=1e-12)


def test_expected_cost_is_the_mean_over_random_subsets(cfg):
    price = FlopsPrice(kind="flops", dollars_per_hour=3.6, sustained_flops=1e9)
    cost = CostModel(price, config=cfg)
    tokens = [3, 17, 9, 40, 11]
    ks = [1, 2, 3, 5]
    got = cost.expected(10, tokens, ks, seconds=5.0)
    for i, k in enumerate(ks):
        subsets = [cost.query(10, [tokens[j] for j in sub]) for sub in itertools.combinations(range(5), k)]
        assert got["samples"][i] == k
        assert got["tokens"][i] == pytest.approx(np.mean([q.tokens for q in subsets]))
        assert got["flops"][i] == pytest.approx(np.mean([q.flops for q in subsets]), rel=1e-12)
        assert got["dollars"][i] == pytest.approx(got["flops"][i] / 1e9 / 1000, rel=1e-12)  # $1e-3 per GFLOP
    # the pool's measured time is shared out by tokens: all n samples take all of it
    assert got["seconds"][-1] == pytest.approx(5.0)
    assert got["seconds"][0] == pytest.approx(5.0 * (10 + 16) / (10 + 80))


def test_flops_without_a_shape():
    with_params = CostModel(FREE, params=1e6)
    assert with_params.query(10, [5, 5]).flops == 2e6 * (10 + 4 + 4)
    unknown = CostModel(FREE).query(10, [5])
    assert math.isnan(unknown.flops) and unknown.dollars == 0.0
    with pytest.raises(DatawallError):
        CostModel(FREE).query(10, [])


def test_dollars_per_kind():
    api = ApiPrice(kind="api", input_per_million=2.0, output_per_million=8.0)
    assert CostModel(api).query(1000, [500, 500]).dollars == pytest.approx((1000 * 2 + 1000 * 8) / 1e6)
    gpu = GpuHourPrice(kind="gpu-hour", dollars_per_hour=3.0, gpus=2)
    assert CostModel(gpu).query(10, [5], seconds=60.0).dollars == pytest.approx(60 / 3600 * 3.0 * 2)
    assert math.isnan(CostModel(gpu).query(10, [5]).dollars)  # time not measured
    flops = FlopsPrice(kind="flops", dollars_per_hour=0.36, sustained_flops=1e10)
    assert CostModel(flops, params=1e6).query(100, [101]).dollars == pytest.approx(4e8 / 1e10 / 3600 * 0.36)


def test_default_table_loads_and_is_documented():
    table = load_prices()
    assert table.default in table.backends
    assert table.get().kind == "flops"
    assert table.get("gpt-4o-mini").input_per_million > 0
    doc = DOC.read_text()
    for name, price in table.backends.items():
        row = re.search(rf"^\|\s*`{re.escape(name)}`\s*\|.*$", doc, re.M)
        assert row, f"backend {name} is missing from the price table in {DOC.name}"
        assert price.kind in row.group(0)
    with pytest.raises(DatawallError, match="no price for backend 'nope'"):
        table.get("nope")


def test_override_file_replaces_and_adds_backends(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text('default = "mine"\n[backends.h100]\nkind = "gpu-hour"\ndollars_per_hour = 9.0\n'
                    '[backends.mine]\nkind = "api"\ninput_per_million = 1\noutput_per_million = 2\n')
    table = load_prices(path)
    assert table.get("h100").dollars_per_hour == 9.0
    assert table.get().output_per_million == 2.0
    assert table.get("gpt-4o").kind == "api"  # untouched defaults stay
    js = tmp_path / "prices.json"
    js.write_text(json.dumps({"backends": {"cpu": {"kind": "flops", "dollars_per_hour": 1, "sustained_flops": 1e9}}}))
    assert load_prices(js).get("cpu").sustained_flops == 1e9
    assert CostModel.for_backend("cpu", params=10.0, prices=str(js)).price.kind == "flops"


@pytest.mark.parametrize("text, message", [
    ('[backends.h100]\nkind = "gpu-hour"\ndollars_per_hour = -1\n', r"backends\.h100.*dollars_per_hour.*greater"),
    ('[backends.h100]\nkind = "gpu-hour"\ndollar_per_hour = 1\n', r"backends\.h100.*dollar_per_hour"),
    ('[backends.x]\nkind = "barter"\n', r"backends\.x.*kind|backends\.x.*tag"),
    ('[backends.x]\nkind = "api"\ninput_per_million = 1\n', r"backends\.x.*output_per_million.*required"),
    ('default = "ghost"\n', r"default backend 'ghost'"),
    ('price = 3\n', r"unknown key 'price'"),
    ('[backends\n', r"not valid TOML"),
    ('[backends.x]\ninput_per_million = 1\n', r"backends\.x: missing 'kind'"),
])
def test_bad_override_names_the_key(tmp_path, text, message):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(DatawallError, match=message) as err:
        load_prices(path)
    assert str(path) in str(err.value)


def test_missing_price_file(tmp_path):
    with pytest.raises(DatawallError, match="cannot read price table"):
        load_prices(tmp_path / "absent.toml")
