"""The refine widget's keep, object scale and "model default" iterations, and the estimates
(iou_coarse, stability, edge_contrast) in the result layer's features."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from _widgets import open_widget, refine_widget

import napari_samrefine as nsr
from napari_samrefine._napari.layers import features_table
from napari_samrefine.models.profile import SAM_PROFILE, set_model_profile
from napari_samrefine.pipeline.options import RefineOptions

pytestmark = pytest.mark.gui

ESTIMATES = ["iou_coarse", "stability", "edge_contrast"]


def test_the_fields_hand_refine_none_for_the_model_default_a_keep_policy_and_a_scale(viewer, sam):
    widget = refine_widget(viewer, sam, iterations=0, keep="better", scale="2")
    assert widget.iterations.native.currentText() == "model default" and widget.scale.native.currentText() == "2x"
    kwargs = widget.refine_kwargs()
    assert (kwargs["iterations"], kwargs["keep"], kwargs["scale"]) == (None, "better", 2.0)
    widget.keep.value, widget.scale.value = "model default", "none"
    kwargs = widget.refine_kwargs()
    assert (kwargs["keep"], kwargs["scale"]) == (None, None)
    RefineOptions(**kwargs)  # what the widget builds, refine accepts


def test_a_run_with_keep_better_names_the_kept_objects_and_shows_the_estimates(viewer, qtbot, sam):
    image = viewer.layers["nuclei"].data
    coarse = viewer.layers["nuclei coarse"].data.copy()
    cache = nsr.EmbeddingCache()
    # a threshold between the tiny random SAM's agreements splits the objects in two
    free = nsr.refine(image, coarse, sam, iterations=2, scale=2.0, keep="refined",
                      embedding_cache=cache).table()
    threshold = float(free["iou_coarse"].median())
    profile = replace(SAM_PROFILE, defaults=replace(SAM_PROFILE.defaults, keep_min_iou=threshold))
    set_model_profile(sam, profile)
    try:
        widget = refine_widget(viewer, sam, keep="better", scale="2")
        widget._run_button.native.click()
        qtbot.waitUntil(lambda: widget.worker is not None and not widget.busy, timeout=60_000)
        expected = nsr.refine(image, coarse, sam, iterations=2, scale=2.0, keep="better",
                              embedding_cache=cache)
    finally:
        set_model_profile(sam, None)
    refined = viewer.layers["nuclei coarse refined"]
    np.testing.assert_array_equal(refined.data, expected.labels)
    table = expected.table()
    kept = table[table["status"] == "kept-coarse"]
    assert 0 < len(kept) < len(table)
    assert f"{len(kept)} objects kept their coarse mask" in widget.status, widget.status
    # the estimate and the decision, per label, in the layer's features
    features = refined.features.set_index("index")
    assert set(ESTIMATES) <= set(features.columns)
    by_id = table.set_index("label_id")
    pd.testing.assert_frame_equal(features.loc[by_id.index, ESTIMATES], by_id[ESTIMATES],
                                  check_names=False)
    assert (features.loc[kept["label_id"], "status"] == "kept-coarse").all()
    assert (features.loc[kept["label_id"], "iou_coarse"] < threshold).all()


def test_a_label_on_several_planes_gets_the_mean_estimates():
    nan = float("nan")
    table = pd.DataFrame({
        "label_id": [1, 1, 2], "plane": [0, 1, 0], "status": ["ok", "kept-coarse", "skipped"],
        "predicted_iou": [0.8, 0.6, nan], "iterations": [1, 1, 0], "coarse_area": [10, 12, 5],
        "refined_area": [11, 40, 5], "group": [0, 0, 0], "iou_coarse": [0.9, 0.3, nan],
        "stability": [0.8, 0.4, nan], "edge_contrast": [0.02, -0.04, nan],
    })  # fmt: skip
    features = features_table(table).set_index("index")
    assert features.loc[1, ESTIMATES].tolist() == pytest.approx([0.6, 0.6, -0.01])
    assert features.loc[2, ESTIMATES].isna().all()


def test_the_tooltips_name_the_chosen_models_defaults(viewer):
    widget = open_widget(viewer, "SAM refine")
    widget.model._model.value = "vit_b"
    assert widget.iterations.tooltip.endswith("This model's default: 5 iterations.")
    assert widget.keep.tooltip.endswith("This model's default: refined.")
    assert "'auto' shows it the image as 'none' does" in widget.scale.tooltip
    widget.model._model.value = "medsam_lite"
    assert widget.iterations.tooltip.endswith("This model's default: 1 iteration.")
    assert widget.keep.tooltip.endswith("This model's default: better.")
    assert widget.scale.tooltip.endswith(
        "This model's default: 'auto' zooms each object to 64-128 px of its input (at most 2x).")
