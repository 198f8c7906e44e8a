"""The "Review refinement" dock widget: the refined objects worst first, accept or revert each.

A thin face of :mod:`napari_samrefine.quality.review`. The table (:mod:`.review_table`)
fills itself when a refinement writes its layer and when a layer with a saved
review table is selected. Accept keeps the refined mask, Revert restores the
object's coarse mask, Refine this object decodes it from its edited prompt layers
(:mod:`.edited_prompts`) in a worker thread; each change is one step of the
refined layer's undo history, and undo and redo take the decision back and forth.
Decisions live in the layer's features and per-plane table (:mod:`.review_layers`,
shared with the script face) and in a CSV table (Save / Load, :mod:`.review_store`).
Keys, while the widget has focus: A accept, R revert, E refine this object, N next, P previous.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from magicgui.widgets import Container, PushButton
from napari.layers import Image, Labels
from qtpy.QtCore import Qt, QTimer

from napari_samrefine._napari import edited_prompts as edits
from napari_samrefine._napari import review_store as store
from napari_samrefine._napari.layers import is_refined_layer, is_result_layer, layer_field
from napari_samrefine._napari.model_choice import ModelPicker
from napari_samrefine._napari.review_layers import (
    EDITED_PROMPTS,
    decision_table,
    object_mask,
    reverts_edit,
    store_decisions,
    write_edit,
)
from napari_samrefine._napari.review_table import Keys, ObjectTable, has_review_table, show_object
from napari_samrefine._napari.workers import TaskWidget
from napari_samrefine.quality import review_file
from napari_samrefine.quality.review import DecisionHistory, replace_edit, review_table

__all__ = ["ReviewWidget"]


class ReviewWidget(TaskWidget):
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
        super().__init__(napari_viewer, run_text="Refine this object from its edited prompts (E)")
        self.current: int | None = None
        self._history = DecisionHistory()  # what each changed object's pixels stand for
        self._layer = None  # the refined layer whose events are connected
        self._storing = False  # while the widget writes the layer's features itself
        self.refined_layer = layer_field(napari_viewer, Labels, "refined", prefer=is_refined_layer)
        self.coarse_layer = layer_field(napari_viewer, Labels, "coarse",
                                        prefer=lambda layer: not is_result_layer(layer))
        self.load_button = PushButton(text="Load objects")
        self._table = ObjectTable(self.select)
        self.table = self._table.widget
        self.accept_button = PushButton(text="Accept (A)")
        self.revert_button = PushButton(text="Revert to coarse (R)")
        self.previous_button = PushButton(text="Previous (P)")
        self.next_button = PushButton(text="Next (N)")
        self.decisions = store.DecisionsFile(self.save_decisions, self.load_decisions, self.say)
        # "Refine this object": its edited prompt layers, decoded with the image's embedding
        self.image_layer = layer_field(napari_viewer, Image, "image")
        self.model = ModelPicker(sam)
        self.refine_button = self._run_button
        row = dict(layout="horizontal", labels=False)
        self.extend([
            self.refined_layer, self.coarse_layer, self.load_button, self.table,
            Container(**row, widgets=[self.previous_button, self.accept_button, self.revert_button,
                                      self.next_button]),
            self.decisions,
            self.image_layer, self.model,
        ])  # fmt: skip
        self.add_footer()
        self.load_button.changed.connect(lambda *_: self.load())
        self.refined_layer.changed.connect(self._layer_chosen)
        self.accept_button.changed.connect(self.accept)
        self.revert_button.changed.connect(self.revert)
        self.next_button.changed.connect(self.next)
        self.previous_button.changed.connect(self.previous)
        self._keys = Keys({Qt.Key.Key_A: self.accept, Qt.Key.Key_R: self.revert,
                           Qt.Key.Key_N: self.next, Qt.Key.Key_P: self.previous,
                           Qt.Key.Key_E: self.refine_object})
        for target in (self.native, self._table.native):
            target.installEventFilter(self._keys)
        napari_viewer.layers.events.inserted.connect(self._layer_inserted)
        napari_viewer.layers.selection.events.active.connect(self._active_changed)
        self._preselect_coarse()
        if self.refined_layer.value is not None:
            self.load(quiet=True)

    # -- the table ---------------------------------------------------------------------------

    @property
    def rows(self) -> pd.DataFrame:
        """The review table in the order shown (see the class notes)."""
        return self._table.rows

    def _preselect_coarse(self, *_) -> None:
        """The coarse field takes the layer the refined one was made from, when it is there."""
        refined = self.refined_layer.value
        source = None if refined is None else refined.metadata.get("samrefine", {}).get("source")
        for layer in self._viewer.layers:
            if source is not None and isinstance(layer, Labels) and layer.unique_id == source:
                self.coarse_layer.value = layer

    def _layer_chosen(self, *_) -> None:
        self._preselect_coarse()
        self.load(quiet=True)

    def _adopt(self, layer) -> None:
        """Review ``layer`` (a refinement's result just written, a layer selected with a saved table)."""
        if self.closed or self.busy or layer not in self._viewer.layers or not has_review_table(layer):
            return
        if self.refined_layer.value == layer:
            self.load(quiet=True)
        else:
            self.refined_layer.value = layer  # loads it

    def _layer_inserted(self, event) -> None:
        if has_review_table(event.value):
            layer = event.value  # its table is set right after it was added: load once it is
            QTimer.singleShot(0, lambda: self._adopt(layer))

    def _active_changed(self, event) -> None:
        layer = event.value
        if layer is not None and has_review_table(layer) and not self.refined_layer.value == layer:
            self._adopt(layer)

    def _features_changed(self, *_) -> None:
        if not self._storing:  # a refinement run updated the layer
            layer = self._layer
            QTimer.singleShot(0, lambda: self._adopt(layer))

    def load(self, quiet: bool = False) -> None:
        """Read the refined layer's objects into the table (decisions stored there included);
        ``quiet``: problems go to the status line only, not to a notification."""
        layer = self.refined_layer.value
        if layer is None:
            self.say("Choose the refined Labels layer (the SAM refine widget's result).", error=not quiet)
            return
        try:
            rows = review_table(decision_table(layer))
        except ValueError as err:
            if self._layer is not None and self._layer != layer:
                self._disconnect()
                self._table.show(rows=self.rows.iloc[:0])
                self.current = None
            self.say(str(err), error=not quiet)
            return
        if self._layer is not None and self._layer != layer:
            self._disconnect()
        if self._layer is None:
            for event in (layer.events.set_data, layer.events.paint):
                event.connect(self._sync)
            layer.events.features.connect(self._features_changed)
            self._layer = layer
        self._history, self.current = DecisionHistory(), None
        self._table.show(rows)
        done = int((rows["decision"] != "").sum())
        self.say(f"{len(rows)} objects to review in {layer.name!r} ({done} decided), "
                 f"{self._table.order_text} (a click on a column's header sorts by it): select a "
                 "row, then Accept (A) or Revert (R).")
        if len(rows):
            self.select(0)

    def _disconnect(self) -> None:
        for event in (self._layer.events.set_data, self._layer.events.paint):
            event.disconnect(self._sync)
        self._layer.events.features.disconnect(self._features_changed)
        self._layer = None

    # -- moving through the objects -------------------------------------------------------------

    def select(self, i: int) -> None:
        """Select row ``i``: show its object's plane, centre the canvas on it, select its label."""
        if not 0 <= i < len(self.rows):
            return
        self.current = i
        self._table.select_row(i)
        refined, coarse = self.refined_layer.value, self.coarse_layer.value
        if refined is not None:
            show_object(self._viewer, refined, coarse, *self._key(i))

    def next(self, *_) -> None:
        """Select the next object."""
        if len(self.rows):
            self.select(min(len(self.rows) - 1, (self.current if self.current is not None else -1) + 1))

    def previous(self, *_) -> None:
        """Select the previous object."""
        if len(self.rows):
            self.select(max(0, (self.current or 0) - 1))

    # -- decisions -------------------------------------------------------------------------------

    def _layers(self):
        """(refined, coarse) layers when both are chosen and fit, or None (said why)."""
        if self.busy:
            self.say("Still refining an object: wait for it (or press Cancel).")
            return None
        refined, coarse = self.refined_layer.value, self.coarse_layer.value
        if refined is None or coarse is None:
            self.say("Choose the refined layer and the coarse layer it was made from.", error=True)
            return None
        if coarse.data.shape != refined.data.shape:
            self.say(f"{coarse.name!r} {coarse.data.shape} and {refined.name!r} {refined.data.shape} "
                     "differ in shape: choose the coarse layer the refinement was made from.", error=True)
            return None
        self._sync()  # a hidden layer's undo and redo send no event: catch up before acting
        return refined, coarse

    def _checked(self):
        """(row, refined layer, coarse layer) of the selected object, or None (said why)."""
        if self.current is None or not len(self.rows):
            self.say("Load the objects and select one first.", error=True)
            return None
        layers = self._layers()
        return None if layers is None else (self.current, *layers)

    def accept(self, *_) -> None:
        """Keep the selected object's refined mask (no pixel changes); go to the next one."""
        checked = self._checked()
        if checked is None:
            return
        i, refined, _ = checked
        key = self._key(i)
        if key in self._history:  # after a revert or re-refinement: what undo and redo go by
            self._history.record(key, "accepted", object_mask(refined.data, key), self.rows.at[i, "decision"])
        self._decide(i, "accepted")
        self.say(f"Object {key[1]} accepted.")
        self.next()

    def revert(self, *_) -> None:
        """Restore the selected object's coarse mask, as one undo step; go to the next one."""
        checked = self._checked()
        if checked is None:
            return
        i, refined, coarse = checked
        key = self._key(i)
        n = self._write(i, refined, "reverted", object_mask(coarse.data, key))
        self.say(f"Object {key[1]} reverted to its coarse mask ({n} pixels; Ctrl+Z on "
                 f"{refined.name!r} undoes it).")
        self.next()

    def _key(self, i: int) -> tuple:
        return self._table.key(i)

    def _write(self, i: int, refined, decision: str, mask: np.ndarray) -> int:
        """Object ``i``'s mask set to ``mask`` as one undo step, and ``decision`` recorded."""
        key = self._key(i)
        indices, values = replace_edit(refined.data, mask, key[1], key[0])
        self._history.record(key, decision, mask, self.rows.at[i, "decision"])
        store.keep_decisions(self._history, self._table, refined.data, (indices, values), {key})
        self._decide(i, decision)  # before the write: the write's event finds it decided
        write_edit(refined, indices, values)
        return int(values.size)

    def refine_object(self, *_) -> None:
        """Decode the selected object from its edited prompt layers (points, box, mask prompt) in
        a worker thread; its new mask goes into the refined layer as one undo step."""
        checked = self._checked()
        if checked is None:
            return
        i, refined, coarse = checked
        key = self._key(i)
        try:
            inputs = edits.object_inputs(self._viewer, self.image_layer.value, coarse, key[1], key[0])
        except ValueError as err:
            self.say(str(err), error=True)
            return
        before = int(object_mask(refined.data, key).sum())
        self.launch(self._decode, *inputs, targets=(refined, coarse),
                    on_done=lambda mask: self._refined(refined, key, inputs[2], mask, before))

    run = refine_object  # the Run button

    def _decode(self, image_plane, coarse_plane, prompts) -> np.ndarray:
        progress = self.progress_callback()
        sam = self.model.load(progress)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a size warning: the status line says the areas
            return edits.refine_object(image_plane, coarse_plane, sam, prompts, progress=progress)

    def _refined(self, refined, key, prompts, mask: np.ndarray, before: int) -> None:
        """On the GUI thread: the decoded ``mask`` of object ``key`` written as one undo step."""
        if not self.refined_layer.value == refined:
            self.say(f"The refined layer changed during the run: {refined.name!r} was not written.")
            return
        i = next((j for j in range(len(self.rows)) if self._key(j) == key), None)
        if i is None:
            self.say(f"Object {key[1]} is no longer in the review: nothing was written.")
            return
        # the edited prompts stay with the layer (ObjectPrompts by (plane, label id))
        refined.metadata.setdefault(EDITED_PROMPTS, {})[key] = prompts
        self._write(i, refined, "re-refined", mask)
        self.say(f"Object {key[1]} refined again from its edited prompts: {before} -> "
                 f"{int(mask.sum())} pixels (Ctrl+Z on {refined.name!r} undoes it).")

    def _decide(self, i: int, decision: str) -> None:
        self.rows.at[i, "decision"] = decision
        self._table.show_decision(i)
        self._store()

    # -- decisions saved and loaded ----------------------------------------------------------------

    def save_decisions(self, path: Path) -> None:
        """Write the review's rows and decisions to the CSV file ``path``."""
        layer = self.refined_layer.value
        if layer is None or not len(self.rows):
            self.say("No objects to save: load a refined layer's objects first.", error=True)
            return
        self._sync()  # the pixels of a hidden layer may have changed silently
        try:
            prompts = layer.metadata.get(EDITED_PROMPTS)  # re-refined objects' prompts
            review_file.write_decisions(path, self.rows, layer.name, prompts)
        except (OSError, ValueError) as err:
            self.say(f"Could not save the decisions: {err}", error=True)
            return
        done = int((self.rows["decision"] != "").sum())
        self.say(f"{len(self.rows)} objects ({done} decided) saved to {path.name}.")

    def load_decisions(self, path: Path) -> None:
        """Read the decisions table ``path`` and apply it: its reverts as one undo step."""
        layers = self._layers()
        if layers is None:
            return
        refined, coarse = layers
        try:
            table = review_file.read_decisions(path)
            if not self._layer == refined:
                self.load(quiet=True)
            if not self._layer == refined:  # labels without a table of their own: the file is it
                rows = review_file.review_rows(table)
                store.check_objects(coarse.data, rows, path.name, repr(coarse.name))
                store.adopt_table(refined, rows.assign(decision=""))
                self.load()
                if not self._layer == refined:
                    return
            rows = review_file.merge_decisions(self.rows, table, path.name, repr(refined.name))
            kept = review_file.saved_prompts(table, coarse.data)  # re-refined objects' prompts
        except (OSError, ValueError) as err:
            self.say(str(err), error=True)
            return
        keys = [k for k, d in zip(self._table.keys(), rows["decision"], strict=True) if d == "reverted"]
        indices, values, masks = reverts_edit(refined.data, coarse.data, keys)
        store.keep_decisions(self._history, self._table, refined.data, (indices, values), keys)
        for i, key in enumerate(self._key(j) for j in range(len(rows))):
            if key in masks:
                self._history.record(key, "reverted", masks[key], self.rows.at[i, "decision"])
        self.rows["decision"] = rows["decision"].to_numpy()
        for i in range(len(self.rows)):
            self._table.show_decision(i)
        refined.metadata.setdefault(EDITED_PROMPTS, {}).update(kept)
        self._store()  # before the write: the write's event finds them decided
        if indices is not None:  # one undo step for all the reverts
            write_edit(refined, indices, values)
        again = int((rows["decision"] == "re-refined").sum())
        note = (f"; {again} re-refined objects keep the pixels they have ({len(kept)} with their "
                "edited prompts, kept with the layer)") if again else ""
        self.say(f"Decisions of {path.name} loaded: {values.size} pixels reverted in "
                 f"{refined.name!r} (Ctrl+Z undoes it){note}.")

    # -- the layer's pixels and features ---------------------------------------------------------

    def _sync(self, event=None) -> None:
        """After the refined layer's pixels changed (an undo, a redo, a paint; every action calls
        it first, as an undo on a hidden layer sends no event): each object reverted or refined
        again gets the decision its pixels stand for (:func:`.review_store.follow_pixels`)."""
        if getattr(event, "type", None) == "paint":  # data_setitem emits it before writing
            QTimer.singleShot(0, self._sync)
        refined = self.refined_layer.value
        if refined is None or not refined == self._layer:
            return
        if store.follow_pixels(self._history, self._table, refined.data):
            self._store()

    def _store(self) -> None:
        """The decisions into the refined layer's features (one per label) and per-plane table."""
        layer = self.refined_layer.value
        if layer is None:
            return
        self._storing = True  # its features event is the widget's own
        try:
            store_decisions(layer, {self._key(i): d for i, d in enumerate(self.rows["decision"])})
        finally:
            self._storing = False
