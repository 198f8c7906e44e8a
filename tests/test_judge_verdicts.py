"""JFS verdict logic: sign conventions, tau, similar masks, k-shot agreement, accepted labels."""

from __future__ import annotations

import numpy as np
import pytest

from napari_samrefine.judge.verdicts import (
    DEGRADED,
    IMPROVED,
    UNCERTAIN,
    UNJUDGED,
    VERDICT_CODES,
    SupportScore,
    accepted_labels,
    decide,
    score_support,
    verdict_image,
)
from napari_samrefine.labels.iou import soft_iou


def scores(*pairs, soft=None):
    """SupportScores from (e1, e2) pairs; soft (e1, e2) pairs default to the hard ones."""
    soft = soft or pairs
    return [
        SupportScore(0, i + 1, e1, e2, s1, s2)
        for i, ((e1, e2), (s1, s2)) in enumerate(zip(pairs, soft, strict=True))
    ]


def test_sign_convention_e2_above_e1_is_improved():
    v = decide(scores((0.5, 0.8)), iou_coarse_refined=0.7)
    assert (v.verdict, v.reason) == (IMPROVED, "")
    assert v.delta == pytest.approx(0.3) and (v.e1, v.e2) == (0.5, 0.8)
    v = decide(scores((0.8, 0.5)), iou_coarse_refined=0.7)
    assert v.verdict == DEGRADED and v.delta == pytest.approx(-0.3)


def test_tau_is_a_strict_margin():
    assert decide(scores((0.5, 0.53)), 0.7, tau=0.02).verdict == IMPROVED
    v = decide(scores((0.5, 0.515)), 0.7, tau=0.02)
    assert (v.verdict, v.reason) == (UNCERTAIN, "below-tau")
    assert decide(scores((0.5, 0.515)), 0.7, tau=0.01).verdict == IMPROVED
    assert decide(scores((0.5, 0.485)), 0.7, tau=0.01).verdict == DEGRADED


def test_similar_masks_are_uncertain_whatever_the_delta():
    v = decide(scores((0.1, 0.9)), iou_coarse_refined=0.95)
    assert (v.verdict, v.reason) == (UNCERTAIN, "similar-masks")
    assert decide(scores((0.1, 0.9)), 0.949).verdict == IMPROVED
    assert decide(scores((0.1, 0.9)), 0.97, similar_iou=0.98).verdict == IMPROVED


def test_k_shot_mean_and_agreement():
    # mean +0.1, two of three supports agree: improved
    v = decide(scores((0.5, 0.8), (0.5, 0.6), (0.5, 0.4)), 0.7)
    assert v.k == 3 and v.delta == pytest.approx(0.1)
    assert v.agreement == pytest.approx(2 / 3) and v.verdict == IMPROVED
    # a stricter agreement rule turns the same scores uncertain
    v = decide(scores((0.5, 0.8), (0.5, 0.6), (0.5, 0.4)), 0.7, min_agreement=1.0)
    assert (v.verdict, v.reason) == (UNCERTAIN, "disagreement")
    # one large positive delta outvoted by two negatives: the mean is positive but
    # only a third of the supports agree
    v = decide(scores((0.2, 0.9), (0.5, 0.45), (0.5, 0.45)), 0.7)
    assert v.delta > 0.02 and v.agreement == pytest.approx(1 / 3)
    assert (v.verdict, v.reason) == (UNCERTAIN, "disagreement")
    # all agree on a degradation
    v = decide(scores((0.6, 0.5), (0.7, 0.4)), 0.7)
    assert v.verdict == DEGRADED and v.agreement == 1.0 and v.delta == pytest.approx(-0.2)


def test_soft_score_breaks_hard_ties():
    s = scores((0.5, 0.5), soft=[(0.40, 0.48)])
    assert decide(s, 0.7).verdict == UNCERTAIN  # hard delta is 0
    v = decide(s, 0.7, score="soft")
    assert v.verdict == IMPROVED and v.delta_soft == pytest.approx(0.08) and v.delta == 0.0
    with pytest.raises(ValueError, match="'hard' or 'soft'"):
        decide(s, 0.7, score="both")


def test_no_support_is_uncertain():
    v = decide([], 0.5)
    assert (v.verdict, v.reason, v.k) == (UNCERTAIN, "no-support", 0)


def test_soft_iou_and_support_scores():
    ms = np.array([[1, 1, 0, 0]], bool)
    assert soft_iou(ms.astype(float), ms) == 1.0
    # p = (1, 0.5, 0.5, 0): intersection 1.5, union 1 + 0.5 + 0.5 + 0.5 = 2.5
    assert soft_iou(np.array([[1.0, 0.5, 0.5, 0.0]]), ms) == pytest.approx(0.6)
    assert soft_iou(np.zeros((1, 4)), np.zeros((1, 4), bool)) == 1.0
    s = score_support(1, 7, np.array([[0.9, 0.2, 0.8, 0.0]]), np.array([[0.9, 0.7, 0.1, 0.0]]), ms)
    assert (s.pair, s.support_label) == (1, 7)
    assert s.e1 == pytest.approx(1 / 3) and s.e2 == 1.0 and s.delta == pytest.approx(2 / 3)
    assert s.e2_soft > s.e1_soft


def test_accepted_labels_follow_the_verdicts():
    coarse = np.zeros((6, 8), np.uint16)
    coarse[1:4, 1:4] = 1
    coarse[1:4, 5:8] = 2
    refined = np.zeros_like(coarse)
    refined[1, 5:8] = 2
    refined[2:5, 0:6] = 1  # grows into background and over a column of object 2
    before = coarse.copy(), refined.copy()
    out = accepted_labels(coarse, refined, [1])
    assert out.dtype == coarse.dtype
    np.testing.assert_array_equal(out == 1, refined == 1)  # improved: refined, painted over 2
    np.testing.assert_array_equal(out == 2, (coarse == 2) & (refined != 1))  # else coarse
    assert (out == 2).sum() == 9 - 2
    np.testing.assert_array_equal(accepted_labels(coarse, refined, []), coarse)
    np.testing.assert_array_equal(accepted_labels(coarse, refined, [1, 2]), refined)
    np.testing.assert_array_equal(coarse, before[0])
    np.testing.assert_array_equal(refined, before[1])


def test_verdict_image_codes():
    labels = np.array([[0, 1, 2, 3, 4]])
    img = verdict_image(labels, {1: IMPROVED, 2: DEGRADED, 3: UNCERTAIN})
    np.testing.assert_array_equal(img, [[0, 1, 2, 3, 0]])
    assert img.dtype == np.uint8


def test_both_predictions_missing_is_no_verdict_not_uncertain():
    # the case a user met: IoU with the truth fell from 0.81 to 0.25, JFS said "uncertain"
    v = decide(scores((0.0, 0.011)), iou_coarse_refined=0.3)
    assert (v.verdict, v.reason) == (UNJUDGED, "both-missed") == ("could not judge", "both-missed")
    assert v.verdict != UNCERTAIN
    # one prediction found the object: a real difference is judged as before
    assert decide(scores((0.0, 0.4)), iou_coarse_refined=0.3).verdict == IMPROVED
    assert decide(scores((0.3, 0.31)), iou_coarse_refined=0.3).reason == "below-tau"
    # masks too similar to judge stay uncertain, whatever the predictions
    assert decide(scores((0.0, 0.0)), iou_coarse_refined=0.97).reason == "similar-masks"
    # the soft score decides on the soft IoUs
    soft = decide(scores((0.0, 0.0), soft=[(0.1, 0.4)]), iou_coarse_refined=0.3, score="soft")
    assert soft.verdict == IMPROVED
    assert decide(scores((0.04, 0.0)), iou_coarse_refined=0.3, missed_iou=0.01).verdict == DEGRADED
    assert VERDICT_CODES[UNJUDGED] not in {VERDICT_CODES[k] for k in (IMPROVED, DEGRADED, UNCERTAIN)}
