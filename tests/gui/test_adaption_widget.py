"""The IoU adaption widget end to end: layers or folders in, a saved adaptor out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _data import DSB2018

pytestmark = pytest.mark.gui

IDS = ["1db1cddf28e3", "35ca5f142a7d"]


def _load():
    import tifffile
    from PIL import Image

    images = [np.asarray(Image.open(DSB2018 / "images" / f"{i}.png"))[:96, :96] for i in IDS]
    labels = [tifffile.imread(DSB2018 / "labels" / f"{i}.tif")[:96, :96] for i in IDS]
    return images, labels


@pytest.fixture(params=["viewer", "proxy"])
def widget_and_viewer(request, make_napari_viewer):
    from napari.utils._proxies import PublicOnlyProxy

    from napari_samrefine._napari.adaption_widget import AdaptionWidget
    from napari_samrefine.testing import tiny_sam

    viewer = make_napari_viewer()
    # napari hands plugin widgets a PublicOnlyProxy of the viewer
    given = PublicOnlyProxy(viewer) if request.param == "proxy" else viewer
    widget = AdaptionWidget(given, sam=tiny_sam())
    viewer.window.add_dock_widget(widget)
    return widget, viewer


def _wait(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is not None and not widget.busy, timeout=60000)


def test_train_on_layer_pairs_and_save(widget_and_viewer, qtbot, tmp_path):
    from napari_samrefine import adapt_iou_head, load_iou_adaptor
    from napari_samrefine.testing import tiny_sam

    widget, viewer = widget_and_viewer
    images, labels = _load()
    layers = [(viewer.add_image(i, name=f"img{k}"), viewer.add_labels(lab, name=f"coarse{k}"))
              for k, (i, lab) in enumerate(zip(images, labels, strict=True))]
    # choices follow the viewer's layers
    assert [c for c in widget.pairs.image_layer.choices if c is not None] == [a for a, _ in layers]
    for img, lab in layers:
        widget.pairs.image_layer.value, widget.pairs.labels_layer.value = img, lab
        widget.pairs.add_button.native.click()
    assert len(widget.pairs.pair_list.choices) == 2
    widget._output.value = tmp_path / "adaptor.pt"
    widget._run_button.native.click()
    assert not widget._run_button.enabled and widget._stop_button.enabled
    _wait(qtbot, widget)

    loaded = load_iou_adaptor(tmp_path / "adaptor.pt")
    expected = adapt_iou_head(tiny_sam(), images, labels)
    assert torch.equal(loaded.up, expected.up) and torch.equal(loaded.down, expected.down)
    assert widget.adaptor is not None and "Saved adaptor.pt" in widget._status.value
    assert widget._bar.value == widget._bar.max > 1
    # inputs untouched
    for (img, lab), i, label in zip(layers, images, labels, strict=True):
        assert np.array_equal(img.data, i) and np.array_equal(lab.data, label)


def test_train_on_folders(widget_and_viewer, qtbot, tmp_path):
    import tifffile
    from PIL import Image

    from napari_samrefine import load_iou_adaptor

    widget, _ = widget_and_viewer
    images, labels = _load()
    (tmp_path / "im").mkdir()
    (tmp_path / "lab").mkdir()
    for name, img, lab in zip(IDS, images, labels, strict=True):
        Image.fromarray(img).save(tmp_path / "im" / f"{name}.png")
        tifffile.imwrite(tmp_path / "lab" / f"{name}.tif", lab)
    widget._image_dir.value = tmp_path / "im"
    widget._labels_dir.value = tmp_path / "lab"
    widget._output.value = tmp_path / "out" / "folder_adaptor"
    widget._run_button.native.click()
    _wait(qtbot, widget)
    adaptor = load_iou_adaptor(tmp_path / "out" / "folder_adaptor.pt")
    assert adaptor.metadata["n_images"] == 2


def test_cancel_saves_nothing(widget_and_viewer, qtbot, tmp_path):
    widget, viewer = widget_and_viewer
    images, labels = _load()
    img, lab = viewer.add_image(images[1]), viewer.add_labels(labels[1])
    widget.add_pair(img, lab)
    widget._output.value = tmp_path / "never.pt"
    widget._run_button.native.click()
    widget._stop_button.native.click()
    _wait(qtbot, widget)
    assert not (tmp_path / "never.pt").exists()
    assert widget.adaptor is None
    assert "Cancelled" in widget._status.value


def test_missing_input_gives_a_clear_message(widget_and_viewer, tmp_path):
    widget, _ = widget_and_viewer
    widget._output.value = tmp_path / "a.pt"
    widget._run_button.native.click()
    assert widget.worker is None
    assert "Nothing to train on" in widget._status.value


def test_model_field_loads_a_checkpoint_and_reports_errors(make_napari_viewer, qtbot, tmp_path):
    from napari_samrefine import load_iou_adaptor
    from napari_samrefine._napari.adaption_widget import AdaptionWidget
    from napari_samrefine._napari.model_choice import LOCAL_FILE
    from napari_samrefine.testing import tiny_sam

    viewer = make_napari_viewer()
    widget = AdaptionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    images, labels = _load()
    widget.add_pair(viewer.add_image(images[1]), viewer.add_labels(labels[1]))
    widget._output.value = tmp_path / "a.pt"

    widget.model._model.value = LOCAL_FILE
    widget.model._file.value = str(tmp_path / "no_such_model.pth")
    widget._run_button.native.click()
    _wait(qtbot, widget)
    assert "Training failed" in widget._status.value and "no_such_model.pth" in widget._status.value
    assert not (tmp_path / "a.pt").exists()

    torch.save(tiny_sam().state_dict(), tmp_path / "tiny.pth")
    widget.model._file.value = str(tmp_path / "tiny.pth")
    widget._run_button.native.click()
    _wait(qtbot, widget)
    assert load_iou_adaptor(tmp_path / "a.pt").metadata["base_model"] == "tiny.pth"


NOTE = "Measured here: this adaptor lowered the mean IoU with the truth from 0.64 to 0.61."


def _shown(field) -> bool:
    """Not hidden by the widget (the viewer itself is not shown in these tests)."""
    return not field.native.isHidden()


def _noted_tiny_sam(note: str = NOTE):
    from dataclasses import replace

    from napari_samrefine.models.profile import SAM_PROFILE, set_model_profile
    from napari_samrefine.testing import tiny_sam

    sam = tiny_sam()
    set_model_profile(sam, replace(SAM_PROFILE, defaults=replace(SAM_PROFILE.defaults, adaptor_note=note)))
    return sam


def test_a_model_whose_adaptor_measured_worse_is_flagged(make_napari_viewer, qtbot, tmp_path):
    """The profile's adaptor note shows beside the model, and again when the adaptor is saved."""
    from napari_samrefine._napari.adaption_widget import AdaptionWidget

    viewer = make_napari_viewer()
    widget = AdaptionWidget(viewer, sam=_noted_tiny_sam())
    viewer.window.add_dock_widget(widget)
    assert _shown(widget._note) and NOTE in widget._note.value and widget._note.tooltip == NOTE

    images, labels = _load()
    widget.add_pair(viewer.add_image(images[1]), viewer.add_labels(labels[1]))
    widget._output.value = tmp_path / "a.pt"
    widget._run_button.native.click()
    _wait(qtbot, widget)
    assert "Saved a.pt" in widget._status.value and f"Warning: {NOTE}" in widget._status.value

    # another model without a note: nothing shown, nothing added
    widget.model.sam = _noted_tiny_sam(note="")
    assert not _shown(widget._note) and widget._note.value == ""
    widget._run_button.native.click()
    _wait(qtbot, widget)
    assert "Saved a.pt" in widget._status.value and "Warning" not in widget._status.value


def test_registry_models_show_their_measured_adaptor_note(make_napari_viewer):
    """Choosing a registry model shows its profile's note (from the registry, nothing loaded)."""
    from napari_samrefine._napari.adaption_widget import AdaptionWidget
    from napari_samrefine.models.registry import get_model, list_models

    viewer = make_napari_viewer()
    widget = AdaptionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    noted = [n for n in list_models() if get_model(n).profile.defaults.adaptor_note]
    plain = [n for n in list_models() if not get_model(n).profile.defaults.adaptor_note]
    assert "vit_b_lm" in plain and "medsam_lite" in noted  # measured: docs/benchmarks.md
    widget.model._model.value = "vit_b_lm"
    assert not _shown(widget._note)
    for name in noted:
        widget.model._model.value = name
        assert _shown(widget._note) and get_model(name).profile.defaults.adaptor_note in widget._note.value
        widget.model._model.value = "vit_b_lm"
        assert not _shown(widget._note)


def test_the_refine_widget_warns_when_an_adaptor_is_applied_to_a_noted_model(viewer, qtbot, tmp_path):
    """Refining with an adaptor on a model whose profile has an adaptor note repeats the note."""
    from _widgets import refine_widget

    from napari_samrefine import adapt_iou_head

    sam = _noted_tiny_sam()
    images, labels = _load()
    adapt_iou_head(sam, images[1], labels[1]).save(tmp_path / "a.pt")
    widget = refine_widget(viewer, sam, iterations=1)
    widget.run()
    _wait(qtbot, widget)
    assert "Warning" not in widget._status.value  # no adaptor: nothing to warn about
    widget.adaptor.value = tmp_path / "a.pt"
    widget.run()
    _wait(qtbot, widget)
    assert widget._status.value.endswith(f"Warning: {NOTE}")
