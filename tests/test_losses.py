"""The loss functions, checked against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from spul.methods.losses import (IGNORE, answer_positions, kl_base_to_prompted, masked_mean, per_row_mean, spul_loss,
                                 token_nll)


def test_answer_positions_pick_the_last_k_positions_of_each_row():
    # row 0: single-token answer (predicted by the last position); row 1: two tokens (last two positions)
    hidden = torch.arange(2 * 5 * 1, dtype=torch.float32).view(2, 5, 1)
    labels = torch.tensor([[IGNORE, 7], [3, 4]])
    h, targets, rows = answer_positions(hidden, labels)
    assert h.squeeze(1).tolist() == [4.0, 8.0, 9.0]
    assert targets.tolist() == [7, 3, 4]
    assert rows.tolist() == [0, 1, 1]


def test_answer_positions_ignore_masked_rows_entirely():
    hidden = torch.randn(3, 4, 2)
    labels = torch.tensor([[IGNORE, 1], [IGNORE, IGNORE], [2, 3]])
    h, targets, rows = answer_positions(hidden, labels)
    assert rows.tolist() == [0, 2, 2] and h.shape == (3, 2)


def test_token_nll_matches_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    nll = token_nll(logits, torch.tensor([0, 2]))
    expected0 = -(2.0 - math.log(math.exp(2) + 1 + math.exp(-1)))
    assert nll[0].item() == pytest.approx(expected0, rel=1e-6)
    assert nll[1].item() == pytest.approx(math.log(3), rel=1e-6)


def test_multi_token_answer_counts_once_per_row():
    values = torch.tensor([1.0, 2.0, 4.0])  # row 0 has one token, row 1 two
    out = per_row_mean(values, torch.tensor([0, 1, 1]), batch_size=3)
    assert out.tolist() == [1.0, 3.0, 0.0]


def test_masked_mean_is_zero_and_differentiable_for_an_empty_group():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    m = masked_mean(x, torch.tensor([False, False]))
    assert m.item() == 0.0
    m.backward()
    assert x.grad.tolist() == [0.0, 0.0]


def test_kl_direction_is_base_to_prompted_and_matches_hand_value():
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.4, 0.4, 0.2])
    kl = kl_base_to_prompted(q.log().unsqueeze(0), p.log().unsqueeze(0))
    by_hand = sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist()))
    reverse = sum(qi * math.log(qi / pi) for pi, qi in zip(p.tolist(), q.tolist()))
    assert kl.item() == pytest.approx(by_hand, rel=1e-5)
    assert abs(by_hand - reverse) > 1e-3  # the test would notice a swapped direction
    assert kl_base_to_prompted(p.log().unsqueeze(0), p.log().unsqueeze(0)).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_agrees_with_torch_kl_div():
    a, b = torch.randn(4, 11), torch.randn(4, 11)
    ours = kl_base_to_prompted(a, b)
    ref = F.kl_div(F.log_softmax(a, -1), F.log_softmax(b, -1), log_target=True, reduction="none").sum(-1)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_spul_loss_combines_groups_with_alpha_and_beta():
    nll = torch.tensor([1.0, 3.0, 2.0, 4.0])
    forget = torch.tensor([True, True, False, False])
    kl = torch.tensor([100.0, 100.0, 0.5, 1.5])  # forget rows' KL must be ignored
    parts = spul_loss(nll, forget, kl, alpha=0.5, beta=2.0)
    assert parts.forget.item() == 2.0
    assert parts.retain.item() == 3.0
    assert parts.kl.item() == 1.0
    assert parts.total.item() == pytest.approx(2.0 + 0.5 * 3.0 + 2.0 * 1.0)


def test_spul_loss_without_kl_and_with_only_retain_rows():
    parts = spul_loss(torch.tensor([2.0]), torch.tensor([False]), None, alpha=1.0, beta=0.5)
    assert parts.forget.item() == 0.0 and parts.total.item() == 2.0


# ---- the four methods added with the registry: NPO, SimNPO, IDK-DPO, RMU -------------------------------------

def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_sequence_logprob_is_minus_mean_nll_times_length():
    from spul.methods.losses import sequence_logprob

    assert sequence_logprob(torch.tensor([0.5, 2.0]), torch.tensor([4, 1])).tolist() == [-2.0, -2.0]


def test_npo_loss_matches_hand_computation():
    from spul.methods.npo import npo_loss

    policy = torch.tensor([-3.0, -1.0, -5.0])
    ref = torch.tensor([-2.0, -1.5, -9.0])  # the retain row's reference must be ignored
    nll = torch.tensor([9.0, 9.0, 0.7])
    forget = torch.tensor([True, True, False])
    beta = 0.5
    parts = npo_loss(policy, ref, nll, forget, beta, retain_weight=2.0)
    rows = [-(2 / beta) * _logsig(-beta * (p - r)) for p, r in ((-3.0, -2.0), (-1.0, -1.5))]
    assert parts.forget.item() == pytest.approx(sum(rows) / 2, rel=1e-6)
    assert parts.retain.item() == pytest.approx(0.7)
    assert parts.total.item() == pytest.approx(sum(rows) / 2 + 2.0 * 0.7, rel=1e-6)
    # at π_θ = π_ref the forget term is (2/β)·log 2; pushing π_θ below π_ref lowers it (saturating, unlike GA)
    same = npo_loss(torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([1.0]), torch.tensor([True]), beta)
    lower = npo_loss(torch.tensor([-50.0]), torch.tensor([-1.0]), torch.tensor([1.0]), torch.tensor([True]), beta)
    assert same.forget.item() == pytest.approx((2 / beta) * math.log(2), rel=1e-6)
    assert 0 <= lower.forget.item() < 1e-9


def test_simnpo_loss_matches_hand_computation():
    from spul.methods.simnpo import simnpo_loss

    nll = torch.tensor([0.4, 1.2, 3.0])  # mean token NLL = −log π(y|x)/|y|
    forget = torch.tensor([True, True, False])
    beta, gamma = 2.0, 0.5
    parts = simnpo_loss(nll, forget, beta, gamma, retain_weight=0.5)
    rows = [-(2 / beta) * _logsig(beta * n - gamma) for n in (0.4, 1.2)]
    assert parts.forget.item() == pytest.approx(sum(rows) / 2, rel=1e-6)
    assert parts.total.item() == pytest.approx(sum(rows) / 2 + 0.5 * 3.0, rel=1e-6)
    # length-normalised: the same mean NLL gives the same loss whatever the answer's length
    a = simnpo_loss(torch.tensor([1.0]), torch.tensor([True]), beta, gamma)
    assert a.forget.item() == pytest.approx(-(2 / beta) * _logsig(beta * 1.0 - gamma), rel=1e-6)


def test_idk_dpo_loss_matches_hand_computation():
    from spul.methods.idk_dpo import dpo_loss, idk_dpo_loss

    chosen, rejected = torch.tensor([-4.0, -2.0]), torch.tensor([-1.0, -6.0])
    ref_c, ref_r = torch.tensor([-5.0, -2.0]), torch.tensor([-1.5, -3.0])
    beta = 0.1
    by_hand = [-_logsig(beta * ((c - rc) - (r - rr))) for c, r, rc, rr in zip([-4.0, -2.0], [-1.0, -6.0], [-5.0, -2.0], [-1.5, -3.0])]
    assert dpo_loss(chosen, rejected, ref_c, ref_r, beta).tolist() == pytest.approx(by_hand, rel=1e-6)
    parts = idk_dpo_loss(chosen, rejected, ref_c, ref_r, torch.tensor([7.0, 0.25]), torch.tensor([True, False]), beta, retain_weight=4.0)
    assert parts.forget.item() == pytest.approx(by_hand[0], rel=1e-6)  # only the forget row's pair counts
    assert parts.total.item() == pytest.approx(by_hand[0] + 4.0 * 0.25, rel=1e-6)
    # equal margins give log 2; preferring the generic answer more than the reference does lowers the loss
    assert dpo_loss(torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([-1.0]), beta).item() == pytest.approx(math.log(2))


def test_rmu_loss_matches_hand_computation():
    from spul.methods.rmu import control_vector, rmu_loss

    target = torch.tensor([1.0, 0.0])
    forget = torch.tensor([[1.0, 1.0], [3.0, 0.0]])  # squared errors: (0,1) and (4,0) → mean 5/4
    retain, ref = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.0, 1.5]])  # (0.25, 1) → mean 0.625
    parts = rmu_loss(forget, target, retain, ref, retain_weight=2.0)
    assert parts.forget.item() == pytest.approx(1.25) and parts.retain.item() == pytest.approx(0.625)
    assert parts.total.item() == pytest.approx(1.25 + 2.0 * 0.625)
    empty = rmu_loss(forget[:0], target, retain, ref)
    assert empty.forget.item() == 0.0
    u = control_vector(16, seed=3)
    assert u.norm().item() == pytest.approx(1.0, rel=1e-6) and torch.equal(u, control_vector(16, seed=3))
    assert not torch.equal(u, control_vector(16, seed=4))
