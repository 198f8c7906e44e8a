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
    assert list(features["index"]) == list(range(int(table["label_id"].max()) + 1)), "row i: label i"
    judged = features.iloc[table["label_id"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(judged, table)
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
    accepted = viewer.layers["refined accepted"].features
    assert list(accepted.loc[accepted["verdict"] != "", "label_id"]) == sorted(
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


def _fields(container):
    """The widget's fields (leaves of its containers; a file field is one field)."""
    from magicgui.widgets import Container, FileEdit, ProgressBar

    from napari_samrefine._napari.status import StatusLine

    for w in container:
        if isinstance(w, ProgressBar | StatusLine):  # the run's feedback, not fields
            continue
        if isinstance(w, Container) and not isinstance(w, FileEdit):
            yield from _fields(w)
        else:
            yield w


def _docs_judge_section() -> str:
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "napari.md").read_text(encoding="utf-8")
    start = text.index("### The JFS judge widget")
    end = text.find("\n## ", start)
    return " ".join(text[start : end if end >= 0 else None].split())


def test_every_field_has_a_tooltip_and_the_docs_say_the_same(scene):
    from napari_samrefine._napari.field_help import JUDGE_HELP

    widget, _, _ = scene
    fields = list(_fields(widget))
    assert len(fields) >= 20
    missing = [f"{type(w).__name__} {w.label!r}" for w in fields if not (w.tooltip or "").strip()]
    assert not missing, missing
    # the masking tooltip explains HM, FM and IM in words; k's says the CPU default deviates
    assert all(word in widget._masking.tooltip for word in ("hybrid", "feature", "input"))
    assert "1 on a CPU" in widget._k.tooltip and "3 (JFS's k)" in widget._k.tooltip
    docs = _docs_judge_section()
    for key, tip in JUDGE_HELP.items():
        assert " ".join(tip.split()) in docs, key


def test_k_defaults_by_device(scene):
    from napari_samrefine._napari.judge_estimate import default_k

    widget, _, _ = scene
    assert default_k("cpu") == 1 and default_k("cuda:0") == default_k("mps") == 3
    assert widget._device() == "cpu" and widget._k.value == 1  # the tiny SAM runs on the CPU
    widget._k.value = 2  # the user's k is kept when the device or backend changes
    widget._backend.value = "seggpt"
    widget._backend.value = "sam"
    assert widget._k.value == 2


def test_verdicts_have_a_legend_and_names_on_hover(scene, qtbot):
    from napari_samrefine._napari.judge_layers import VERDICT_NAME_COLORS
    from napari_samrefine.judge import VERDICT_CODES

    widget, viewer, layers = scene
    legend = widget._legend.value
    for name, color in VERDICT_NAME_COLORS.items():
        assert name in legend and color in legend
    widget._masking.value = "fm"
    widget._run_button.native.click()
    _wait(qtbot, widget)
    verdicts = viewer.layers["refined JFS verdicts"]
    # the legend's colours are the layer's
    for name, color in VERDICT_NAME_COLORS.items():
        from napari.utils.colormaps.standardize_color import transform_color

        np.testing.assert_allclose(
            verdicts.colormap.map(VERDICT_CODES[name])[:3], transform_color(color)[0][:3], atol=1e-6
        )
    assert dict(zip(verdicts.features["index"], verdicts.features["verdict"], strict=True)) == {
        0: "", **{code: name for name, code in VERDICT_CODES.items()}
    }, "row i names value i (row 0: background)"
    accepted = viewer.layers["refined accepted"].data
    for lid, verdict in zip(widget.last_table["label_id"], widget.last_table["verdict"], strict=True):
        y, x = np.argwhere(accepted == lid)[0]
        status = verdicts.get_status((y, x), world=True)
        assert f"verdict: {verdict}" in status["coordinates"], (lid, status)


def _stack_scene(viewer, z=3):
    """3D query, coarse, refined and support stacks (plane ``p`` of each is the 2D scene)."""
    image, truth = _load("35ca5f142a7d", 64)
    coarse = truth.copy()
    coarse[(truth == 11) & ~ndi.binary_erosion(truth == 11, iterations=2)] = 0
    s1, l1 = _load("98c5ead89cd0", 64)
    geo = {"scale": (2.0, 1.0, 1.0), "translate": (10.0, 0.0, 0.0)}
    stack = lambda a: np.stack([a] * z)  # noqa: E731
    return {
        "image": viewer.add_image(stack(image), name="query", **geo),
        "coarse": viewer.add_labels(stack(coarse), name="coarse", **geo),
        "refined": viewer.add_labels(stack(truth), name="refined", **geo),
        "s1": viewer.add_image(stack(s1), name="support", **geo),
        "l1": viewer.add_labels(stack(l1), name="support labels", **geo),
    }


def test_stack_results_are_drawn_on_the_judged_plane_only(make_napari_viewer, qtbot):
    from napari_samrefine._napari.judge_widget import JudgeWidget
    from napari_samrefine.testing import tiny_sam

    viewer = make_napari_viewer()
    layers = _stack_scene(viewer)
    widget = JudgeWidget(viewer, sam=tiny_sam())
    viewer.window.add_dock_widget(widget)
    widget._image.value, widget._coarse.value = layers["image"], layers["coarse"]
    widget._refined.value = layers["refined"]
    widget.add_support_pair(layers["s1"], layers["l1"])
    widget._masking.value, widget._show_smp.value = "fm", True
    names = {layer.name for layer in viewer.layers}
    for plane in (1, 2):  # judge plane 1, then plane 2: the same layers move there
        viewer.dims.set_point(0, 10 + 2 * plane)  # world z of the plane (scale 2, translate 10)
        widget._run_button.native.click()
        _wait(qtbot, widget)
        assert "objects:" in widget.status, widget.status
        added = {layer.name for layer in viewer.layers} - names
        assert added == {"refined JFS verdicts", "refined accepted", "SMP1 on support",
                         "SMP2 on support"}  # fmt: skip
        accepted = viewer.layers["refined accepted"]
        np.testing.assert_array_equal(accepted.data[0], widget.result.accepted)
        y, x = np.argwhere(widget.result.accepted > 0)[0]
        assert accepted.get_value((10 + 2 * plane, y, x), world=True) == widget.result.accepted[y, x]
        for name in added:  # one plane deep, at the judged plane
            layer = viewer.layers[name]
            assert layer.data.shape[0] == 1 and layer.data.ndim == 3
            assert layer.get_value((10 + 2 * plane, y, x), world=True) is not None, name
            assert np.round(layer.world_to_data((10 + 2 * plane, y, x))[0]) == 0
        for other in {0, 1, 2} - {plane}:  # the viewer on another plane: nothing shown there
            viewer.dims.set_point(0, 10 + 2 * other)
            assert layers["refined"].get_value((10 + 2 * other, y, x), world=True) > 0
            for name in added:
                layer = viewer.layers[name]
                assert layer.get_value((10 + 2 * other, y, x), world=True) is None, (name, other)
                assert np.round(layer.world_to_data((10 + 2 * other, y, x))[0]) != 0


def test_selected_label_scope(scene, qtbot):
    widget, viewer, layers = scene
    widget._scope.value = "selected label"
    layers["refined"].selected_label = 999
    widget._run_button.native.click()
    assert widget.worker is None
    assert "label 999" in widget.status and "neither 'coarse' nor 'refined'" in widget.status
    layers["refined"].selected_label = 0
    widget._run_button.native.click()
    assert widget.worker is None and "background" in widget.status
    layers["refined"].selected_label = 11
    widget._masking.value = "fm"
    widget._run_button.native.click()
    _wait(qtbot, widget)
    assert list(widget.last_table["label_id"]) == [11]
    accepted = viewer.layers["refined accepted"].features
    assert list(accepted.loc[accepted["verdict"] != "", "label_id"]) == [11]


def test_before_the_run_the_status_says_what_is_known_and_a_timed_pass(scene, qtbot):
    from napari_samrefine.testing import tiny_sam

    widget, viewer, layers = scene
    widget.model.sam = tiny_sam(seed=11, encoder_depth=3)  # no pass of this model timed yet
    n = len(np.unique(layers["coarse"].data)) - 1
    supports = sum(len(np.unique(layers[k].data)) - 1 for k in ("l1", "l2"))
    widget._k.value = 2
    head = f"Judging {n} objects, each against 2 support objects (of {supports} in 2 support pairs)."
    qtbot.waitUntil(lambda: widget.status.startswith(head), timeout=5000)
    assert "pass of this model" not in widget.status  # nothing timed: no time is guessed
    assert "time left shows once the first object is judged" in widget.status
    widget._masking.value = "fm"
    widget._run_button.native.click()
    _wait(qtbot, widget)
    assert "objects:" in widget.status and "judged in" in widget.status
    # the run timed its encoder passes: the text before the next run says how long one took
    widget._k.value = 1
    qtbot.waitUntil(lambda: "An encoder pass of this model took about" in widget.status, timeout=5000)
    assert widget.status.startswith(f"Judging {n} objects, each against 1 support object (of ")
    # another model (even one of the same size) has no timed pass
    widget.model.sam = tiny_sam(seed=12, encoder_depth=3)
    widget._k.value = 2
    qtbot.waitUntil(lambda: widget.status.startswith(head), timeout=5000)
    assert "pass of this model" not in widget.status
    # the selected label: one object
    widget._scope.value = "selected label"
    layers["refined"].selected_label = 11
    qtbot.waitUntil(lambda: widget.status.startswith("Judging 1 object, each against"), timeout=5000)


def test_time_left_shows_during_the_run_and_decreases(scene, qtbot):
    widget, viewer, layers = scene
    widget._masking.value = "fm"
    shown = []
    widget.progressed.connect(lambda done, total, message: shown.append(message))
    widget._run_button.native.click()
    _wait(qtbot, widget)
    during = [text for text in shown if text.startswith("JFS: object")]
    assert during and all(text.endswith(" left)") for text in during[:-1]), during[:3]
    assert widget.clock.seconds_left == 0 and widget.status.startswith(f"{len(widget.last_table)} objects")


def test_time_left_is_the_pace_so_far_times_what_is_left():
    from napari_samrefine import judge_refinement
    from napari_samrefine._napari.judge_estimate import TimeLeft
    from napari_samrefine.testing import tiny_sam

    image, truth = _load("35ca5f142a7d", 96)
    coarse = ndi.grey_erosion(truth, size=3)
    clock, left = TimeLeft(), []

    def progress(done: int, total: int, message: str) -> None:
        clock.step(done, total)
        left.append((done, total, clock.seconds_left, clock.text(message)))

    judge_refinement(image, coarse, truth, image, truth, sam=tiny_sam(), masking="fm", k=1,
                     progress=progress)  # fmt: skip
    total = left[0][1]
    assert [d for d, *_ in left] == list(range(total + 1)) and total > 3
    assert left[0][2] is None and left[0][3].startswith("JFS: judging")  # nothing measured yet
    seconds = [s for _, _, s, _ in left[1:]]
    assert seconds[0] > seconds[-2] > seconds[-1] == 0  # measured after the first object
    assert left[1][3].endswith(" left)")

    # the arithmetic, on a clock that ticks 2 s per call
    ticks = iter(range(0, 100, 2))
    clock = TimeLeft(now=lambda: float(next(ticks)))
    clock.step(0, 10)  # t=0: the judge starts
    clock.step(1, 10)  # t=2: one evaluation took 2 s, 9 left
    assert clock.seconds_left == 18 and clock.text("x") == "x (about 20 s left)"
    clock.step(5, 10)  # t=4
    assert clock.seconds_left == 4 and clock.text("x") == "x (under 10 s left)"
    clock.step(10, 10)
    assert clock.seconds_left == 0 and clock.text("x") == "x"


@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None,
    reason="the SegGPT backend needs the optional 'transformers' package (extra 'seggpt')",
)
def test_seggpt_without_the_model_fails_at_once_in_one_sentence(scene, qtbot):
    import time

    widget, viewer, layers = scene
    names = [layer.name for layer in viewer.layers]
    widget._backend.value = "seggpt"
    widget._seggpt.value = "napari-samrefine-tests/not-downloaded-seggpt"
    start = time.monotonic()
    widget._run_button.native.click()
    _wait(qtbot, widget)
    assert time.monotonic() - start < 15
    status = widget.status
    assert "not in the local Hugging Face cache" in status and "save_pretrained" in status
    assert "\n" not in status and status.count(". ") == 0 and status.endswith(".")
    assert [layer.name for layer in viewer.layers] == names
