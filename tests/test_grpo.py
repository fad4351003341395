"""The GRPO-family losses (datawall.train.objectives.grpo) against straightforward reference computations."""

from __future__ import annotations

import math

import pytest
import torch

from datawall.model import Transformer, model_config
from datawall.train.objectives.grpo import (
    GRPOConfig,
    GRPOObjective,
    Rollout,
    StepCounts,
    aggregate,
    group_advantages,
    kl_k3,
    token_losses,
)
from datawall.train.objectives.sequences import completion_logprobs, pack_sequences

EPS_LOW, EPS_HIGH, BETA = 0.2, 0.28, 0.04


def ref_advantages(rewards: list[list[float]], scale: str) -> list[list[float]]:
    """TRL's advantages, written out: r - mean(group), over (unbiased std of the group or batch) + 1e-4."""
    flat = [r for g in rewards for r in g]

    def std(xs):
        m = sum(xs) / len(xs)
        return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))

    out = []
    for g in rewards:
        mean = sum(g) / len(g)
        div = {"group": std(g) + 1e-4, "batch": std(flat) + 1e-4, "none": 1.0}[scale]
        out.append([(r - mean) / div for r in g])
    return out


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_equal_trl_written_out(scale):
    rewards = [[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.2, 0.9, 0.5, 0.5]]
    got = group_advantages(torch.tensor(rewards), scale)
    assert torch.allclose(got, torch.tensor(ref_advantages(rewards, scale)), atol=1e-6)
    assert (got[1] == 0).all()  # an all-equal group teaches nothing, whatever the scaling


def _fixed():
    """Fixed per-token log-probs of 4 completions (lengths 3, 1, 4, 2) under policy, sampler and reference."""
    g = torch.Generator().manual_seed(0)
    lengths = [3, 1, 4, 2]
    mask = torch.tensor([[t < n for t in range(5)] for n in lengths])
    logp = -torch.rand(4, 5, generator=g) * 2
    old = logp + (torch.rand(4, 5, generator=g) - 0.5) * 0.8  # ratios well outside [0.8, 1.28] on some tokens
    ref = logp + (torch.rand(4, 5, generator=g) - 0.5) * 0.5
    adv = torch.tensor([1.5, -0.5, -1.0, 0.7])
    return logp * mask, old * mask, ref * mask, adv, mask


def ref_token_loss(lp: float, old: float, ref: float, a: float, loss: str, beta: float) -> float:
    """One token's loss, scalar arithmetic."""
    r = math.exp(lp - old)
    if loss == "reinforce":
        pg = -r * a
    else:
        pg = -min(r * a, min(max(r, 1 - EPS_LOW), 1 + EPS_HIGH) * a)
    return pg + beta * (math.exp(ref - lp) - (ref - lp) - 1)


def ref_loss(logp, old, ref, adv, mask, loss: str, beta: float, micro: list[list[int]], max_tokens: int) -> float:
    """The step's loss as TRL's docs define each type, from per-token scalars; `micro` = the micro-batches' rows."""
    rows = range(len(adv))
    tok = {i: [ref_token_loss(float(logp[i, t]), float(old[i, t]), float(ref[i, t]), float(adv[i]), loss, beta)
               for t in range(mask.shape[1]) if mask[i, t]] for i in rows}
    if loss == "grpo":  # mean over sequences of the per-sequence token mean
        return sum(sum(v) / len(v) for v in tok.values()) / len(tok)
    if loss == "dr_grpo":  # sum over everything / (sequences x max completion length)
        return sum(sum(v) for v in tok.values()) / (len(tok) * max_tokens)
    if loss == "bnpo":  # each micro-batch's token mean, averaged over micro-batches
        return sum(sum(sum(tok[i]) for i in m) / sum(len(tok[i]) for i in m) for m in micro) / len(micro)
    return sum(sum(v) for v in tok.values()) / sum(len(v) for v in tok.values())  # dapo, reinforce


@pytest.mark.parametrize("loss", ["grpo", "dr_grpo", "dapo", "bnpo", "reinforce"])
@pytest.mark.parametrize("beta", [0.0, BETA])
@pytest.mark.parametrize("micro", [[[0, 1, 2, 3]], [[0, 2], [1, 3]]])
def test_each_loss_equals_its_reference_computation(loss, beta, micro):
    logp, old, ref, adv, mask = _fixed()
    counts = StepCounts(rows=4, tokens=int(mask.sum()), micro_batches=len(micro), max_tokens=7)
    total = 0.0
    for rows in micro:  # the loop sums the micro-batches' shares
        idx = torch.tensor(rows)
        per, _ = token_losses(logp[idx], old[idx], adv[idx], loss, EPS_LOW, EPS_HIGH, ref[idx], beta)
        total += float(aggregate(per, mask[idx], loss, counts))
    want = ref_loss(logp, old, ref, adv, mask, loss, beta, micro, 7)
    assert total == pytest.approx(want, rel=1e-5, abs=1e-7)


def test_bnpo_is_dapo_with_one_micro_batch_and_differs_with_two():
    logp, old, ref, adv, mask = _fixed()
    one = StepCounts(4, int(mask.sum()), 1, 7)
    per, _ = token_losses(logp, old, adv, "dapo", EPS_LOW, EPS_HIGH)
    assert float(aggregate(per, mask, "bnpo", one)) == pytest.approx(float(aggregate(per, mask, "dapo", one)))
    assert ref_loss(logp, old, ref, adv, mask, "bnpo", 0.0, [[0, 1], [2, 3]], 7) != \
        pytest.approx(ref_loss(logp, old, ref, adv, mask, "dapo", 0.0, [[0, 1], [2, 3]], 7))


def test_kl_k3_is_nonnegative_and_zero_at_the_reference():
    g = torch.Generator().manual_seed(1)
    logp, ref = -torch.rand(1000, generator=g) * 5, -torch.rand(1000, generator=g) * 5
    kl = kl_k3(logp, ref)
    assert (kl >= 0).all() and kl.max() > 0.1
    assert torch.equal(kl_k3(logp, logp), torch.zeros(1000))
    # and it estimates KL(pi || ref): its mean under samples of pi is the exact KL
    p = torch.softmax(torch.randn(6, generator=g), 0)
    q = torch.softmax(torch.randn(6, generator=g), 0)
    exact = float((p * (p / q).log()).sum())
    estimate = float((p * kl_k3(p.log(), q.log())).sum())
    assert estimate == pytest.approx(exact, rel=1e-5)


class FixedSource:
    """A rollout source that always serves one hand-made rollout."""

    def __init__(self, rollout: Rollout):
        self.r = rollout
        self.calls = 0

    def rollout(self, generation: int, model) -> Rollout:
        self.calls += 1
        return Rollout(generation, self.r.batch, self.r.advantages, dict(self.r.stats))


def _model(seed=0):
    torch.manual_seed(seed)
    return Transformer(model_config("100k", vocab_size=12, max_seq_len=32, n_layers=1))


def _rollout(rewards: list[float], lengths: list[int]) -> Rollout:
    """Two groups of len(rewards) // 2 completions to two prompts, completions of the given lengths."""
    n = len(rewards)
    prompts = [[1, 3, 4] if i < n // 2 else [1, 5] for i in range(n)]
    comps = [[6 + (i + t) % 5 for t in range(m)] for i, m in enumerate(lengths)]
    adv = group_advantages(torch.tensor(rewards).view(2, -1), "group").flatten()
    return Rollout(0, pack_sequences(prompts, comps, pad_id=0), adv)


def _loss_and_grad(model, objective, step=0):
    st = objective.step(step, model)
    total = 0.0
    for micro in st.batches:
        loss, _ = objective.loss(model, micro, st)
        loss.backward()
        total += loss.item()
    norm = math.sqrt(sum(float(p.grad.square().sum()) for p in model.parameters() if p.grad is not None))
    model.zero_grad()
    return total, norm


@pytest.mark.parametrize("loss", ["grpo", "dr_grpo", "dapo", "bnpo", "reinforce"])
def test_one_iteration_without_kl_has_zero_loss_but_a_gradient(loss):
    # equal lengths: every type's loss is a weighted sum of advantages that sum to zero in each group (bnpo's
    # per-micro-batch means only when a micro-batch holds whole groups)
    model = _model()
    rollout = _rollout([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0], [4] * 8)
    cfg = GRPOConfig(loss=loss, micro_batch=4 if loss == "bnpo" else 3)
    obj = GRPOObjective(FixedSource(rollout), cfg, max_tokens=6)
    value, grad = _loss_and_grad(model, obj)
    assert abs(value) < 1e-6
    assert grad > 1e-4


def test_grpo_loss_is_zero_for_any_lengths():
    model = _model()
    rollout = _rollout([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0], [4, 1, 3, 2, 5, 2, 6, 3])
    value, grad = _loss_and_grad(model, GRPOObjective(FixedSource(rollout), GRPOConfig(loss="grpo"), 6))
    assert abs(value) < 1e-6 and grad > 1e-4


@pytest.mark.parametrize("loss", ["grpo", "dapo", "reinforce"])
def test_groups_with_equal_rewards_give_zero_gradient(loss):
    model = _model()
    rollout = _rollout([1.0] * 4 + [0.0] * 4, [4, 1, 3, 2, 5, 2, 6, 3])
    assert (rollout.advantages == 0).all()
    value, grad = _loss_and_grad(model, GRPOObjective(FixedSource(rollout), GRPOConfig(loss=loss), 6))
    assert value == 0.0 and grad == 0.0


def test_kl_term_pulls_back_to_the_reference_and_vanishes_there():
    from datawall.train.objectives.sequences import frozen_copy

    model = _model()
    ref = frozen_copy(model)
    rollout = _rollout([1.0] * 4 + [0.0] * 4, [3] * 8)  # no policy signal: only the KL term acts
    cfg = GRPOConfig(loss="dapo", beta=0.5)
    obj = GRPOObjective(FixedSource(rollout), cfg, 6, reference=ref)
    value, grad = _loss_and_grad(model, obj)
    assert value == pytest.approx(0.0, abs=1e-7) and grad < 1e-5  # at the reference: KL 0, no gradient
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    value, grad = _loss_and_grad(model, GRPOObjective(FixedSource(rollout), cfg, 6, reference=ref))
    assert value > 0 and grad > 0
    st = obj.step(0, model)
    _, parts = obj.loss(model, st.batches[0], st)
    assert parts["kl"] * 0.5 == pytest.approx(value, rel=1e-5)


def test_later_iterations_reuse_the_rollout_and_its_sampling_log_probs():
    model = _model()
    rollout = _rollout([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0], [4, 1, 3, 2, 5, 2, 6, 3])
    source = FixedSource(rollout)
    obj = GRPOObjective(source, GRPOConfig(loss="dapo", iterations=2, micro_batch=3), 6)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    first = completion_logprobs(model, rollout.batch).detach()
    for step in range(2):
        st = obj.step(step, model)
        for micro in st.batches:
            loss, parts = obj.loss(model, micro, st)
            loss.backward()
        opt.step()
        opt.zero_grad()
    assert source.calls == 1  # steps 0 and 1 train on one rollout
    assert torch.allclose(obj.rollout.old_logps, first, atol=1e-6)  # pi_old: the policy that sampled
    st = obj.step(2, model)
    assert source.calls == 2 and st.flops > 0


def test_clip_fractions_count_tokens_the_clip_stops():
    logp, old, _, adv, mask = _fixed()
    _, ratio = token_losses(logp, old, adv, "dapo", EPS_LOW, EPS_HIGH)
    a = adv[:, None].expand_as(ratio)
    low = ((ratio < 1 - EPS_LOW) & (a < 0) & mask).sum()
    high = ((ratio > 1 + EPS_HIGH) & (a > 0) & mask).sum()
    assert low > 0 and high > 0  # the fixture exercises both sides of the clip
    # a clipped token carries no gradient
    lp = logp.clone().requires_grad_(True)
    per, _ = token_losses(lp, old, adv, "dapo", EPS_LOW, EPS_HIGH)
    (per * mask).sum().backward()
    clipped = ((ratio < 1 - EPS_LOW) & (a < 0) | (ratio > 1 + EPS_HIGH) & (a > 0)) & mask
    assert (lp.grad[clipped] == 0).all() and (lp.grad[mask & ~clipped] != 0).all()


@pytest.mark.parametrize("loss", ["grpo", "dr_grpo", "dapo", "bnpo", "reinforce"])
def test_leaving_out_rows_with_zero_advantage_changes_neither_loss_nor_gradient(loss, monkeypatch):
    # one group all right (advantage 0), one mixed; micro-batches of 3 rows so bnpo's local means matter
    rollout = _rollout([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0], [4, 1, 3, 2, 5, 2, 6, 3])
    grads = {}
    for skip in (True, False):
        monkeypatch.setattr(GRPOObjective, "skip_silent_rows", skip)
        model = _model()
        obj = GRPOObjective(FixedSource(rollout), GRPOConfig(loss=loss, micro_batch=3), 6)
        st = obj.step(0, model)
        total = 0.0
        for micro in st.batches:
            value, _ = obj.loss(model, micro, st)
            value.backward()
            total += value.item()
        grads[skip] = (total, [p.grad.clone() for p in model.parameters()], st)
    (a, ga, sa), (b, gb, sb) = grads[True], grads[False]
    assert a == pytest.approx(b, abs=1e-7)
    assert all(torch.allclose(x, y, atol=1e-7) for x, y in zip(ga, gb, strict=True))
    assert sa.tokens < sb.tokens and sa.flops < sb.flops  # half the rows never ran
