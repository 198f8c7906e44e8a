"""Keep or replace, per object: the ``keep=`` policy of :func:`~napari_samrefine.refine`.

"refined" (the default, the paper's behaviour) writes every refined mask back.
"better" keeps an object's coarse mask where a label-free estimate says the
refinement made it worse: the refined mask's IoU with the coarse mask (the
signal that predicted "refined beats coarse" best, see docs/benchmarks.md,
"Keep or replace: label-free signals") is below :data:`KEEP_MIN_IOU`. Such an
object gets the status "kept-coarse": its coarse pixels are written back like
those of an object whose refinement came out empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from napari_samrefine.labels.iou import crop_iou
from napari_samrefine.samrefiner.cascade import REFINED_STATUSES, ObjectState

__all__ = ["KEEP_CHOICES", "KEEP_MIN_IOU", "keep_objects", "choose_view"]

KEEP_CHOICES = ("refined", "better")
"""The values of ``keep``."""

KEEP_MIN_IOU = 0.7
"""The smallest IoU of the refined with the coarse mask at which ``keep="better"``
writes the refined mask back. Measured with LiteMedSAM on all DSB2018 images
and StarDist's 2D images of the shared data, synthetic coarse masks (seed 0):
docs/benchmarks.md, "Keep or replace: label-free signals"."""


def keep_objects(
    states: Sequence[ObjectState], keep: str = "refined", min_iou: float | None = None
) -> list[ObjectState]:
    """Apply a keep policy to the cascade's states of one plane.

    Parameters
    ----------
    states : sequence of ObjectState
        From :func:`~napari_samrefine.samrefiner.cascade.run_cascade`; not modified.
    keep : {"refined", "better"}
        "refined": every state as it is. "better": refined objects whose mask's
        IoU with their coarse mask is below ``min_iou`` get the status
        "kept-coarse" (their refined mask stays in ``mask`` for the record; the
        coarse mask is written back).
    min_iou : float, optional
        The agreement threshold of "better" (default :data:`KEEP_MIN_IOU`).

    Returns
    -------
    list of ObjectState
        In the order of ``states`` (the same objects where nothing changes).
    """
    if keep not in KEEP_CHOICES:
        raise ValueError(f"keep must be 'refined' or 'better', got {keep!r}.")
    if keep == "refined":
        return list(states)
    min_iou = KEEP_MIN_IOU if min_iou is None else min_iou
    return [
        replace(s, status="kept-coarse")
        if s.status in REFINED_STATUSES and crop_iou(s.coarse, s.mask) < min_iou
        else s
        for s in states
    ]


def choose_view(candidates: Sequence[ObjectState]) -> ObjectState:
    """Of one object's candidates from several views, the one whose mask agrees most with the
    coarse mask (IoU), refined ones before those whose refinement came out empty; ties go
    to the first. One candidate is returned as it is. A candidate the keep policy already
    marked "kept-coarse" is scored by the mask it rejected, so that choosing before or
    after :func:`keep_objects` picks the same view.

    Used where ``scale="auto"`` refines an object at two zooms (the model's
    ``native_too``); measured with LiteMedSAM in docs/benchmarks.md, "Object scale and
    the defaults per model".
    """
    if len(candidates) == 1:
        return candidates[0]

    def score(s: ObjectState) -> tuple[bool, float]:
        refined = s.status in (*REFINED_STATUSES, "kept-coarse")
        return refined, crop_iou(s.coarse, s.mask) if refined else -1.0

    return max(candidates, key=score)
