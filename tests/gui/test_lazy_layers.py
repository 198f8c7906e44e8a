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
