"""Decisions in a review on a drawn canvas: napari emits a Labels layer's ``paint`` event before
``data_setitem`` writes the pixels, and a drawn canvas sends no later ``set_data``; the
decisions must follow the pixels written, not those before them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _widgets import open_widget, refine_widget, run_widget
from qtpy.QtCore import Qt

pytestmark = pytest.mark.gui


@pytest.fixture()
def shown_viewer(make_napari_viewer):
    viewer = make_napari_viewer(show=True)  # a canvas that draws the layers, as a user's
    viewer.open_sample("napari-samrefine", "nuclei")
    return viewer


def drag_box_out(boxes, label_id: int, pixels: int) -> None:
    """Object ``label_id``'s box dragged ``pixels`` outwards, through the layer's data."""
    kinds = boxes.features["kind"].to_numpy()
    mine = np.flatnonzero(boxes.features["label_id"].to_numpy() == label_id)
    at = next((i for i in mine if kinds[i] == "cebox"), mine[0])
    data = [np.array(d, float) for d in boxes.data]
    data[at] = data[at] + np.sign(data[at] - data[at].mean(0)) * pixels
    boxes.data = data


def test_rerefined_and_reverted_decisions_stay_on_a_drawn_canvas(shown_viewer, qtbot, sam, tmp_path):
    viewer = shown_viewer
    run_widget(refine_widget(viewer, sam, keep="refined"), qtbot, timeout=120_000)
    refined, coarse = viewer.layers["nuclei coarse refined"], viewer.layers["nuclei coarse"]
    prompts = open_widget(viewer, "Prompt excavation")
    prompts.labels_layer.value = coarse
    run_widget(prompts, qtbot, timeout=120_000)
    review = open_widget(viewer, "Review refinement")  # it fills itself: no Load objects
    qtbot.waitUntil(lambda: len(review.rows) > 3, timeout=5_000)
    review.model.sam = sam
    review.image_layer.value = viewer.layers["nuclei"]
    qtbot.wait(300)  # the canvas draws the refined layer

    def decisions() -> dict:
        table = dict(zip(review.rows["label_id"], review.rows["decision"], strict=True))
        stored = refined.features.set_index("label_id")["decision"]
        assert {i: stored[i] for i in table} == table  # the layer's features say the same
        return {i: d for i, d in table.items() if d}

    native = review.table.native
    steps = [refined.data.copy()]
    first = int(review.rows.at[review.current, "label_id"])
    qtbot.keyClick(native, Qt.Key.Key_R)  # revert the worst: the next one is selected
    steps.append(refined.data.copy())
    second = int(review.rows.at[review.current, "label_id"])
    drag_box_out(viewer.layers["nuclei coarse boxes"], second, 4)
    qtbot.keyClick(native, Qt.Key.Key_E)  # Refine this object, in a worker
    assert review.busy
    qtbot.waitUntil(lambda: not review.busy, timeout=60_000)
    steps.append(refined.data.copy())
    assert (steps[2] == second).sum() != (steps[1] == second).sum()
    assert decisions() == {first: "reverted", second: "re-refined"}

    # another object refined again, growing into the second one's pixels: both keep theirs
    review.select(review.current + 1)
    third = int(review.rows.at[review.current, "label_id"])
    qtbot.keyClick(native, Qt.Key.Key_E)
    qtbot.waitUntil(lambda: not review.busy, timeout=60_000)
    steps.append(refined.data.copy())
    assert ((steps[2] == second) & (steps[3] == third)).any()  # it took some of the second's
    assert decisions() == {first: "reverted", second: "re-refined", third: "re-refined"}

    # accept and revert others after them
    qtbot.keyClick(native, Qt.Key.Key_N)
    fourth = int(review.rows.at[review.current, "label_id"])
    qtbot.keyClick(native, Qt.Key.Key_A)
    fifth = int(review.rows.at[review.current, "label_id"])
    qtbot.keyClick(native, Qt.Key.Key_R)
    steps.append(refined.data.copy())
    done = {first: "reverted", second: "re-refined", third: "re-refined", fourth: "accepted",
            fifth: "reverted"}
    assert decisions() == done

    # saved: five decided objects
    path = tmp_path / "review.csv"
    review.decisions.file.value = path
    review.decisions.save_button.native.click()
    saved = pd.read_csv(path, keep_default_na=False)
    assert dict(saved.loc[saved["decision"] != "", ["label_id", "decision"]].values) == done
    assert "(5 decided)" in review.status

    # undo everything, step by step, then redo it: pixels and decisions together
    undone = [
        {first: "reverted", second: "re-refined", third: "re-refined", fourth: "accepted"},
        {first: "reverted", second: "re-refined", fourth: "accepted"},
        {first: "reverted", fourth: "accepted"},
        {fourth: "accepted"},
    ]
    for k, want in zip(range(3, -1, -1), undone, strict=True):
        refined.undo()
        np.testing.assert_array_equal(refined.data, steps[k])
        assert decisions() == want
    for k, want in zip(range(1, 5), [*undone[::-1][1:], done], strict=True):
        refined.redo()
        np.testing.assert_array_equal(refined.data, steps[k])
        assert decisions() == want
