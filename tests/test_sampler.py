"""The KV-cache sampler: batching, shared prefill, seeds, filtering, stop strings, logprobs."""

from __future__ import annotations

import pytest
import torch

from datawall.data.tokenizer import Tokenizer
from datawall.errors import DatawallError
from datawall.model import Transformer, generate, model_config

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
