"""The JFS judge widget end to end in napari: layers in, table, overlay, accepted labels out."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from _data import DSB2018

pytestmark = pytest.mark.gui


def _load(name: str, size: int):
    import tifffile
    from PIL import Image

    image = np.asarray(Image.open(DSB2018 / "images" / f"{name}.png"))[:size, :size]
    labels = tifffile.imread(DSB2018 / "labels" / f"{name}.tif")[:size, :size].astype(np.uint16)
    return (image if image.ndim == 2 else image[..., 0]), labels


@pytest.fixture
def scene(make_napari_viewer):
    from napari_samrefine._napari.judge_widget import JudgeWidget
    from napari_samrefine.testing import tiny_sam

    image, truth = _load("35ca5f142a7d", 96)
    coarse = truth.copy()
    for lid in (11, 48):  # two objects the refinement "fixes"
        coarse[(truth == lid) & ~ndi.binary_erosion(truth == lid, iterations=2)] = 0
    s1, l1 = _load("98c5ead89cd0", 80)
    s2, l2 = _load("1db1cddf28e3", 96)
    viewer = make_napari_viewer()  # only after the data are read
    layers = {
        "image": viewer.add_image(image, name="query"),
        "coarse": viewer.add_labels(coarse, name="coarse"),
        "refined": viewer.add_labels(truth, name="refined"),
        "s1": viewer.add_image(s1, name="support 1"),
        "l1": viewer.add_labels(l1, name="support labels 1"),
        "s2": viewer.add_image(s2, name="support 2"),
        "l2": viewer.add_labels(l2, name="support labels 2"),
    }
    widget = JudgeWidget(viewer, sam=tiny_sam())
    viewer.window.add_dock_widget(widget)
    widget._image.value = layers["image"]
    widget._coarse.value = layers["coarse"]
    widget._refined.value = layers["refined"]
    widget.add_support_pair(layers["s1"], layers["l1"])
    widget.add_support_pair(layers["s2"], layers["l2"])
    return widget, viewer, layers


def _wait(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is not None and not widget.busy, timeout=60000)


def test_judge_widget_end_to_end(scene, qtbot, tmp_path):
    from napari_samrefine import judge_refinement
    from napari_samrefine.judge import VERDICT_CODES
    from napari_samrefine.testing import tiny_sam

    widget, viewer, layers = scene
    before = {k: np.array(v.data, copy=True) for k, v in layers.items()}
    # the user's own features on the judged layer (kept as they are, see below)
    ids = np.unique(before["refined"])[1:].astype(np.int64)
    layers["refined"].features = pd.DataFrame({"index": ids, "note": [f"cell {i}" for i in ids]})
    users_features = layers["refined"].features.copy()
    assert len(widget.supports.pair_list.choices) == 2
    widget._masking.value = "fm"
    widget._k.value = 2
    widget._tau.value = 0.05
    widget._show_smp.value = True
    widget._run_button.native.click()
    assert not widget._run_button.enabled and widget._stop_button.enabled
    _wait(qtbot, widget)

    expected = judge_refinement(
        before["image"], before["coarse"], before["refined"], [before["s1"], before["s2"]],
        [before["l1"], before["l2"]], sam=tiny_sam(), masking="fm", k=2, tau=0.05,
    )  # fmt: skip
    table = expected.table()
    # the table lands in the widget and in the accepted layer's features, keyed by label id;
    # the refined layer's own features are left alone
    pd.testing.assert_frame_equal(widget.last_table, table)
    features = viewer.layers["refined accepted"].features
    assert list(features["index"]) == list(table["label_id"])
    pd.testing.assert_frame_equal(features.reset_index(drop=True), table)
    pd.testing.assert_frame_equal(layers["refined"].features, users_features)
    # verdict overlay and accepted labels
    overlay = viewer.layers["refined JFS verdicts"].data
    for lid, verdict in zip(table["label_id"], table["verdict"], strict=True):
        assert (overlay[expected.accepted == lid] == VERDICT_CODES[verdict]).all()
    np.testing.assert_array_equal(viewer.layers["refined accepted"].data, expected.accepted)
    # SMP1 / SMP2 over each support image
    for name, support in (("support 1", "s1"), ("support 2", "s2")):
        for smp in ("SMP1", "SMP2"):
            data = viewer.layers[f"{smp} on {name}"].data
            assert data.shape == before[support].shape and 0 <= data.min() and data.max() <= 1
    assert widget._bar.value == widget._bar.max == 2 * len(table)
    assert "objects:" in widget._status.value
    # the inputs are untouched
    for key, data in before.items():
        np.testing.assert_array_equal(layers[key].data, data)
    # CSV export
    widget._csv.value = tmp_path / "jfs"
    widget._save.native.click()
    saved = pd.read_csv(tmp_path / "jfs.csv")
    assert list(saved["label_id"]) == list(table["label_id"])
    assert list(saved["verdict"]) == list(table["verdict"])
    # a second run updates the result layers instead of adding new ones
    n_layers = len(viewer.layers)
    widget._run_button.native.click()
    _wait(qtbot, widget)
    assert len(viewer.layers) == n_layers


def test_cancel_leaves_the_layers_alone(scene, qtbot):
    widget, viewer, layers = scene
    names = [layer.name for layer in viewer.layers]
    widget._masking.value = "hm"
    widget._k.value = 3
    widget._run_button.native.click()
    widget._stop_button.native.click()
    _wait(qtbot, widget)
    assert "Cancelled" in widget._status.value
    assert [layer.name for layer in viewer.layers] == names
    assert "verdict" not in layers["refined"].features


def test_missing_choices_are_reported(scene, qtbot):
    widget, viewer, layers = scene
    widget._refined.value = layers["coarse"]
    widget._run_button.native.click()
    assert widget.worker is None and "same layer" in widget._status.value
    widget._refined.value = None
    widget._run_button.native.click()
    assert "Choose the query image" in widget._status.value


@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None,
    reason="the SegGPT backend needs the optional 'transformers' package (extra 'seggpt')",
)
def test_seggpt_backend_from_a_folder(scene, qtbot, tmp_path):
    import torch
    import transformers

    config = transformers.SegGptConfig(
        image_size=(32, 16), patch_size=2, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, mlp_dim=64, merge_index=0, intermediate_hidden_state_indices=[1],
        pretrain_image_size=8, decoder_hidden_size=8, drop_path_rate=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.SegGptForImageSegmentation(config).save_pretrained(tmp_path)
    transformers.SegGptImageProcessor(size={"height": 16, "width": 16}).save_pretrained(tmp_path)
    widget, viewer, layers = scene
    widget._backend.value = "seggpt"
    assert not widget._seggpt.native.isHidden() and widget.model.native.isHidden()
    assert not widget._masking.enabled
    widget._seggpt.value = str(tmp_path)
    widget._k.value = 1
    widget._run_button.native.click()
    _wait(qtbot, widget)
    assert "objects:" in widget._status.value, widget._status.value
    assert widget.result.parameters["backend"] == "SegGptFSS"
    assert list(viewer.layers["refined accepted"].features["label_id"]) == sorted(
        set(np.unique(layers["coarse"].data)) - {0}
    )
    assert "verdict" not in layers["refined"].features


def test_stacks_are_judged_on_the_displayed_plane(make_napari_viewer):
    from napari_samrefine._napari.layers import displayed_plane

    viewer = make_napari_viewer()
    stack = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    rgb = np.random.default_rng(0).integers(0, 255, (4, 5, 6, 3), dtype=np.uint8)
    labels = viewer.add_labels(stack, translate=(10, 0, 0))
    image = viewer.add_image(rgb, rgb=True, translate=(10, 0, 0))
    flat = viewer.add_image(rgb[0, ..., 0])
    viewer.dims.set_point(0, 12)
    np.testing.assert_array_equal(displayed_plane(viewer, labels), stack[2])
    np.testing.assert_array_equal(displayed_plane(viewer, image), rgb[2])
    np.testing.assert_array_equal(displayed_plane(viewer, flat), rgb[0, ..., 0])
