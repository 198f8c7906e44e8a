"""The "Review refinement" widget driven like a user: the table fills itself and sorts by a header
click, decisions saved and loaded as a CSV table, an object re-refined from its painted mask prompt."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from _widgets import decode_one as decode
from _widgets import (
    open_widget,
    refine_again_with_e,
    refine_widget,
    review_with_mined_prompts,
    run_widget,
)
from qtpy.QtCore import QPoint, Qt

import napari_samrefine as nsr
from napari_samrefine._napari.edited_prompts import prompts_from_layers
from napari_samrefine.quality.review import apply_decisions, review_table
from napari_samrefine.testing import tiny_sam

pytestmark = pytest.mark.gui


def click_header(qtbot, review, title: str) -> None:
    """A click on the table's column header ``title``."""
    native = review.table.native
    section = [native.horizontalHeaderItem(i).text() for i in range(native.columnCount())].index(title)
    header = native.horizontalHeader()
    x = header.sectionViewportPosition(section) + header.sectionSize(section) // 2
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, header.height() // 2))


def shown(review, column: int) -> list[str]:
    native = review.table.native
    return [native.item(i, column).text() for i in range(native.rowCount())]


def test_the_table_fills_itself_after_a_refine_run_and_sorts_by_a_header_click(viewer, qtbot, sam):
    review = open_widget(viewer, "Review refinement")  # docked before the run
    assert len(review.rows) == 0
    run_widget(refine_widget(viewer, sam, keep="refined"), qtbot)
    refined = viewer.layers["nuclei coarse refined"]
    qtbot.waitUntil(lambda: len(review.rows) > 0, timeout=5_000)
    assert review.refined_layer.value is refined and review.coarse_layer.value is viewer.layers["nuclei coarse"]
    expected = review_table(refined.metadata["samrefine_table"])
    pd.testing.assert_frame_equal(review.rows, expected)
    native = review.table.native
    headers = [native.horizontalHeaderItem(i).text() for i in range(native.columnCount())]
    assert headers[4:7] == ["predicted IoU", "stability", "edge contrast"]
    assert shown(review, 4) == [f"{v:.3f}" for v in expected["predicted_iou"]]
    assert expected["predicted_iou"].notna().all() and expected["stability"].notna().all()
    assert review.current == 0

    # a click on "predicted IoU" sorts by it, a second click reverses; the selected object stays
    review.select(2)
    key = (review.rows.at[2, "plane"], int(review.rows.at[2, "label_id"]))
    click_header(qtbot, review, "predicted IoU")
    values = review.rows["predicted_iou"].to_numpy()
    assert (np.diff(values) >= 0).all() and not np.array_equal(review.rows["label_id"], expected["label_id"])
    assert shown(review, 0) == [str(i) for i in review.rows["label_id"]]
    i = review.current
    assert (review.rows.at[i, "plane"], int(review.rows.at[i, "label_id"])) == key
    assert native.selectionModel().selectedRows()[0].row() == i
    assert refined.selected_label == key[1]
    click_header(qtbot, review, "predicted IoU")
    assert (np.diff(review.rows["predicted_iou"].to_numpy()) <= 0).all()
    click_header(qtbot, review, "id")
    assert review.rows["label_id"].tolist() == sorted(expected["label_id"])
    # a revert in the sorted table reverts the selected object
    review.select(0)
    first = int(review.rows.at[0, "label_id"])
    start, coarse = refined.data.copy(), viewer.layers["nuclei coarse"].data
    qtbot.keyClick(native, Qt.Key.Key_R)
    np.testing.assert_array_equal(refined.data, apply_decisions(start, coarse, {first: "reverted"}))

    # a second run into the same layer: the table is read again
    run_widget(refine_widget(viewer, sam, keep="refined", iterations=1), qtbot)
    # (an empty table has no decision either: wait for the objects themselves)
    qtbot.waitUntil(lambda: len(review.rows) > 0 and (review.rows["decision"] == "").all(), timeout=5_000)
    assert set(review.rows["label_id"]) == set(expected["label_id"])
    assert review.rows["label_id"].tolist() == sorted(expected["label_id"])  # still by id
    assert "by id, ascending" in review.status


def test_selecting_a_layer_with_saved_features_resumes_its_review(viewer, qtbot, sam):
    review = open_widget(viewer, "Review refinement")
    run_widget(refine_widget(viewer, sam, keep="refined"), qtbot)
    refined = viewer.layers["nuclei coarse refined"]
    features = refined.features.copy()
    first = int(review_table(features)["label_id"][0])
    features.loc[features["label_id"] == first, "decision"] = "accepted"
    reopened = viewer.add_labels(refined.data.copy(), name="reopened", features=features)
    viewer.layers.selection.active = viewer.layers["nuclei"]
    viewer.layers.selection.active = reopened  # a click on the layer in the layer list
    qtbot.waitUntil(lambda: review.refined_layer.value is reopened and len(review.rows) > 0, timeout=5_000)
    assert review.rows.set_index("label_id")["decision"][first] == "accepted"
    assert "1 decided" in review.status
    # features have a row per label value (background 0, unused ids): only objects are reviewed
    ran = review_table(refined.metadata["samrefine_table"])
    assert len(features) > len(ran) and sorted(review.rows["label_id"]) == sorted(ran["label_id"])
    assert review.rows.at[0, "label_id"] == first
    qtbot.keyClick(review.table.native, Qt.Key.Key_R)  # a decision stored: row i is still label i
    stored = reopened.features
    assert stored["label_id"].tolist() == list(range(len(stored))) == stored["index"].tolist()
    assert stored.at[0, "status"] == "background" and stored.at[0, "decision"] == ""
    assert stored.at[first, "decision"] == "reverted" and (stored["decision"] != "").sum() == 1
    viewer.layers.selection.active = refined
    assert review.refined_layer.value is refined and (review.rows["decision"] == "").all()
    viewer.layers.selection.active = viewer.layers["nuclei coarse"]  # no table: the review stays
    assert review.refined_layer.value is refined


def test_decisions_saved_then_loaded_as_one_undo_step(viewer, qtbot, sam, tmp_path):
    review = open_widget(viewer, "Review refinement")
    run_widget(refine_widget(viewer, sam, keep="refined"), qtbot)
    qtbot.waitUntil(lambda: len(review.rows) > 0, timeout=5_000)
    refined, coarse = viewer.layers["nuclei coarse refined"], viewer.layers["nuclei coarse"]
    start, coarse_data = refined.data.copy(), coarse.data.copy()
    first, second, third = (int(v) for v in review.rows["label_id"][:3])
    native = review.table.native
    for key in (Qt.Key.Key_R, Qt.Key.Key_A, Qt.Key.Key_R):
        qtbot.keyClick(native, key)
    reviewed = apply_decisions(start, coarse_data, {first: "reverted", third: "reverted"})
    np.testing.assert_array_equal(refined.data, reviewed)

    review.decisions.load_button.native.click()
    assert "Choose the decisions table's file" in review.status
    path = tmp_path / "review.csv"
    review.decisions.file.value = path
    review.decisions.save_button.native.click()
    assert path.is_file() and f"saved to {path.name}" in review.status
    saved = pd.read_csv(path, keep_default_na=False)
    assert saved.set_index("label_id")["decision"][[first, second, third]].tolist() == [
        "reverted", "accepted", "reverted"]
    assert set(saved["layer"]) == {refined.name}

    # back to the refinement, then the saved decisions loaded: the same pixels, in one undo step
    refined.undo()
    refined.undo()
    np.testing.assert_array_equal(refined.data, start)
    review.load_button.native.click()  # a fresh review of the layer
    review.decisions.load_button.native.click()
    np.testing.assert_array_equal(refined.data, reviewed)
    decisions = refined.features.set_index("label_id")["decision"]
    assert decisions[[first, second, third]].tolist() == ["reverted", "accepted", "reverted"]
    assert (decisions.drop([first, second, third]) == "").all()
    assert "pixels reverted" in review.status
    refined.undo()
    np.testing.assert_array_equal(refined.data, start)
    decisions = refined.features.set_index("label_id")["decision"]
    assert decisions[[first, second, third]].tolist() == ["", "accepted", ""]
    np.testing.assert_array_equal(coarse.data, coarse_data)

    # a table of another layer is refused, and nothing changes
    other = tmp_path / "other.csv"
    pd.DataFrame({"label_id": [first, 999], "plane": ["", ""], "decision": ["reverted"] * 2,
                  "layer": ["cells refined"] * 2}).to_csv(other, index=False)
    review.decisions.file.value = other
    review.decisions.load_button.native.click()
    assert "lists objects that 'nuclei coarse refined' has not: 999" in review.status
    assert "saved from 'cells refined'" in review.status
    np.testing.assert_array_equal(refined.data, start)

    # labels opened from a file without their table: the saved table becomes it
    plain = viewer.add_labels(start.copy(), name="from file")
    review.refined_layer.value = plain
    review.coarse_layer.value = coarse
    assert len(review.rows) == 0  # nothing to review in it yet
    review.decisions.file.value = path
    review.decisions.load_button.native.click()
    np.testing.assert_array_equal(plain.data, reviewed)
    assert sorted(review.rows["label_id"]) == sorted(saved["label_id"])
    decisions = plain.features.set_index("label_id")["decision"]
    assert decisions[[first, second, third]].tolist() == ["reverted", "accepted", "reverted"]
    assert plain.metadata["samrefine_table"]["label_id"].tolist() == review.rows["label_id"].tolist()
    assert plain.features["label_id"].tolist() == list(range(len(plain.features)))  # row i: label i
    assert plain.features.at[0, "status"] == "background"
    plain.undo()
    np.testing.assert_array_equal(plain.data, start)
    assert plain.features.set_index("label_id")["decision"][first] == ""
    other_coarse = viewer.add_labels(np.where(coarse_data == first, 0, coarse_data), name="other coarse")
    again = viewer.add_labels(start.copy(), name="from file again")
    review.refined_layer.value = again
    review.coarse_layer.value = other_coarse
    review.decisions.load_button.native.click()
    assert f"lists objects that 'other coarse' has not: {first}." in review.status
    np.testing.assert_array_equal(again.data, start)
    assert "samrefine_table" not in again.metadata and len(review.rows) == 0


def test_an_object_refined_again_from_its_erased_mask_prompt_in_a_worker(viewer, qtbot):
    # a tiny SAM whose mask prompt's content matters (the default one's mask downscaling is one
    # channel wide, normalised to nothing: see tiny_sam)
    sam = tiny_sam(seed=0, mask_in_chans=16)
    refined, coarse, review = review_with_mined_prompts(viewer, qtbot, sam)
    start, coarse_data, image = refined.data.copy(), coarse.data.copy(), viewer.layers["nuclei"].data
    mask_prompt = viewer.layers["nuclei coarse Gaussian prompts"]
    # the worst object whose decode the erased mask prompt changes (random weights change little)
    for i in range(len(review.rows)):
        label = int(review.rows.at[i, "label_id"])
        (base,) = nsr.excavate_prompts(coarse_data, label_ids=[label], cebox=None)
        erased = dataclasses.replace(base, gaussian=np.zeros_like(base.gaussian))
        again = decode(image, coarse_data, sam, erased)
        if not np.array_equal(again, decode(image, coarse_data, sam, base)):
            break
    else:
        pytest.fail("erasing the mask prompt changed no object's decode")
    review.select(i)

    # the object's mask prompt erased, through the layer's data
    painted = np.array(mask_prompt.data, copy=True)
    painted[coarse_data == label] = 0
    mask_prompt.data = painted
    kept = refine_again_with_e(qtbot, review, sam, refined, start, label, again)
    np.testing.assert_array_equal(kept.gaussian, erased.gaussian)
    assert kept.offset == base.offset
    refined.undo()
    np.testing.assert_array_equal(refined.data, start)
    assert refined.features.set_index("label_id")["decision"][label] == ""


def test_an_objects_mask_prompt_is_its_part_of_the_painted_image():
    coarse = np.zeros((12, 20), np.int32)
    coarse[2:6, 2:6] = 1
    coarse[2:6, 8:12] = 2
    (base,) = nsr.excavate_prompts(coarse, label_ids=[1], cebox=None)
    both = nsr.excavate_prompts(coarse, cebox=None)
    shown = np.maximum(*(p.gaussian_full(coarse.shape) for p in both))  # what the layer shows
    same = prompts_from_layers(None, None, coarse, 1, mask_prompt=shown)
    np.testing.assert_array_equal(same.gaussian, base.gaussian)
    assert same.offset == base.offset
    painted = shown.copy()
    painted[3, 3] = 0  # erased in object 1
    painted[8, 1:4] = 0.5  # painted below object 1, nearer to it than to object 2
    painted[3, 9] = 0  # erased in object 2: not object 1's
    painted[7, 10] = 0.9  # painted below object 2
    edited = prompts_from_layers(None, None, coarse, 1, mask_prompt=painted)
    want = base.gaussian_full(coarse.shape)
    want[3, 3] = 0
    want[8, 1:4] = 0.5
    assert edited.offset == (2, 1)  # the mined crop grown to what was painted
    np.testing.assert_array_equal(edited.gaussian, want[2:9, 1:6])


def test_the_mask_prompt_of_a_stack_is_read_in_the_plane_it_shows(viewer):
    from napari_samrefine._napari.edited_prompts import mask_prompt_plane
    from napari_samrefine._napari.prompt_widget import show_prompts

    coarse2d = viewer.layers["nuclei coarse"].data
    stack = viewer.add_labels(np.stack([coarse2d, coarse2d[::-1]]), name="stack coarse", scale=(2, 1, 1))
    assert mask_prompt_plane(viewer, stack, 1) is None  # no prompts shown yet
    prompts = nsr.excavate_prompts(stack.data[1], cebox=None)
    show_prompts(viewer, stack, prompts, plane=1)
    image = mask_prompt_plane(viewer, stack, 1)
    np.testing.assert_array_equal(image, np.max([p.gaussian_full(coarse2d.shape) for p in prompts], axis=0))
    assert mask_prompt_plane(viewer, stack, 0) is None  # another plane: the mined mask prompt
    image[:] = 0
    assert viewer.layers["stack coarse Gaussian prompts"].data.any()  # a copy: the layer is not written
