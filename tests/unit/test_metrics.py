"""deepface.metrics against hand-computed cases: separable, inverted, ties, one-class folds, FAR targets."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from deepface.metrics import cross_validate, cuts, roc, roc_points, verification_metrics


def _folds_of(per_fold_scores: list[tuple[list[float], list[float]]]):
    """(scores, same, folds) from per-fold (matched scores, mismatched scores)."""
    scores, same, folds = [], [], []
    for fold, (matched, mismatched) in enumerate(per_fold_scores):
        scores += matched + mismatched
        same += [True] * len(matched) + [False] * len(mismatched)
        folds += [fold] * (len(matched) + len(mismatched))
    return np.array(scores), np.array(same), np.array(folds)


def test_ties_make_one_operating_point_and_count_half_in_the_auc():
    # matched 1.0, 0.5; mismatched 0.5, 0.0: the tie at 0.5 is accepted or rejected as a whole.
    points = cuts(np.array([1.0, 0.5, 0.5, 0.0]), np.array([True, True, False, False]))
    np.testing.assert_array_equal(points.tp, [0, 1, 2, 2])
    np.testing.assert_array_equal(points.fp, [0, 0, 1, 2])
    np.testing.assert_allclose(points.thresholds, [np.nextafter(1.0, 2.0), 0.75, 0.25, 0.0])
    curve = roc(points)
    np.testing.assert_allclose(curve["far"], [0, 0, 0.5, 1])
    np.testing.assert_allclose(curve["tar"], [0, 0.5, 1, 1])
    assert curve["auc"] == pytest.approx(3.5 / 4)  # Mann-Whitney: 3 wins and one tie out of 4
    assert curve["eer"] == pytest.approx(0.25)  # the diagonal from (0, FRR .5) to (.5, FRR 0)
    assert points.best() == (0.75, 0.75)  # accepts 1.0 only: 3 of 4 right; first of the equal best


def test_all_tied_scores_do_not_depend_on_the_order_of_the_labels():
    same = np.array([True, False] * 5)
    for labels in (same, same[::-1], np.sort(same)):
        curve = roc(cuts(np.zeros(10), labels))
        np.testing.assert_allclose(curve["far"], [0, 1])
        np.testing.assert_allclose(curve["tar"], [0, 1])
        assert curve["auc"] == pytest.approx(0.5) and curve["eer"] == pytest.approx(0.5)


def test_perfectly_separable_scores():
    scores, same, folds = _folds_of([([0.6 + 0.01 * f, 0.7], [0.4 - 0.01 * f, 0.1]) for f in range(10)])
    result = verification_metrics(scores, same, folds, higher_is_same=True)
    assert result["accuracy"] == 1.0 and result["accuracy_sem"] == 0.0
    assert result["auc"] == 1.0 and result["eer"] == 0.0
    assert result["tar_at_far"]["0.001"]["tar"] == 1.0 and result["tar_at_far"]["0.01"]["far"] == 0.0
    assert result["best_accuracy"] == 1.0
    # midway between the lowest matched (0.6) and the highest mismatched (0.4) score
    assert result["best_threshold"] == pytest.approx(0.5)
    assert result["folds"] == 10 and result["pairs"] == 40 and result["matched"] == 20


def test_inverted_scores():
    scores, same, folds = _folds_of([([0.1, 0.2], [0.8, 0.9]) for _ in range(10)])
    result = verification_metrics(scores, same, folds, higher_is_same=True)
    assert result["auc"] == 0.0 and result["eer"] == 1.0
    assert result["accuracy"] == 0.5  # best on the training folds is to accept nothing (or everything)
    assert result["tar_at_far"]["0.01"]["tar"] == 0.0


def test_distances_are_similarities_with_the_sign_flipped():
    rng = np.random.default_rng(0)
    same = rng.random(200) < 0.5
    folds = np.arange(200) % 10
    distance = rng.normal(np.where(same, 0.8, 1.2), 0.3)
    as_distance = verification_metrics(distance, same, folds, higher_is_same=False)
    as_similarity = verification_metrics(-distance, same, folds, higher_is_same=True)
    for key in ("accuracy", "accuracy_sem", "auc", "eer", "best_accuracy"):
        assert as_distance[key] == as_similarity[key]
    assert as_distance["best_threshold"] == -as_similarity["best_threshold"]
    assert as_distance["fold_threshold"] == [-t for t in as_similarity["fold_threshold"]]
    # the returned threshold, applied as "same when distance <= t", gives the reported accuracy
    assert np.mean((distance <= as_distance["best_threshold"]) == same) == as_distance["best_accuracy"]
    assert 0.5 < as_distance["auc"] < 1.0


def test_thresholds_are_chosen_on_the_other_folds():
    # fold 0 alone would put the threshold between .6 and .5; folds 1 and 2 choose between .9 and .8
    scores, same, folds = _folds_of([([0.6], [0.5]), ([0.9, 0.95], [0.8]), ([0.9], [0.8, 0.1])])
    result = cross_validate(scores, same, folds)
    np.testing.assert_allclose(result["fold_threshold"], [0.85, 0.85, 0.85])
    np.testing.assert_allclose(result["fold_accuracy"], [0.5, 1.0, 1.0])
    assert result["accuracy"] == pytest.approx(2.5 / 3)
    assert result["accuracy_sem"] == pytest.approx(np.std([0.5, 1, 1], ddof=1) / np.sqrt(3))


def test_a_fold_with_one_class():
    # fold 2 holds only matched pairs, fold 3 only mismatched ones
    scores, same, folds = _folds_of([([0.9], [0.1]), ([0.8], [0.2]), ([0.75, 0.3], []), ([], [0.6, 0.15])])
    result = cross_validate(scores, same, folds, far_targets=(0.01,))
    # fold 2's threshold comes from folds 0, 1, 3: best between .8 and .6, accepting .75 but not .3
    assert result["fold_threshold"][2] == pytest.approx(0.7) and result["fold_accuracy"][2] == 0.5
    # fold 3's threshold from folds 0-2 (negatives .1 and .2 only): between .3 and .2, accepting .6
    assert result["fold_threshold"][3] == pytest.approx(0.25) and result["fold_accuracy"][3] == 0.5
    tar = result["tar_at_far"][0.01]
    # FAR 0 on the training folds: thresholds .675, .675, .7, .25; the held-out fold 3 has no matched
    # pair (no TAR), fold 2 no mismatched pair (no FAR)
    np.testing.assert_allclose(tar["fold_threshold"], [0.675, 0.675, 0.7, 0.25])
    assert tar["tar"] == pytest.approx(np.mean([1.0, 1.0, 0.5]))
    assert tar["far"] == pytest.approx(np.mean([0.0, 0.0, 0.5]))
    assert result["accuracy"] == pytest.approx(np.mean([1.0, 1.0, 0.5, 0.5]))


def test_tar_at_far_takes_the_lowest_threshold_within_the_target():
    negatives = np.arange(10) / 10  # 0.0 .. 0.9
    positives = np.array([0.95, 0.85, 0.05])
    points = cuts(np.r_[positives, negatives], np.r_[np.ones(3, bool), np.zeros(10, bool)])
    # FAR <= 0.1 allows one false accept (0.9): accept down to 0.85, reject 0.8
    assert points.at_far(0.1) == pytest.approx(0.825)
    assert points.at_far(0.0) == pytest.approx(0.925)
    assert np.isnan(cuts(np.array([0.5]), np.array([True])).at_far(0.1))  # no mismatched pair: undefined


def test_results_are_plain_json_without_nan():
    scores, same, folds = _folds_of([([0.9], [0.1]), ([0.8], [])])
    result = verification_metrics(scores, same, folds, higher_is_same=True)
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text)["tar_at_far"]["0.001"]["tar_sem"] is None  # one usable fold: no error bar
    # read as distances, the last point accepts every pair: the threshold is the largest distance
    assert roc_points(scores, same, higher_is_same=False)["thresholds"][-1] == 0.9


def test_bad_scores_are_refused():
    with pytest.raises(ValueError, match="finite"):
        cuts(np.array([np.nan, 1.0]), np.array([True, False]))
    with pytest.raises(ValueError, match="both matched and mismatched"):
        roc(cuts(np.array([0.3, 1.0]), np.array([True, True])))
    with pytest.raises(ValueError, match="two folds"):
        cross_validate(np.array([0.3, 1.0]), np.array([True, False]), np.array([0, 0]))


def test_six_thousand_pairs_take_well_under_a_second():
    rng = np.random.default_rng(0)
    same = np.tile(np.r_[np.ones(300, bool), np.zeros(300, bool)], 10)
    folds = np.repeat(np.arange(10), 600)
    scores = rng.normal(same.astype(float), 1.0)
    start = time.perf_counter()
    result = verification_metrics(scores, same, folds, higher_is_same=True)
    assert time.perf_counter() - start < 1.0
    assert 0.65 < result["accuracy"] < 0.75  # d' = 1: accuracy Phi(0.5) = 0.69, AUC Phi(1/sqrt 2) = 0.76
    assert 0.72 < result["auc"] < 0.80
