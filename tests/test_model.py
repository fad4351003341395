"""datawall.model: presets, the decoder's forward/cache contract, parameter counts and FLOPs."""

from __future__ import annotations

import pytest
import torch

from datawall.errors import DatawallError
from datawall.model import (
    PRESETS,
    KVCache,
    Transformer,
    infer_flops_per_token,
    model_config,
    sample_flops,
    train_flops_per_token,
)
from datawall.model.flops import matmul_params
from datawall.model.transformer import HEAD_BLOCK


def tiny(**overrides) -> Transformer:
    torch.manual_seed(0)
    shape = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64)
    model = Transformer(model_config(shape | overrides, vocab_size=19, max_seq_len=24))
    with torch.no_grad():  # non-trivial norm gains, so a layout bug cannot hide behind ones
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("name,target", [("100k", 1e5), ("300k", 3e5), ("1m", 1e6), ("5m", 5e6), ("25m", 25e6)])
def test_presets_are_named_by_non_embedding_params(name, target):
    for vocab in (64, 4096):
        cfg = model_config(name, vocab_size=vocab, max_seq_len=128)
        model = Transformer(cfg) if name != "25m" else None
        n = matmul_params(cfg) - vocab * cfg.dim + cfg.n_layers * 2 * cfg.dim + cfg.dim
        if model is not None:
            assert model.num_params(non_embedding=True) == n
            assert model.num_params(non_embedding=False) == n + vocab * cfg.dim  # tied: embedding once
        assert 0.9 * target <= n <= 1.1 * target
        assert cfg.ffn_dim % 32 == 0 and cfg.head_dim in (32, 64)


def test_model_config_errors_and_overrides():
    with pytest.raises(DatawallError, match="100k, 300k, 1m, 5m, 25m"):
        model_config("7b", vocab_size=10, max_seq_len=8)
    with pytest.raises(DatawallError, match="n_kv_heads"):
        model_config("1m", vocab_size=10, max_seq_len=8, n_kv_heads=3)
    with pytest.raises(DatawallError, match="unknown field"):
        model_config("1m", vocab_size=10, max_seq_len=8, width=3)
    cfg = model_config("1m", vocab_size=10, max_seq_len=8, n_layers=2, tie_embeddings=False)
    assert (cfg.n_layers, cfg.dim, cfg.tie_embeddings) == (2, PRESETS["1m"]["dim"], False)
    assert model_config({"dim": 64, "n_layers": 1, "n_heads": 2}, 10, 8).ffn_dim == 192  # 8/3 d, up to 32


def test_untied_counts_exclude_lm_head():
    tied, untied = tiny(), tiny(tie_embeddings=False)
    assert tied.num_params(non_embedding=True) == untied.num_params(non_embedding=True)
    assert untied.num_params(non_embedding=False) == tied.num_params(non_embedding=False) + 19 * 32
    assert tied.lm_head.weight is tied.tok_emb.weight


def test_forward_shape_dtype_and_causality():
    model = tiny()
    x = torch.randint(0, 19, (3, 24))
    logits = model(x)
    assert logits.shape == (3, 24, 19) and logits.dtype == torch.float32
    y = x.clone()
    y[:, 10:] = (y[:, 10:] + 1) % 19
    assert torch.allclose(model(y)[:, :10], logits[:, :10], atol=1e-6)
    assert not torch.allclose(model(y)[:, 10:], logits[:, 10:])
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_cached_incremental_logits_match_full_sequence(kv_heads):
    model = tiny(n_kv_heads=kv_heads)
    x = torch.randint(0, 19, (2, 20))
    with torch.no_grad():
        full = model(x)
        cache = KVCache.for_model(model, 2, 24)
        parts = [model(x[:, :7], cache), model(x[:, 7:9], cache)]
        parts += [model(x[:, t : t + 1], cache) for t in range(9, 20)]
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)
    with torch.no_grad():
        last = model(x[:, :5], model.new_cache(2, 8), last_only=True)
    torch.testing.assert_close(last[:, 0], full[:, 4], atol=1e-5, rtol=0)


def test_left_padded_rows_match_unpadded_rows():
    model = tiny()
    a, b = torch.randint(0, 19, (1, 9)), torch.randint(0, 19, (1, 5))
    with torch.no_grad():
        batch = torch.cat([a, torch.cat([torch.zeros(1, 4, dtype=torch.long), b], 1)])
        cache = model.new_cache(2, 12)
        cache.set_padding([0, 4])
        first = model(batch, cache)
        nxt = torch.tensor([[3], [7]])
        second = model(nxt, cache)
        ref_a = model(torch.cat([a, nxt[:1]], 1))
        ref_b = model(torch.cat([b, nxt[1:]], 1))
    torch.testing.assert_close(first[0], ref_a[0, :9], atol=1e-5, rtol=0)
    torch.testing.assert_close(first[1, 4:], ref_b[0, :5], atol=1e-5, rtol=0)
    torch.testing.assert_close(second[0, 0], ref_a[0, 9], atol=1e-5, rtol=0)
    torch.testing.assert_close(second[1, 0], ref_b[0, 5], atol=1e-5, rtol=0)


def test_init():
    model = Transformer(model_config("1m", vocab_size=64, max_seq_len=16))
    assert abs(model.tok_emb.weight.std().item() - 0.02) < 0.002
    assert model.blocks[0].attn.wo.weight.std().item() < 0.02 / 2.5  # scaled by 1/sqrt(2 * 5)
    # (which parameters the optimizer decays: tests/test_train.py, the one builder in datawall/train/optim.py)


def test_flops_convention():
    cfg = model_config("5m", vocab_size=4096, max_seq_len=256)
    n = matmul_params(cfg)
    assert n == Transformer(cfg).num_params(non_embedding=True) - 13 * 256 + 4096 * 256  # minus norms, plus head
    d_attn = cfg.n_heads * cfg.head_dim
    assert train_flops_per_token(cfg, 256) == 6 * n + 6 * 6 * 256 * d_attn
    assert infer_flops_per_token(cfg, 100) == 2 * n + 4 * 6 * 100 * d_attn
    # mean forward cost over a causal training sequence is one third of the training cost, up to rounding
    mean_fwd = sum(infer_flops_per_token(cfg, c) for c in range(1, 257)) / 256
    assert abs(3 * mean_fwd / train_flops_per_token(cfg, 256) - 1) < 0.01
    by_hand = sum(infer_flops_per_token(cfg, c) for c in range(1, 11))
    by_hand += 4 * sum(infer_flops_per_token(cfg, c) for c in range(11, 11 + 7))
    assert sample_flops(cfg, prompt_len=10, new_tokens=8, n=4) == pytest.approx(by_hand)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_shared_prefix_attention_equals_copied_prefix(kv_heads):
    model = tiny(n_kv_heads=kv_heads)
    n, steps = 3, 6
    prompts = torch.randint(0, 19, (2, 7))
    with torch.no_grad():
        copied, shared = model.new_cache(2, 7 + steps), model.new_cache(2, 7 + steps)
        for cache in (copied, shared):
            cache.set_padding([0, 3])  # the second prompt is 4 tokens, left-padded
            model(prompts, cache)
        copied.keep(torch.arange(2).repeat_interleave(n))
        shared.share_prefix(n)
        assert shared.prefix.shape[2] == 2 and shared.batch_size == 2 * n and shared.max_len == 7 + steps
        with pytest.raises(ValueError, match="one token per row"):
            model(torch.zeros(2 * n, 2, dtype=torch.long), shared)
        tokens = torch.randint(0, 19, (2 * n, steps))
        for t in range(steps):
            if t == 4:  # dropping rows copies the prefix back into every row kept
                rows = torch.tensor([5, 0, 2, 3])
                copied.keep(rows)
                shared.keep(rows)
                tokens = tokens[rows]
                assert shared.prefix is None
            a = model(tokens[:, t : t + 1], copied)
            b = model(tokens[:, t : t + 1], shared)
            torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
        # both equal running each row's whole sequence without a cache (row 0 is sample 2 of the padded prompt)
        ref_padded = model(torch.cat([prompts[1:, 3:], tokens[:1]], 1))
        ref_plain = model(torch.cat([prompts[:1], tokens[1:2]], 1))
    torch.testing.assert_close(b[0, 0], ref_padded[0, -1], atol=1e-5, rtol=0)
    torch.testing.assert_close(b[1, 0], ref_plain[0, -1], atol=1e-5, rtol=0)


def test_inference_lm_head_in_blocks_equals_one_matmul():
    torch.manual_seed(0)
    shape = dict(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, ffn_dim=64)
    model = Transformer(model_config(shape, vocab_size=2 * HEAD_BLOCK + 77, max_seq_len=24)).eval()
    ids = torch.randint(0, model.config.vocab_size, (3, 5))
    with torch.inference_mode():
        blocked = model(ids)  # 15 rows of a 2125-token vocabulary: the head runs in 3 blocks of output rows
    with torch.no_grad():
        hidden = model.norm(model.blocks[0](model.tok_emb(ids), model.rope[:5], None, None))
        whole = torch.nn.functional.linear(hidden, model.lm_head.weight)
    torch.testing.assert_close(blocked, whole, atol=1e-6, rtol=0)
    assert blocked.shape == (3, 5, model.config.vocab_size)
