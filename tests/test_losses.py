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
