"""What the JFS judge returns: per-object judgements, support predictions, the accepted labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from napari_samrefine.judge.verdicts import IMPROVED, SupportScore, Verdict, verdict_image

__all__ = ["JudgeResult", "ObjectJudgement", "SupportPrediction"]


@dataclass(frozen=True)
class ObjectJudgement:
    """The JFS outcome of one object.

    Attributes
    ----------
    label_id : int
        The object's id in the coarse (and refined) labels.
    status : str
        "ok", or "empty-refined" when the refinement removed the object (SMP2
        is then empty, E2 = 0).
    verdict : Verdict
        Verdict and mean scores over the supports.
    iou_coarse_refined : float
        IoU(Mc, Mr).
    area_coarse, area_refined : int
        Pixels of Mc and Mr.
    window : (y0, x0, y1, x1)
        The query crop (half-open) in the image.
    scores : list of SupportScore
        One entry per support crop used.
    """

    label_id: int
    status: str
    verdict: Verdict
    iou_coarse_refined: float
    area_coarse: int
    area_refined: int
    window: tuple[int, int, int, int]
    scores: list[SupportScore]


@dataclass(frozen=True)
class SupportPrediction:
    """The two support mask predictions of one object on one support crop (probabilities)."""

    label_id: int
    pair: int
    support_label: int
    window: tuple[int, int, int, int]
    smp1: np.ndarray
    smp2: np.ndarray


@dataclass(frozen=True)
class JudgeResult:
    """What :func:`judge_refinement` returns.

    Attributes
    ----------
    accepted : numpy.ndarray
        Label image (coarse's shape and dtype): the refined object where JFS
        found it improved, the coarse object otherwise.
    objects : list of ObjectJudgement
        One per judged object, in increasing id order.
    predictions : list of SupportPrediction
        The SMPs, when asked for with ``return_predictions=True``.
    support_shapes : list of (int, int)
        Shapes of the support images (for :meth:`support_mask_predictions`).
    parameters : dict
        Backend, masking, k, tau and the other settings used.
    """

    accepted: np.ndarray
    objects: list[ObjectJudgement]
    predictions: list[SupportPrediction] = field(default_factory=list)
    support_shapes: list[tuple[int, int]] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)

    @property
    def verdicts(self) -> dict[int, str]:
        """Object id -> verdict."""
        return {o.label_id: o.verdict.verdict for o in self.objects}

    @property
    def improved_ids(self) -> list[int]:
        """Ids of the objects whose refinement is accepted."""
        return [o.label_id for o in self.objects if o.verdict.verdict == IMPROVED]

    def table(self) -> pd.DataFrame:
        """One row per object; ``index`` is the label id (napari's ``Labels.features`` key)."""
        rows = [
            {
                "index": o.label_id,
                "label_id": o.label_id,
                "verdict": o.verdict.verdict,
                "reason": o.verdict.reason,
                "status": o.status,
                "delta": o.verdict.delta,
                "delta_soft": o.verdict.delta_soft,
                "e1": o.verdict.e1,
                "e2": o.verdict.e2,
                "e1_soft": o.verdict.e1_soft,
                "e2_soft": o.verdict.e2_soft,
                "iou_coarse_refined": o.iou_coarse_refined,
                "k": o.verdict.k,
                "agreement": o.verdict.agreement,
                "area_coarse": o.area_coarse,
                "area_refined": o.area_refined,
            }
            for o in self.objects
        ]
        columns = [
            "index", "label_id", "verdict", "reason", "status", "delta", "delta_soft", "e1",
            "e2", "e1_soft", "e2_soft", "iou_coarse_refined", "k", "agreement", "area_coarse",
            "area_refined",
        ]  # fmt: skip
        return pd.DataFrame(rows, columns=columns)

    def support_table(self) -> pd.DataFrame:
        """One row per (object, support crop) with the per-support E1, E2 and deltas."""
        rows = [
            {
                "label_id": o.label_id,
                "pair": s.pair,
                "support_label": s.support_label,
                "e1": s.e1,
                "e2": s.e2,
                "delta": s.delta,
                "e1_soft": s.e1_soft,
                "e2_soft": s.e2_soft,
                "delta_soft": s.delta_soft,
            }
            for o in self.objects
            for s in o.scores
        ]
        columns = ["label_id", "pair", "support_label", "e1", "e2", "delta", "e1_soft",
                   "e2_soft", "delta_soft"]  # fmt: skip
        return pd.DataFrame(rows, columns=columns)

    def verdict_image(self) -> np.ndarray:
        """uint8 image of the accepted objects coded 1 improved, 2 degraded, 3 uncertain, 4 could not judge."""
        return verdict_image(self.accepted, self.verdicts)

    def support_mask_predictions(self, pair: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """SMP1 and SMP2 probabilities over support image ``pair`` (max where crops overlap).

        Needs ``return_predictions=True``.
        """
        if not 0 <= pair < len(self.support_shapes):
            raise IndexError(f"There is no support pair {pair}: {len(self.support_shapes)} given.")
        smp1 = np.zeros(self.support_shapes[pair], np.float32)
        smp2 = np.zeros_like(smp1)
        for p in self.predictions:
            if p.pair == pair:
                y0, x0, y1, x1 = p.window
                np.maximum(smp1[y0:y1, x0:x1], p.smp1, out=smp1[y0:y1, x0:x1])
                np.maximum(smp2[y0:y1, x0:x1], p.smp2, out=smp2[y0:y1, x0:x1])
        return smp1, smp2
