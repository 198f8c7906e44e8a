"""The review widget's decisions kept in step: with the pixels, and in a saved CSV table.

:func:`follow_pixels` gives each object the decision its pixels stand for after
an undo, a redo or a paint; :func:`check_objects` and :func:`adopt_table` let
labels opened without their table take a saved decisions table as theirs;
:class:`DecisionsFile` is the widget's file field with its Save and Load
buttons (the file format is :mod:`napari_samrefine.quality.review_file`).
Where decisions go in the layer, and the pixels of a decision, are
:mod:`.review_layers` (shared with the script face).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from magicgui.widgets import Container, FileEdit, PushButton

from napari_samrefine._napari.layers import features_table, plane_index
from napari_samrefine._napari.review_layers import object_mask

__all__ = ["follow_pixels", "keep_decisions", "check_objects", "adopt_table", "DecisionsFile"]


def follow_pixels(history, table, data) -> bool:
    """After the labels ``data`` changed (an undo, a redo, a paint): each object of ``history``
    (:class:`~napari_samrefine.quality.review.DecisionHistory`) gets the decision its pixels
    stand for, in ``table`` (the review's :class:`~.review_table.ObjectTable`, its rows and
    their cells). Returns whether a decision changed."""
    rows, changed = table.rows, False
    for i, key in enumerate(table.keys()):
        if key in history:
            decision = history.decision(key, object_mask(data, key))
            if decision != rows.at[i, "decision"]:
                rows.at[i, "decision"] = decision
                table.show_decision(i)
                changed = True
    return changed


def keep_decisions(history, table, data, edit, skip=()) -> None:
    """Before the edit ``(indices, values)`` is written into the labels ``data``: each object of
    ``history`` but those in ``skip`` (the ones it decides) whose pixels it changes keeps its
    decision (``table``: the review's :class:`~.review_table.ObjectTable`), its mask after the
    edit recorded with it (``indices`` None: no edit). A neighbour refined again into an object's
    pixels does not undo that object's decision; undo and redo still do (:func:`follow_pixels`)."""
    if edit[0] is None:
        return
    rows, keys = table.rows, table.keys()
    indices, values = tuple(np.asarray(ix) for ix in edit[0]), np.asarray(edit[1])
    planes: dict[tuple, tuple[np.ndarray, set]] = {}  # per plane: after the edit, the ids it touches
    for i, key in enumerate(keys):
        if key in skip or key not in history:
            continue
        lead = plane_index(key[0])
        if lead not in planes:
            at = np.ones(values.size, bool)
            for axis, v in zip(indices[: len(lead)], lead, strict=True):
                at &= axis == v
            plane = np.array(data[lead], copy=True)
            where = (indices[-2][at], indices[-1][at])
            touched = set(np.unique(plane[where]).tolist()) | set(np.unique(values[at]).tolist())
            plane[where] = values[at]
            planes[lead] = plane, touched
        plane, touched = planes[lead]
        if key[1] not in touched:  # the edit neither takes nor gives this object's pixels
            continue
        after = plane == key[1]
        if not np.array_equal(after, object_mask(data, key)):
            decision = rows.at[i, "decision"]
            history.record(key, decision, after, decision)


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
    none: ``metadata["samrefine_table"]``, and ``features`` as a refinement writes them (row
    ``i`` is label value ``i``, :func:`~napari_samrefine._napari.layers.features_table`)."""
    layer.metadata["samrefine_table"] = rows.copy()
    layer.features = features_table(rows.sort_values("label_id", kind="stable").reset_index(drop=True))


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
