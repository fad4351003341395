"""The opt-in compiled decode step (generate(..., compile_step=True)): the eager sampler's samples and logprobs,
cached logits equal to a full forward, and one graph per cache kind however lengths and batch sizes change."""

from __future__ import annotations

import json

import pytest
import torch
import torch._dynamo.utils as dynamo_utils
from typer.testing import CliRunner

from datawall.cli import app
from datawall.commands.backends import build_backend
from datawall.data.tokenizer import Tokenizer
from datawall.errors import DatawallError
from datawall.model import Transformer, generate, model_config, save_checkpoint
from datawall.model.compiled_decode import compiled_step

TOK = Tokenizer.for_chars("abcdefghij0123456789 +-=#\n")
PROMPTS = ["12+34=", "a", "chief", "9-8=1#\nabc", "a"]

pytestmark = pytest.mark.slow  # compiling two graphs takes 20-60 s on 2 shared cores


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    shape = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64)  # GQA: 2 query heads per kv head
    m = Transformer(model_config(shape, TOK.vocab_size, 48, tie_embeddings=False)).eval()
    with torch.no_grad():  # sharp enough that rows stop at eos at different steps (the batch shrinks)
        m.tok_emb.weight.mul_(20.0)
        m.lm_head.weight.mul_(20.0)
    return m


def _run(model, **kw):
    out = generate(model, TOK, PROMPTS, max_new_tokens=14, temperature=1.0, seed=5, **kw)
    return [[(s.token_ids, s.finish_reason) for s in o] for o in out], [lp for o in out for s in o for lp in s.logprobs]


def test_compiled_step_samples_like_the_eager_step(model):
    dynamo_utils.counters.clear()
    for kw in (dict(n=1), dict(n=3), dict(n=2, stop=["#"]), dict(n=1, top_k=4)):
        eager_ids, eager_lps = _run(model, **kw)
        ids, lps = _run(model, compile_step=True, **kw)
        assert ids == eager_ids, kw  # the same samples, also where rows finished and left the batch
        assert lps == pytest.approx(eager_lps, abs=1e-5)
        assert any(r == "stop" for o in ids for _, r in o) and any(r == "length" for o in ids for _, r in o)
    # padded rows and shared-prefix rows are one graph each, whatever the cache length and batch size
    assert dynamo_utils.counters["stats"]["unique_graphs"] == 2


def test_compiled_cached_logits_match_a_full_forward(model):
    ids = torch.randint(3, TOK.vocab_size, (3, 12))
    with torch.inference_mode():
        full = model(ids)
        cache = model.new_cache(3, 13)
        cache.set_padding([0, 0, 0])
        steps = [model(ids[:, :4], cache)]
        steps += [compiled_step(model, ids[:, t : t + 1], cache) for t in range(4, 12)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_cli_sample_compile_gives_the_eager_samples(model, tmp_path):
    ckpt = save_checkpoint(tmp_path / "sharp", model, TOK)

    def samples(*args):
        result = CliRunner().invoke(app, ["sample", "--model", str(ckpt), "--prompt", "12+34=", "--max-tokens", "12",
                                          "--n", "3", "--seed", "7", "--json", *args])
        assert result.exit_code == 0, result.output
        return [(s["text"], s["finish_reason"]) for s in json.loads(result.stdout)["samples"]]

    eager = samples()
    assert samples("--compile") == eager
    assert len(set(eager)) > 1  # distinct samples: a seed that reached the sampler


def test_compiled_backend_samples_like_the_eager_one_and_is_cached_apart(model, tmp_path):
    ckpt = save_checkpoint(tmp_path / "sharp", model, TOK)
    eager, compiled = build_backend(model=ckpt), build_backend(model=ckpt, compile_step=True)
    assert compiled.identity == eager.identity + ":compiled"  # a sample cache never mixes the two
    kw = dict(n=2, max_tokens=10, temperature=1.0, top_p=None, stop=["#"], seed=3)
    texts = [[c.text for c in row] for row in eager.sample(PROMPTS, **kw)]
    assert [[c.text for c in row] for row in compiled.sample(PROMPTS, **kw)] == texts


def test_compile_goes_with_datawall_models_only(tmp_path):
    with pytest.raises(DatawallError, match="--compile compiles datawall's engine"):
        build_backend(hf=tmp_path, compile_step=True)
    result = CliRunner().invoke(app, ["think", "--task", "arith", "--out", str(tmp_path / "t"), "--hf", str(tmp_path),
                                      "--compile"])
    assert isinstance(result.exception, DatawallError) and "--compile compiles" in str(result.exception)
