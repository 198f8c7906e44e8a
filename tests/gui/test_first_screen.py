"""A user's first screen: fields preselected, the sample visible, prompt layers that hide
nothing, every field explained (in docs/napari.md's words), stacks by objects and planes.

Each test drives the docked widgets the way a user does (the sample from the
File menu's path, the Run button) and checks what the user would see.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from _widgets import open_widget
from magicgui.widgets import Container, PushButton

from napari_samrefine._napari.field_help import HELP
from napari_samrefine._napari.layers import features_table
from napari_samrefine._napari.prompt_widget import GAUSSIAN_OPACITY

pytestmark = pytest.mark.gui

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60_000


def click_run(qtbot, widget) -> None:
    widget._run_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is not None and not widget.busy, timeout=TIMEOUT)


def words(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def fields(container, skip=()):
    """Every input field of a widget, nested containers walked (buttons and ``skip`` left out)."""
    out = []
    for w in container:
        if isinstance(w, PushButton) or any(w is s for s in skip):
            continue
        out.extend(fields(w) if isinstance(w, Container) else [w])
    return out


def test_layer_fields_start_on_the_obvious_layer(viewer):
    refine = open_widget(viewer, "SAM refine")
    assert refine.image_layer.value is viewer.layers["nuclei"]
    assert refine.labels_layer.value is viewer.layers["nuclei coarse"]
    prompts = open_widget(viewer, "Prompt excavation")
    assert prompts.labels_layer.value is viewer.layers["nuclei coarse"]


def test_a_second_labels_layer_leaves_the_choice_to_the_user(viewer):
    refine = open_widget(viewer, "SAM refine")
    viewer.add_labels(np.zeros((256, 256), np.uint16), name="painted")
    # the user's choice (here the preselected one) is never replaced by a new layer
    assert refine.labels_layer.value is viewer.layers["nuclei coarse"]
    later = open_widget(viewer, "Prompt excavation")  # two candidates: the active layer wins
    assert later.labels_layer.value is viewer.layers["painted"]


def test_plugin_results_are_not_preselected_as_inputs(viewer, qtbot, sam):
    refine = open_widget(viewer, "SAM refine")
    refine.model.sam = sam
    refine.iterations.value = 1
    click_run(qtbot, refine)
    assert "nuclei coarse refined" in viewer.layers
    assert viewer.layers.selection.active.name == "nuclei coarse refined"
    prompts = open_widget(viewer, "Prompt excavation")
    assert prompts.labels_layer.value is viewer.layers["nuclei coarse"]


def test_sample_opens_with_its_contrast_set(viewer):
    image = viewer.layers["nuclei"]
    low, high = image.contrast_limits
    data = np.asarray(image.data)
    assert high <= np.percentile(data, 99.9) < 255
    assert np.mean(data > high) < 0.01  # the nuclei are bright, not lost in black
    assert viewer.layers["nuclei coarse"].opacity < 1


def test_prompt_layers_keep_image_and_labels_visible(viewer, qtbot):
    widget = open_widget(viewer, "Prompt excavation")
    click_run(qtbot, widget)
    gauss = viewer.layers["nuclei coarse Gaussian prompts"]
    assert gauss.opacity == GAUSSIAN_OPACITY < 1 and gauss.blending == "additive"
    points = viewer.layers["nuclei coarse points"]
    boxes = viewer.layers["nuclei coarse boxes"]
    tight = boxes.features["kind"] == "tight"
    side = {}
    for rect, lid in zip(np.asarray(boxes.data, dtype=object)[tight], boxes.features["label_id"][tight],
                         strict=True):
        extent = np.ptp(np.asarray(rect), axis=0)
        side[int(lid)] = float(extent.min())
    sizes = np.broadcast_to(np.asarray(points.size, dtype=float), (len(points.data),))
    assert len(set(np.round(sizes, 3))) > 1, "points are sized to their objects"
    for size, lid in zip(sizes, points.features["label_id"], strict=True):
        assert 1.5 <= size <= max(1.5, side[int(lid)] / 4.0) + 1e-6, (lid, size, side[int(lid)])


@pytest.mark.parametrize(
    "name", ["SAM refine", "Prompt excavation", "JFS judge", "IoU adaption", "Teach the model"])
def test_every_field_has_a_tooltip_that_docs_say_word_for_word(viewer, name):
    widget = open_widget(viewer, name)
    docs = words((ROOT / "docs" / "napari.md").read_text())
    # the adaption widget's measured note about the chosen model is a message, not a field
    for field in fields(widget, skip=(widget._bar, widget._status, getattr(widget, "_note", None))):
        tip = field.tooltip or ""
        assert tip.strip(), f"{name}: field {field.label!r} has no tooltip"
        if field.label == "model":  # its first lines describe the chosen model
            tip = HELP["model"]
        tip = tip.replace(" This model was not trained with this prompt.", "")
        tip = tip.split(" This model's default:")[0]  # the chosen model's, in the widget only
        assert words(tip) in docs, (
            f"{name}: the tooltip of {field.label!r} is not in docs/napari.md: {tip!r}"
        )


def test_stack_objects_and_planes_are_separate_choices(make_napari_viewer, qtbot, sam, stardist_stack):
    image, labels = stardist_stack
    viewer = make_napari_viewer()
    viewer.add_image(image, name="stack")
    viewer.add_labels(labels, name="stack labels")
    widget = open_widget(viewer, "SAM refine")
    widget.model.sam = sam
    widget.iterations.value = 1
    assert not widget.planes.native.isHidden() and widget.planes.value == "current plane"
    viewer.dims.set_point(0, 1)
    click_run(qtbot, widget)
    refined = viewer.layers["stack labels refined"]
    table = refined.metadata["samrefine_table"]
    assert set(table["plane"]) == {1}
    for z in (0, 2, 3):  # the other planes are as they were
        np.testing.assert_array_equal(np.asarray(refined.data[z]), labels[z])
    first = refined.features.copy()

    widget.planes.value = "all planes"
    click_run(qtbot, widget)
    table = refined.metadata["samrefine_table"]
    assert set(table["plane"]) == {0, 1, 2, 3}
    features = refined.features
    assert not features.equals(first), "the features table shows the new run"
    objects = features[features["status"] != ""].iloc[1:]  # row 0: background
    assert list(objects["index"]) == sorted(set(table["label_id"]))
    assert list(features["index"]) == list(range(len(features))), "row i is label i"
    pd_expected = features_table(table)
    assert list(features["plane"]) == list(pd_expected["plane"])
    several = features[features["plane"].str.contains(",")]
    assert len(several), "a label of the stack lies on several planes"


def test_planes_choice_hidden_for_2d_layers(viewer):
    widget = open_widget(viewer, "SAM refine")
    assert widget.labels_layer.value.ndim == 2
    assert widget.planes.native.isHidden()
