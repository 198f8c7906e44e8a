"""The napari plugin end to end: manifest, sample data, widgets, workers, undo, cancel, macro."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from _widgets import open_widget, refine_widget

import napari_samrefine as nsr
from napari_samrefine._napari.layers import LayerField, find_linked
from napari_samrefine._napari.workers import TaskWidget
from napari_samrefine.engine.embedding import default_cache
from napari_samrefine.models.profile import BOX_ONLY_MINMAX_PROFILE, set_model_profile
from napari_samrefine.testing import tiny_tinyvit_sam

ROOT = Path(__file__).resolve().parents[2]
WIDGETS = ["Prompt excavation", "SAM refine", "JFS judge", "IoU adaption", "Review refinement", "Teach the model"]


def wait_done(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: widget.worker is not None and not widget.busy, timeout=timeout)


def test_sample_data_from_manifest(viewer):
    """The manifest's sample opens the bundled files, contrast set so the dark nuclei show."""
    from napari.layers import Image as ImageLayer
    from napari.layers import Labels
    from PIL import Image

    data = ROOT / "src" / "napari_samrefine" / "data"
    image, coarse = viewer.layers["nuclei"], viewer.layers["nuclei coarse"]
    assert isinstance(image, ImageLayer) and isinstance(coarse, Labels)
    np.testing.assert_array_equal(image.data, np.asarray(Image.open(data / "nuclei.png")))
    np.testing.assert_array_equal(coarse.data, tifffile.imread(data / "nuclei_coarse.tif"))
    # the 1st and 99.8th percentiles, not the uint8 range, so the nuclei are visible
    assert tuple(image.contrast_limits) == pytest.approx(np.percentile(image.data, (1.0, 99.8)))
    assert image.contrast_limits[1] < 128
    assert coarse.opacity == 0.5


def _layer_fields(container):
    """The layer drop-downs of a widget, nested containers included."""
    out = []
    for w in container:
        if isinstance(w, LayerField):
            out.append(w)
        elif hasattr(w, "__iter__") and not isinstance(w, str):
            out.extend(_layer_fields(w))
    return out


@pytest.mark.parametrize("name", WIDGETS)
def test_every_widget_opens_from_manifest_on_the_viewers_layers(viewer, name):
    """Docked by its menu name, each widget offers the viewer's layers and follows new ones."""
    from napari.layers import Image, Labels

    widget = open_widget(viewer, name)
    assert isinstance(widget, TaskWidget)
    assert widget._run_button.enabled and not widget._stop_button.enabled
    fields = _layer_fields(widget)
    assert fields, f"{name} has no layer field"
    for field in fields:
        kind = field._kind
        mine = [layer for layer in viewer.layers if isinstance(layer, kind)]
        assert list(field.choices[1:] if field.choices[0] is None else field.choices) == mine
    labels_fields = [f for f in fields if f._kind is Labels]
    image_fields = [f for f in fields if f._kind is Image]
    assert image_fields and labels_fields
    assert all(f.value is viewer.layers["nuclei"] for f in image_fields)  # the only image
    new = viewer.add_labels(np.zeros((256, 256), np.uint8), name="hand labels")
    for field in labels_fields:
        assert new in field.choices
    viewer.layers.remove(new)
    assert all(new not in f.choices for f in labels_fields)


def test_prompt_layers_match_excavate_prompts(viewer, qtbot):
    widget = open_widget(viewer, "Prompt excavation")
    coarse = viewer.layers["nuclei coarse"]
    widget.labels_layer.value = coarse
    widget.run()
    wait_done(qtbot, widget)
    expected = nsr.excavate_prompts(coarse.data, cebox=None)
    points = find_linked(viewer, coarse, "points")
    boxes = find_linked(viewer, coarse, "boxes")
    gauss = find_linked(viewer, coarse, "gaussian")
    want = [(y, x, p.label_id, lab) for p in expected for (x, y), lab in zip(p.points, p.point_labels, strict=True)]
    np.testing.assert_allclose(points.data, [w[:2] for w in want])
    assert list(points.features["label_id"]) == [w[2] for w in want]
    assert list(points.features["kind"]) == ["positive" if w[3] == 1 else "negative" for w in want]
    assert len(boxes.data) == len(expected)  # tight boxes only: no CEBox without a model
    for rect, p in zip(boxes.data, expected, strict=True):
        x1, y1, x2, y2 = p.tight_box
        np.testing.assert_allclose(rect.min(0), [y1 - 0.5, x1 - 0.5])
        np.testing.assert_allclose(rect.max(0), [y2 + 0.5, x2 + 0.5])
    full = np.max([p.gaussian_full(coarse.data.shape) for p in expected], axis=0)
    np.testing.assert_allclose(gauss.data, full)
    assert gauss.blending == "additive"
    # re-running updates the linked layers instead of stacking copies
    n_layers = len(viewer.layers)
    widget.objects.value = "selected label"
    coarse.selected_label = int(expected[3].label_id)
    widget.run()
    wait_done(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert set(find_linked(viewer, coarse, "points").features["label_id"]) == {expected[3].label_id}


def test_prompt_widget_cebox_with_tiny_model(viewer, qtbot, sam):
    widget = open_widget(viewer, "Prompt excavation")
    widget.model.sam = sam
    widget.labels_layer.value = viewer.layers["nuclei coarse"]
    widget.use_cebox.value = True
    widget.image_layer.value = viewer.layers["nuclei"]
    widget.run()
    wait_done(qtbot, widget)
    boxes = find_linked(viewer, viewer.layers["nuclei coarse"], "boxes")
    assert "boxes expanded" in widget.status
    assert set(boxes.features["kind"]) <= {"tight", "cebox"}


def test_prompt_widget_on_current_plane_of_a_stack(make_napari_viewer, qtbot, stardist_stack):
    viewer = make_napari_viewer()
    image, labels = stardist_stack
    layer = viewer.add_labels(labels, name="stack")
    viewer.dims.set_point(0, 2)
    widget = open_widget(viewer, "Prompt excavation")
    widget.labels_layer.value = layer
    widget.run()
    wait_done(qtbot, widget)
    points = find_linked(viewer, layer, "points")
    assert points.data.shape[1] == 3 and (points.data[:, 0] == 2).all()
    expected = nsr.excavate_prompts(labels[2], cebox=None)
    assert len(points.data) == sum(len(p.points) for p in expected)


def test_refine_new_layer_through_worker(viewer, qtbot, sam):
    coarse = viewer.layers["nuclei coarse"]
    before = coarse.data.copy()
    widget = refine_widget(viewer, sam)
    widget.run()
    wait_done(qtbot, widget)
    refined = viewer.layers["nuclei coarse refined"]
    assert refined.data.dtype == before.dtype and refined.data.shape == before.shape
    assert set(np.unique(refined.data)) <= set(np.unique(before))
    np.testing.assert_array_equal(coarse.data, before)
    features = refined.features
    assert {"index", "status", "predicted_iou", "iterations"} <= set(features.columns)
    assert list(features["index"]) == list(range(int(before.max()) + 1)), "row i is label i"
    objects = features[~features["status"].isin(["", "background"])]
    assert sorted(objects["index"]) == sorted(set(np.unique(before)) - {0})
    # same as the library call
    expected = nsr.refine(viewer.layers["nuclei"].data, before, sam, iterations=2)
    np.testing.assert_array_equal(refined.data, expected.labels)
    # a second run updates the same layer and reuses the image embedding
    n_layers, misses = len(viewer.layers), default_cache.misses
    widget.run()
    wait_done(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert default_cache.misses == misses


def test_refine_in_place_then_undo(viewer, qtbot, sam):
    coarse = viewer.layers["nuclei coarse"]
    before = coarse.data.copy()
    widget = refine_widget(viewer, sam, output="inplace")
    widget.run()
    wait_done(qtbot, widget)
    assert not np.array_equal(coarse.data, before)
    assert "Ctrl+Z" in widget.status
    coarse.undo()
    np.testing.assert_array_equal(coarse.data, before)
    assert coarse.data.dtype == before.dtype


def test_cancel_changes_nothing(viewer, qtbot, sam):
    coarse = viewer.layers["nuclei coarse"]
    before = coarse.data.copy()
    names = [layer.name for layer in viewer.layers]
    widget = refine_widget(viewer, sam, iterations=20, use_mask=False)
    widget.run()
    widget.cancel()
    wait_done(qtbot, widget)
    assert widget.status.startswith("Cancelled")
    assert [layer.name for layer in viewer.layers] == names
    np.testing.assert_array_equal(coarse.data, before)


def test_bad_choices_give_messages(viewer, qtbot, sam):
    widget = refine_widget(viewer, sam)
    widget.image_layer.value = None
    widget.run()
    assert "image layer" in widget.status and widget.worker is None
    viewer.add_image(np.zeros((10, 10), np.uint8), name="small")
    widget.image_layer.value = viewer.layers["small"]
    widget.run()
    assert "same size" in widget.status
    widget.image_layer.value = viewer.layers["nuclei"]
    widget.model.sam = None
    widget.model._model.value = "local file..."
    widget.model._file.value = str(ROOT / "no-such-file.pth")
    widget.run()
    wait_done(qtbot, widget)
    assert "no-such-file.pth" in widget.status


def test_widgets_with_a_tinyvit_model(viewer, qtbot):
    """A TinyViT SAM in LiteMedSAM's layout (256 px, stride 4) through the prompt and refine widgets."""
    pytest.importorskip("mobile_sam", reason="TinyViT needs the tinyvit extra (mobilesam-mirror)")
    tinyvit = tiny_tinyvit_sam(seed=0, layout="lite_medsam")
    prompts = open_widget(viewer, "Prompt excavation")
    prompts.model.sam = tinyvit
    prompts.labels_layer.value = viewer.layers["nuclei coarse"]
    prompts.image_layer.value = viewer.layers["nuclei"]
    prompts.use_cebox.value = True
    prompts.run()
    wait_done(qtbot, prompts)
    assert "boxes expanded" in prompts.status
    widget = refine_widget(viewer, tinyvit, iterations=1)
    widget.run()
    wait_done(qtbot, widget)
    expected = nsr.refine(viewer.layers["nuclei"].data, viewer.layers["nuclei coarse"].data,
                          tinyvit, iterations=1)
    np.testing.assert_array_equal(viewer.layers["nuclei coarse refined"].data, expected.labels)


def test_prompt_boxes_follow_the_model_profile(viewer, qtbot, sam):
    """Choosing LiteMedSAM ticks its box prompt only; a forced point prompt is announced."""
    widget = open_widget(viewer, "SAM refine")
    prompts = (widget.use_points, widget.use_negative_point, widget.use_box, widget.use_mask)
    assert [b.value for b in prompts] == [True, True, True, True]  # vit_b_lm: SAM's profile
    widget.model._model.value = "medsam_lite"
    assert [b.value for b in prompts] == [False, False, True, False]
    assert "not trained" in widget.use_points.tooltip
    widget.model._model.value = "vit_t_lm"
    assert [b.value for b in prompts] == [True, True, True, True]
    # a model given by the caller brings its own profile
    box_only = nsr.tiny_sam(seed=0)
    set_model_profile(box_only, BOX_ONLY_MINMAX_PROFILE)
    widget.model.sam = box_only
    assert [b.value for b in prompts] == [False, False, True, False]
    widget.image_layer.value = viewer.layers["nuclei"]
    widget.labels_layer.value = viewer.layers["nuclei coarse"]
    widget.iterations.value = 1
    widget.use_points.value = True
    widget.run()
    assert "not trained with points" in widget.status
    wait_done(qtbot, widget)
    assert "nuclei coarse refined" in viewer.layers


def test_refine_layers_scripting(viewer, sam):
    layer = nsr.refine_layers(viewer, image="nuclei", labels="nuclei coarse", sam=sam, iterations=1)
    assert layer.name == "nuclei coarse refined"
    with pytest.raises(ValueError, match="no layer named"):
        nsr.refine_layers(viewer, image="missing", labels="nuclei coarse", sam=sam)
    coarse = viewer.layers["nuclei coarse"]
    target = int(np.unique(coarse.data)[5])
    coarse.selected_label = target
    before = coarse.data.copy()
    nsr.refine_layers(viewer, "nuclei", "nuclei coarse", sam, output="inplace", objects="selected label")
    untouched = (before != target) & (before != 0)
    np.testing.assert_array_equal(coarse.data[untouched], before[untouched])


def test_documented_macro_runs(make_napari_viewer, sam, tmp_path):
    source = (ROOT / "examples" / "refine_open_images.py").read_text()
    doc = (ROOT / "docs" / "scripting.md").read_text()
    section = doc.split("## A batch macro\n", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert block.strip() == source.strip(), "docs/scripting.md must show examples/refine_open_images.py"
    spec = importlib.util.spec_from_file_location("macro", ROOT / "examples" / "refine_open_images.py")
    macro = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(macro)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-samrefine", "nuclei")
    image = viewer.layers["nuclei"].data
    viewer.add_image(image[:128, :128], name="crop")
    viewer.add_labels(viewer.layers["nuclei coarse"].data[:128, :128], name="crop coarse")
    saved = macro.refine_open_images(viewer, sam, tmp_path, iterations=1)
    assert sorted(p.name for p in saved) == ["crop_refined.tif", "nuclei_refined.tif"]
    crop = tmp_path / "crop_refined.tif"
    assert tifffile.imread(crop).shape == (128, 128)
    assert crop.with_suffix(".csv").exists()
