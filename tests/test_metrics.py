"""The metric code behind the paper's tables, on hand-made predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spul.evaluation.metrics import flag_rates, split_metrics


def test_split_metrics_by_hand():
    # 2 task labels (0, 1); predictions ≥ 2 are generic answers and count as wrong
    labels = np.array([0, 0, 0, 1, 1, 1])
    preds = np.array([0, 1, 2, 1, 1, 3])
    m = split_metrics(labels, preds, num_labels=2)
    assert m.n == 6
    assert m.accuracy == pytest.approx(3 / 6)
    assert m.generic_rate == pytest.approx(2 / 6)
    # per true class: class 0 — precision 1/1, recall 1/3 → F1 0.5; class 1 — precision 2/3, recall 2/3 → F1 2/3;
    # weighted by support (3 each) over the true classes only: (0.5 + 2/3) / 2
    assert m.f1_weighted == pytest.approx((0.5 + 2 / 3) / 2)


def test_all_generic_answers_score_zero_and_perfect_answers_score_one():
    labels = np.array([1, 0, 1])
    assert split_metrics(labels, np.array([2, 2, 2]), 2).accuracy == 0.0
    assert split_metrics(labels, np.array([2, 2, 2]), 2).f1_weighted == 0.0
    perfect = split_metrics(labels, labels, 2)
    assert (perfect.accuracy, perfect.f1_weighted, perfect.generic_rate) == (1.0, 1.0, 0.0)


def test_weighting_follows_the_true_class_support():
    labels = np.array([0, 0, 0, 1])  # class 0 has 3 rows, class 1 one
    preds = np.array([0, 0, 0, 0])  # class 0: P 3/4, R 1 → F1 6/7; class 1: F1 0
    assert split_metrics(labels, preds, 2).f1_weighted == pytest.approx(0.75 * 6 / 7)


def test_an_empty_split_is_nan_not_an_error():
    m = split_metrics(np.array([], dtype=int), np.array([], dtype=int), 2)
    assert m.n == 0 and math.isnan(m.accuracy)


def test_flag_rates_are_fnr_on_forget_and_fpr_on_retain():
    rates = flag_rates({"test_forget": np.array([True, True, False, True]), "test_retain": np.array([False, True, False, False])})
    assert rates == {"test_forget_fnr": 0.25, "test_retain_fpr": 0.25}
