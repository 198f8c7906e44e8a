"""The "Review refinement" dock widget: the refined objects worst first, accept or revert each.

A thin face of :mod:`napari_samrefine.quality.review`: the table comes from the
refined layer's per-object table (``metadata["samrefine_table"]``, else its
``features``); selecting a row shows the object (its plane, centred, its label
selected, its prompts selected in the prompt layers); Accept keeps the refined mask, Revert restores the object's coarse
mask from the coarse layer as one step of the refined layer's undo history
(``Labels.data_setitem``); Refine this object decodes it from its edited prompt
layers (:mod:`.edited_prompts`) and writes its new mask the same way (the
prompts go to the layer's ``metadata["samrefine_edited_prompts"]``).
Decisions are stored in the layer's ``features`` (and its per-plane table), so
a layer reopened with them resumes the review. Undoing a revert or a
re-refinement (Ctrl+Z on the layer) takes its decision back; redoing it
restores it.

Keys, while the widget has focus: A accept, R revert, E refine this object, N
next, P previous (Up and Down move through the table too).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from magicgui.widgets import ComboBox, Container, PushButton, Table
from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import QAbstractItemView

from napari_samrefine._napari.edited_prompts import refine_from_layers, select_object_prompts
from napari_samrefine._napari.layers import (
    is_refined_layer,
    is_result_layer,
    layer_field,
)
from napari_samrefine._napari.model_choice import ModelPicker
from napari_samrefine._napari.review_layers import (
    EDITED_PROMPTS,
    decision_table,
    set_object_mask,
    store_decisions,
)
from napari_samrefine._napari.status import StatusLine
from napari_samrefine.quality.review import DecisionHistory, object_key, review_table

__all__ = ["ReviewWidget", "ORDERS"]

ORDERS = {"worst first": "worst", "by id": "id"}
"""The table's orders: lowest IoU with the coarse mask first, or by plane and id."""

SHOWN = {"label_id": "id", "plane": "plane", "iou_coarse": "IoU coarse", "area_ratio": "area ratio",
         "status": "status", "decision": "decision"}


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.3f}"
    return str(value)


class _Keys(QObject):
    """A, R, N, P (without modifiers) pressed in the widget call their actions."""

    def __init__(self, actions: dict):
        super().__init__()
        self._actions = actions

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.KeyPress and not event.modifiers():
            action = self._actions.get(Qt.Key(event.key()))
            if action is not None:
                action()
                return True
        return False


class ReviewWidget(Container):
    """Review a refinement object by object (see the module's description).

    Attributes
    ----------
    rows : pandas.DataFrame
        The review table (:func:`~napari_samrefine.quality.review.review_table`),
        in the order shown, with the decisions made so far.
    current : int or None
        The selected row.
    """

    def __init__(self, napari_viewer, sam=None):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self.rows = review_table(pd.DataFrame(columns=["label_id", "status"]))
        self.current: int | None = None
        self._history = DecisionHistory()  # what each changed object's pixels stand for
        self._layer = None  # the refined layer whose events are connected
        self.refined_layer = layer_field(napari_viewer, Labels, "refined", prefer=is_refined_layer)
        self.coarse_layer = layer_field(napari_viewer, Labels, "coarse",
                                        prefer=lambda layer: not is_result_layer(layer))
        self.order = ComboBox(label="order", choices=list(ORDERS), value="worst first")
        self.load_button = PushButton(text="Load objects")
        self.table = Table(value={"data": [], "index": [], "columns": list(SHOWN.values())})
        self.accept_button = PushButton(text="Accept (A)")
        self.revert_button = PushButton(text="Revert to coarse (R)")
        self.previous_button = PushButton(text="Previous (P)")
        self.next_button = PushButton(text="Next (N)")
        # "Refine this object": its edited prompt layers, decoded with the image's embedding
        self.image_layer = layer_field(napari_viewer, Image, "image")
        self.model = ModelPicker(sam)
        self.refine_button = PushButton(text="Refine this object from its edited prompts (E)")
        self._status = StatusLine()
        buttons = Container(layout="horizontal", labels=False,
                            widgets=[self.previous_button, self.accept_button, self.revert_button,
                                     self.next_button])
        self.extend([self.refined_layer, self.coarse_layer, self.order, self.load_button, self.table,
                     buttons, self.image_layer, self.model, self.refine_button, self._status])
        native = self.table.native
        native.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        native.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        native.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        native.itemSelectionChanged.connect(self._row_selected)
        self.load_button.changed.connect(self.load)
        self.order.changed.connect(lambda *_: self.load())
        self.refined_layer.changed.connect(self._preselect_coarse)
        self.accept_button.changed.connect(self.accept)
        self.revert_button.changed.connect(self.revert)
        self.next_button.changed.connect(self.next)
        self.previous_button.changed.connect(self.previous)
        self.refine_button.changed.connect(self.refine_object)
        self._keys = _Keys({Qt.Key.Key_A: self.accept, Qt.Key.Key_R: self.revert,
                            Qt.Key.Key_N: self.next, Qt.Key.Key_P: self.previous,
                            Qt.Key.Key_E: self.refine_object})
        for target in (self.native, native):
            target.installEventFilter(self._keys)
        napari_viewer.layers.events.inserted.connect(self.reset_choices)
        napari_viewer.layers.events.removed.connect(self.reset_choices)
        self._preselect_coarse()

    # -- the table ---------------------------------------------------------------------------

    @property
    def status(self) -> str:
        """The status line, whole."""
        return self._status.value

    def say(self, text: str, error: bool = False) -> None:
        """Show a message in the status line (and as a notification for errors)."""
        self._status.value = text
        if error:
            show_error(text)

    def _preselect_coarse(self, *_) -> None:
        """The coarse field takes the layer the refined one was made from, when it is there."""
        refined = self.refined_layer.value
        source = None if refined is None else refined.metadata.get("samrefine", {}).get("source")
        for layer in self._viewer.layers:
            if source is not None and isinstance(layer, Labels) and layer.unique_id == source:
                self.coarse_layer.value = layer

    def load(self, *_) -> None:
        """Read the refined layer's objects into the table (decisions stored there included)."""
        layer = self.refined_layer.value
        if layer is None:
            self.say("Choose the refined Labels layer (the SAM refine widget's result).", error=True)
            return
        try:
            rows = review_table(decision_table(layer), ORDERS[self.order.value])
        except ValueError as err:
            self.say(str(err), error=True)
            return
        if self._layer is not None and self._layer is not layer:
            self._disconnect()
        if self._layer is not layer:
            layer.events.set_data.connect(self._sync)
            layer.events.paint.connect(self._sync)
            self._layer = layer
        self.rows, self._history, self.current = rows, DecisionHistory(), None
        self._fill()
        done = int((rows["decision"] != "").sum())
        self.say(f"{len(rows)} objects to review in {layer.name!r} ({done} decided), worst first: "
                 "select a row, then Accept (A) or Revert (R).")
        if len(rows):
            self.select(0)

    def _disconnect(self) -> None:
        for event in (self._layer.events.set_data, self._layer.events.paint):
            event.disconnect(self._sync)
        self._layer = None

    def _fill(self) -> None:
        data = [[_cell(v) for v in row] for row in self.rows[list(SHOWN)].itertuples(index=False)]
        native = self.table.native
        blocked = native.blockSignals(True)
        self.table.value = {"data": data, "index": [str(i + 1) for i in range(len(data))],
                            "columns": list(SHOWN.values())}
        native.blockSignals(blocked)

    def _show_decision(self, i: int) -> None:
        column = list(SHOWN).index("decision")
        item = self.table.native.item(i, column)
        if item is not None:
            item.setText(self.rows.at[i, "decision"])

    # -- moving through the objects -------------------------------------------------------------

    def _row_selected(self) -> None:
        rows = self.table.native.selectionModel().selectedRows()
        if rows and rows[0].row() != self.current:
            self.select(rows[0].row())

    def select(self, i: int) -> None:
        """Select row ``i``: show its object's plane, centre the canvas on it, select its label."""
        if not 0 <= i < len(self.rows):
            return
        self.current = i
        native = self.table.native
        if native.currentRow() != i:
            blocked = native.blockSignals(True)
            native.selectRow(i)
            native.blockSignals(blocked)
        self._go_to(self.rows.at[i, "plane"], int(self.rows.at[i, "label_id"]))

    def next(self, *_) -> None:
        """Select the next object."""
        if len(self.rows):
            self.select(min(len(self.rows) - 1, (self.current if self.current is not None else -1) + 1))

    def previous(self, *_) -> None:
        """Select the previous object."""
        if len(self.rows):
            self.select(max(0, (self.current or 0) - 1))

    def _go_to(self, plane, label_id: int) -> None:
        layer = self.refined_layer.value
        if layer is None:
            return
        lead = () if plane is None else ((plane,) if np.isscalar(plane) else tuple(plane))
        data = np.asarray(layer.data[lead])
        rows, cols = np.nonzero(data == label_id)
        coarse = self.coarse_layer.value
        if rows.size == 0 and coarse is not None and coarse.data.shape == layer.data.shape:
            rows, cols = np.nonzero(np.asarray(coarse.data[lead]) == label_id)
        layer.selected_label = label_id
        if coarse is not None:
            select_object_prompts(self._viewer, coarse, label_id)
        if rows.size == 0:
            return
        y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        world = np.asarray(layer.data_to_world((*lead, (y0 + y1) / 2, (x0 + x1) / 2)))
        for k in range(len(lead)):  # the object's plane
            self._viewer.dims.set_point(self._viewer.dims.ndim - layer.ndim + k, world[k])
        scene = getattr(self._viewer, "scene", self._viewer)  # napari >= 0.9: viewer.scene.camera
        scene.camera.center = tuple(world[-2:])
        # the object about a quarter of a 600 px canvas across
        side = max(y1 - y0, x1 - x0) * float(np.max(np.abs(layer.scale[-2:])))
        scene.camera.zoom = float(np.clip(600 / (4 * max(side, 1.0)), 0.05, 50))

    # -- decisions -------------------------------------------------------------------------------

    def _checked(self):
        """(row, refined layer, coarse layer) of the selected object, or None (said why)."""
        if self.current is None or not len(self.rows):
            self.say("Load the objects and select one first.", error=True)
            return None
        refined, coarse = self.refined_layer.value, self.coarse_layer.value
        if refined is None or coarse is None:
            self.say("Choose the refined layer and the coarse layer it was made from.", error=True)
            return None
        if coarse.data.shape != refined.data.shape:
            self.say(f"{coarse.name!r} {coarse.data.shape} and {refined.name!r} {refined.data.shape} "
                     "differ in shape: choose the coarse layer the refinement was made from.", error=True)
            return None
        return self.current, refined, coarse

    def accept(self, *_) -> None:
        """Keep the selected object's refined mask (no pixel changes); go to the next one."""
        checked = self._checked()
        if checked is None:
            return
        i, refined, _ = checked
        key = self._key(i)
        if key in self._history:  # after a revert or re-refinement: what undo and redo go by
            self._history.record(key, "accepted", self._mask(refined.data, key), self.rows.at[i, "decision"])
        self._decide(i, "accepted")
        self.say(f"Object {self.rows.at[i, 'label_id']} accepted.")
        self.next()

    def revert(self, *_) -> None:
        """Restore the selected object's coarse mask, as one undo step; go to the next one."""
        checked = self._checked()
        if checked is None:
            return
        i, refined, coarse = checked
        key = self._key(i)
        n = self._write(i, refined, "reverted", self._mask(coarse.data, key))
        self.say(f"Object {key[1]} reverted to its coarse mask ({n} pixels; Ctrl+Z on "
                 f"{refined.name!r} undoes it).")
        self.next()

    def _key(self, i: int) -> tuple:
        return object_key(self.rows.at[i, "plane"], self.rows.at[i, "label_id"])

    @staticmethod
    def _mask(data, key) -> np.ndarray:
        plane, label_id = key
        lead = () if plane is None else ((plane,) if np.isscalar(plane) else tuple(plane))
        return np.asarray(data[lead]) == label_id

    def _write(self, i: int, refined, decision: str, mask: np.ndarray) -> int:
        """Object ``i``'s mask set to ``mask`` as one undo step, and ``decision`` recorded."""
        key = self._key(i)
        self._history.record(key, decision, mask, self.rows.at[i, "decision"])
        self._decide(i, decision)  # before the write: the write's event finds it decided
        return set_object_mask(refined, key, mask)

    def refine_object(self, *_) -> None:
        """Decode the selected object from its edited prompt layers and write its new mask
        into the refined layer as one undo step (see :mod:`.edited_prompts`)."""
        checked = self._checked()
        if checked is None:
            return
        i, refined, coarse = checked
        plane, label_id = key = self._key(i)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a size warning: the status line says the areas
                mask, prompts = refine_from_layers(self._viewer, self.image_layer.value, coarse,
                                          self.model.load, label_id, plane)
        except (ValueError, TypeError, OSError) as err:
            self.say(str(err), error=True)
            return
        before = int(self._mask(refined.data, key).sum())
        # the edited prompts stay with the layer (ObjectPrompts by (plane, label id))
        refined.metadata.setdefault(EDITED_PROMPTS, {})[key] = prompts
        self._write(i, refined, "re-refined", mask)
        self.say(f"Object {label_id} refined again from its edited prompts: {before} -> "
                 f"{int(mask.sum())} pixels (Ctrl+Z on {refined.name!r} undoes it).")

    def _decide(self, i: int, decision: str) -> None:
        self.rows.at[i, "decision"] = decision
        self._show_decision(i)
        self._store()

    def _sync(self, *_) -> None:
        """After the refined layer's pixels changed (an undo, a redo, a paint): each object reverted
        or refined again in this review gets the decision its pixels stand for
        (:class:`~napari_samrefine.quality.review.DecisionHistory`)."""
        refined = self.refined_layer.value
        if refined is None or refined is not self._layer:
            return
        changed = False
        for i in range(len(self.rows)):
            key = self._key(i)
            if key not in self._history:
                continue
            decision = self.rows.at[i, "decision"]
            new = self._history.decision(key, self._mask(refined.data, key))
            if new != decision:
                self.rows.at[i, "decision"] = new
                self._show_decision(i)
                changed = True
        if changed:
            self._store()

    def _store(self) -> None:
        """The decisions into the refined layer's features (one per label) and per-plane table."""
        layer = self.refined_layer.value
        if layer is None:
            return
        store_decisions(layer, {object_key(p, i): d for p, i, d in
                                self.rows[["plane", "label_id", "decision"]].itertuples(index=False)})
