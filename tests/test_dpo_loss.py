"""The DPO family (datawall.train.objectives.dpo.DPOLoss) on fixed tensors, against the papers' formulas written
out element by element in plain Python."""

import math

import pytest
import torch

from datawall.train.objectives.dpo import LOSSES, DPOLoss, DPOSettings

# summed completion log-probs of 4 pairs under policy and reference, and completion lengths
PC = torch.tensor([-3.0, -10.5, -7.25, -1.0])
PR = torch.tensor([-4.0, -9.0, -7.0, -6.5])
RC = torch.tensor([-3.5, -10.0, -8.0, -2.0])
RR = torch.tensor([-3.0, -9.5, -6.0, -6.0])
LC = torch.tensor([5, 12, 9, 2])
LR = torch.tensor([6, 10, 9, 7])


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def reference(loss: str, beta: float, eps: float = 0.0, alpha: float = 0.0):
    """Per-pair losses and rewards the slow way, straight from the papers."""
    losses, chosen, rejected = [], [], []
    for pc, pr, rc, rr, lc, lr in zip(PC.tolist(), PR.tolist(), RC.tolist(), RR.tolist(), LC.tolist(), LR.tolist(),
                                      strict=True):
        if loss == "ipo":
            cr, rj = (pc - rc) / lc, (pr - rr) / lr
        else:
            cr, rj = pc - rc, pr - rr
        z = beta * (cr - rj) + alpha * (lc - lr)  # R-DPO: the implicit reward gains alpha |y|
        if loss == "sigmoid":  # DPO eq. 7; cDPO with eps
            value = -(1 - eps) * _log_sigmoid(z) - eps * _log_sigmoid(-z)
        elif loss == "robust":  # rDPO eq. 8
            value = (-(1 - eps) * _log_sigmoid(z) + eps * _log_sigmoid(-z)) / (1 - 2 * eps)
        elif loss == "ipo":  # IPO eq. 17, h = z / beta
            value = (z / beta - 1 / (2 * beta)) ** 2
        else:  # SLiC hinge
            value = max(0.0, 1 - z)
        losses.append(value)
        chosen.append(beta * cr)
        rejected.append(beta * rj)
    return torch.tensor(losses), torch.tensor(chosen), torch.tensor(rejected)


CASES = [("sigmoid", 0.1, 0.0, 0.0), ("sigmoid", 0.5, 0.2, 0.0), ("robust", 0.3, 0.1, 0.0), ("robust", 1.0, 0.3, 0.0),
         ("ipo", 0.1, 0.0, 0.0), ("ipo", 2.0, 0.0, 0.0), ("hinge", 0.2, 0.0, 0.0), ("hinge", 3.0, 0.0, 0.0),
         ("sigmoid", 0.1, 0.0, 0.05), ("ipo", 0.5, 0.0, 0.01), ("hinge", 0.5, 0.0, 0.1), ("robust", 0.5, 0.1, 0.02)]


@pytest.mark.parametrize("loss,beta,eps,alpha", CASES)
def test_every_loss_equals_the_paper_formula(loss, beta, eps, alpha):
    out = DPOLoss(DPOSettings(loss=loss, beta=beta, label_smoothing=eps, length_alpha=alpha))(PC, PR, RC, RR, LC, LR)
    want, chosen, rejected = reference(loss, beta, eps, alpha)
    assert torch.allclose(out.losses, want, atol=1e-6, rtol=1e-6)
    assert torch.allclose(out.chosen_rewards, chosen, atol=1e-6)
    assert torch.allclose(out.rejected_rewards, rejected, atol=1e-6)
    assert torch.allclose(out.margins, chosen - rejected, atol=1e-6)


def test_the_cases_cover_every_loss():
    assert {c[0] for c in CASES} == set(LOSSES)


@pytest.mark.parametrize("loss,eps", [("sigmoid", 0.0), ("sigmoid", 0.1), ("robust", 0.2), ("ipo", 0.0),
                                      ("hinge", 0.0)])
def test_identical_policy_and_reference_give_zero_rewards(loss, eps):
    beta = 0.3
    out = DPOLoss(DPOSettings(loss=loss, beta=beta, label_smoothing=eps))(PC, PR, PC.clone(), PR.clone(), LC, LR)
    assert torch.equal(out.chosen_rewards, torch.zeros(4)) and torch.equal(out.rejected_rewards, torch.zeros(4))
    start = {"sigmoid": math.log(2), "robust": math.log(2), "ipo": 1 / (2 * beta) ** 2, "hinge": 1.0}[loss]
    assert torch.allclose(out.losses, torch.full((4,), start), atol=1e-6)


def test_ipo_optimum_margin_is_half_over_beta_and_vanishes_as_beta_grows():
    """IPO's loss is minimised where the per-token log-ratio margin h = 1/(2 beta): the larger beta, the closer
    the tuned policy's implicit rewards stay to 0 (the reference)."""
    margins = []
    for beta in (0.5, 5.0, 50.0):
        h = torch.zeros((), requires_grad=True)  # the chosen answer's per-token log-ratio; rejected's is 0
        opt = torch.optim.SGD([h], lr=0.2)
        fn = DPOLoss(DPOSettings(loss="ipo", beta=beta))
        one = torch.ones(1, dtype=torch.long)
        for _ in range(300):
            out = fn(h.reshape(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), one, one)
            opt.zero_grad()
            out.losses.sum().backward()
            opt.step()
        assert float(h.detach()) == pytest.approx(1 / (2 * beta), rel=1e-4)
        margins.append(abs(float(h.detach())))
    assert margins[0] > margins[1] > margins[2] and margins[2] < 0.011


def test_sigmoid_gradient_weights_mistaken_pairs_more():
    """DPO's gradient on h is -beta sigmoid(-beta h): pairs the implicit reward orders wrongly pull harder."""
    h = torch.tensor([-2.0, 0.0, 2.0], requires_grad=True)
    zeros = torch.zeros(3)
    out = DPOLoss(DPOSettings(beta=1.0))(h, zeros, zeros, zeros, torch.ones(3, dtype=torch.long),
                                         torch.ones(3, dtype=torch.long))
    out.losses.sum().backward()
    assert torch.allclose(h.grad, -torch.sigmoid(-h.detach()), atol=1e-6)
    assert h.grad[0] < h.grad[1] < h.grad[2] < 0


def test_robust_loss_is_unbiased_under_known_flip_rate():
    """rDPO: the expected loss over a label flipped with probability eps equals the clean DPO loss."""
    z = torch.linspace(-3, 3, 7)
    eps = 0.2
    settings = DPOSettings(loss="robust", beta=1.0, label_smoothing=eps)
    ones = torch.ones(7, dtype=torch.long)
    zeros = torch.zeros(7)
    right = DPOLoss(settings)(z, zeros, zeros, zeros, ones, ones).losses
    flipped = DPOLoss(settings)(-z, zeros, zeros, zeros, ones, ones).losses
    clean = DPOLoss(DPOSettings(beta=1.0))(z, zeros, zeros, zeros, ones, ones).losses
    assert torch.allclose((1 - eps) * right + eps * flipped, clean, atol=1e-6)


@pytest.mark.parametrize("bad", [{"loss": "kto"}, {"beta": 0.0}, {"loss": "robust"}, {"label_smoothing": 0.5}])
def test_settings_refuse_what_has_no_meaning(bad):
    with pytest.raises(ValueError):
        DPOSettings(**bad)


def test_r_dpo_pushes_a_longer_chosen_answer_up_less():
    """Park et al. 2024: with the length term a preference for the longer answer is partly explained by its length,
    so the gradient that raises the longer chosen answer shrinks (and grows for a shorter chosen one)."""
    zeros, ones = torch.zeros(2), torch.ones(2, dtype=torch.long)
    lengths = torch.tensor([12, 4])  # pair 0: chosen 8 tokens longer than its rejected; pair 1: 4 shorter
    grads = []
    for alpha in (0.0, 0.05):
        h = torch.zeros(2, requires_grad=True)
        out = DPOLoss(DPOSettings(beta=0.1, length_alpha=alpha))(h, zeros, zeros, zeros, lengths, ones * 8)
        out.losses.sum().backward()
        grads.append(h.grad.abs())
    assert grads[1][0] < grads[0][0] and grads[1][1] > grads[0][1]
