"""JFS verdicts: support-mask IoUs, the delta, k-shot agreement and the accepted labels.

Sign convention (SPEC section 5): E1 scores the coarse mask, E2 the refined
one, ``delta = E2 - E1``; a positive delta means the refinement helped the FSS
model find the object in the support image, i.e. the refined mask describes
the object better.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from napari_samrefine.labels.iou import iou, soft_iou

__all__ = [
    "IMPROVED",
    "DEGRADED",
    "UNCERTAIN",
    "UNJUDGED",
    "MISSED_IOU",
    "VERDICT_CODES",
    "SupportScore",
    "Verdict",
    "score_support",
    "decide",
    "accepted_labels",
    "verdict_image",
]

IMPROVED, DEGRADED, UNCERTAIN = "improved", "degraded", "uncertain"
UNJUDGED = "could not judge"
"""The verdict of an object whose support mask predictions all missed (see :func:`decide`)."""
#: Pixel values of :func:`verdict_image` (0 is background).
VERDICT_CODES = {IMPROVED: 1, DEGRADED: 2, UNCERTAIN: 3, UNJUDGED: 4}
MISSED_IOU = 0.05
"""At or below this mean IoU with the support masks both predictions missed: no verdict."""


@dataclass(frozen=True)
class SupportScore:
    """JFS scores of one query object against one support crop.

    Attributes
    ----------
    pair, support_label : int
        The support pair (index) and the support object the crop is centred on.
    e1, e2 : float
        Hard IoU of SMP1 (from the coarse mask) and SMP2 (from the refined mask)
        with the support mask Ms.
    e1_soft, e2_soft : float
        The same with the FSS probability instead of the binary SMP.
    """

    pair: int
    support_label: int
    e1: float
    e2: float
    e1_soft: float
    e2_soft: float

    @property
    def delta(self) -> float:
        """E2 - E1 (hard)."""
        return self.e2 - self.e1

    @property
    def delta_soft(self) -> float:
        """E2 - E1 (soft)."""
        return self.e2_soft - self.e1_soft


def score_support(
    pair: int, support_label: int, smp1: np.ndarray, smp2: np.ndarray, support_mask: np.ndarray
) -> SupportScore:
    """Score the two support mask predictions (probabilities) against Ms."""
    ms = np.asarray(support_mask, dtype=bool)
    return SupportScore(
        pair=int(pair),
        support_label=int(support_label),
        e1=iou(smp1 > 0.5, ms),
        e2=iou(smp2 > 0.5, ms),
        e1_soft=soft_iou(smp1, ms),
        e2_soft=soft_iou(smp2, ms),
    )


@dataclass(frozen=True)
class Verdict:
    """Aggregated JFS outcome of one object over its k supports.

    Attributes
    ----------
    verdict : str
        "improved", "degraded", "uncertain" or "could not judge".
    reason : str
        Why an object is uncertain: "similar-masks" (IoU(coarse, refined) at or
        above the limit), "below-tau" (|delta| <= tau), "disagreement" (too few
        supports share the sign of the mean delta), "no-support"; why it could
        not be judged: "both-missed" (the predictions from both masks missed the
        support objects, E1 and E2 at most ``missed_iou``, so their difference
        says nothing); "" otherwise.
    e1, e2, delta, e1_soft, e2_soft, delta_soft : float
        Means over the supports.
    agreement : float
        Fraction of supports whose delta (of the deciding score) has the sign of
        the mean delta.
    k : int
        Number of supports used.
    """

    verdict: str
    reason: str
    e1: float
    e2: float
    delta: float
    e1_soft: float
    e2_soft: float
    delta_soft: float
    agreement: float
    k: int


def decide(
    scores: Sequence[SupportScore],
    iou_coarse_refined: float,
    *,
    tau: float = 0.02,
    min_agreement: float = 2 / 3,
    similar_iou: float = 0.95,
    score: str = "hard",
    missed_iou: float = MISSED_IOU,
) -> Verdict:
    """The JFS verdict of one object from its per-support scores.

    Parameters
    ----------
    scores : sequence of SupportScore
        One per support crop (k-shot).
    iou_coarse_refined : float
        IoU(Mc, Mr) of the object.
    tau : float
        Margin: improved if mean delta > tau, degraded if < -tau.
    min_agreement : float
        Smallest fraction of supports whose delta has the mean's sign for a
        verdict other than uncertain (2/3: two of three supports, both of two).
    similar_iou : float
        At or above this IoU(Mc, Mr) the masks are too similar to judge (the
        JFS paper's stated limitation): uncertain.
    score : {"hard", "soft"}
        Which delta decides: the IoU of the binary SMP (the paper's) or the
        soft IoU of the probabilities (threshold-free; breaks hard ties).
    missed_iou : float
        When the mean E1 and E2 (of the deciding score) are both at or below
        this, both predictions missed the support objects: the verdict is
        "could not judge" (reason "both-missed"), not "uncertain", which would
        read as "the refinement changed little". Masks too similar to judge stay
        "uncertain" ("similar-masks") first.

    Returns
    -------
    Verdict
    """
    if score not in ("hard", "soft"):
        raise ValueError(f"score={score!r} must be 'hard' or 'soft'.")
    if not scores:
        nan = float("nan")
        return Verdict(UNCERTAIN, "no-support", nan, nan, nan, nan, nan, nan, 0.0, 0)
    e1 = float(np.mean([s.e1 for s in scores]))
    e2 = float(np.mean([s.e2 for s in scores]))
    e1s = float(np.mean([s.e1_soft for s in scores]))
    e2s = float(np.mean([s.e2_soft for s in scores]))
    deltas = np.array([s.delta if score == "hard" else s.delta_soft for s in scores])
    mean = float(deltas.mean())
    agreement = float(np.mean(np.sign(deltas) == np.sign(mean)))
    first, second = (e1, e2) if score == "hard" else (e1s, e2s)
    if iou_coarse_refined >= similar_iou:
        verdict, reason = UNCERTAIN, "similar-masks"
    elif max(first, second) <= missed_iou:
        verdict, reason = UNJUDGED, "both-missed"
    elif abs(mean) <= tau:
        verdict, reason = UNCERTAIN, "below-tau"
    elif agreement < min_agreement:
        verdict, reason = UNCERTAIN, "disagreement"
    else:
        verdict, reason = (IMPROVED if mean > 0 else DEGRADED), ""
    return Verdict(verdict, reason, e1, e2, e2 - e1, e1s, e2s, e2s - e1s, agreement, len(scores))


def accepted_labels(
    coarse: np.ndarray, refined: np.ndarray, improved_ids: Iterable[int]
) -> np.ndarray:
    """Coarse labels with the improved objects replaced by their refined masks.

    Parameters
    ----------
    coarse, refined : numpy.ndarray
        Label images of the same shape.
    improved_ids : iterable of int
        Objects whose refinement JFS judged improved.

    Returns
    -------
    numpy.ndarray
        A new array (coarse's dtype): each improved object is removed from the
        coarse labels and painted from the refined labels (over any other
        object's coarse pixels); every other object stays coarse.
    """
    out = np.array(coarse, copy=True)
    ids = np.fromiter((int(i) for i in improved_ids), dtype=np.int64)
    if ids.size:
        out[np.isin(coarse, ids)] = 0
        paint = np.isin(refined, ids)
        out[paint] = np.asarray(refined)[paint]
    return out


def verdict_image(labels: np.ndarray, verdicts: Mapping[int, str]) -> np.ndarray:
    """Paint each object of ``labels`` with its verdict's code (:data:`VERDICT_CODES`).

    Objects without a verdict stay 0. Returns a uint8 image of ``labels``' shape.
    """
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=np.uint8)
    for verdict, code in VERDICT_CODES.items():
        ids = [int(lid) for lid, v in verdicts.items() if v == verdict and int(lid) != 0]
        if ids:
            out[np.isin(labels, ids)] = code
    return out
