"""The "Review refinement" widget driven like a user: refine, review worst first, revert, undo."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from _widgets import open_widget, refine_widget, run_widget
from qtpy.QtCore import Qt

import napari_samrefine as nsr
from napari_samrefine.quality.review import apply_decisions, review_table
from napari_samrefine.quality.review_file import read_decisions

pytestmark = pytest.mark.gui


def refined_viewer(viewer, qtbot, sam):
    run_widget(refine_widget(viewer, sam, keep="refined"), qtbot)
    return viewer.layers["nuclei coarse refined"], viewer.layers["nuclei coarse"]


def test_review_worst_first_revert_accept_undo_redo_and_resume(viewer, qtbot, sam):
    refined, coarse = refined_viewer(viewer, qtbot, sam)
    start = refined.data.copy()
    coarse_data = coarse.data.copy()
    review = open_widget(viewer, "Review refinement")
    assert review.refined_layer.value is refined and review.coarse_layer.value is coarse
    review.load_button.native.click()
    rows = review.rows
    expected_rows = review_table(refined.metadata["samrefine_table"])
    assert rows["label_id"].tolist() == expected_rows["label_id"].tolist()
    iou = rows["iou_coarse"].dropna().to_numpy()
    assert len(iou) > 3 and (np.diff(iou) >= 0).all()  # worst first
    assert review.table.native.rowCount() == len(rows)
    # the first row is selected: its label, centred
    first, second, third = (int(v) for v in rows["label_id"][:3])
    assert review.current == 0 and refined.selected_label == first
    ys, xs = np.nonzero(start == first)
    if ys.size == 0:  # all its pixels went to a neighbour: centred on its coarse mask
        ys, xs = np.nonzero(coarse_data == first)
    centre = ((ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2)
    assert tuple(getattr(viewer, 'scene', viewer).camera.center[-2:]) == pytest.approx(centre)
    # a row clicked in the table selects its object
    review.table.native.selectRow(2)
    assert review.current == 2 and refined.selected_label == third
    review.table.native.selectRow(0)
    assert review.current == 0

    # revert the worst with the button, the next with the R key, accept the third with A
    review.revert_button.native.click()
    one = apply_decisions(start, coarse_data, {first: "reverted"})
    np.testing.assert_array_equal(refined.data, one)
    assert review.current == 1  # moved on
    qtbot.keyClick(review.table.native, Qt.Key.Key_R)
    two = apply_decisions(start, coarse_data, {first: "reverted", second: "reverted"})
    np.testing.assert_array_equal(refined.data, two)
    for label in (first, second):  # each object exactly its coarse mask again
        np.testing.assert_array_equal(refined.data == label, coarse_data == label)
    qtbot.keyClick(review.table.native, Qt.Key.Key_A)
    np.testing.assert_array_equal(refined.data, two)
    np.testing.assert_array_equal(coarse.data, coarse_data)  # the coarse layer is never written
    decisions = refined.features.set_index("label_id")["decision"]
    assert (decisions[first], decisions[second], decisions[third]) == ("reverted", "reverted", "accepted")
    assert (decisions.drop([first, second, third]) == "").all()

    # each revert is one undo step; the decisions follow undo and redo
    refined.undo()
    np.testing.assert_array_equal(refined.data, one)
    assert refined.features.set_index("label_id")["decision"][second] == ""
    refined.undo()
    np.testing.assert_array_equal(refined.data, start)
    decisions = refined.features.set_index("label_id")["decision"]
    assert (decisions[first], decisions[third]) == ("", "accepted")
    refined.redo()
    np.testing.assert_array_equal(refined.data, one)
    assert refined.features.set_index("label_id")["decision"][first] == "reverted"
    assert review.rows.set_index("label_id")["decision"][first] == "reverted"

    # a layer opened again with its features resumes the review where it stopped
    reopened = viewer.add_labels(refined.data.copy(), name="reopened", features=refined.features.copy())
    review.refined_layer.value = reopened
    review.coarse_layer.value = coarse
    review.load_button.native.click()
    resumed = review.rows.set_index("label_id")["decision"]
    assert (resumed[first], resumed[second], resumed[third]) == ("reverted", "", "accepted")
    assert "2 decided" in review.status


def test_undo_on_a_hidden_layer_is_caught_up_before_the_next_action(viewer, qtbot, sam, tmp_path):
    """napari's undo on a hidden Labels layer writes its pixels without an event: the
    review catches up when the layer is shown and before it acts or saves."""
    refined, coarse = refined_viewer(viewer, qtbot, sam)
    start = refined.data.copy()
    review = open_widget(viewer, "Review refinement")
    review.load_button.native.click()
    first, second = (int(v) for v in review.rows["label_id"][:2])

    def decision(label: int) -> str:
        table = review.rows.set_index("label_id")["decision"][label]
        assert refined.features.set_index("label_id")["decision"][label] == table
        return table

    review.revert_button.native.click()
    review.revert_button.native.click()
    assert (decision(first), decision(second)) == ("reverted", "reverted")
    refined.visible = False
    refined.undo()  # the second revert undone
    refined.undo()  # and the first
    np.testing.assert_array_equal(refined.data, start)
    review.save_decisions(tmp_path / "decisions.csv")  # saving catches up
    saved = read_decisions(tmp_path / "decisions.csv").set_index("label_id")
    assert (saved["decision"][first], saved["decision"][second]) == ("", "")
    assert (decision(first), decision(second)) == ("", "")
    refined.redo()  # the first revert again, still hidden
    review.select(1)
    qtbot.keyClick(review.table.native, Qt.Key.Key_A)  # acting catches up too
    assert (decision(first), decision(second)) == ("reverted", "accepted")
    refined.undo()  # hidden: the first revert undone once more
    refined.visible = True  # shown: napari's refresh brings the review up to date
    assert (decision(first), decision(second)) == ("", "accepted")


def test_review_says_what_is_missing(viewer):
    review = open_widget(viewer, "Review refinement")
    review.refined_layer.value = None
    review.load_button.native.click()
    assert "Choose the refined Labels layer" in review.status
    review.revert_button.native.click()
    assert "Load the objects" in review.status
    review.refined_layer.value = viewer.layers["nuclei coarse"]  # not a refinement: no table
    review.load_button.native.click()
    assert "no ['status'] column" in review.status or "no ['label_id', 'status']" in review.status


def test_refine_review_revert_two_edit_one_rerefine_then_undo_everything(viewer, qtbot, sam, encoder_passes,
                                                                         tmp_path):
    """The issue's walk: refine -> review worst -> revert two -> edit one's prompts and refine it
    again -> undo everything; the layer is exactly what it should be at each step."""
    refined, coarse = refined_viewer(viewer, qtbot, sam)
    passes = encoder_passes.n
    start, coarse_data, image = refined.data.copy(), coarse.data.copy(), viewer.layers["nuclei"].data
    prompt_widget = open_widget(viewer, "Prompt excavation")
    prompt_widget.labels_layer.value = coarse
    prompt_widget._run_button.native.click()
    qtbot.waitUntil(lambda: prompt_widget.worker is not None and not prompt_widget.busy, timeout=60_000)
    points = viewer.layers["nuclei coarse points"]
    review = open_widget(viewer, "Review refinement")
    review.model.sam = sam
    review.image_layer.value = viewer.layers["nuclei"]
    review.load_button.native.click()
    first, second, third = (int(v) for v in review.rows["label_id"][:3])
    # the selected object's prompts are selected in the prompt layers
    mine = np.flatnonzero(points.features["label_id"] == first)
    assert points.selected_data == set(mine.tolist()) and len(mine)
    qtbot.keyClick(review.table.native, Qt.Key.Key_R)
    qtbot.keyClick(review.table.native, Qt.Key.Key_R)
    two = apply_decisions(start, coarse_data, {first: "reverted", second: "reverted"})
    np.testing.assert_array_equal(refined.data, two)
    assert review.current == 2

    # the third object's positive point dragged to its box's corner, through the layer's data
    features = points.features
    at = np.flatnonzero((features["label_id"] == third) & (features["kind"] == "positive"))[0]
    ys, xs = np.nonzero(coarse_data == third)
    moved = points.data.copy()
    moved[at] = (ys.min(), xs.min())
    points.data = moved
    review.refine_button.native.click()
    qtbot.waitUntil(lambda: review.worker is not None and not review.busy, timeout=60_000)
    assert encoder_passes.n == passes  # the image's embedding was cached: no encoder pass
    (base,) = nsr.excavate_prompts(coarse_data, label_ids=[third], cebox=None)
    kinds = features["kind"].to_numpy()[features["label_id"].to_numpy() == third]
    xy = moved[features["label_id"].to_numpy() == third][:, ::-1]
    expected_prompts = dataclasses.replace(base, points=xy, point_labels=(kinds == "positive").astype(int))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = nsr.refine(image, coarse_data, sam, label_ids=[third], prompts={third: expected_prompts},
                           iterations=1, keep="refined").labels
    three = two.copy()
    three[three == third] = 0
    three[again == third] = third
    np.testing.assert_array_equal(refined.data, three)
    assert not np.array_equal(three, two)  # the edit changed the object
    decisions = refined.features.set_index("label_id")["decision"]
    assert (decisions[first], decisions[second], decisions[third]) == ("reverted", "reverted", "re-refined")
    assert "refined again from its edited prompts" in review.status
    kept = refined.metadata["samrefine_edited_prompts"][(None, third)]  # kept with the layer
    np.testing.assert_array_equal(kept.points, expected_prompts.points)
    np.testing.assert_array_equal(kept.box, expected_prompts.box)
    review.decisions.file.value = tmp_path / "review.csv"  # saved with the edited prompts
    review.decisions.save_button.native.click()

    # undo everything, step by step
    refined.undo()
    np.testing.assert_array_equal(refined.data, two)
    assert refined.features.set_index("label_id")["decision"][third] == ""
    refined.undo()
    np.testing.assert_array_equal(refined.data, apply_decisions(start, coarse_data, {first: "reverted"}))
    refined.undo()
    np.testing.assert_array_equal(refined.data, start)
    assert (refined.features["decision"] == "").all()
    np.testing.assert_array_equal(coarse.data, coarse_data)

    # the layer opened again, its saved decisions loaded: the reverts in one step, the prompts kept
    reopened = viewer.add_labels(start.copy(), name="reopened", features=refined.features.copy())
    qtbot.waitUntil(lambda: review.refined_layer.value is reopened and len(review.rows) > 0, timeout=5_000)
    review.coarse_layer.value = coarse
    review.decisions.load_button.native.click()
    np.testing.assert_array_equal(reopened.data, two)
    assert "1 re-refined objects keep the pixels they have (1 with their edited prompts" in review.status
    back = reopened.metadata["samrefine_edited_prompts"][(None, third)]
    np.testing.assert_array_equal(back.points, expected_prompts.points)
    np.testing.assert_array_equal(back.box, expected_prompts.box)
    reopened.undo()
    np.testing.assert_array_equal(reopened.data, start)


def test_refine_this_object_says_what_is_missing(viewer, qtbot, sam):
    refine_viewer = refined_viewer(viewer, qtbot, sam)[0]
    review = open_widget(viewer, "Review refinement")
    review.model.sam = sam
    review.load_button.native.click()
    before = refine_viewer.data.copy()
    review.refine_button.native.click()
    assert "No prompt layers of 'nuclei coarse'" in review.status
    np.testing.assert_array_equal(refine_viewer.data, before)


def test_a_stack_is_reviewed_plane_by_plane(viewer, sam):
    image, coarse2d = viewer.layers["nuclei"].data, viewer.layers["nuclei coarse"].data
    viewer.add_image(np.stack([image, image[::-1]]), name="stack")
    coarse = viewer.add_labels(np.stack([coarse2d, coarse2d[::-1]]), name="stack coarse")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refined = nsr.refine_layers(viewer, "stack", "stack coarse", sam, iterations=1)
    start = refined.data.copy()
    review = open_widget(viewer, "Review refinement")
    review.refined_layer.value = refined
    assert review.coarse_layer.value is coarse  # the layer it was made from
    review.load_button.native.click()
    assert len(review.rows) == 2 * len(np.unique(coarse2d[coarse2d > 0]))
    i = int(np.flatnonzero(review.rows["plane"] == 1)[0])
    review.select(i)
    assert round(viewer.dims.point[0]) == 1  # its plane shown
    label_id = int(review.rows.at[i, "label_id"])
    review.revert_button.native.click()
    np.testing.assert_array_equal(refined.data[0], start[0])
    np.testing.assert_array_equal(refined.data[1] == label_id, coarse.data[1] == label_id)
    table = refined.metadata["samrefine_table"]
    decided = table[table["decision"] == "reverted"]
    assert decided[["plane", "label_id"]].values.tolist() == [[1, label_id]]
