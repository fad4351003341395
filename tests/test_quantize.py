"""Opt-in int8 sampling copies (datawall.model.quantize): the fp32 model untouched, logits near its own, and the
sampler running on the copy (cached decode equal to the copy's full forward up to activation rounding)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from datawall.data.tokenizer import Tokenizer
from datawall.errors import DatawallError
from datawall.model import Transformer, generate, model_config
from datawall.model.quantize import int8_copy, is_quantized

TOK = Tokenizer.for_chars("abcdefghij0123456789 +-=#\n")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    shape = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128)
    return Transformer(model_config(shape, TOK.vocab_size, 64, tie_embeddings=True)).eval()


def test_int8_copy_leaves_the_model_and_stays_near_it(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q8 = int8_copy(model)
    assert not is_quantized(model) and is_quantized(q8)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert type(model.blocks[0].mlp.w13) is nn.Linear and model.lm_head.weight is model.tok_emb.weight
    assert type(q8.blocks[0].mlp.w13) is not nn.Linear and torch.equal(q8.tok_emb.weight, model.tok_emb.weight)
    ids = torch.randint(3, TOK.vocab_size, (4, 20))
    with torch.inference_mode():
        ref, got = model(ids), q8(ids)
    err = (got - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.05  # quantized (not the same numbers), within a few percent of the logits' range


def test_sampler_runs_on_an_int8_copy(model):
    q8 = int8_copy(model)
    kw = dict(n=3, max_new_tokens=10, temperature=1.0, seed=2, ignore_eos=True)
    first, again = (generate(q8, TOK, ["12+34=", "a"], **kw) for _ in range(2))
    assert [[s.text for s in o] for o in first] == [[s.text for s in o] for o in again]
    assert all(s.completion_tokens == 10 and all(lp <= 0 for lp in s.logprobs) for o in first for s in o)
    ids = torch.randint(3, TOK.vocab_size, (2, 12))
    with torch.inference_mode():
        full = q8(ids)
        cache = q8.new_cache(2, 12)
        steps = torch.cat([q8(ids[:, :6], cache)] + [q8(ids[:, t : t + 1], cache) for t in range(6, 12)], dim=1)
    # activations are quantized per call, so one token at a time is not bit-equal to the full forward
    assert (steps - full).abs().max() < 0.05 * full.abs().max()
    with pytest.raises(DatawallError, match="int8"):
        generate(q8, TOK, ["a"], max_new_tokens=2, compile_step=True)
