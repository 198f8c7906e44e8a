"""Review decisions on a refined Labels layer: shared by the review widget and the script face.

The decisions themselves are :mod:`napari_samrefine.quality.review` (pure
numpy and pandas). Here they meet a layer: the layer's per-object table
(:func:`decision_table`), the decisions stored in its ``features`` and per-plane
table (:func:`store_decisions`, so a reopened layer resumes the review), an
object's mask read (:func:`object_mask`) and a new one written as one step of
the layer's undo history (:func:`set_object_mask`), many objects reverted as
one step (:func:`reverts_edit`), the edited prompts kept with the layer
(:data:`EDITED_PROMPTS`), and decisions by id made from a script
(:func:`decide_objects`, :func:`rerefine_object`). The review widget
(:mod:`.review_widget`) and the script face (:mod:`.scripting`) both call these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from napari_samrefine._napari.activity import activity_progress
from napari_samrefine._napari.edited_prompts import refine_from_layers
from napari_samrefine._napari.layers import plane_index
from napari_samrefine._napari.refine_output import find_layer
from napari_samrefine.models.loading import resolve_sam
from napari_samrefine.quality.review import (
    DECISIONS,
    object_key,
    replace_edit,
    review_table,
)

__all__ = [
    "EDITED_PROMPTS",
    "decision_table",
    "store_decisions",
    "object_mask",
    "set_object_mask",
    "write_edit",
    "reverts_edit",
    "decide_objects",
    "rerefine_object",
]

EDITED_PROMPTS = "samrefine_edited_prompts"
"""The refined layer's metadata key of the prompts objects were refined again from,
``{(plane, label_id): ObjectPrompts}``."""


def decision_table(layer) -> pd.DataFrame:
    """A refined layer's per-object table: ``metadata["samrefine_table"]``, else its ``features``.

    Raises a ValueError for a stack without its per-plane table (its ``features``
    have one row per label, not per plane).
    """
    table = layer.metadata.get("samrefine_table")
    if isinstance(table, pd.DataFrame) and not table.empty:
        return table
    if layer.ndim > 2:
        raise ValueError(f"{layer.name!r} has no per-plane table (metadata['samrefine_table']): "
                         "refine the stack again to review it plane by plane.")
    return layer.features


def store_decisions(layer, decisions: Mapping[tuple, str]) -> None:
    """Write ``decisions`` into the refined layer's per-plane table and ``features``.

    Parameters
    ----------
    layer : napari.layers.Labels
        The refined layer.
    decisions : mapping
        ``{(plane, label_id): decision}`` (:func:`~napari_samrefine.quality.review.object_key`)
        for every object of the review; objects not in it get "". In ``features``
        (row ``i`` is label value ``i``, rows without an object included) a label
        decided differently on several planes reads "mixed"; rows without a
        decision read "".

    Notes
    -----
    Setting ``layer.features`` emits the layer's ``features`` event; the review
    widget tells its own writes from others' (a script's) by that.
    """
    table = layer.metadata.get("samrefine_table")
    if isinstance(table, pd.DataFrame) and not table.empty:
        table = table.copy()
        planes = table["plane"] if "plane" in table else [None] * len(table)
        table["decision"] = [decisions.get(object_key(p, i), "") for p, i in
                             zip(planes, table["label_id"], strict=True)]
        layer.metadata["samrefine_table"] = table
    by_id: dict[int, set] = {}
    for (_, label_id), decision in decisions.items():
        by_id.setdefault(label_id, set()).add(decision)
    features = layer.features.copy()
    if "label_id" in features:
        ids = features["label_id"].astype(np.int64)
        features["decision"] = [
            next(iter(by_id[i])) if len(by_id.get(i, ())) == 1 else
            ("" if i not in by_id else "mixed") for i in ids
        ]
        layer.features = features


def object_mask(data, key: tuple) -> np.ndarray:
    """Object ``key`` = ``(plane, label_id)``'s mask in the labels ``data`` (bool, its plane)."""
    plane, label_id = key
    return np.asarray(data[plane_index(plane)]) == label_id


def write_edit(layer, indices, values) -> None:
    """Write ``values`` at ``indices`` (one per axis) of the Labels ``layer`` as one undo step.

    ``Labels.data_setitem`` alone emits the layer's ``paint`` event before it
    writes the pixels; inside ``block_history`` the event comes after them, so
    that whoever follows the layer's pixels (the review widget) reads the new ones.
    """
    with layer.block_history():
        layer.data_setitem(indices, values)


def set_object_mask(layer, key: tuple, mask: np.ndarray) -> int:
    """Make object ``key`` = (plane, label_id) of ``layer`` exactly ``mask`` (bool, its plane),
    as one undo step (:func:`write_edit`); returns the number of pixels written."""
    plane, label_id = key
    indices, values = replace_edit(layer.data, mask, label_id, plane)
    if values.size:
        write_edit(layer, indices, values)
    return int(values.size)


def reverts_edit(refined, coarse, keys: Iterable[tuple]):
    """The pixels that revert the objects ``keys`` of the labels ``refined`` to their masks in
    ``coarse``, in that order, all at once.

    Returns ``(indices, values, masks)``: one ``Labels.data_setitem`` edit (one
    undo step; ``indices`` None when nothing changes) and each reverted
    object's mask after it. Every object ends as
    :func:`~napari_samrefine.quality.review.apply_decisions` leaves it.
    """
    planes: dict[tuple, np.ndarray] = {}
    masks = {}
    for key in keys:
        lead = plane_index(key[0])
        plane = planes.setdefault(lead, np.array(refined[lead]))
        indices, values = replace_edit(plane, object_mask(coarse, key), key[1])
        plane[indices] = values
        masks[key] = plane == key[1]
    indices, values = [], []
    for lead, plane in planes.items():
        ys, xs = np.nonzero(plane != np.asarray(refined[lead]))
        indices.append([np.full(ys.size, v, np.intp) for v in lead] + [ys, xs])
        values.append(plane[ys, xs])
    if not values or not sum(v.size for v in values):
        return None, np.zeros(0, np.asarray(refined).dtype), masks
    return (tuple(np.concatenate(axis) for axis in zip(*indices, strict=True)),
            np.concatenate(values), masks)


def _decisions_by_key(decisions: Mapping, ndim: int) -> dict[tuple, str]:
    out = {}
    for key, decision in decisions.items():
        if decision not in DECISIONS:
            raise ValueError(f"decision of {key!r} must be one of {DECISIONS}, got {decision!r}")
        plane, label_id = key if isinstance(key, tuple) else (None, key)
        if (plane is None) != (ndim == 2):
            raise ValueError(f"decision key {key!r}: a {ndim}D layer's objects are "
                             + ("label ids" if ndim == 2 else "(plane, label_id) pairs"))
        out[object_key(plane, label_id)] = decision
    return out


def _check_pair(refined, coarse) -> None:
    if coarse.data.shape != refined.data.shape:
        raise ValueError(f"{coarse.name!r} {coarse.data.shape} and {refined.name!r} {refined.data.shape} "
                         "differ in shape: choose the coarse layer the refinement was made from.")


def _known(refined, keys) -> dict[tuple, str]:
    """The decisions so far of every object of ``refined``'s review; a ValueError for a key of
    ``keys`` that is not one of them."""
    rows = review_table(decision_table(refined), order="id")
    known = {object_key(p, i): d for p, i, d in rows[["plane", "label_id", "decision"]].itertuples(index=False)}
    unknown = [k[1] if k[0] is None else k for k in keys if k not in known]
    if unknown:
        raise ValueError(f"objects {unknown} are not in {refined.name!r}'s refinement: its objects are "
                         f"{sorted({k[1] for k in known})}.")
    return known


def decide_objects(viewer, refined, coarse, decisions: Mapping) -> pd.DataFrame:
    """Accept or revert objects of a refined layer by id, as one undo step.

    Parameters
    ----------
    viewer : napari.Viewer
    refined : str or napari.layers.Labels
        The refined layer (``refine_layers`` or the refine widget made it: its
        per-object table lists the objects to review), or its name.
    coarse : str or napari.layers.Labels
        The coarse layer it was made from (same shape).
    decisions : mapping
        ``{label_id: decision}`` (2D) or ``{(plane, label_id): decision}``, each one of
        ``"accepted"`` (nothing changes), ``"reverted"`` (the object's coarse mask
        back, exactly), ``""`` (no decision).

    Returns
    -------
    pandas.DataFrame
        The review table worst first (:func:`~napari_samrefine.quality.review.review_table`)
        with every decision made so far.

    Raises
    ------
    ValueError
        For an unknown decision or an id the refinement did not run on; nothing is changed then.
    """
    refined, coarse = find_layer(viewer, refined, "labels"), find_layer(viewer, coarse, "labels")
    _check_pair(refined, coarse)
    wanted = _decisions_by_key(decisions, refined.ndim)
    if "re-refined" in wanted.values():
        raise ValueError("'re-refined' is made by rerefine_object (from edited prompts), not decided.")
    known = _known(refined, wanted)
    reverted = [key for key, decision in wanted.items() if decision == "reverted"]
    indices, values, _ = reverts_edit(refined.data, coarse.data, reverted)
    if indices is not None:  # every revert together: one Ctrl+Z
        write_edit(refined, indices, values)
    known.update(wanted)
    store_decisions(refined, known)
    return review_table(decision_table(refined))


def rerefine_object(viewer, image, coarse, refined, label_id: int, sam, plane=None, **options):
    """Refine one object again from its edited prompt layers and write it into ``refined``
    as one undo step, as the review widget's "Refine this object" does.

    Parameters
    ----------
    viewer : napari.Viewer
        Holds ``coarse``'s prompt layers (drawn by the Prompt excavation widget or
        ``excavate_layers``, then edited).
    image : str or napari.layers.Image
    coarse, refined : str or napari.layers.Labels
    label_id : int
    sam : Sam, str or path
    plane : int, (t, z) or None
        The object's plane in a stack.
    **options
        Passed to :func:`~napari_samrefine.refine` (one iteration, keep "refined" by default).

    Returns
    -------
    ObjectPrompts
        The prompts read from the layers; they are also kept in the layer's
        ``metadata["samrefine_edited_prompts"][(plane, label_id)]``, and the object's
        decision becomes "re-refined".
    """
    image = find_layer(viewer, image, "image")
    refined, coarse = find_layer(viewer, refined, "labels"), find_layer(viewer, coarse, "labels")
    _check_pair(refined, coarse)
    key = object_key(plane, label_id)
    known = _known(refined, [key])
    with activity_progress(f"refining object {key[1]} of {coarse.name!r}") as progress:
        mask, prompts = refine_from_layers(viewer, image, coarse, lambda: resolve_sam(sam), key[1], key[0],
                                           **{"progress": progress, **options})
    refined.metadata.setdefault(EDITED_PROMPTS, {})[key] = prompts
    set_object_mask(refined, key, mask)
    known[key] = "re-refined"
    store_decisions(refined, known)
    return prompts
