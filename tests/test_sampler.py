"""The KV-cache sampler: batching, shared prefill, seeds, filtering, stop strings, logprobs, tiny and non-finite
sampling parameters (also through `datawall sample`), cancelled rows."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from datawall.cli import app
from datawall.data.tokenizer import Tokenizer
from datawall.errors import DatawallError
from datawall.model import Transformer, generate, model_config, save_checkpoint

TOK = Tokenizer.for_chars("abcdefghij0123456789 +-=#\n")
PROMPTS = ["12+34=", "a", "chief", "9-8=1#\nabc", "a"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    shape = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64)
    m = Transformer(model_config(shape, TOK.vocab_size, 48, tie_embeddings=False)).eval()
    with torch.no_grad():  # sharper than at init (entropy ~1.6 nats), so greedy has no near-ties
        m.tok_emb.weight.mul_(20.0)
        m.lm_head.weight.mul_(20.0)
    return m


def texts(outs):
    return [[s.text for s in o] for o in outs]


def test_batched_greedy_with_padding_equals_one_by_one(model):
    batched = generate(model, TOK, PROMPTS, max_new_tokens=12, temperature=0.0)
    single = [generate(model, TOK, [p], max_new_tokens=12, temperature=0.0)[0] for p in PROMPTS]
    assert [[s.token_ids for s in o] for o in batched] == [[s.token_ids for s in o] for o in single]
    assert [o[0].prompt_tokens for o in batched] == [len(p) + 1 for p in PROMPTS]  # bos prepended


def test_token_prompts_and_bos(model):
    ids = TOK.encode("12+34=")
    a = generate(model, TOK, [ids, [TOK.bos_id, *ids]], max_new_tokens=6, temperature=0.0)
    b = generate(model, TOK, ["12+34="], max_new_tokens=6, temperature=0.0)
    assert a[0][0].token_ids == a[1][0].token_ids == b[0][0].token_ids


def test_seeds(model):
    kw = dict(n=4, max_new_tokens=16, temperature=1.0, ignore_eos=True)
    first = generate(model, TOK, PROMPTS, seed=7, **kw)
    assert texts(first) == texts(generate(model, TOK, PROMPTS, seed=7, **kw))
    assert texts(first) != texts(generate(model, TOK, PROMPTS, seed=8, **kw))
    assert len({s.text for s in first[0]}) > 1  # the n samples of one prompt differ
    assert texts(first)[1] != texts(first)[4]  # so do two copies of the same prompt
    # a prompt's samples do not depend on the other prompts in the call
    alone = generate(model, TOK, [PROMPTS[3]], seed=7, **kw)
    assert texts(alone)[0] == texts(first)[3]


def test_top_k_1_and_tiny_top_p_are_greedy(model):
    greedy = generate(model, TOK, PROMPTS, max_new_tokens=10, temperature=0.0, ignore_eos=True)
    top_k = generate(model, TOK, PROMPTS, max_new_tokens=10, temperature=1.5, top_k=1, seed=1, ignore_eos=True)
    top_p = generate(model, TOK, PROMPTS, max_new_tokens=10, temperature=1.5, top_p=1e-6, seed=1, ignore_eos=True)
    assert texts(greedy) == texts(top_k) == texts(top_p)


def test_top_k_and_top_p_restrict_the_support(model):
    outs = generate(model, TOK, ["12"], n=8, max_new_tokens=8, temperature=2.0, top_k=3, seed=0, ignore_eos=True)
    ids = torch.tensor([TOK.bos_id, *TOK.encode("12")])
    with torch.no_grad():
        allowed = set(model(ids[None])[0, -1].topk(3).indices.tolist())
    assert {s.token_ids[0] for s in outs[0]} <= allowed
    outs = generate(model, TOK, ["12"], n=8, max_new_tokens=1, temperature=1.0, top_p=0.5, seed=0)
    with torch.no_grad():
        probs, order = model(ids[None])[0, -1].softmax(-1).sort(descending=True)
    nucleus = set(order[: int((probs.cumsum(0) < 0.5).sum()) + 1].tolist())
    assert {s.token_ids[0] for s in outs[0]} <= nucleus


def test_finish_reasons_and_eos(model):
    outs = generate(model, TOK, PROMPTS, n=8, max_new_tokens=24, temperature=1.5, seed=3)
    samples = [s for o in outs for s in o]
    for s in samples:
        assert s.completion_tokens == len(s.token_ids) == len(s.logprobs)
        if s.finish_reason == "stop":
            assert s.token_ids[-1] == TOK.eos_id and TOK.eos_id not in s.token_ids[:-1]
        else:
            assert s.finish_reason == "length" and len(s.token_ids) == 24 and TOK.eos_id not in s.token_ids
        assert s.text == TOK.decode(s.token_ids)
    assert {s.finish_reason for s in samples} == {"stop", "length"}
    no_eos = generate(model, TOK, PROMPTS, n=8, max_new_tokens=24, temperature=1.5, seed=3, ignore_eos=True)
    assert all(s.finish_reason == "length" and s.completion_tokens == 24 for o in no_eos for s in o)


def test_stop_strings_trim_the_text(model):
    full = generate(model, TOK, PROMPTS, max_new_tokens=16, temperature=0.0, ignore_eos=True)
    text = full[0][0].text
    stop = text[5:7]
    cut = text.find(stop)
    outs = generate(model, TOK, PROMPTS, max_new_tokens=16, temperature=0.0, ignore_eos=True, stop=[stop, "##"])
    s = outs[0][0]
    assert s.text == text[:cut] and s.finish_reason == "stop"
    ids = full[0][0].token_ids
    shortest = next(i for i in range(len(ids) + 1) if stop in TOK.decode(ids[:i]))
    assert s.token_ids == ids[:shortest]  # up to the token that completed the stop string
    for got, ref in zip(outs[1:], full[1:], strict=True):  # other rows unaffected unless they hit a stop too
        assert ref[0].text.startswith(got[0].text)


def test_context_limit_and_zero_tokens(model):
    long = "0123456789" * 4 + "abcde"  # 45 chars + bos = 46 of 48 positions
    out = generate(model, TOK, [long, "a"], max_new_tokens=8, temperature=0.0, ignore_eos=True)
    assert out[0][0].completion_tokens == 2 and out[0][0].finish_reason == "length"
    assert out[1][0].completion_tokens == 8
    empty = generate(model, TOK, ["a"], n=2, max_new_tokens=0)
    assert [s.token_ids for s in empty[0]] == [[], []] and empty[0][0].finish_reason == "length"
    assert generate(model, TOK, []) == []
    with pytest.raises(DatawallError, match="exceeds the context"):
        generate(model, TOK, [long * 2])
    for bad in (dict(n=0), dict(temperature=-1.0), dict(top_k=0), dict(top_p=0.0), dict(max_new_tokens=-1)):
        with pytest.raises(DatawallError):
            generate(model, TOK, ["a"], **bad)


def test_n_samples_share_one_prefill(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda m, args: calls.append(tuple(args[0].shape)))
    try:
        outs = generate(model, TOK, ["12+34=", "abc", "12+34="], n=5, max_new_tokens=6, ignore_eos=True)
    finally:
        handle.remove()
    prefills = [shape for shape in calls if shape[1] > 1]
    assert prefills == [(2, 7)]  # two distinct prompts, left-padded to 7 tokens, run once
    assert all(shape[1] == 1 for shape in calls[1:])
    assert [len(o) for o in outs] == [5, 5, 5]


def test_logprobs_match_full_recomputation(model):
    outs = generate(model, TOK, PROMPTS[:3], n=3, max_new_tokens=10, temperature=0.8, top_k=5, seed=11)
    for prompt, samples in zip(PROMPTS, outs, strict=False):
        for s in samples:
            ids = torch.tensor([TOK.bos_id, *TOK.encode(prompt), *s.token_ids])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids[None])[0], -1)
            n_prompt = s.prompt_tokens
            ref = [logp[n_prompt - 1 + i, t].item() for i, t in enumerate(s.token_ids)]
            assert all(lp <= 0 for lp in s.logprobs)
            assert s.logprobs == pytest.approx(ref, abs=1e-4)
    assert generate(model, TOK, ["a"], max_new_tokens=3, return_logprobs=False)[0][0].logprobs is None


@pytest.mark.parametrize("temperature", [5e-324, 1e-300, 1e-30, 9.9e-6])
def test_tiny_temperatures_are_greedy(model, temperature):
    greedy = generate(model, TOK, PROMPTS, n=2, max_new_tokens=12, temperature=0.0, ignore_eos=True)
    tiny = generate(model, TOK, PROMPTS, n=2, max_new_tokens=12, temperature=temperature, seed=3, ignore_eos=True)
    assert texts(tiny) == texts(greedy)


@pytest.mark.parametrize("top_p", [5e-324, 1e-300, 1e-46, 1e-9])
def test_tiny_top_p_is_top_1_even_where_float32_rounds_it_to_zero(model, top_p):
    greedy = generate(model, TOK, PROMPTS, max_new_tokens=12, temperature=0.0, ignore_eos=True)
    tiny = generate(model, TOK, PROMPTS, max_new_tokens=12, temperature=1.5, top_p=top_p, seed=1, ignore_eos=True)
    assert texts(tiny) == texts(greedy)


@pytest.mark.parametrize("bad", [dict(temperature=float("nan")), dict(temperature=float("inf")),
                                 dict(temperature=float("-inf")), dict(top_p=float("nan")),
                                 dict(top_p=float("inf")), dict(temperature=-1e-300)])
def test_non_finite_sampling_parameters_are_refused(model, bad):
    with pytest.raises(DatawallError, match="temperature must be a finite number|top_p must be in"):
        generate(model, TOK, ["a"], **bad)


def test_cancelled_rows_leave_the_batch_at_once(model):
    kw = dict(n=4, max_new_tokens=12, temperature=1.0, seed=5, ignore_eos=True)
    full = generate(model, TOK, ["12+34=", "abc"], **kw)
    widths = []
    handle = model.register_forward_pre_hook(lambda m, args: widths.append(args[0].shape[0]))
    steps = iter(range(100))

    def cancelled():  # rows 1 and 6 (prompt 0 sample 1, prompt 1 sample 2) are abandoned after step 3
        return [1, 6] if next(steps) == 3 else []

    try:
        outs = generate(model, TOK, ["12+34=", "abc"], cancelled=cancelled, **kw)
    finally:
        handle.remove()
    gone = [outs[0][1], outs[1][2]]
    assert all(s.finish_reason == "cancelled" and s.completion_tokens == 4 for s in gone)
    assert [s.token_ids for s in gone] == [full[0][1].token_ids[:4], full[1][2].token_ids[:4]]
    others = [(i, j) for i in range(2) for j in range(4) if (i, j) not in ((0, 1), (1, 2))]
    assert [outs[i][j].text for i, j in others] == [full[i][j].text for i, j in others]  # the rest unchanged
    assert widths[:4] == [2, 8, 8, 8] and set(widths[4:]) == {6}  # prefill, 3 decode steps of 8 rows, then 6


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("sampler") / "sharp", model, TOK)


def cli_sample(checkpoint, *args: str):
    return CliRunner().invoke(app, ["sample", "--model", str(checkpoint), "--prompt", "12+34=", "--max-tokens", "10",
                                    "--json", *args])


def test_cli_sample_tiny_temperature_is_greedy(checkpoint):
    def samples(*args):
        result = cli_sample(checkpoint, *args)
        assert result.exit_code == 0, result.output
        return [s["text"] for s in json.loads(result.stdout)["samples"]]

    greedy = samples("--temperature", "0")
    assert samples("--temperature", "1e-300", "--n", "3", "--seed", "4") == greedy * 3
    assert samples("--top-p", "5e-324", "--n", "3", "--seed", "4") == greedy * 3


@pytest.mark.parametrize("args, message", [
    (("--temperature", "nan"), "--temperature must be a finite number >= 0"),
    (("--temperature", "inf"), "--temperature must be a finite number >= 0"),
    (("--temperature", "-1e-9"), "--temperature must be a finite number >= 0"),
    (("--top-p", "nan"), "--top-p must be in (0, 1]"),
    (("--top-p", "0"), "--top-p must be in (0, 1]"),
    (("--top-k", "0"), "--top-k must be >= 1"),
])
def test_cli_sample_refuses_bad_sampling_values_in_one_line(checkpoint, args, message):
    result = cli_sample(checkpoint, *args)
    assert isinstance(result.exception, DatawallError) and message in str(result.exception)
