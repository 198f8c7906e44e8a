"""refine's keep= policy: "refined" is today's behaviour, "better" keeps coarse masks the
refinement disagrees with (napari_samrefine.quality.keep)."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest

import napari_samrefine as nsr
from napari_samrefine.engine.embedding import embed_image
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.evaluation.defects import synthesize_coarse_labels
from napari_samrefine.labels.iou import crop_iou
from napari_samrefine.labels.objects import ObjectMask, objects_from_labels
from napari_samrefine.models.profile import SAM_PROFILE, set_model_profile
from napari_samrefine.pipeline.options import RefineOptions
from napari_samrefine.quality.keep import keep_objects
from napari_samrefine.samrefiner.cascade import ObjectState, run_cascade
from napari_samrefine.samrefiner.writeback import write_back


@pytest.fixture(scope="module")
def pair(dsb_pair):
    image, truth = dsb_pair
    image, truth = image[:128, :128].copy(), truth[:128, :128].copy()
    return image, synthesize_coarse_labels(image, truth, seed=0).labels


def test_keep_refined_is_todays_refine(sam, pair):
    image, coarse = pair
    cache = nsr.EmbeddingCache()
    today = nsr.refine(image, coarse, sam, iterations=2, embedding_cache=cache)
    kept = nsr.refine(image, coarse, sam, iterations=2, embedding_cache=cache, keep="refined")
    np.testing.assert_array_equal(today.labels, kept.labels)
    assert today.table().equals(kept.table())
    # the default is the model's: "refined" for SAM (not measured), "better" for LiteMedSAM
    assert RefineOptions().keep is None
    assert RefineOptions().model_defaults(sam).keep == "refined"


def test_keep_better_keeps_the_coarse_masks_that_the_refinement_disagrees_with(sam, dsb_pair):
    image, truth = dsb_pair
    coarse = synthesize_coarse_labels(image, truth, seed=0).labels
    # the tiny random SAM's masks barely meet the coarse ones (IoU 0 to 0.01): a threshold
    # between them splits the objects into both kinds
    # (through the model's profile, where refine takes the threshold from)
    set_model_profile(sam, replace(SAM_PROFILE, defaults=replace(SAM_PROFILE.defaults, keep_min_iou=0.005)))
    try:
        result = nsr.refine(image, coarse, sam, iterations=1, keep="better",
                            embedding_cache=nsr.EmbeddingCache())
    finally:
        set_model_profile(sam, None)
    # the same cascade, run directly: which objects agree with their coarse mask
    objects = objects_from_labels(coarse)
    states = run_cascade(sam, embed_image(sam, to_sam_rgb(image)), objects,
                         RefineOptions().prompt_settings(sam), iterations=1)
    agree = {s.coarse.label_id: crop_iou(s.coarse, s.mask) for s in states if s.status == "ok"}
    table = result.table().set_index("label_id")
    rejected = [lid for lid, v in agree.items() if v < 0.005]
    accepted = [lid for lid, v in agree.items() if v >= 0.005]
    assert rejected and accepted  # both kinds are present
    assert (table.loc[rejected, "status"] == "kept-coarse").all()
    assert (table.loc[accepted, "status"] == "ok").all()
    for lid in rejected:  # the coarse mask exactly, and the rejected mask's area on record
        np.testing.assert_array_equal(result.labels == lid, coarse == lid)
        state = next(s for s in states if s.coarse.label_id == lid)
        assert table.loc[lid, "refined_area"] == state.mask.area
    # the objects refined as usual are written back by the usual rule
    expected = write_back(coarse, keep_objects(states, "better", 0.005))
    np.testing.assert_array_equal(result.labels, expected)


def test_keep_objects_by_hand():
    image_shape = (12, 12)
    coarse = ObjectMask(3, np.ones((4, 4), bool), (2, 2), image_shape)
    moved = ObjectMask(3, np.ones((4, 4), bool), (2, 4), image_shape)  # IoU 8 / 24 = 1/3
    state = ObjectState(coarse=coarse, mask=moved, status="ok", iterations=1)
    assert keep_objects([state], "refined")[0] is state
    (out,) = keep_objects([state], "better")
    assert out.status == "kept-coarse" and out.mask is moved and state.status == "ok"
    assert keep_objects([state], "better", min_iou=0.3)[0] is state
    labels = np.zeros(image_shape, np.uint8)
    labels[2:6, 2:6] = 3
    np.testing.assert_array_equal(write_back(labels, [out]), labels)
    with pytest.raises(ValueError, match="keep must be"):
        keep_objects([state], "best")


def test_a_bad_keep_value_is_refused_before_any_work():
    with pytest.raises(ValueError, match="keep must be 'refined'.*got 'coarse'"):
        nsr.refine(np.zeros((16, 16), np.uint8), np.ones((16, 16), np.uint8), "no_such_model",
                   keep="coarse")


def test_the_summary_says_which_objects_kept_their_coarse_mask():
    import pandas as pd

    from napari_samrefine.samrefiner.summary import refine_summary

    table = pd.DataFrame({
        "label_id": [1, 2, 3], "plane": [None] * 3, "status": ["ok", "kept-coarse", "kept-coarse"],
        "predicted_iou": [0.9] * 3, "iterations": [1] * 3, "coarse_area": [10] * 3,
        "refined_area": [11, 40, 2], "group": [0] * 3,
    })
    headline, notes = refine_summary(table)
    assert headline == "1 object refined (id 1)"
    assert any(n.startswith("2 objects kept their coarse mask") and "ids 2, 3" in n for n in notes)


def test_an_explosion_is_never_kept_silently(sam, dsb_pair):
    """The tiny random SAM's masks spread over the background: refine says so, or keeps the coarse."""
    from napari_samrefine.samrefiner.summary import GROWTH_WARNING, GrowthWarning

    image, truth = dsb_pair
    cache = nsr.EmbeddingCache()
    with pytest.warns(GrowthWarning) as caught:
        kept = nsr.refine(image, truth, sam, iterations=1, keep="refined", embedding_cache=cache)
    table = kept.table()
    grew = table[table.refined_area > GROWTH_WARNING * table.coarse_area].label_id.tolist()
    assert grew and len(caught) == 1
    message = str(caught[0].message)
    assert f"{len(grew)} objects grew more than 4x" in message and "keep='better'" in message
    assert f"ids {grew[0]}, {grew[1]}" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error", GrowthWarning)
        better = nsr.refine(image, truth, sam, iterations=1, keep="better", embedding_cache=cache)
    statuses = better.table().set_index("label_id").status
    assert (statuses.loc[grew] == "kept-coarse").all()
    for lid in grew:
        np.testing.assert_array_equal(better.labels == lid, truth == lid)


def test_size_warnings_name_objects_of_2d_3d_and_4d_planes():
    import pandas as pd

    from napari_samrefine.samrefiner.summary import size_warnings

    rows = [dict(label_id=5, plane=plane, status="ok", coarse_area=10, refined_area=80)
            for plane in (None, 2, (1, 3))]
    assert size_warnings(pd.DataFrame(rows[:1]))[0] == "1 object grew more than 4x (id 5): check it."
    assert "(id 5 (plane 2))" in size_warnings(pd.DataFrame(rows[1:2]))[0]
    assert "(id 5 (plane 1, 3))" in size_warnings(pd.DataFrame(rows[2:]))[0]
