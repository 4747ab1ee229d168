import math

import pytest
import torch

from training.metrics import average_precision, best_f1_thresholds, mean_average_precision, per_label_ap


def test_average_precision_hand_computed():
    # ranks: 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg) -> precisions at positives 1/1 and 2/3
    ap = average_precision(torch.tensor([0.9, 0.8, 0.7, 0.1]), torch.tensor([1, 0, 1, 0]))
    assert ap == pytest.approx((1 + 2 / 3) / 2)


def test_average_precision_ties_are_pessimistic():
    assert average_precision(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])) == pytest.approx(0.5)


def test_zero_positives_is_nan_and_skipped_by_map():
    assert math.isnan(average_precision(torch.tensor([0.3, 0.2]), torch.tensor([0, 0])))
    scores = torch.tensor([[0.9, 0.1], [0.1, 0.2]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert mean_average_precision(scores, targets) == pytest.approx(1.0)


def test_unknown_entries_are_masked():
    scores = torch.tensor([[0.1], [0.9], [0.5]])
    targets = torch.tensor([[1.0], [0.0], [0.0]])
    known = torch.tensor([[True], [False], [False]])  # the high-scoring "negative" is unknown
    assert per_label_ap(scores, targets, known) == [pytest.approx(1.0)]
    assert per_label_ap(scores, targets) == [pytest.approx(1 / 3)]


def test_thresholds_separate_classes_and_default_without_positives():
    probs = torch.tensor([[0.9, 0.3], [0.6, 0.2], [0.2, 0.1]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    thr = best_f1_thresholds(probs, targets, default=0.5)
    assert 0.2 < thr[0] < 0.6
    assert thr[1] == 0.5
