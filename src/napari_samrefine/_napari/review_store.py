"""Where a review's decisions go: the refined layer's features and per-plane table, a CSV file.

:func:`store_decisions` writes the decisions of the review's rows into the
refined layer (``features["decision"]``, one per label, and
``metadata["samrefine_table"]``, one per object and plane);
:func:`reverts_edit` gives the pixels that revert many objects at once (a
decisions table loaded: one undo step); :class:`DecisionsFile` is the widget's
file field with its Save and Load buttons (the file format is
:mod:`napari_samrefine.quality.review_file`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from magicgui.widgets import Container, FileEdit, PushButton

from napari_samrefine._napari.layers import plane_index
from napari_samrefine.quality.review import object_key, replace_edit

__all__ = [
    "object_mask", "store_decisions", "follow_pixels", "reverts_edit", "check_objects", "adopt_table",
    "DecisionsFile",
]


def object_mask(data, key: tuple) -> np.ndarray:
    """Object ``key`` = ``(plane, label_id)``'s mask in ``data`` (bool, its plane)."""
    plane, label_id = key
    return np.asarray(data[plane_index(plane)]) == label_id


def store_decisions(layer, by_key: dict) -> pd.DataFrame | None:
    """The decisions ``{(plane, label_id): decision}`` into ``layer``'s per-plane table and features.

    Returns the new features (None when the layer has no ``label_id`` feature):
    the caller sets them (``layer.features = ...``), so it knows the event is its
    own. A label decided differently in two planes gets "mixed".
    """
    table = layer.metadata.get("samrefine_table")
    if isinstance(table, pd.DataFrame) and not table.empty:
        table = table.copy()
        planes = table["plane"] if "plane" in table else [None] * len(table)
        table["decision"] = [by_key.get(object_key(p, i), "") for p, i in
                             zip(planes, table["label_id"], strict=True)]
        layer.metadata["samrefine_table"] = table
    by_id: dict[int, set] = {}
    for (_, label_id), decision in by_key.items():
        by_id.setdefault(label_id, set()).add(decision)
    features = layer.features.copy()
    if "label_id" not in features:
        return None
    features["decision"] = [
        next(iter(by_id[i])) if len(by_id.get(i, ())) == 1 else ("" if i not in by_id else "mixed")
        for i in features["label_id"].astype(np.int64)
    ]
    return features


def follow_pixels(history, rows: pd.DataFrame, keys: list[tuple], data) -> list[int]:
    """After the labels ``data`` changed (an undo, a redo, a paint): each object of ``history``
    (:class:`~napari_samrefine.quality.review.DecisionHistory`) gets the decision its pixels
    stand for, in ``rows`` (``keys``: each row's object). Returns the rows changed."""
    changed = []
    for i, key in enumerate(keys):
        if key in history:
            decision = history.decision(key, object_mask(data, key))
            if decision != rows.at[i, "decision"]:
                rows.at[i, "decision"] = decision
                changed.append(i)
    return changed


def check_objects(data, rows: pd.DataFrame, name: str, layer_name: str) -> None:
    """Raise a ValueError naming the objects of ``rows`` (a table ``name``) that the labels
    ``data`` of ``layer_name`` do not hold (in their planes): pass the coarse labels (a
    refinement may leave an object no pixel)."""
    if np.ndim(data) - 2 != max((len(plane_index(p)) for p in rows["plane"]), default=np.ndim(data) - 2):
        raise ValueError(f"{name} is a table of {'2D labels' if rows['plane'].isna().all() else 'a stack'}"
                         f" and {layer_name} has {np.ndim(data)} dimensions: load it into its layer.")
    present: dict[tuple, set] = {}
    missing = []
    for p, i in zip(rows["plane"], rows["label_id"], strict=True):
        lead = plane_index(p)
        if lead not in present:
            present[lead] = set(np.unique(np.asarray(data[lead])).tolist())
        if int(i) not in present[lead]:
            missing.append(str(i) if p is None else f"{i} (plane {p})")
    if missing:
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        raise ValueError(f"{name} lists objects that {layer_name} has not: {', '.join(missing[:8])}{more}. "
                         "Load it into the refined layer it was saved from, with its coarse layer.")


def adopt_table(layer, rows: pd.DataFrame) -> None:
    """A review's ``rows`` (a saved table) become the per-object table of ``layer``, which had
    none: ``metadata["samrefine_table"]``, and ``features`` one row per label."""
    layer.metadata["samrefine_table"] = rows.copy()
    if rows["label_id"].duplicated().any():  # a stack: one row per label
        ids = np.unique(rows["label_id"].to_numpy(np.int64))
        layer.features = pd.DataFrame({"index": ids, "label_id": ids})
    else:
        features = rows.sort_values("label_id").reset_index(drop=True)
        features.insert(0, "index", features["label_id"].astype(np.int64))
        layer.features = features


def reverts_edit(refined, coarse, keys: Iterable[tuple]):
    """The pixels that revert the objects ``keys`` to their coarse masks, all at once.

    Returns ``(indices, values, masks)``: one ``Labels.data_setitem`` edit (None
    when nothing changes) and each reverted object's mask after it.
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


class DecisionsFile(Container):
    """The decisions table's file and its Save and Load buttons.

    Parameters
    ----------
    save, load : callable
        ``save(path)``, ``load(path)`` when their button is pressed with a file chosen.
    say : callable
        ``say(text, error=True)`` when no file is chosen.
    """

    def __init__(self, save: Callable[[Path], None], load: Callable[[Path], None], say: Callable):
        self.file = FileEdit(label="decisions table", mode="w", filter="*.csv")
        self.file.tooltip = (
            "A CSV file of the review: one row per object (id, plane, the estimates, status, "
            "decision). Save decisions writes it; Load decisions applies it to the refined layer.")
        self.save_button = PushButton(text="Save decisions")
        self.load_button = PushButton(text="Load decisions")
        buttons = Container(layout="horizontal", labels=False, widgets=[self.save_button, self.load_button])
        super().__init__(labels=True, widgets=[self.file, buttons])
        self.margins = (0, 0, 0, 0)
        self._say = say
        self.save_button.changed.connect(lambda *_: self._call(save))
        self.load_button.changed.connect(lambda *_: self._call(load))

    def _call(self, action: Callable[[Path], None]) -> None:
        path = self.file.value
        if path is None or str(path) in ("", "."):
            self._say("Choose the decisions table's file (decisions table) first.", error=True)
            return
        action(Path(path))
