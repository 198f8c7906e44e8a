"""The judge's answers as a user sees them: its layers chosen by role, verdict colours not hidden,
support predictions on the support image only, and "could not judge" when its predictions missed.

The refinement runs through the docked SAM refine widget and the judge is docked
through napari's plugin menu path, after the user opened a support image and its
labels, as in the report that led to these tests.
"""

from __future__ import annotations

import numpy as np
import pytest
from _widgets import open_widget, refine_widget
from napari.utils.colormaps.standardize_color import transform_color

from _data import DSB2018
from napari_samrefine._napari.judge_layers import VERDICT_NAME_COLORS
from napari_samrefine.judge import UNJUDGED, VERDICT_CODES

pytestmark = pytest.mark.gui

TIMEOUT = 60_000


def _wait(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: widget.worker is not None and not widget.busy, timeout=TIMEOUT)


def _support(size: int = 96):
    import tifffile
    from PIL import Image

    image = np.asarray(Image.open(DSB2018 / "images" / "98c5ead89cd0.png"))[:size, :size]
    labels = tifffile.imread(DSB2018 / "labels" / "98c5ead89cd0.tif")[:size, :size].astype(np.uint16)
    return (image if image.ndim == 2 else image[..., 0]), labels


@pytest.fixture
def judged(viewer, qtbot, sam):
    refine = refine_widget(viewer, sam, iterations=1)
    refine._run_button.native.click()
    _wait(qtbot, refine)
    image, labels = _support()
    support = viewer.add_image(image, name="support")
    support_labels = viewer.add_labels(labels, name="support labels")
    judge = open_widget(viewer, "JFS judge")
    judge.model.sam = sam
    return viewer, judge, support, support_labels


def test_the_judge_picks_its_layers_by_role(judged):
    viewer, judge, support, support_labels = judged
    assert judge._image.value is viewer.layers["nuclei"], "the query image is not the support image"
    assert judge._coarse.value is viewer.layers["nuclei coarse"], "the coarse labels are not the support's"
    assert judge._refined.value is viewer.layers["nuclei coarse refined"]
    assert judge.supports.image_layer.value is support
    assert judge.supports.labels_layer.value is support_labels


def test_verdicts_stay_visible_and_predictions_stay_on_the_support_image(judged, qtbot):
    viewer, judge, support, _ = judged
    judge._masking.value, judge._k.value, judge._show_smp.value = "fm", 1, True
    judge._run_button.native.click()
    _wait(qtbot, judge)
    assert "objects:" in judge.status, judge.status
    names = [layer.name for layer in viewer.layers]
    verdicts = viewer.layers["nuclei coarse refined JFS verdicts"]
    accepted = viewer.layers["nuclei coarse refined accepted"]
    # the accepted labels lie under the verdict colours, as outlines: they hide no verdict
    assert names.index(verdicts.name) > names.index(accepted.name)
    assert accepted.contour > 0 and verdicts.visible and verdicts.opacity > 0
    # the predictions sit right above their support image, in colours no verdict has
    verdict_rgb = [transform_color(c)[0][:3] for c in VERDICT_NAME_COLORS.values()]
    for smp in ("SMP1 on support", "SMP2 on support"):
        layer = viewer.layers[smp]
        assert names.index(smp) in (names.index("support") + 1, names.index("support") + 2)
        top = np.asarray(layer.colormap.map(np.array([1.0])))[0, :3]
        assert all(np.abs(top - rgb).max() > 0.2 for rgb in verdict_rgb), (smp, top)
        np.testing.assert_array_equal(layer.translate, support.translate)
    # shown only with their image
    support.visible = False
    assert not viewer.layers["SMP1 on support"].visible and not viewer.layers["SMP2 on support"].visible
    support.visible = True
    assert viewer.layers["SMP1 on support"].visible
    # a second run keeps the order
    judge._run_button.native.click()
    _wait(qtbot, judge)
    names = [layer.name for layer in viewer.layers]
    assert names.index(verdicts.name) > names.index(accepted.name)


def test_missed_predictions_read_could_not_judge(judged, qtbot):
    viewer, judge, support, support_labels = judged
    # a support where nothing can be found: faint noise with specks of objects (both
    # predictions miss them, as when the support looks nothing like the query)
    support.data = np.random.default_rng(0).integers(0, 8, support.data.shape).astype(support.data.dtype)
    specks = np.zeros_like(support_labels.data)
    for n, (y, x) in enumerate([(20, 20), (20, 70), (70, 20), (70, 70)], start=1):
        specks[y : y + 2, x : x + 2] = n
    support_labels.data = specks
    judge._masking.value, judge._k.value = "fm", 1
    assert UNJUDGED in judge._legend.value
    judge._run_button.native.click()
    _wait(qtbot, judge)
    table = judge.last_table
    missed = table[(table[["e1", "e2"]].max(axis=1) <= 0.05) & (table["iou_coarse_refined"] < 0.95)]
    assert len(missed), "the tiny random SAM misses some support objects"
    assert (missed["verdict"] == UNJUDGED).all() and (missed["reason"] == "both-missed").all()
    assert f"{len(missed)} could not judge" in judge.status, judge.status
    verdicts = viewer.layers["nuclei coarse refined JFS verdicts"]
    lid = int(missed["label_id"].iloc[0])
    y, x = np.argwhere(np.asarray(judge.result.accepted) == lid)[0]
    assert verdicts.data[y, x] == VERDICT_CODES[UNJUDGED]
    assert f"verdict: {UNJUDGED}" in verdicts.get_status((y, x), world=True)["coordinates"]
