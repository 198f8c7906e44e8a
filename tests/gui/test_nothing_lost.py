"""Nothing the user has is lost: painting during a run, features, undo, cancel, closing.

The worker is held at a chosen stage (a progress message) by a gate around the
widget's progress callback, so "the user paints while SAM decodes" happens at a
known moment; every check compares the user's data bit for bit.
"""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

import napari_samrefine as nsr
from napari_samrefine import Cancelled
from napari_samrefine._napari.inplace import plan_in_place
from napari_samrefine._napari.layers import find_linked
from napari_samrefine._napari.workers import CANCELLED, CLOSED_TEXT, removed_text

pytestmark = pytest.mark.gui

TIMEOUT = 60_000


def refine_dock(viewer, sam, **values):
    """The docked "SAM refine" widget set up on the nuclei sample; returns (dock, widget)."""
    dock, widget = viewer.window.add_plugin_dock_widget("napari-samrefine", "SAM refine")
    widget.model.sam = sam
    widget.image_layer.value = viewer.layers["nuclei"]
    widget.labels_layer.value = viewer.layers["nuclei coarse"]
    widget.iterations.value = 2
    for key, value in values.items():
        getattr(widget, key).value = value
    return dock, widget


class Gate:
    """Holds a widget's worker at the first progress message containing ``stage``.

    The test acts (paints, cancels, closes) while the worker waits, then calls
    :meth:`open`. ``messages`` are all progress messages of the run, ``results``
    what the worker returned (napari drops the result of a worker it aborted).
    """

    def __init__(self, widget, stage: str):
        self.stage, self.messages, self.results = stage, [], []
        self.cancelled = False  # the callback raised Cancelled: the work stopped there
        self.at: int | None = None
        self.reached, self.release = threading.Event(), threading.Event()
        make = widget.progress_callback

        def progress_callback():
            inner = make()

            def progress(done, total, message=""):
                self.messages.append(message)
                if self.at is None and stage in message:
                    self.at = len(self.messages) - 1
                    self.reached.set()
                    assert self.release.wait(TIMEOUT / 1000), "the test never opened the gate"
                try:
                    inner(done, total, message)
                except Cancelled:
                    self.cancelled = True
                    raise

            return progress

        widget.progress_callback = progress_callback

    def start(self, qtbot, widget) -> None:
        """Press Run and wait until the worker is held at the stage."""
        widget.run()
        widget.worker.returned.connect(self.results.append)
        qtbot.waitUntil(self.reached.is_set, timeout=TIMEOUT)

    def open(self, qtbot, widget) -> None:
        """Let the worker go on and wait until it finished."""
        self.release.set()
        qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)

    @property
    def after(self) -> list[str]:
        """Progress messages reported after the gate."""
        return self.messages[self.at + 1 :]


def wait_done(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is not None and not widget.busy, timeout=TIMEOUT)


def user_strokes(labels: np.ndarray, refined: np.ndarray) -> tuple[int, tuple, np.ndarray]:
    """What the user paints during the run: erase 5 pixels of one object, paint 999 over 20.

    The strokes stay on pixels the object has both before and after the run, so
    the object is the only one the user edited. Returns its id, the painted
    pixels' indices and their values.
    """
    ids = np.unique(labels)[1:]
    stable = [int(((labels == i) & (refined == i)).sum()) for i in ids]
    target = int(ids[int(np.argmax(stable))])
    ys, xs = np.nonzero((labels == target) & (refined == target))
    assert ys.size >= 25, "no object keeps enough of its pixels to paint on"
    indices = (ys[:25], xs[:25])
    values = np.concatenate([np.zeros(5), np.full(20, 999)]).astype(labels.dtype)
    return target, indices, values


def _apply(current: np.ndarray, edit) -> np.ndarray:
    out = current.copy()
    out[edit.indices] = edit.values
    return out


# -- painting during a run --------------------------------------------------------------


def test_painting_during_an_in_place_run_is_kept(viewer, qtbot, sam):
    coarse = viewer.layers["nuclei coarse"]
    snapshot = coarse.data.copy()
    expected = nsr.refine(viewer.layers["nuclei"].data, snapshot, sam, iterations=2)
    _, widget = refine_dock(viewer, sam, output="inplace")
    gate = Gate(widget, "iteration")  # SAM is decoding
    gate.start(qtbot, widget)
    target, indices, values = user_strokes(snapshot, expected.labels)
    coarse.data_setitem(indices, values)  # the user paints (one undo step of its own)
    painted = coarse.data.copy()
    gate.open(qtbot, widget)

    data = coarse.data
    # the user's pixels, bit for bit
    np.testing.assert_array_equal(data[indices], values)
    # the edited object is exactly as the user left it, wherever the run would have touched it
    region = (snapshot == target) | (expected.labels == target) | (painted == target)
    np.testing.assert_array_equal(data[region], painted[region])
    # everything else is the refinement of the snapshot
    edit = plan_in_place(snapshot, expected.labels, painted)
    assert edit.kept == [target] and len(edit.changed) > 5
    np.testing.assert_array_equal(data, _apply(painted, edit))
    assert data.dtype == snapshot.dtype
    assert "1 object you edited during the run was left as you painted it" in widget.status
    assert f"{len(edit.changed)} objects changed in place (Ctrl+Z undoes it)" in widget.status
    # one undo step takes the refinement back, and leaves the painting
    coarse.undo()
    np.testing.assert_array_equal(coarse.data, painted)
    coarse.undo()
    np.testing.assert_array_equal(coarse.data, snapshot)


def test_a_new_layer_run_refines_the_labels_as_they_were_at_start(viewer, qtbot, sam):
    coarse = viewer.layers["nuclei coarse"]
    snapshot = coarse.data.copy()
    expected = nsr.refine(viewer.layers["nuclei"].data, snapshot, sam, iterations=2)
    _, widget = refine_dock(viewer, sam)
    gate = Gate(widget, "iteration")
    gate.start(qtbot, widget)
    _, indices, values = user_strokes(snapshot, expected.labels)
    coarse.data_setitem(indices, values)
    painted = coarse.data.copy()
    gate.open(qtbot, widget)
    np.testing.assert_array_equal(coarse.data, painted)  # the user's layer: as painted
    np.testing.assert_array_equal(viewer.layers["nuclei coarse refined"].data, expected.labels)


# -- features and undo ------------------------------------------------------------------


def users_features(labels: np.ndarray) -> pd.DataFrame:
    ids = np.unique(labels)[1:]
    return pd.DataFrame({
        "index": ids.astype(np.int64),
        "cell_type": ["tumour" if i % 3 else "stroma" for i in ids],
        "checked": [bool(i % 2) for i in ids],
    })  # fmt: skip


def test_in_place_undo_restores_pixels_and_features_stay_the_users(viewer, qtbot, sam):
    coarse = viewer.layers["nuclei coarse"]
    before = coarse.data.copy()
    coarse.features = users_features(before)
    features = coarse.features.copy()
    _, widget = refine_dock(viewer, sam, output="inplace")
    widget.run()
    wait_done(qtbot, widget)
    assert not np.array_equal(coarse.data, before)
    pd.testing.assert_frame_equal(coarse.features, features)
    # the per-object results are in the widget and in the layer's metadata, not its features
    assert {"label_id", "status", "predicted_iou"} <= set(widget.last_table.columns)
    assert sorted(widget.last_table["label_id"]) == sorted(np.unique(before)[1:])
    pd.testing.assert_frame_equal(coarse.metadata["samrefine_table"], widget.last_table)
    coarse.undo()
    np.testing.assert_array_equal(coarse.data, before)
    assert coarse.data.dtype == before.dtype
    pd.testing.assert_frame_equal(coarse.features, features)


def test_refine_layers_in_place_keeps_the_users_features(viewer, sam):
    coarse = viewer.layers["nuclei coarse"]
    coarse.features = users_features(coarse.data)
    features = coarse.features.copy()
    layer = nsr.refine_layers(viewer, "nuclei", "nuclei coarse", sam, output="inplace", iterations=1)
    assert layer is coarse
    pd.testing.assert_frame_equal(coarse.features, features)
    assert "status" in coarse.metadata["samrefine_table"]


# -- cancel at every stage --------------------------------------------------------------


@pytest.mark.parametrize("stage", ["loading the model", "encoding", "iteration"])
def test_cancel_at_every_stage_changes_nothing(viewer, qtbot, sam, stage):
    coarse = viewer.layers["nuclei coarse"]
    before = coarse.data.copy()
    names = [layer.name for layer in viewer.layers]
    _, widget = refine_dock(viewer, sam, output="inplace")
    loads = []
    load = widget.model.load
    widget.model.load = lambda progress=None: loads.append(1) or load(progress)
    gate = Gate(widget, stage)
    gate.start(qtbot, widget)
    widget._stop_button.native.click()
    gate.open(qtbot, widget)
    assert gate.cancelled and gate.results == [CANCELLED]
    assert len(gate.after) <= 1  # stopped at its next progress report
    assert widget.status == widget.cancelled_text
    assert loads == ([] if stage == "loading the model" else [1])
    assert [layer.name for layer in viewer.layers] == names
    np.testing.assert_array_equal(coarse.data, before)
    coarse.undo()  # nothing was added to the undo history
    np.testing.assert_array_equal(coarse.data, before)
    assert widget._run_button.enabled and not widget._stop_button.enabled


# -- closing a widget, removing a layer, closing the viewer --------------------------------


@pytest.mark.parametrize("output", ["new", "inplace"])
def test_closing_the_widget_cancels_the_run(viewer, qtbot, sam, output):
    coarse = viewer.layers["nuclei coarse"]
    before = coarse.data.copy()
    names = [layer.name for layer in viewer.layers]
    dock, widget = refine_dock(viewer, sam, output=output)
    gate = Gate(widget, "iteration")
    gate.start(qtbot, widget)
    dock.title.close_button.click()  # the dock's close button, as a user closes it
    gate.open(qtbot, widget)
    assert gate.cancelled and gate.results == [CANCELLED] and len(gate.after) <= 1
    assert widget.status == CLOSED_TEXT
    assert [layer.name for layer in viewer.layers] == names
    np.testing.assert_array_equal(coarse.data, before)
    assert widget.closed


def test_a_result_that_arrives_after_the_widget_closed_is_thrown_away(viewer, qtbot, sam):
    """Closed after the work returned, before its result reached the main thread."""
    coarse = viewer.layers["nuclei coarse"]
    before = coarse.data.copy()
    names = [layer.name for layer in viewer.layers]
    dock, widget = refine_dock(viewer, sam, output="inplace")
    returned, work = threading.Event(), widget._work

    def tracked(*args):
        try:
            return work(*args)
        finally:
            returned.set()

    widget._work = tracked
    widget.run()
    results = []
    widget.worker.returned.connect(results.append)
    assert returned.wait(TIMEOUT / 1000)  # the result now waits in the event queue
    dock.title.close_button.click()
    wait_done(qtbot, widget)
    assert len(results) == 1 and results[0] is not CANCELLED  # a real result, thrown away
    assert widget.status == CLOSED_TEXT
    assert [layer.name for layer in viewer.layers] == names
    np.testing.assert_array_equal(coarse.data, before)


def test_removing_the_labels_layer_cancels_the_run(viewer, qtbot, sam):
    coarse = viewer.layers["nuclei coarse"]
    before = coarse.data.copy()
    _, widget = refine_dock(viewer, sam)
    gate = Gate(widget, "iteration")
    gate.start(qtbot, widget)
    viewer.layers.remove(coarse)
    gate.open(qtbot, widget)
    assert gate.cancelled and gate.results == [CANCELLED] and len(gate.after) <= 1
    assert widget.status == removed_text("nuclei coarse")
    assert [layer.name for layer in viewer.layers] == ["nuclei"]
    np.testing.assert_array_equal(coarse.data, before)


@pytest.mark.parametrize("stage", ["encoding", "iteration"])
def test_closing_the_viewer_during_a_run(viewer, qtbot, sam, stage):
    coarse = viewer.layers["nuclei coarse"]
    before = coarse.data.copy()
    _, widget = refine_dock(viewer, sam, output="inplace")
    gate = Gate(widget, stage)
    gate.start(qtbot, widget)
    viewer.close()
    gate.open(qtbot, widget)  # the worker finishes within the timeout, without an exception
    assert gate.cancelled and len(gate.after) <= 1
    assert len(viewer.layers) == 0
    np.testing.assert_array_equal(coarse.data, before)


# -- the merge rule itself (no viewer) ----------------------------------------------------


def test_plan_in_place_keeps_edited_objects_whole():
    snap = np.zeros((6, 8), np.uint16)
    snap[1:4, 1:4] = 3
    snap[1:4, 4:7] = 4
    refined = snap.copy()
    refined[1:4, 3] = 4  # 4 takes a column of 3
    refined[0, 1:4] = 3  # 3 grows up
    refined[5, 6] = 5  # 5 appears
    current = snap.copy()
    current[2, 2] = 0  # the user erases a pixel of 3
    edit = plan_in_place(snap, refined, current)
    assert edit.kept == [3] and edit.changed == [5]
    out = _apply(current, edit)
    np.testing.assert_array_equal(out[snap == 3], current[snap == 3])  # 3 as painted
    assert out[0, 1:4].tolist() == [0, 0, 0]  # 3 did not grow
    assert out[5, 6] == 5
    # without edits everything is written
    edit = plan_in_place(snap, refined, snap)
    assert edit.kept == [] and edit.changed == [3, 4, 5]
    np.testing.assert_array_equal(_apply(snap, edit), refined)


def test_plan_in_place_on_a_stack_and_a_replaced_layer():
    snap = np.zeros((3, 5, 5), np.uint8)
    snap[:, 1:3, 1:3] = 7
    refined = snap.copy()
    refined[:, 3, 1:3] = 7
    current = snap.copy()
    current[1, 0, 0] = 7  # the user paints 7 on plane 1 only
    edit = plan_in_place(snap, refined, current)
    assert edit.kept == [(1, 7)] and edit.changed == [(0, 7), (2, 7)]
    out = _apply(current, edit)
    np.testing.assert_array_equal(out[1], current[1])
    np.testing.assert_array_equal(out[[0, 2]], refined[[0, 2]])
    with pytest.raises(ValueError, match="replaced during the run"):
        plan_in_place(snap, refined, current[:2])


def test_the_refined_layer_is_linked_not_the_users(viewer, qtbot, sam):
    """A new-layer run leaves the user's layer, its features and metadata, as they were."""
    coarse = viewer.layers["nuclei coarse"]
    coarse.features = users_features(coarse.data)
    features, metadata = coarse.features.copy(), dict(coarse.metadata)
    _, widget = refine_dock(viewer, sam)
    widget.run()
    wait_done(qtbot, widget)
    refined = find_linked(viewer, coarse, "refined")
    assert "status" in refined.features
    pd.testing.assert_frame_equal(coarse.features, features)
    assert dict(coarse.metadata) == metadata


def test_a_rerun_never_overwrites_a_result_layer_the_user_edited(viewer, qtbot, sam):
    """Painting on "<labels> refined" and refining again keeps the painting; a new layer gets the run."""
    coarse = viewer.layers["nuclei coarse"]
    _, widget = refine_dock(viewer, sam)
    widget.run()
    wait_done(qtbot, widget)
    first = find_linked(viewer, coarse, "refined")
    first.data_setitem((np.arange(10), np.arange(10)), 777)  # the user fixes the result by hand
    edited = first.data.copy()
    n_layers = len(viewer.layers)
    widget.run()
    wait_done(qtbot, widget)
    assert len(viewer.layers) == n_layers + 1
    np.testing.assert_array_equal(first.data, edited)
    second = find_linked(viewer, coarse, "refined")
    assert second is not first and 777 not in second.data
    # an untouched result layer is updated in place on the next run
    widget.run()
    wait_done(qtbot, widget)
    assert len(viewer.layers) == n_layers + 1 and find_linked(viewer, coarse, "refined") is second


# -- the judge --------------------------------------------------------------------------


def judge_dock(viewer, sam):
    """The docked "JFS judge" widget on the nuclei sample judging a copy of its labels."""
    image, coarse = viewer.layers["nuclei"], viewer.layers["nuclei coarse"]
    refined = viewer.add_labels(coarse.data.copy(), name="mine")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-samrefine", "JFS judge")
    widget.model.sam = sam
    widget._image.value, widget._coarse.value, widget._refined.value = image, coarse, refined
    widget.add_support_pair(image, coarse)
    widget._k.value = 1
    return dock, widget, refined


def test_closing_the_judge_during_a_run_adds_no_layer(viewer, qtbot, sam):
    dock, widget, refined = judge_dock(viewer, sam)
    refined.features = users_features(refined.data)
    features, before = refined.features.copy(), refined.data.copy()
    names = [layer.name for layer in viewer.layers]
    gate = Gate(widget, "JFS: object")
    gate.start(qtbot, widget)
    refined.data_setitem((np.array([0]), np.array([0])), 999)  # the user paints meanwhile
    dock.title.close_button.click()
    gate.open(qtbot, widget)
    assert gate.cancelled and gate.results == [CANCELLED] and len(gate.after) <= 1
    assert widget.status == CLOSED_TEXT
    assert [layer.name for layer in viewer.layers] == names
    assert refined.data[0, 0] == 999
    refined.undo()
    np.testing.assert_array_equal(refined.data, before)
    pd.testing.assert_frame_equal(refined.features, features)


def test_the_judge_writes_its_table_to_its_own_layer(viewer, qtbot, sam):
    _, widget, refined = judge_dock(viewer, sam)
    refined.features = users_features(refined.data)
    features = refined.features.copy()
    widget.run()
    wait_done(qtbot, widget)
    assert "objects:" in widget.status, widget.status
    pd.testing.assert_frame_equal(refined.features, features)
    accepted = find_linked(viewer, refined, "jfs accepted")
    table = widget.last_table
    judged = accepted.features.iloc[table["label_id"]].reset_index(drop=True)  # row i: label i
    pd.testing.assert_frame_equal(judged, table)
