"""Layers a user can read and trust: features rows that select their label, prompts coloured
and labelled by object, a refined layer told apart from the coarse one.

Each test docks the widgets through napari's plugin menu path, runs them with the
Run button and looks at the layers (and napari's own Features table widget) as a
user would.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _widgets import open_widget, refine_widget
from napari_builtins._qt.features_table import FeaturesTable

from napari_samrefine._napari.layers import features_table

pytestmark = pytest.mark.gui

TIMEOUT = 60_000


def click_run(qtbot, widget) -> None:
    widget._run_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is not None and not widget.busy, timeout=TIMEOUT)


def select_table_row(table: FeaturesTable, row: int) -> None:
    """Click row ``row`` of napari's Features table widget (its first cell)."""
    view = table.table
    view.selectionModel().clearSelection()
    view.selectRow(view.model().mapFromSource(view.model().sourceModel().index(row, 1)).row())


def test_features_table_row_selects_its_label(viewer, qtbot, sam):
    widget = refine_widget(viewer, sam, iterations=1)
    click_run(qtbot, widget)
    refined = viewer.layers["nuclei coarse refined"]
    viewer.layers.selection.active = refined
    table = FeaturesTable(viewer)
    qtbot.addWidget(table)
    ids = sorted(int(i) for i in np.unique(np.asarray(refined.data)) if i)
    assert len(ids) > 5
    for label in (ids[0], ids[len(ids) // 2], ids[-1]):
        select_table_row(table, label)
        assert refined.selected_label == label
        row = refined.features.iloc[label]
        assert row["label_id"] == label and row["status"] not in ("", "background")
    # and the other way: selecting a label selects its row
    refined.selected_label = ids[1]
    rows = {table.table.model().mapToSource(i).row() for i in table.table.selectionModel().selectedIndexes()}
    assert rows == {ids[1]}


def test_features_rows_are_label_values_and_carry_every_object():
    table = pd.DataFrame({
        "label_id": [7, 2, 4], "plane": [None] * 3, "status": ["ok", "kept-coarse", "ok"],
        "predicted_iou": [0.9, 0.8, 0.7], "iterations": [2, 0, 1],
        "coarse_area": [10, 20, 30], "refined_area": [12, 20, 25],
    })  # fmt: skip
    features = features_table(table)
    assert list(features["index"]) == list(range(8)) == list(features["label_id"])
    assert features.loc[0, "status"] == "background"
    assert list(features.loc[[1, 3, 5, 6], "status"]) == [""] * 4
    by_id = features.set_index("label_id")
    for _, row in table.iterrows():
        for column in ("status", "predicted_iou", "iterations", "coarse_area", "refined_area"):
            assert by_id.loc[row["label_id"], column] == row[column]
    assert features["coarse_area"].dtype == np.int64 and features["coarse_area"].sum() == 60
    assert table["label_id"].tolist() == [7, 2, 4], "the input is left as it was"


def test_features_of_huge_ids_stay_one_row_per_object():
    table = pd.DataFrame({"label_id": [3, 2**31 - 1], "status": ["ok", "ok"]})
    features = features_table(table)
    assert list(features["index"]) == [3, 2**31 - 1]


def test_prompts_have_their_objects_colour_and_id(viewer, qtbot):
    coarse = viewer.layers["nuclei coarse"]
    widget = open_widget(viewer, "Prompt excavation")
    click_run(qtbot, widget)
    points = viewer.layers["nuclei coarse points"]
    boxes = viewer.layers["nuclei coarse boxes"]
    ids = sorted(int(i) for i in np.unique(coarse.data) if i)
    assert sorted(set(points.features["label_id"])) == ids == sorted(set(boxes.features["label_id"]))
    # the colour napari draws each object with in the coarse labels layer
    drawn = {i: np.asarray(coarse.colormap.map(np.array([i], coarse.data.dtype)))[0, :3] for i in ids}
    assert len({tuple(np.round(c, 3)) for c in drawn.values()}) > len(ids) // 2, "objects differ in colour"
    for color, lid in zip(points.face_color, points.features["label_id"], strict=True):
        np.testing.assert_allclose(color[:3], drawn[int(lid)], atol=1e-6)
    for color, lid in zip(boxes.edge_color, boxes.features["label_id"], strict=True):
        np.testing.assert_allclose(color[:3], drawn[int(lid)], atol=1e-6)
    # labelled with the object's id; positive and negative points told apart by their marker
    assert list(points.text.values) == [str(i) for i in points.features["label_id"]]
    assert list(boxes.text.values) == [str(i) for i in boxes.features["label_id"]]
    symbols = {str(s) for s, k in zip(points.symbol, points.features["kind"], strict=True) if k == "negative"}
    assert symbols and "disc" not in symbols

    # the user recolours the labels: the next run follows
    coarse.new_colormap(seed=1234)
    click_run(qtbot, widget)
    first = int(points.features["label_id"].iloc[0])
    recoloured = np.asarray(coarse.colormap.map(np.array([first], coarse.data.dtype)))[0, :3]
    assert not np.allclose(recoloured, drawn[first])
    np.testing.assert_allclose(points.face_color[0][:3], recoloured, atol=1e-6)


def test_refined_layer_reads_apart_from_the_coarse_one(viewer, qtbot, sam):
    coarse = viewer.layers["nuclei coarse"]
    coarse.new_colormap(seed=7)  # the user's colours, not napari's default ones
    widget = refine_widget(viewer, sam, iterations=1)
    click_run(qtbot, widget)
    refined = viewer.layers["nuclei coarse refined"]
    assert coarse.contour == 0 and refined.contour > 0, "refined objects drawn as outlines"
    assert refined.opacity == 1.0
    ids = np.unique(np.asarray(refined.data))
    ids = ids[ids > 0]
    np.testing.assert_array_equal(refined.colormap.map(ids), coarse.colormap.map(ids))
    # the canvas shows both: the refined outlines over the coarse fill
    assert refined.visible and coarse.visible
    assert list(viewer.layers).index(refined) > list(viewer.layers).index(coarse)

    refined.contour = 0  # the user's choice of style stays through the next run
    click_run(qtbot, widget)
    assert viewer.layers["nuclei coarse refined"] is refined and refined.contour == 0
