"""Coarse-mask synthesis (SPEC section 7) on real DSB2018 nuclei."""

import numpy as np
import pytest

from napari_samrefine.evaluation.defects import synthesize_coarse_labels
from napari_samrefine.evaluation.metrics import iou, object_ious


def test_every_object_lands_in_the_window_on_fluorescence(dsb_pair):
    image, labels = dsb_pair
    before = labels.copy()
    coarse = synthesize_coarse_labels(image, labels, iou_range=(0.75, 0.85), seed=0)
    assert np.array_equal(labels, before)  # input untouched
    assert coarse.labels.shape == labels.shape and coarse.labels.dtype == labels.dtype
    assert coarse.label_ids.tolist() == np.unique(labels)[1:].tolist()
    assert coarse.in_window.all()
    assert ((coarse.ious >= 0.75) & (coarse.ious <= 0.85)).all()
    # the reported IoUs are those of the objects as written
    assert np.allclose(object_ious(coarse.labels, labels).iou, coarse.ious)
    assert not np.array_equal(coarse.labels, labels)


def test_window_on_stained_rgb_and_another_window(stained_pair):
    image, labels = stained_pair
    coarse = synthesize_coarse_labels(image, labels, iou_range=(0.6, 0.7), seed=3)
    assert coarse.in_window.all()
    assert ((coarse.ious >= 0.6) & (coarse.ious <= 0.7)).all()


def test_coarse_objects_never_take_other_objects_pixels(dsb_pair):
    image, labels = dsb_pair
    coarse = synthesize_coarse_labels(image, labels, seed=1).labels
    taken = coarse > 0
    # a coarse pixel lies on its own true object or on true background
    assert np.all((labels[taken] == coarse[taken]) | (labels[taken] == 0))
    # some coarse objects did grow into the background (defects of the background zone)
    assert np.any(taken & (labels == 0))


def test_same_seed_same_result_other_seed_other_result(stained_pair):
    image, labels = stained_pair
    a = synthesize_coarse_labels(image, labels, seed=7)
    b = synthesize_coarse_labels(image, labels, seed=7)
    c = synthesize_coarse_labels(image, labels, seed=8)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.ious, b.ious)
    assert not np.array_equal(a.labels, c.labels)


def test_an_objects_defects_do_not_depend_on_other_objects(dsb_pair):
    image, labels = dsb_pair
    ids = np.unique(labels)[1:]
    lonely = next(i for i in ids if not np.any((labels != i) & (labels > 0) & _near(labels == i, 40)))
    alone = np.where(labels == lonely, labels, 0)
    full = synthesize_coarse_labels(image, labels, seed=0).labels == lonely
    single = synthesize_coarse_labels(image, alone, seed=0).labels == lonely
    assert np.array_equal(full, single)


def _near(mask, r):
    from scipy import ndimage as ndi

    return ndi.distance_transform_edt(~mask) <= r


def test_unreachable_window_returns_the_closest_attempt_and_says_so():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 40), dtype=np.uint8)
    labels = np.zeros((40, 40), np.uint8)
    labels[20, 20] = 1  # a one-pixel object: its IoU is 1, 1/2, 1/3, ... never in [0.75, 0.85]
    labels[5:15, 5:15] = 2
    coarse = synthesize_coarse_labels(image, labels, seed=0)
    assert coarse.in_window.tolist() == [False, True]
    assert coarse.ious[0] == 1.0  # the truth itself is closest to the window
    assert iou(coarse.labels == 1, labels == 1) == coarse.ious[0]


def test_single_mask(dsb_pair):
    image, labels = dsb_pair
    mask = labels == 5
    coarse = synthesize_coarse_labels(image, mask.astype(np.uint8), seed=0)
    assert coarse.labels.shape == mask.shape and coarse.label_ids.tolist() == [1]
    value = coarse.ious[0]
    assert 0.75 <= value <= 0.85 and value == pytest.approx(iou(coarse.labels == 1, mask))


def test_bad_input_is_explained(dsb_pair):
    image, labels = dsb_pair
    with pytest.raises(ValueError, match="iou_range"):
        synthesize_coarse_labels(image, labels, iou_range=(0.9, 0.8))
    with pytest.raises(ValueError, match="must be a 2D image"):
        synthesize_coarse_labels(image, np.stack([labels, labels]))
    with pytest.raises(ValueError, match="differ in size"):
        synthesize_coarse_labels(image[:100], labels)
    empty = synthesize_coarse_labels(image, np.zeros_like(labels))
    assert not empty.labels.any() and len(empty.ious) == 0
