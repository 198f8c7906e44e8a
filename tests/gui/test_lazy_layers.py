"""Lazy layers (zarr, dask, multiscale) and 4D stacks in the SAM refine widget.

A slide in zarr must stay on disk: the widget passes the layers' arrays to
``refine`` as they are, the result goes to a new zarr store shown as a new lazy
layer, and the labels equal those of the same data held in memory.
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from _widgets import open_widget

from napari_samrefine import refine
from napari_samrefine._napari.sample_data import load_nuclei

pytestmark = pytest.mark.gui

TIMEOUT = 120_000


def run_and_wait(qtbot, widget) -> None:
    widget._run_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is not None and not widget.busy, timeout=TIMEOUT)


def zarr_copy(array: np.ndarray, path, chunks) -> zarr.Array:
    z = zarr.open_array(str(path), mode="w", shape=array.shape, dtype=array.dtype, chunks=chunks)
    z[...] = array
    return z


def test_zarr_layers_refine_into_a_new_zarr_layer(make_napari_viewer, qtbot, sam, tmp_path):
    image, coarse = load_nuclei()
    viewer = make_napari_viewer()
    viewer.add_image(zarr_copy(image, tmp_path / "image.zarr", (128, 128)), name="slide")
    source = viewer.add_labels(zarr_copy(coarse, tmp_path / "labels.zarr", (128, 128)), name="slide labels")
    widget = open_widget(viewer, "SAM refine")
    widget.model.sam = sam
    widget.iterations.value = 1
    assert widget.labels_layer.value is source

    widget.output.value = "inplace"  # a slide on disk cannot be one undo step
    widget._run_button.native.click()
    assert widget.worker is None and "new layer" in widget.status
    assert "slide labels refined" not in viewer.layers

    widget.output.value = "new"
    run_and_wait(qtbot, widget)
    layer = viewer.layers["slide labels refined"]
    assert isinstance(layer.data, zarr.Array), type(layer.data)  # shown lazily, never loaded here
    want = refine(image, coarse, sam, iterations=1).labels
    np.testing.assert_array_equal(np.asarray(layer.data), want)
    np.testing.assert_array_equal(np.asarray(source.data), coarse)  # the coarse store untouched
    assert widget.status.startswith("27 objects refined"), widget.status

    run_and_wait(qtbot, widget)  # a layer on disk cannot be checked for edits: kept, a new one added
    results = [lay for lay in viewer.layers if lay.metadata.get("samrefine", {}).get("source")]
    assert len(results) == 2 and results[0] is layer
    assert layer.metadata["samrefine"]["role"] == "refined (on disk)"
    np.testing.assert_array_equal(np.asarray(results[1].data), want)


def test_multiscale_image_uses_the_level_that_matches_the_labels(make_napari_viewer, qtbot, sam):
    image, coarse = load_nuclei()
    half = coarse[::2, ::2]
    viewer = make_napari_viewer()
    viewer.add_image([image, image[::2, ::2]], multiscale=True, name="pyramid")
    viewer.add_labels(half, name="half labels")
    widget = open_widget(viewer, "SAM refine")
    widget.model.sam = sam
    widget.iterations.value = 1
    run_and_wait(qtbot, widget)
    got = np.asarray(viewer.layers["half labels refined"].data)
    np.testing.assert_array_equal(got, refine(image[::2, ::2], half, sam, iterations=1).labels)


def test_multiscale_labels_give_a_multiscale_result(make_napari_viewer, qtbot, sam, tmp_path):
    image, coarse = load_nuclei()
    viewer = make_napari_viewer()
    viewer.add_image([image, image[::2, ::2]], multiscale=True, name="pyramid")
    viewer.add_labels([coarse, coarse[::2, ::2]], multiscale=True, name="pyramid labels")
    widget = open_widget(viewer, "SAM refine")
    widget.model.sam = sam
    widget.iterations.value = 1
    run_and_wait(qtbot, widget)
    layer = viewer.layers["pyramid labels refined"]
    assert layer.multiscale and [tuple(d.shape) for d in layer.data] == [(256, 256), (128, 128)]
    want = refine(image, coarse, sam, iterations=1).labels
    np.testing.assert_array_equal(np.asarray(layer.data[0]), want)
    np.testing.assert_array_equal(np.asarray(layer.data[1]), want[::2, ::2])


def four_d(make_napari_viewer, stack, sam, t: int, z: int):
    """A viewer showing plane (t, z) of a (2, 2, Y, X) stack, and a SAM refine widget on it."""
    image, labels = stack
    image4, labels4 = image.reshape(2, 2, *image.shape[1:]), labels.reshape(2, 2, *labels.shape[1:])
    viewer = make_napari_viewer()
    viewer.add_image(image4, name="tzyx")
    viewer.add_labels(labels4, name="tzyx labels")
    viewer.dims.set_point(0, t)
    viewer.dims.set_point(1, z)
    widget = open_widget(viewer, "SAM refine")
    widget.model.sam = sam
    widget.iterations.value = 1
    return viewer, widget, image4, labels4


def test_4d_stack_refines_the_plane_shown(make_napari_viewer, qtbot, sam, stardist_stack):
    viewer, widget, image4, labels4 = four_d(make_napari_viewer, stardist_stack, sam, 1, 0)
    assert widget.planes.value == "current plane"
    run_and_wait(qtbot, widget)
    layer = viewer.layers["tzyx labels refined"]
    table = layer.metadata["samrefine_table"]
    assert set(table["plane"]) == {(1, 0)}
    got = np.asarray(layer.data)
    want = refine(image4, labels4, sam, iterations=1, planes=[(1, 0)]).labels
    np.testing.assert_array_equal(got, want)
    for t, z in ((0, 0), (0, 1), (1, 1)):
        np.testing.assert_array_equal(got[t, z], labels4[t, z])


def test_4d_stack_current_time_point(make_napari_viewer, qtbot, sam, stardist_stack):
    viewer, widget, image4, labels4 = four_d(make_napari_viewer, stardist_stack, sam, 1, 0)
    assert "current time point" in widget.planes.choices
    widget.planes.value = "current time point"
    run_and_wait(qtbot, widget)
    table = viewer.layers["tzyx labels refined"].metadata["samrefine_table"]
    assert set(table["plane"]) == {(1, 0), (1, 1)}
    got = np.asarray(viewer.layers["tzyx labels refined"].data)
    np.testing.assert_array_equal(got, refine(image4, labels4, sam, iterations=1, planes=1).labels)
    np.testing.assert_array_equal(got[0], labels4[0])


def test_time_points_are_offered_for_4d_layers_only(make_napari_viewer, stardist_stack):
    image, labels = stardist_stack
    viewer = make_napari_viewer()
    viewer.add_image(image, name="zyx")
    viewer.add_labels(labels, name="zyx labels")
    widget = open_widget(viewer, "SAM refine")
    assert "current time point" not in widget.planes.choices


def _zarr_viewer(make_napari_viewer, sam, tmp_path):
    image, coarse = load_nuclei()
    viewer = make_napari_viewer()
    viewer.add_image(zarr_copy(image, tmp_path / "image.zarr", (128, 128)), name="slide")
    viewer.add_labels(zarr_copy(coarse, tmp_path / "labels.zarr", (128, 128)), name="slide labels")
    widget = open_widget(viewer, "SAM refine")
    widget.model.sam = sam
    widget.iterations.value = 1
    return viewer, widget


def store_folder(layer):
    from pathlib import Path

    return Path(layer.data.store.root).parent


def test_result_stores_go_with_their_layer_and_with_the_viewer(make_napari_viewer, qtbot, sam, tmp_path):
    import tempfile
    from pathlib import Path

    from napari_samrefine._napari.lazy_layers import MARKER, STORE_PREFIX

    viewer, widget = _zarr_viewer(make_napari_viewer, sam, tmp_path)
    run_and_wait(qtbot, widget)
    run_and_wait(qtbot, widget)  # a second result layer, in its own store
    first, second = [lay for lay in viewer.layers if lay.name.startswith("slide labels refined")]
    folders = [store_folder(first), store_folder(second)]
    temp = Path(tempfile.gettempdir()).resolve()
    for folder in folders:  # the plugin's own, marked folders in the temporary folder
        assert folder.parent == temp and folder.name.startswith(STORE_PREFIX), folder
        assert (folder / MARKER).is_file() and (folder / "slide labels refined.zarr").is_dir()
    (folders[1] / "my notes.txt").write_text("kept")  # something the user put there
    viewer.layers.remove(first)
    assert not folders[0].exists()  # its layer removed: the store is gone
    assert (folders[1] / "slide labels refined.zarr").is_dir()  # the other is still shown
    viewer.close()
    # the viewer closed: the store and the marker are gone, what the user put there is not
    assert sorted(p.name for p in folders[1].iterdir()) == ["my notes.txt"]
    assert (tmp_path / "labels.zarr").is_dir() and (tmp_path / "image.zarr").is_dir()  # the inputs stay


def test_a_cancelled_run_leaves_no_store(make_napari_viewer, qtbot, sam, tmp_path):
    from napari_samrefine._napari.lazy_layers import session_stores

    viewer, widget = _zarr_viewer(make_napari_viewer, sam, tmp_path)
    before = set(session_stores())
    widget._run_button.native.click()
    made = set(session_stores()) - before
    assert len(made) == 1 and next(iter(made)).exists()  # made when Run was pressed
    widget._stop_button.native.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    assert "Cancelled" in widget.status
    assert not next(iter(made)).exists()
    assert [lay.name for lay in viewer.layers] == ["slide", "slide labels"]


def test_stores_of_ended_sessions_are_removed_only_when_surely_theirs(tmp_path):
    import json
    import socket
    import subprocess
    import sys

    import psutil

    from napari_samrefine._napari.lazy_layers import MARKER, sweep_crashed_sessions

    # a process that ran and ended (its id and start time, as its marker would say)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    started = psutil.Process(child.pid).create_time()
    child.wait()
    me = psutil.Process()

    def folder(name, pid, started, host=None, store="labels refined.zarr", marker=True):
        path = tmp_path / name
        (path / store / "0").mkdir(parents=True)
        (path / store / "0" / "0").write_bytes(b"chunk")
        if marker:
            info = {"pid": pid, "started": started, "host": host or socket.gethostname(), "store": store}
            (path / MARKER).write_text(json.dumps(info))
        return path

    crashed = folder("samrefine-crashed", child.pid, started)
    with_notes = folder("samrefine-notes", child.pid, started)
    (with_notes / "notes.txt").write_text("the user's")
    running = folder("samrefine-running", me.pid, me.create_time())  # this session: in use
    unmarked = folder("samrefine-unmarked", child.pid, started, marker=False)
    elsewhere = folder("samrefine-other-host", child.pid, started, host="another-machine")
    other_name = folder("something-else", child.pid, started)
    escaping = folder("samrefine-escaping", child.pid, started, store="../escaped")  # not its own

    removed = sweep_crashed_sessions(tmp_path)
    assert sorted(p.name for p in removed) == ["samrefine-crashed"]
    assert not crashed.exists()
    assert sorted(p.name for p in with_notes.iterdir()) == ["notes.txt"]  # only the store went
    for kept in (running, unmarked, elsewhere, other_name):
        assert (kept / "labels refined.zarr" / "0" / "0").is_file(), kept
    assert (escaping / MARKER).is_file() and (tmp_path / "escaped" / "0" / "0").is_file()
