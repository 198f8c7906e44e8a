"""Reviewing a refinement object by object: a queue worst first, accept or revert each.

The decisions a person makes in the "Review refinement" widget, made the same
way from a script: :func:`review_table` lists the refined objects worst first
(lowest IoU with the coarse mask), :func:`revert_edit` gives the pixels that
restore one object's coarse mask (the widget writes them as one undo step),
:func:`apply_decisions` applies decisions by id to whole arrays. Pure numpy and
pandas; nothing here imports napari.

Reverting object ``k`` makes its mask equal its coarse mask exactly: its pixels
outside the coarse mask become background, and every pixel of the coarse mask
becomes ``k`` again (also where a neighbour grew into it). Nothing else changes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from napari_samrefine.samrefiner.cascade import COARSE_STATUSES, REFINED_STATUSES

__all__ = [
    "DECISIONS",
    "REVIEW_COLUMNS",
    "ESTIMATES",
    "review_table",
    "sort_review",
    "object_key",
    "revert_edit",
    "replace_edit",
    "object_matches",
    "apply_decisions",
    "DecisionHistory",
]

DECISIONS = ("", "accepted", "reverted", "re-refined")
"""A reviewed object's decision: none yet, the refined mask accepted, the coarse mask
restored, or the object refined again from edited prompts."""

REVIEW_COLUMNS = ("label_id", "plane", "iou_coarse", "area_ratio", "predicted_iou", "stability",
                  "edge_contrast", "status", "decision")
"""The columns of :func:`review_table`."""

ESTIMATES = ("iou_coarse", "predicted_iou", "stability", "edge_contrast")
"""The label-free quality estimates a refinement's table holds per object (NaN where none)."""


def _plane_value(value):
    """A plane as the table holds it (None, NaN or "" for 2D) as None, an int or a (t, z) tuple."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None
    if isinstance(value, str):  # a table read back from a file: "3" or "(1, 2)"
        parts = [int(v) for v in value.strip("()[] ").split(",") if v.strip()]
        return parts[0] if len(parts) == 1 else tuple(parts)
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    return int(value)


def object_key(plane, label_id) -> tuple:
    """The key of one object of a review: ``(plane, label_id)``, the plane None for 2D."""
    return _plane_value(plane), int(label_id)


def review_table(table: pd.DataFrame, order: str = "worst") -> pd.DataFrame:
    """The objects a refinement ran on, to review, worst first.

    Parameters
    ----------
    table : pandas.DataFrame
        ``RefineResult.table()``, or a result layer's ``features`` (one row per
        label; an ``index`` column is ignored). A ``decision`` column, when
        present, is carried over (a review resumed).
    order : {"worst", "id"} or a column of :data:`REVIEW_COLUMNS`
        "worst" (default): lowest ``iou_coarse`` (IoU of the refined mask with the
        coarse one) first, objects without it last, then by plane and id. "id":
        by plane and id. A column: by that column (:func:`sort_review`).

    Returns
    -------
    pandas.DataFrame
        :data:`REVIEW_COLUMNS`, one row per object the cascade ran on (statuses
        "ok", "kept-previous", "empty-output", "kept-coarse"); ``area_ratio`` is
        the refined over the coarse area, the estimates (:data:`ESTIMATES`) NaN
        where the table has none, ``decision`` "" where none was made.
    """
    if order not in ("worst", "id", *REVIEW_COLUMNS):
        raise ValueError(f"order must be 'worst', 'id' or one of {REVIEW_COLUMNS}, got {order!r}")
    missing = {"label_id", "status"} - set(table.columns)
    if missing:
        raise ValueError(f"the table has no {sorted(missing)} column: pass RefineResult.table() "
                         "or the refined layer's features")
    ran = table[table["status"].astype(str).isin((*REFINED_STATUSES, *COARSE_STATUSES))]
    nan = pd.Series(np.nan, index=ran.index)
    out = pd.DataFrame({
        "label_id": ran["label_id"].astype(np.int64),
        "plane": [_plane_value(v) for v in ran["plane"]] if "plane" in ran else [None] * len(ran),
        "iou_coarse": ran["iou_coarse"].astype(float) if "iou_coarse" in ran else nan,
        "area_ratio": (ran["refined_area"] / ran["coarse_area"].where(ran["coarse_area"] > 0)).astype(float)
        if {"refined_area", "coarse_area"} <= set(ran.columns) else nan,
        **{c: ran[c].astype(float) if c in ran else nan for c in ESTIMATES[1:]},
        "status": ran["status"].astype(str),
        "decision": ran["decision"].fillna("").astype(str) if "decision" in ran else "",
    })  # fmt: skip
    bad = set(out["decision"]) - set(DECISIONS)
    if bad:
        raise ValueError(f"unknown decisions {sorted(bad)}: a decision is one of {DECISIONS}")
    column = {"worst": "iou_coarse", "id": "plane"}.get(order, order)
    return sort_review(out[list(REVIEW_COLUMNS)], column)


def sort_review(rows: pd.DataFrame, column: str = "iou_coarse", ascending: bool = True) -> pd.DataFrame:
    """The review's rows sorted by ``column``: rows without a value last, ties by plane and id.

    Parameters
    ----------
    rows : pandas.DataFrame
        :func:`review_table`'s rows (decisions included).
    column : str
        One of :data:`REVIEW_COLUMNS`; "iou_coarse" ascending is the worst-first
        order, "label_id" and "plane" sort by plane, then id.
    ascending : bool

    Returns
    -------
    pandas.DataFrame
        A new table, index 0, 1, ...
    """
    if column not in rows.columns:
        raise ValueError(f"no column {column!r} to sort by: one of {list(rows.columns)}")
    out = rows.copy()
    out["_plane"] = [(-1,) if p is None else ((p,) if np.isscalar(p) else tuple(p)) for p in out["plane"]]
    keys = ["_plane", "label_id"]
    if column in ("plane", "label_id"):
        by, flags = (keys if column == "plane" else ["label_id", "_plane"]), [ascending, ascending]
    else:
        out["_nan"] = out[column].isna()
        by, flags = ["_nan", column, *keys], [True, ascending, True, True]
    out = out.sort_values(by, ascending=flags, kind="stable")
    return out.drop(columns=[c for c in ("_plane", "_nan") if c in out]).reset_index(drop=True)


def _lead(plane) -> tuple[int, ...]:
    plane = _plane_value(plane)
    if plane is None:
        return ()
    return (plane,) if np.isscalar(plane) else tuple(plane)


def revert_edit(current, coarse, label_id: int, plane=None) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The pixels that restore object ``label_id``'s coarse mask in ``current``.

    Parameters
    ----------
    current : numpy.ndarray
        The labels now (refined, maybe reviewed), 2D or a stack.
    coarse : numpy.ndarray
        The coarse labels, same shape.
    label_id : int
    plane : int, (t, z) or None
        The object's plane in a stack (None for 2D).

    Returns
    -------
    indices : tuple of numpy.ndarray
        Pixel coordinates (one array per axis of ``current``), for napari's
        ``Labels.data_setitem``.
    values : numpy.ndarray
        The values to write there: ``label_id`` on the coarse mask, 0 elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> coarse = np.array([[1, 1, 0], [0, 2, 2]]); refined = np.array([[1, 1, 1], [0, 1, 2]])
    >>> indices, values = revert_edit(refined, coarse, 1)
    >>> restored = refined.copy(); restored[indices] = values; restored.tolist()
    [[1, 1, 0], [0, 0, 2]]

    Object 1's pixel in object 2's coarse mask becomes background: reverting
    object 2 as well gives it back.
    """
    current, coarse = np.asarray(current), np.asarray(coarse)
    if current.shape != coarse.shape:
        raise ValueError(f"the labels {current.shape} and the coarse labels {coarse.shape} differ in "
                         "shape: choose the coarse layer the refinement was made from")
    return replace_edit(current, coarse[_checked_lead(current, plane)] == label_id, label_id, plane)


def _checked_lead(current: np.ndarray, plane) -> tuple[int, ...]:
    lead = _lead(plane)
    if len(lead) != current.ndim - 2:
        raise ValueError(f"labels of {current.ndim} dimensions need a plane of {current.ndim - 2} "
                         f"indices, got {plane!r}")
    return lead


def replace_edit(current, mask, label_id: int, plane=None) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The pixels that make object ``label_id``'s mask in ``current`` equal ``mask``.

    As :func:`revert_edit`, with the object's new mask given (bool, the shape
    of one plane): its pixels outside ``mask`` become 0, every pixel of
    ``mask`` becomes ``label_id``.
    """
    current = np.asarray(current)
    lead = _checked_lead(current, plane)
    cur, new = current[lead], np.asarray(mask, bool)
    if new.shape != cur.shape:
        raise ValueError(f"the mask {new.shape} is not the shape of a plane {cur.shape}")
    take = new & (cur != label_id)
    drop = (cur == label_id) & ~new
    rows, cols = np.nonzero(take | drop)
    values = np.where(take[rows, cols], label_id, 0).astype(current.dtype)
    indices = tuple(np.full(rows.size, v, np.intp) for v in lead) + (rows, cols)
    return indices, values


def object_matches(current, other, label_id: int, plane=None) -> bool:
    """Whether object ``label_id`` has the same pixels in ``current`` and ``other`` (its plane)."""
    lead = _lead(plane)
    return bool(np.array_equal(np.asarray(current[lead]) == label_id, np.asarray(other[lead]) == label_id))


def apply_decisions(refined, coarse, decisions: Mapping) -> np.ndarray:
    """The refined labels with the reverted objects' coarse masks restored (a script's review).

    Parameters
    ----------
    refined, coarse : numpy.ndarray
        The refinement's result and the labels it was made from (same shape).
    decisions : mapping
        ``{label_id: decision}`` (2D) or ``{(plane, label_id): decision}``, each
        decision one of :data:`DECISIONS`; "reverted" restores the object's coarse
        mask (:func:`revert_edit`), in the order given; the others change nothing.

    Returns
    -------
    numpy.ndarray
        A new array; the inputs are not modified.

    Examples
    --------
    >>> import numpy as np
    >>> coarse = np.array([[1, 1, 0], [0, 2, 2]]); refined = np.array([[1, 1, 1], [0, 1, 2]])
    >>> apply_decisions(refined, coarse, {1: "reverted", 2: "accepted"}).tolist()
    [[1, 1, 0], [0, 0, 2]]
    >>> apply_decisions(refined, coarse, {1: "reverted", 2: "reverted"}).tolist()
    [[1, 1, 0], [0, 2, 2]]
    """
    out = np.array(refined, copy=True)
    for key, decision in decisions.items():
        if decision not in DECISIONS:
            raise ValueError(f"decision of {key!r} must be one of {DECISIONS}, got {decision!r}")
        plane, label_id = key if isinstance(key, tuple) else (None, key)
        if decision == "reverted":
            indices, values = revert_edit(out, coarse, int(label_id), plane)
            out[indices] = values
    return out


class DecisionHistory:
    """Which decision each object's pixels stand for, through undo and redo.

    A decision that changes pixels (a revert, a re-refinement) records the
    object's mask it leaves; an accept records the mask it accepted. After the
    labels changed (an undo, a redo, a paint), :meth:`decision` finds the last
    decision whose mask the object has again, or, when it has none of them, the
    decision it had before the first one.
    """

    def __init__(self):
        self._entries: dict[tuple, list[tuple[str, np.ndarray, str]]] = {}

    def __contains__(self, key) -> bool:
        return key in self._entries

    def record(self, key: tuple, decision: str, mask: np.ndarray, before: str) -> None:
        """``decision`` made for object ``key`` (:func:`object_key`), leaving it ``mask``
        (bool, its plane); ``before``: its decision until then."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
        self._entries.setdefault(key, []).append((decision, np.asarray(mask, bool), before))

    def decision(self, key: tuple, mask: np.ndarray) -> str:
        """The decision object ``key`` stands at with ``mask`` (bool, its plane) now."""
        entries = self._entries[key]
        for decision, target, _ in reversed(entries):
            if np.array_equal(target, mask):
                return decision
        return entries[0][2]
