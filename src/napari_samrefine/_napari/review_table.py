"""The "Review refinement" widget's objects: where they come from, the table, going to one.

:func:`has_review_table` tells the layers that hold a review (their per-object
table is :func:`~napari_samrefine._napari.review_layers.decision_table`); :class:`ObjectTable`
shows :func:`~napari_samrefine.quality.review.review_table`'s rows (one per
object) read-only, one row selected at a time; a click on a column's header
sorts the rows by it (:func:`~napari_samrefine.quality.review.sort_review`,
objects without a value last), a second click reverses the order.
:func:`show_object` shows one object in the viewer; :class:`Keys` maps letter
keys pressed in the widget to its actions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from magicgui.widgets import Table
from napari.layers import Labels
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import QAbstractItemView

from napari_samrefine._napari.edited_prompts import select_object_prompts
from napari_samrefine._napari.layers import is_refined_layer, is_result_layer, plane_index
from napari_samrefine.quality.review import object_key, review_table, sort_review

__all__ = [
    "ObjectTable", "Keys", "SHOWN", "DEFAULT_SORT", "has_review_table", "show_object",
]

SHOWN = {"label_id": "id", "plane": "plane", "iou_coarse": "IoU coarse", "area_ratio": "area ratio",
         "predicted_iou": "predicted IoU", "stability": "stability", "edge_contrast": "edge contrast",
         "status": "status", "decision": "decision"}
"""The columns shown: the review table's column -> its header."""

DEFAULT_SORT = ("iou_coarse", True)
"""The order rows are first shown in: worst first (lowest IoU with the coarse mask)."""


def has_review_table(layer) -> bool:
    """Whether ``layer`` holds a refinement to review: the plugin's refined labels, or labels
    opened with a saved per-object table (``features`` with ``label_id`` and ``status``)."""
    if not isinstance(layer, Labels):
        return False
    if is_refined_layer(layer):
        return True
    return not is_result_layer(layer) and {"label_id", "status"} <= set(layer.features.columns)


def show_object(viewer, layer, coarse, plane, label_id: int) -> None:
    """Show object ``label_id`` of ``layer`` (refined labels): its plane, the canvas centred on it
    (on its coarse mask in ``coarse`` when it has no pixel left), its label selected, its
    prompts selected in ``coarse``'s prompt layers."""
    lead = plane_index(plane)
    rows, cols = np.nonzero(np.asarray(layer.data[lead]) == label_id)
    if rows.size == 0 and coarse is not None and coarse.data.shape == layer.data.shape:
        rows, cols = np.nonzero(np.asarray(coarse.data[lead]) == label_id)
    layer.selected_label = label_id
    if coarse is not None:
        select_object_prompts(viewer, coarse, label_id)
    if rows.size == 0:
        return
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    world = np.asarray(layer.data_to_world((*lead, (y0 + y1) / 2, (x0 + x1) / 2)))
    for k in range(len(lead)):  # the object's plane
        viewer.dims.set_point(viewer.dims.ndim - layer.ndim + k, world[k])
    scene = getattr(viewer, "scene", viewer)  # napari >= 0.9: viewer.scene.camera
    scene.camera.center = tuple(world[-2:])
    # the object about a quarter of a 600 px canvas across
    side = max(y1 - y0, x1 - x0) * float(np.max(np.abs(layer.scale[-2:])))
    scene.camera.zoom = float(np.clip(600 / (4 * max(side, 1.0)), 0.05, 50))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.3f}"
    return str(value)


class Keys(QObject):
    """Keys (without modifiers) pressed in the watched widgets call their actions."""

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


class ObjectTable:
    """The objects of a review in a read-only table, sorted by a header click.

    Parameters
    ----------
    on_select : callable
        ``on_select(i)`` when the user selects row ``i`` (a click, Up or Down).

    Attributes
    ----------
    widget : magicgui.widgets.Table
    rows : pandas.DataFrame
        The rows in the order shown.
    sort_by : (str, bool)
        The column sorted by and whether ascending.
    """

    def __init__(self, on_select: Callable[[int], None]):
        self.widget = Table(value={"data": [], "index": [], "columns": list(SHOWN.values())})
        self.rows = review_table(pd.DataFrame(columns=["label_id", "status"]))
        self.sort_by = DEFAULT_SORT
        self._on_select = on_select
        native = self.widget.native
        native.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        native.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        native.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        native.itemSelectionChanged.connect(self._selected)
        header = native.horizontalHeader()
        header.setSectionsClickable(True)
        header.setSortIndicatorShown(True)
        header.sectionClicked.connect(self._header_clicked)
        self._show_indicator()

    @property
    def order_text(self) -> str:
        """The order shown, in words ("worst first", "by stability, descending")."""
        column, ascending = self.sort_by
        if (column, ascending) == DEFAULT_SORT:
            return "worst first"
        return f"by {SHOWN[column]}, {'ascending' if ascending else 'descending'}"

    @property
    def native(self):
        """The Qt table (QTableWidget)."""
        return self.widget.native

    def show(self, rows: pd.DataFrame) -> None:
        """Show ``rows`` (a review table), sorted by the current column."""
        self.rows = sort_review(rows, *self.sort_by)
        self._fill()

    def sort(self, column: str, ascending: bool = True) -> None:
        """Sort the rows by ``column`` (a key of :data:`SHOWN`); no row is selected after."""
        self.sort_by = (column, bool(ascending))
        self.rows = sort_review(self.rows, column, ascending)
        self._fill()
        self._show_indicator()

    def _header_clicked(self, section: int) -> None:
        column = list(SHOWN)[section]
        column_now, ascending = self.sort_by
        selected = self.native.selectionModel().selectedRows()
        key = self.key(selected[0].row()) if selected else None
        self.sort(column, not ascending if column == column_now else True)
        if key is not None:  # the same object stays selected
            self._on_select(next(i for i in range(len(self.rows)) if self.key(i) == key))

    def key(self, i: int) -> tuple:
        """Row ``i``'s object: ``(plane, label_id)`` (:func:`~napari_samrefine.quality.review.object_key`)."""
        return object_key(self.rows.at[i, "plane"], self.rows.at[i, "label_id"])

    def keys(self) -> list[tuple]:
        """Every row's object (:meth:`key`), in the order shown."""
        return [self.key(i) for i in range(len(self.rows))]

    def _show_indicator(self) -> None:
        column, ascending = self.sort_by
        header = self.native.horizontalHeader()
        blocked = header.blockSignals(True)
        order = Qt.SortOrder.AscendingOrder if ascending else Qt.SortOrder.DescendingOrder
        header.setSortIndicator(list(SHOWN).index(column), order)
        header.blockSignals(blocked)

    def _fill(self) -> None:
        data = [[_cell(v) for v in row] for row in self.rows[list(SHOWN)].itertuples(index=False)]
        native = self.native
        blocked = native.blockSignals(True)
        self.widget.value = {"data": data, "index": [str(i + 1) for i in range(len(data))],
                             "columns": list(SHOWN.values())}
        native.clearSelection()
        native.blockSignals(blocked)

    def show_decision(self, i: int) -> None:
        """Show row ``i``'s decision (from :attr:`rows`)."""
        item = self.native.item(i, list(SHOWN).index("decision"))
        if item is not None:
            item.setText(self.rows.at[i, "decision"])

    def select_row(self, i: int) -> None:
        """Select row ``i`` without calling ``on_select``."""
        native = self.native
        if native.currentRow() != i or not native.selectionModel().selectedRows():
            blocked = native.blockSignals(True)
            native.selectRow(i)
            native.blockSignals(blocked)

    def _selected(self) -> None:
        rows = self.native.selectionModel().selectedRows()
        if rows:
            self._on_select(rows[0].row())
