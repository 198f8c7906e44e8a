"""The "Teach the model" widget: teach on layer pairs, the file offered in the refine widget, cancel."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from _widgets import open_widget
from magicgui.widgets import Container, PushButton
from skimage.segmentation import relabel_sequential

from napari_samrefine import refine
from napari_samrefine._napari.field_help import TEACH_HELP
from napari_samrefine._napari.model_choice import LOCAL_FILE, forget_taught, taught_choices
from napari_samrefine.models.finetune_file import read_finetune_file
from napari_samrefine.models.loading import load_sam

pytestmark = pytest.mark.gui

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_taught_choice_left():
    """Taught models are offered for the session: each test starts and ends without any."""
    forget_taught()
    yield
    forget_taught()


@pytest.fixture()
def pair_viewer(make_napari_viewer, dsb_pair):
    """A viewer holding a 96 x 96 crop of a DSB image ("cells") and its labels ("cells labels")."""
    image, labels = dsb_pair
    viewer = make_napari_viewer()
    crop = image[120:216, 100:196].copy()
    lab = relabel_sequential(labels[120:216, 100:196].astype(np.int32))[0]
    viewer.add_image(crop, name="cells")
    viewer.add_labels(lab, name="cells labels")
    return viewer


def _wait(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget.worker is not None and not widget.busy, timeout=timeout)


def _teach_widget(viewer, tmp_path, epochs=1):
    widget = open_widget(viewer, "Teach the model")
    widget.add_pair(viewer.layers["cells"], viewer.layers["cells labels"])
    widget.epochs.value = epochs
    widget.augment.value = False
    widget.output.value = tmp_path / "my cells.pt"
    return widget


@pytest.mark.parametrize("rank", [0, 2], ids=["decoder", "encoder adaptors"])
def test_teach_then_refine_with_the_taught_file(pair_viewer, qtbot, tmp_path, checkpoint, rank):
    viewer = pair_viewer
    image = viewer.layers["cells"].data.copy()
    labels = viewer.layers["cells labels"].data.copy()
    teach = _teach_widget(viewer, tmp_path)
    teach.model._model.value = LOCAL_FILE
    teach.model._file.value = checkpoint
    teach.model._device.value = "cpu"
    teach.lora_rank.value = rank
    messages = []
    teach.progressed.connect(lambda d, t, m: messages.append(m))
    teach._run_button.native.click()
    _wait(qtbot, teach)

    path = tmp_path / "my cells.pt"
    assert path.is_file(), teach.status
    saved = read_finetune_file(path)
    assert saved.metadata["base_model"] == checkpoint.name and teach.taught.path == path
    state = teach.taught.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.weights.items())  # the best epoch's
    adaptors = [k for k in saved.weights if k.startswith("image_encoder.")]
    assert saved.metadata["options"]["lora_rank"] == rank and bool(adaptors) == bool(rank)
    assert [line.split(":")[0] for line in teach.log.value.splitlines()] == ["epoch 0", "epoch 1"]
    assert any(re.search(r"epoch 1/1, loss [\d.]+; about \d+ s left", m) for m in messages)
    label = f"{checkpoint.name} + my cells.pt"
    assert f"offered in the model fields as {label!r}" in teach.status
    assert label in taught_choices() and label in teach.model.labels  # open fields follow
    # the layers taught on are unchanged
    assert np.array_equal(viewer.layers["cells"].data, image)
    assert np.array_equal(viewer.layers["cells labels"].data, labels)

    widget = open_widget(viewer, "SAM refine")
    assert widget.model.labels[label] == label
    widget.model._model.value = label
    widget.model._device.value = "cpu"
    assert widget.model.profile.prompts == tuple(read_finetune_file(path).metadata["prompts"])
    widget.image_layer.value = viewer.layers["cells"]
    widget.labels_layer.value = viewer.layers["cells labels"]
    widget.iterations.value = 1
    kwargs = widget.refine_kwargs()
    widget._run_button.native.click()
    _wait(qtbot, widget)
    expected = refine(image, labels, load_sam(checkpoint, device="cpu", finetune=path), **kwargs)
    result = viewer.layers["cells labels refined"].data
    assert np.array_equal(result, expected.labels), widget.status
    assert widget.model.load() is load_sam(checkpoint, device="cpu", finetune=path)


def test_cancel_leaves_no_file_and_offers_nothing(pair_viewer, qtbot, tmp_path, sam):
    viewer = pair_viewer
    teach = _teach_widget(viewer, tmp_path, epochs=50)
    teach.model.sam = sam

    def cancel_in_training(done, total, message):
        if message.startswith("epoch"):
            teach.cancel()

    teach.progressed.connect(cancel_in_training)
    teach._run_button.native.click()
    _wait(qtbot, teach)
    assert teach.status == teach.cancelled_text
    assert list(tmp_path.iterdir()) == [] and teach.taught is None and not taught_choices()
    # a model built in code is taught, but not offered (there is no file to load it from)
    teach.progressed.disconnect(cancel_in_training)
    teach.epochs.value = 1
    teach._run_button.native.click()
    _wait(qtbot, teach)
    assert (tmp_path / "my cells.pt").is_file() and "is not offered" in teach.status
    assert not taught_choices()


def test_bad_input_is_refused_before_any_work(pair_viewer, tmp_path, sam):
    viewer = pair_viewer
    teach = open_widget(viewer, "Teach the model")
    teach.model.sam = sam
    teach._run_button.native.click()  # the fields' pair, no output file chosen
    assert teach.worker is None and "Choose where to save" in teach.status
    teach.output.value = tmp_path
    teach._run_button.native.click()
    assert teach.worker is None and "is a folder" in teach.status
    teach.output.value = tmp_path / "t.pt"
    viewer.add_labels(np.zeros((96, 96), np.int32), name="empty")
    teach.add_pair(viewer.layers["cells"], viewer.layers["empty"])
    teach._run_button.native.click()
    assert teach.worker is None and "'empty' holds no object" in teach.status
    assert list(tmp_path.iterdir()) == []


def _fields(container, skip):
    """The input fields of a widget, nested containers walked (buttons and ``skip`` left out)."""
    out = []
    for w in container:
        if not isinstance(w, PushButton) and not any(w is s for s in skip):
            out.extend(_fields(w, skip) if isinstance(w, Container) else [w])
    return out


def test_every_field_is_explained_in_the_docs_word_for_word(pair_viewer):
    widget = open_widget(pair_viewer, "Teach the model")
    docs = re.sub(r"\s+", " ", (ROOT / "docs" / "napari.md").read_text())
    tips = {key: re.sub(r"\s+", " ", tip) for key, tip in TEACH_HELP.items()}
    assert all(tip in docs for tip in tips.values()), [k for k, t in tips.items() if t not in docs]
    for field in _fields(widget, skip=(widget._bar, widget._status, widget.model)):
        assert field.tooltip and field.tooltip in TEACH_HELP.values(), field.label
