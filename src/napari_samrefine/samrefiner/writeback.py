"""Writing refined objects back into a label image (SPEC section 1, instance mode)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .cascade import REFINED_STATUSES, ObjectState

__all__ = ["write_back"]


def write_back(coarse: np.ndarray, states: Sequence[ObjectState]) -> np.ndarray:
    """Paste refined objects into a copy of a 2D label plane.

    Every label value refined by at least one object is removed from the coarse
    plane first. A pixel then belongs to the refined object whose chosen logit
    is highest there among the objects with a positive logit (for an object
    whose output came out empty at a later iteration, its previous iteration's
    logits). Objects whose first refinement came out empty keep their coarse
    pixels, and pixels of objects that were not refined (other ids) are never
    overwritten. Each object's logits
    are upsampled inside its region only, one object at a time, so memory is one
    plane plus one object's box.

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
    out[np.isin(out, list(refined_values))] = 0
    for s in states:
        if s.status == "empty-output":
            y0, x0, y1, x1 = s.coarse.bbox
            out[y0:y1, x0:x1][s.coarse.mask] = s.coarse.label_id
    protected = out != 0
    best = np.zeros(out.shape, dtype=np.float32)
    for s in states:
        if s.status not in REFINED_STATUSES:
            continue
        y0, x0, y1, x1 = s.region
        logits = s.region_logits()
        cur = best[y0:y1, x0:x1]
        claim = (logits > cur) & ~protected[y0:y1, x0:x1]
        out[y0:y1, x0:x1][claim] = s.coarse.label_id
        cur[claim] = logits[claim]
    return out
