"""Writing refined objects back into a label image (SPEC section 1, instance mode)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_samrefine.labels.objects import isin_ids
from napari_samrefine.samrefiner.cascade import REFINED_STATUSES, ObjectState

__all__ = ["write_back"]


def _overlapping(boxes: np.ndarray) -> np.ndarray:
    """Which of several half-open (y0, x0, y1, x1) boxes intersect at least one other."""
    n = len(boxes)
    out = np.zeros(n, dtype=bool)
    if n < 2:
        return out
    y0, x0, y1, x1 = boxes.T
    # sweep along y: each box is compared with the boxes that start before it ends
    order = np.argsort(y0, kind="stable")
    for k, i in enumerate(order):
        j = order[k + 1 :]
        j = j[y0[j] < y1[i]]
        if j.size:
            hit = j[(x0[j] < x1[i]) & (x0[i] < x1[j])]
            if hit.size:
                out[i] = True
                out[hit] = True
    return out


def write_back(coarse: np.ndarray, states: Sequence[ObjectState]) -> np.ndarray:
    """Paste refined objects into a copy of a 2D label plane.

    Every label value refined by at least one object is removed from the coarse
    plane first. A pixel then belongs to the refined object whose chosen logit
    is highest there among the objects with a positive logit (for an object
    whose output came out empty at a later iteration, its previous iteration's
    logits). Objects whose first refinement came out empty keep their coarse
    pixels, and pixels of objects that were not refined (other ids) are never
    overwritten.

    Only an object's mask pixels (its logit is positive there) can be claimed.
    An object whose mask's box meets no other refined object's is pasted from
    its mask; the others compare logits, upsampled inside their mask's box, one
    object at a time, so memory is one plane plus one object's box.

    Parameters
    ----------
    coarse : numpy.ndarray
        (H, W) label plane; not modified.
    states : sequence of ObjectState
        Cascade results for objects of this plane.

    Returns
    -------
    numpy.ndarray
        New plane with the dtype of ``coarse``.
    """
    out = coarse.copy()
    refined_values = {
        s.coarse.label_id for s in states if s.status in (*REFINED_STATUSES, "empty-output")
    }
    if not refined_values:
        return out
    out[isin_ids(out, refined_values)] = 0  # no id-sized table (ids may be up to 2**64 - 1)
    for s in states:
        if s.status == "empty-output":
            y0, x0, y1, x1 = s.coarse.bbox
            out[y0:y1, x0:x1][s.coarse.mask] = s.coarse.label_id
    free = out == 0  # pixels of objects that were not refined are never overwritten
    refined = [s for s in states if s.status in REFINED_STATUSES]
    boxes = np.array([s.mask.bbox for s in refined], dtype=np.int64).reshape(-1, 4)
    overlapping = _overlapping(boxes)
    best = np.zeros(out.shape, dtype=np.float32) if overlapping.any() else None
    for s, box, shared in zip(refined, boxes, overlapping, strict=True):
        y0, x0, y1, x1 = (int(v) for v in box)
        claim = s.mask.mask & free[y0:y1, x0:x1]
        if shared:
            # the highest logit wins where boxes meet (the mask is where the logit is > 0)
            logits = s.region_logits((y0, x0, y1, x1))
            cur = best[y0:y1, x0:x1]
            claim &= logits > cur
            np.copyto(cur, logits, where=claim)
        np.copyto(out[y0:y1, x0:x1], out.dtype.type(s.coarse.label_id), where=claim)
    return out
