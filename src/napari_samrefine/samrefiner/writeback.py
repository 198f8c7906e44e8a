"""Writing refined objects back into a label image (SPEC section 1, instance mode): the one rule.

The result, pixel by pixel:

- a pixel of an id that was not refined keeps its id;
- a pixel of an object whose first refinement came out empty ("empty-output"),
  or whose refined mask a keep policy rejected ("kept-coarse"), keeps that
  object's id;
- any other pixel (background, or an id that was refined) goes to the refined
  object with the highest logit there among those whose mask holds it (ties:
  the lower id; for groups of one class, the first), else to 0.

The rule does not depend on the order in which objects are pasted, so it can be
applied to a whole plane at once (:func:`write_back`) or as objects come out of
their tiles, a strip of rows at a time (``pipeline/strips.py``): both
call :func:`start` and :func:`paint`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from napari_samrefine.labels.objects import isin_ids
from napari_samrefine.samrefiner.cascade import COARSE_STATUSES, REFINED_STATUSES, ObjectState

__all__ = ["write_back", "start", "paint", "rewritten_ids", "alone_flags"]


def rewritten_ids(states: Iterable[ObjectState]) -> set[int]:
    """Ids whose coarse pixels are cleared before pasting: every object the cascade ran on."""
    return {s.coarse.label_id for s in states if s.status in (*REFINED_STATUSES, *COARSE_STATUSES)}


def start(coarse: np.ndarray, refined_ids) -> tuple[np.ndarray, np.ndarray]:
    """The owners and best logits of (rows of) a plane before any object is pasted.

    Parameters
    ----------
    coarse : numpy.ndarray
        (rows of) a 2D label plane; not modified. Bool is taken as uint8.
    refined_ids : iterable of int
        Ids of the objects the cascade ran on (:func:`rewritten_ids`).

    Returns
    -------
    out : numpy.ndarray
        A copy of ``coarse`` with the refined ids set to 0.
    best : numpy.ndarray
        float32 "best logit": 0 where ``out`` is 0 (free), +inf elsewhere (pixels of
        objects that were not refined: no refined object may take them).
    """
    out = coarse.astype(np.uint8) if coarse.dtype == np.bool_ else coarse.copy()
    ids = list(refined_ids)
    if ids:
        out[isin_ids(out, ids)] = 0  # no id-sized table (ids may be up to 2**64 - 1)
    best = np.where(out != 0, np.float32(np.inf), np.float32(0))
    return out, best


def paint(
    out: np.ndarray,
    best: np.ndarray,
    states: Sequence[ObjectState],
    *,
    top: int = 0,
    rows: tuple[int, int] | None = None,
    alone: Sequence[bool] | None = None,
) -> None:
    """Paste objects into ``out`` and ``best`` (in place) by the rule of this module.

    Parameters
    ----------
    out, best : numpy.ndarray
        From :func:`start`: rows ``top`` to ``top + len(out)`` of the plane.
    states : sequence of ObjectState
        Cascade results, in the plane's frame; "empty-output" and "kept-coarse" ones paste their
        coarse mask, refined ones claim the pixels of their mask where their
        logit beats the best so far.
    top : int
        The plane row of ``out[0]``.
    rows : (int, int), optional
        Only these plane rows (half-open); default all of ``out``.
    alone : sequence of bool, optional
        Per state: True when its mask's box meets no other refined object's, so
        its logits need not be compared (nor upsampled); default all False.
    """
    a, b = (top, top + out.shape[0]) if rows is None else rows
    for k, s in enumerate(states):
        if s.status in COARSE_STATUSES:
            y0, x0, y1, x1 = s.coarse.bbox
            ya, yb = max(y0, a), min(y1, b)
            if ya < yb:
                m = s.coarse.mask[ya - y0 : yb - y0]
                r = slice(ya - top, yb - top)
                np.copyto(out[r, x0:x1], out.dtype.type(s.coarse.label_id), where=m)
                best[r, x0:x1][m] = np.inf
        elif s.status in REFINED_STATUSES:
            _claim(out, best, s, top, a, b, alone is not None and alone[k])


def _claim(out, best, s: ObjectState, top: int, a: int, b: int, alone: bool) -> None:
    y0, x0, y1, x1 = s.mask.bbox
    ya, yb = max(y0, a), min(y1, b)
    if ya >= yb:
        return
    lid = out.dtype.type(s.coarse.label_id)
    m = s.mask.mask[ya - y0 : yb - y0]
    r = slice(ya - top, yb - top)
    cur, owner = best[r, x0:x1], out[r, x0:x1]
    if alone:  # no other refined object reaches this box: its mask takes the free pixels
        claim = m & (cur == 0)
    else:  # the mask is where the logit is > 0, so a free pixel (best 0) goes to it
        logits = s.region_logits((ya, x0, yb, x1))
        claim = m & ((logits > cur) | ((logits == cur) & (owner > lid)))
        np.copyto(cur, logits, where=claim)
    np.copyto(owner, lid, where=claim)


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


def alone_flags(states: Sequence[ObjectState]) -> list[bool]:
    """Per state: a refined object whose mask's box meets no other refined object's."""
    refined = [k for k, s in enumerate(states) if s.status in REFINED_STATUSES]
    boxes = np.array([states[k].mask.bbox for k in refined], dtype=np.int64).reshape(-1, 4)
    flags = [False] * len(states)
    for k, shared in zip(refined, _overlapping(boxes), strict=True):
        flags[k] = not bool(shared)
    return flags


def write_back(coarse: np.ndarray, states: Sequence[ObjectState]) -> np.ndarray:
    """Paste refined objects into a copy of a 2D label plane (the rule of this module).

    Every label value refined by at least one object is removed from the coarse
    plane first. A pixel then belongs to the refined object whose chosen logit
    is highest there among the objects with a positive logit (for an object
    whose output came out empty at a later iteration, its previous iteration's
    logits; ties: the lower id). Objects whose first refinement came out empty
    keep their coarse pixels, and pixels of objects that were not refined
    (other ids) are never overwritten.

    An object whose mask's box meets no other refined object's is pasted from
    its mask; the others compare logits, upsampled inside their mask's box, one
    object at a time, so memory is one plane, its float32 best logits and one
    object's box.

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
    ids = rewritten_ids(states)
    if not ids:
        return coarse.copy()
    out, best = start(coarse, ids)
    paint(out, best, states, alone=alone_flags(states))
    return out.astype(coarse.dtype, copy=False)
