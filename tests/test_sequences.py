"""Completion rows and their log-probabilities (datawall.train.objectives.sequences), shared by GRPO and DPO."""

import torch

from datawall.model import Transformer, model_config
from datawall.train.objectives.sequences import (
    completion_logprobs,
    frozen_copy,
    pack_sequences,
    reference_logprobs,
    token_entropy,
)


def _model(vocab=12, seed=0):
    torch.manual_seed(seed)
    return Transformer(model_config("100k", vocab_size=vocab, max_seq_len=32, n_layers=1))


def test_pack_marks_only_the_completion_as_targets():
    b = pack_sequences([[1, 5, 6], [1, 7]], [[8, 9, 2], [2]], pad_id=0)
    assert b.x.tolist() == [[1, 5, 6, 8, 9], [1, 7, 0, 0, 0]]
    assert b.y.tolist() == [[5, 6, 8, 9, 2], [7, 2, 0, 0, 0]]
    assert b.mask.tolist() == [[False, False, True, True, True], [False, True, False, False, False]]
    assert b.lengths.tolist() == [3, 1]


def test_logprobs_equal_the_plain_computation_and_ignore_padding():
    model = _model()
    b = pack_sequences([[1, 5, 6], [1, 7]], [[8, 9, 2], [4]], pad_id=0)
    lp = completion_logprobs(model, b)
    # row 1 alone, unpadded: padding after a row never changes its log-probabilities (causal mask)
    seq = torch.tensor([[1, 7, 4]])
    alone = torch.log_softmax(model(seq[:, :-1]), -1)[0, 1, 4]
    assert torch.allclose(lp[1, 1], alone, atol=1e-6)
    assert lp[1, 0] == 0 and (lp[1, 2:] == 0).all()
    full = torch.log_softmax(model(b.x), -1).gather(-1, b.y[..., None])[..., 0]
    assert torch.allclose(lp[0, 2:], full[0, 2:], atol=1e-6)
    ent = token_entropy(model(b.x), b)
    assert (ent[b.mask] > 0).all() and (ent[~b.mask] == 0).all()


def test_reference_logprobs_in_micro_batches_match_and_have_no_gradient():
    model = _model()
    ref = frozen_copy(model)
    assert not any(p.requires_grad for p in ref.parameters()) and not ref.training
    prompts = [[1, 3 + i % 5] for i in range(7)]
    comps = [[4] * (1 + i % 3) + [2] for i in range(7)]
    b = pack_sequences(prompts, comps, pad_id=0)
    whole = completion_logprobs(model, b).detach()
    parts = reference_logprobs(ref, b, micro_batch=3)
    assert parts.shape == whole.shape and not parts.requires_grad
    assert torch.allclose(parts, whole, atol=1e-6)
