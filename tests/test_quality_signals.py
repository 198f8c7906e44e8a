"""Label-free quality signals of refined objects (napari_samrefine.quality.signals)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_samrefine.engine.embedding import embed_image
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.evaluation.defects import synthesize_coarse_labels
from napari_samrefine.labels.iou import crop_iou
from napari_samrefine.labels.objects import ObjectMask, objects_from_labels
from napari_samrefine.quality.signals import (
    SIGNALS,
    ObjectSignals,
    inner_boundary,
    object_signals,
    plane_signals,
    stability_score,
    state_signals,
)
from napari_samrefine.samrefiner.cascade import (
    REFINED_STATUSES,
    ObjectState,
    PromptSettings,
    run_cascade,
)


def disk(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_identical_masks_agree_fully():
    m = disk((40, 40), (20, 20), 8)
    s = object_signals(np.random.default_rng(0).integers(0, 255, (40, 40), np.uint8), m, m, predicted_iou=0.9)
    assert s.iou_coarse == 1.0 and s.area_ratio == 1.0 and s.edge_contrast == 0.0
    assert s.predicted_iou == pytest.approx(0.9) and math.isnan(s.stability)
    assert list(s.as_dict())[1:] == list(SIGNALS)


def test_half_overlap_and_area_ratio_by_hand():
    coarse = np.zeros((10, 10), bool)
    coarse[0:4, 0:4] = True  # 16 px
    refined = np.zeros((10, 10), bool)
    refined[0:4, 2:8] = True  # 24 px, 8 shared
    s = object_signals(np.zeros((10, 10)), coarse, refined)
    assert s.iou_coarse == pytest.approx(8 / 32)
    assert s.area_ratio == pytest.approx(24 / 16)


def test_the_true_edge_of_a_bright_disk_has_more_contrast_than_a_mask_inside():
    shape = (64, 64)
    truth = disk(shape, (32, 32), 14)
    image = np.where(truth, 200, 30).astype(np.uint8)
    coarse = disk(shape, (32, 32), 10)  # shrunk inside: its boundary sees flat intensity
    on_edge = object_signals(image, coarse, truth)
    inside = object_signals(image, coarse, disk(shape, (32, 32), 9))
    assert on_edge.edge_contrast > 0.3  # the disk's step is 170/255 = 0.67
    assert inside.edge_contrast == pytest.approx(0.0, abs=1e-12)
    # the other way round: a refinement that left the true edge loses contrast
    assert object_signals(image, truth, coarse).edge_contrast == pytest.approx(-on_edge.edge_contrast)


def test_stability_of_a_sharp_and_a_soft_edge_by_hand():
    x = np.arange(20, dtype=np.float32)
    # logits fall across columns: positive left of x0 = 10.5, negative right of it
    sharp = np.tile(10.0 * (10.5 - x), (5, 1))  # +-5, +-15, ...: none within (-1, 1]
    soft = np.tile(0.25 * (10.5 - x), (5, 1))
    assert stability_score(sharp) == 1.0
    # > +1 where x < 6.5 (7 columns), > -1 where x < 14.5 (15 columns)
    assert stability_score(soft) == pytest.approx(7 / 15)
    mask = sharp > 0
    assert object_signals(np.zeros((5, 20)), mask, mask, logits=soft).stability == pytest.approx(7 / 15)
    assert math.isnan(stability_score(np.full((3, 3), -5.0)))
    # unknown logits (NaN) are not counted
    assert stability_score(np.where(x < 15, soft, np.nan)) == pytest.approx(7 / 15)


def test_boundary_counts_the_array_border_as_outside():
    m = np.ones((4, 4), bool)
    assert inner_boundary(m).sum() == 12


def test_plane_signals_equal_full_image_signals(stained_pair):
    image, truth = stained_pair
    coarse = synthesize_coarse_labels(image, truth, seed=0).labels
    objects = objects_from_labels(coarse)
    refined = [ObjectMask.from_full(truth == o.label_id, o.label_id) for o in objects]
    rng = np.random.default_rng(1)
    logits = [rng.normal(0, 2, image.shape[:2]).astype(np.float32) for _ in objects]
    ious = rng.uniform(0, 1, len(objects))
    fast = plane_signals(
        image, objects, refined,
        logits=[(lg[o.bbox[0] : o.bbox[2], o.bbox[1] : o.bbox[3]], o.offset)
                for lg, o in zip(logits, refined, strict=True)],
        predicted_iou=ious,
    )
    assert len(fast) == len(objects) > 5
    touching = 0
    for f, c, r, lg, piou in zip(fast, objects, refined, logits, ious, strict=True):
        y0, x0, y1, x1 = r.bbox
        only_box = np.full(image.shape[:2], np.nan, np.float32)
        only_box[y0:y1, x0:x1] = lg[y0:y1, x0:x1]
        full = object_signals(image, c.to_image(), r.to_image(), only_box, piou, label_id=c.label_id)
        touching += min(*c.bbox[:2], image.shape[0] - c.bbox[2], image.shape[1] - c.bbox[3]) == 0
        assert f.label_id == full.label_id
        for name in SIGNALS:
            assert getattr(f, name) == pytest.approx(getattr(full, name), rel=1e-12, abs=1e-12), name
    assert touching  # objects at the image border are among them


def test_state_signals_from_a_cascade(sam, dsb_pair):
    image, truth = dsb_pair
    image, truth = image[:96, :96], truth[:96, :96]
    coarse = synthesize_coarse_labels(image, truth, seed=0).labels
    objects = objects_from_labels(coarse)
    rgb = to_sam_rgb(image)
    states = run_cascade(sam, embed_image(sam, rgb), objects, PromptSettings(), iterations=2)
    signals = state_signals(rgb, states)
    assert [s.label_id for s in signals] == [o.label_id for o in objects]
    refined = 0
    for s, st in zip(signals, states, strict=True):
        assert isinstance(s, ObjectSignals)
        if st.status in REFINED_STATUSES:
            refined += 1
            assert s.iou_coarse == pytest.approx(crop_iou(st.coarse, st.mask))
            assert s.area_ratio == pytest.approx(st.mask.area / st.coarse.area)
            assert s.predicted_iou == pytest.approx(st.predicted_iou)
            assert s.stability == pytest.approx(stability_score(st.region_logits()))
            assert 0 <= s.stability <= 1
        else:
            assert s.iou_coarse == 1.0 and math.isnan(s.stability)
    assert refined > 0
    # an object left as it was (the first output empty) agrees with itself
    kept = ObjectState(coarse=objects[0], mask=objects[0], status="empty-output", iterations=1)
    (s,) = state_signals(rgb, [kept])
    assert (s.iou_coarse, s.area_ratio, s.edge_contrast) == (1.0, 1.0, 0.0)
    assert math.isnan(s.predicted_iou) and math.isnan(s.stability)


def test_bad_inputs_name_the_problem():
    m = np.zeros((8, 8), bool)
    with pytest.raises(ValueError, match="image's shape"):
        object_signals(np.zeros((9, 9)), m, m)
    with pytest.raises(ValueError, match="logits"):
        object_signals(np.zeros((8, 8)), m, m, logits=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="grey or"):
        object_signals(np.zeros((2, 8, 8)), m, m)
    o = ObjectMask.from_full(m | np.eye(8, dtype=bool))
    with pytest.raises(ValueError, match="one each"):
        plane_signals(np.zeros((8, 8)), [o], [])
    with pytest.raises(ValueError, match="differ"):
        plane_signals(np.zeros((9, 9)), [o], [o])
