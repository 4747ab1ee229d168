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


def test_decision_metrics_hand_computed():
    from training.metrics import decision_metrics

    # label 0: predicted rows 0,1 (TP, FP), positive rows 0,2 -> P 1/2, R 1/2
    # label 1: predicted row 2 (TP), positive rows 2 -> P 1, R 1
    # label 2: no positive -> left out of CP/CR; its false positive (row 1) still counts in OP
    # label 0's row 3 is unknown: its high score is ignored
    probs = torch.tensor([[0.9, 0.1, 0.1], [0.8, 0.2, 0.9], [0.3, 0.7, 0.0], [0.95, 0.0, 0.0]])
    targets = torch.tensor([[1.0, 0, 0], [0, 0, 0], [1, 1, 0], [0, 0, 0]])
    known = torch.ones(4, 3, dtype=torch.bool)
    known[3, 0] = False
    m = decision_metrics(probs, targets, [0.5, 0.5, 0.5], known)
    assert m["CP"] == pytest.approx((0.5 + 1) / 2)
    assert m["CR"] == pytest.approx((0.5 + 1) / 2)
    assert m["CF1"] == pytest.approx(0.75)
    # all decisions: TP 2 (l0 row0, l1 row2), predicted 4 (l0 rows 0,1; l1 row 2; l2 row 1), positives 3
    assert m["OP"] == pytest.approx(2 / 4)
    assert m["OR"] == pytest.approx(2 / 3)
    assert m["OF1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_a_label_never_predicted_has_precision_zero_not_a_division_error():
    from training.metrics import decision_metrics

    m = decision_metrics(torch.tensor([[0.1], [0.2]]), torch.tensor([[1.0], [0.0]]), [0.5])
    assert (m["CP"], m["CR"], m["OP"], m["OR"], m["OF1"]) == (0.0, 0.0, 0.0, 0.0, 0.0)


def test_summary_reports_labels_without_positive_as_not_applicable():
    from training.metrics import summarize

    s = summarize(torch.tensor([[0.9, 0.2], [0.1, 0.3]]), torch.tensor([[1.0, 0], [0, 0]]), None, [0.5, 0.5],
                  ["sea", "fog"])
    assert s["per_label_ap"] == {"sea": 1.0, "fog": None}
    assert s["labels_not_applicable"] == ["fog"]
    assert s["mAP"] == 1.0


def test_rare_labels_fall_back_to_the_pooled_threshold():
    from training.metrics import calibrate_thresholds

    torch.manual_seed(0)
    # label 0: many positives with scores ~0.3 above ~0.1 negatives; label 1: one positive that scores 0.25
    t0 = (torch.arange(40) % 2).float()
    p0 = 0.1 + 0.2 * t0 + 0.01 * torch.rand(40)
    t1 = torch.zeros(40)
    t1[0] = 1
    p1 = torch.full((40,), 0.05)
    p1[0] = 0.25
    thr, source = calibrate_thresholds(torch.stack([p0, p1], 1), torch.stack([t0, t1], 1), min_positives=3)
    assert source == ["f1", "pooled"]
    assert 0.11 < thr[0] < 0.3
    assert thr[1] < 0.3  # on the model's own score scale, not 0.5 above every score the label reaches
    # a rare label whose scores all sit below the pooled threshold still fires on its top-scoring photo
    p1 = torch.full((40,), 0.06)
    p1[0] = 0.09
    thr, source = calibrate_thresholds(torch.stack([p0, p1], 1), torch.stack([t0, t1], 1), min_positives=3)
    assert source == ["f1", "frequency"]
    assert float((p1 >= thr[1]).sum()) == 1


def test_an_f1_best_threshold_that_keeps_no_true_positive_falls_back():
    """Five positives that score below every negative: F1 peaks under the 0.05 floor, where the floor keeps none."""
    from training.metrics import calibrate_thresholds

    t = torch.zeros(100)
    t[:5] = 1
    p = torch.linspace(0.9, 0.1, 100)
    p[:5] = 0.01  # the positives score lowest: the F1-best threshold (all photos) is raised to 0.05
    good_t = (torch.arange(100) % 2).float()  # a label the model knows, which sets the pooled threshold
    good_p = 0.2 + 0.6 * good_t
    thr, source = calibrate_thresholds(torch.stack([good_p, p], 1), torch.stack([good_t, t], 1), min_positives=3)
    assert source == ["f1", "pooled"]
    assert 0 < float((p >= thr[1]).sum()) <= 10  # on the pooled scale: a few photos, not all 100 at the 0.05 floor
