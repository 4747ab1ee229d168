"""Tag policies (training/policies.py, tagger/tags.py): thresholds chosen per label on out-of-fold scores, a label
with too few positives scored but never tagged, object labels judged on photos the detector never saw."""
import pytest
import torch

from tagger.tags import POLICIES, PolicyMissing, UnknownPolicy, answer_tags, check_policy, tags_above, tags_by_policy
from training.policies import OutOfFold, choose_policies, evaluate_policies, to_probabilities, unflattered


def rows(n=200, repeats=1, seed=0, object_shift=0.0):
    """Synthetic out-of-fold rows: label 0 a scene label with many positives (score = truth + noise), label 1 one
    with 2 positives, label 2 an object label whose positives score ``object_shift`` higher on seen photos."""
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros(n, 3)
    y[:, 0] = (torch.rand(n, generator=g) < 0.3).float()
    y[:2, 1] = 1
    y[:, 2] = (torch.rand(n, generator=g) < 0.3).float()
    seen = torch.arange(n) >= n // 3
    z = torch.randn(n, 3, generator=g) + 2.5 * y - 1.5
    z[:, 2] += object_shift * (y[:, 2] * seen)
    return OutOfFold(z.repeat(repeats, 1), y.repeat(repeats, 1), torch.ones(n * repeats, 3, dtype=torch.bool), seen,
                     (2,), repeats)


def decisions(r, thresholds, col):
    t = thresholds[col]
    return (r.logits[:, col] >= t) if t is not None else torch.zeros(len(r.logits), dtype=torch.bool)


def test_each_policy_keeps_its_promise_on_the_rows_it_was_chosen_on():
    r = rows()
    chosen, _ = choose_policies(r)
    y = r.targets[:, 0].bool()
    precise, balanced, complete = (decisions(r, chosen[p], 0) for p in ("precise", "balanced", "complete"))
    assert chosen["precise"][0] >= chosen["balanced"][0] >= chosen["complete"][0]  # never less precise, less complete
    assert (precise & y).sum() / precise.sum() >= 0.7  # right at least 7 times in 10 (calibrated: here more so)
    assert (complete & y).sum() / y.sum() >= 0.8  # 8 in 10 of its photos
    assert (balanced & y).sum() > 0


def test_a_label_with_too_few_positives_is_scored_and_never_tagged():
    r = rows()
    chosen, _ = choose_policies(r, min_positives=3)
    assert chosen["precise"][1] is None
    assert chosen["complete"][1] is None
    probabilities = to_probabilities(chosen["precise"])
    assert probabilities[1] is None
    assert tags_above([0.2, 0.999, 0.1], ["sea", "rare", "car"], probabilities) == []
    assert tags_above([0.9, 0.999], ["sea", "rare"], [0.5, None]) == ["sea"]


def test_object_thresholds_are_not_set_by_the_photos_the_detector_flatters():
    """Positives seen by the detector score 3 logits higher: thresholds chosen on those would be far too high for a
    user's photos. The correction finds the shift; the thresholds match those of photos without it."""
    flattered, plain = rows(600, object_shift=3.0), rows(600)
    _, shifts = unflattered(flattered)
    assert shifts["positives"] == pytest.approx(3.0, abs=0.5)
    assert abs(shifts["negatives"]) < 0.3
    chosen, source = choose_policies(flattered)
    reference, _ = choose_policies(plain)
    assert source["object_thresholds"][2] == "unseen photos"  # 200 unseen photos: enough positives
    assert chosen["balanced"][2] == pytest.approx(reference["balanced"][2], abs=0.5)
    seen_only = choose_policies(OutOfFold(flattered.logits[200:], flattered.targets[200:], flattered.known[200:],
                                          torch.zeros(400, dtype=torch.bool), (2,), 1))[0]
    assert seen_only["balanced"][2] > chosen["balanced"][2] + 1  # what the flattered photos alone would give


def test_the_estimates_are_cross_validated_and_beside_todays():
    report = evaluate_policies(rows(300, repeats=2), folds=5, names=["sea", "rare", "car"])
    assert set(report) == {*POLICIES, "today"}
    assert report["precise"]["scene"]["OP"] >= report["balanced"]["scene"]["OP"]  # the rare label's guesses gone
    sea = {p: report[p]["per_label"]["sea"] for p in POLICIES}
    assert sea["precise"]["precision"] >= sea["balanced"]["precision"]
    assert sea["complete"]["recall"] >= sea["balanced"]["recall"]
    assert report["precise"]["per_label"]["rare"] == {"precision": None, "recall": 0.0}


def test_answers_pick_a_policys_tags():
    answer = {"tags": ["sea"], "tag_policy": "precise", "model_version": "2",
              "policy_tags": {"precise": ["sea"], "balanced": ["sea", "boat"], "complete": ["sea", "boat", "fog"]}}
    assert answer_tags(answer) == (["sea"], "precise")
    assert answer_tags(answer, "complete") == (["sea", "boat", "fog"], "complete")
    old = {"tags": ["sea", "boat"], "model_version": "1"}  # made before policies
    assert answer_tags(old) == (["sea", "boat"], "balanced")
    assert answer_tags(old, default="complete")[1] == "balanced"
    with pytest.raises(PolicyMissing, match="no precise thresholds"):
        answer_tags(old, "precise")
    with pytest.raises(UnknownPolicy, match="precise.*balanced.*complete"):
        check_policy("strict")
    meta = {"thresholds": [0.5, 0.5], "policies": {p: {"thresholds": t} for p, t in
                                                   (("precise", [0.9, None]), ("balanced", [0.5, 0.5]),
                                                    ("complete", [0.1, 0.1]))}}
    assert tags_by_policy([0.6, 0.7], ["sea", "fog"], meta) == {"precise": [], "balanced": ["fog", "sea"],
                                                                 "complete": ["fog", "sea"]}
