"""ECO corruption functions, the embedding hook and conformal thresholds (no language model needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spul.methods.eco import (CORRUPTIONS, ConformalSide, CorruptionConfig, DimSelect, EmbeddingGuard,
                              conformal_threshold, register_corruption)
from spul.methods.eco.conformal import decide
from spul.methods.eco.corruptions import Corruption


def _x(B=3, T=5, d=8):
    return torch.randn(B, T, d, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ["noise", "zero", "sign_flip"])
def test_first_n_changes_only_masked_positions_and_dims(name):
    x = _x()
    pos = torch.zeros(3, 5, dtype=torch.bool)
    pos[1, 2:] = True
    y = Corruption(CorruptionConfig(name=name, dims=3, select=DimSelect.FIRST, sigma=1.0)).apply(x, pos)
    changed = y != x
    assert changed[1, 2:, :3].all()
    assert not changed[1, 2:, 3:].any() and not changed[0].any() and not changed[2].any() and not changed[1, :2].any()


def test_random_dims_are_seeded_and_top_k_picks_largest():
    x = _x()
    pos = torch.ones(3, 5, dtype=torch.bool)
    a = Corruption(CorruptionConfig(name="zero", dims=2, select=DimSelect.RANDOM, seed=3)).apply(x, pos)
    b = Corruption(CorruptionConfig(name="zero", dims=2, select=DimSelect.RANDOM, seed=3)).apply(x, pos)
    assert torch.equal(a, b) and int((a[0, 0] == 0).sum()) == 2
    t = Corruption(CorruptionConfig(name="zero", dims=2, select=DimSelect.TOP_K)).apply(x, pos)
    top = x.abs().topk(2, dim=-1).indices
    assert (t.gather(-1, top) == 0).all() and int((t == 0).sum()) == 3 * 5 * 2


def test_noise_scales_with_sigma_and_repeats_after_reset():
    x = torch.zeros(2, 4, 16)
    pos = torch.ones(2, 4, dtype=torch.bool)
    c = Corruption(CorruptionConfig(name="noise", sigma=100.0))
    first = c.apply(x, pos)
    c.reset()
    assert torch.equal(first, c.apply(x, pos))
    assert 50 < first.std().item() < 200


def test_new_corruption_is_one_function():
    @register_corruption("halve")
    def halve(x, sigma, generator):
        return x / 2

    assert "halve" in CORRUPTIONS
    y = Corruption(CorruptionConfig(name="halve")).apply(torch.ones(1, 2, 4), torch.tensor([[False, True]]))
    assert y[0, 0].eq(1).all() and y[0, 1].eq(0.5).all()
    del CORRUPTIONS["halve"]


def test_guard_hook_skips_unflagged_rows_padding_and_decode_steps_and_cleans_up():
    emb = torch.nn.Embedding(10, 6)
    holder = torch.nn.Module()
    holder.emb = emb
    holder.get_input_embeddings = lambda: emb
    seen = []
    other = emb.register_forward_hook(lambda m, a, o: seen.append(1))
    guard = EmbeddingGuard(Corruption(CorruptionConfig(name="zero")), pad_token_id=0)
    ids = torch.tensor([[0, 0, 3, 4, 5], [0, 2, 3, 4, 5], [1, 2, 3, 4, 5]])  # left padded
    clean = emb(ids)
    with guard.attached(holder):
        guard.set_batch([True, False, True], prompt_lengths=[2, 4, 5])
        out = emb(ids)
        assert out[0, :2].equal(clean[0, :2])  # padding untouched
        assert (out[0, 2:4] == 0).all() and out[0, 4].equal(clean[0, 4])  # only the first 2 real (prompt) tokens
        assert out[1].equal(clean[1])  # unflagged row
        assert (out[2] == 0).all()
        guard.set_batch([True, True, True])
        assert (emb(ids[:, -1:]) == 0).all()  # the first forward is the prefill, corrupted even if one token long
        step = emb(ids[:, -1:])  # a decode step after it: one token, never corrupted
        assert step.equal(clean[:, -1:])
        guard.set_batch([True])
        with pytest.raises(Exception, match="flags for 1 rows"):
            emb(ids)
    assert len(emb._forward_hooks) == 1 and other.id in emb._forward_hooks  # only our hook was removed
    assert emb(ids).equal(clean) and len(seen) >= 4


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_conformal_retain_side_bounds_false_positives(alpha):
    rng = np.random.default_rng(0)
    fprs = []
    for _ in range(200):
        cal = rng.beta(2, 5, size=100)
        thr, inclusive = conformal_threshold(cal, alpha, ConformalSide.RETAIN)
        fprs.append(decide(rng.beta(2, 5, size=2000), thr, inclusive).mean())
    assert np.mean(fprs) <= alpha + 0.005  # marginal guarantee, averaged over calibration draws
    assert np.mean(fprs) > alpha - 0.05  # and not vacuous


def test_conformal_forget_side_bounds_false_negatives_and_edge_cases():
    rng = np.random.default_rng(1)
    fnrs = []
    for _ in range(200):
        thr, inclusive = conformal_threshold(rng.beta(5, 2, size=60), 0.1, ConformalSide.FORGET)
        fnrs.append(1 - decide(rng.beta(5, 2, size=2000), thr, inclusive).mean())
    assert np.mean(fnrs) <= 0.105
    assert conformal_threshold(np.array([0.1, 0.2]), 0.05, ConformalSide.RETAIN)[0] == np.inf  # too few points: flag nothing
    assert conformal_threshold(np.array([0.9, 0.8]), 0.05, ConformalSide.FORGET)[0] == -np.inf  # flag everything
