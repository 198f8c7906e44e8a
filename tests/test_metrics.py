"""IoU, boundary IoU, mIoU and object matching against hand-computed values."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_samrefine.evaluation.metrics import (
    boundary_iou,
    boundary_width,
    class_ious,
    mask_boundary,
    match_objects,
    mean_iou,
    object_ious,
)
from napari_samrefine.evaluation.metrics import (
    iou as mask_iou,
)


def square(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_iou_hand_computed():
    assert mask_iou(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0])) == pytest.approx(1 / 3)
    a = square((10, 10), 0, 4, 0, 4)  # 16 px
    b = square((10, 10), 2, 6, 2, 6)  # 16 px, overlap 2 x 2
    assert mask_iou(a, b) == pytest.approx(4 / 28)
    assert mask_iou(a, a) == 1.0


def test_empty_masks_convention():
    empty = np.zeros((5, 5), bool)
    full = np.ones((5, 5), bool)
    assert mask_iou(empty, empty) == 1.0
    assert mask_iou(empty, full) == 0.0
    assert boundary_iou(empty, empty) == 1.0
    assert boundary_iou(empty, full) == 0.0


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="different shapes"):
        mask_iou(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="different shapes"):
        boundary_iou(np.zeros((3, 3)), np.zeros((3, 4)))


def test_boundary_width_is_two_percent_of_the_diagonal():
    assert boundary_width((100, 100)) == 3  # round(0.02 * 141.4) = 3
    assert boundary_width((10, 10)) == 1  # never below 1
    assert boundary_width((1000, 1000)) == 28
    with pytest.raises(ValueError, match="positive"):
        boundary_width((10, 10), 0)


def test_boundary_iou_hand_computed():
    # 100 x 100 image: d = 3; a 10 x 10 square's band is 100 - 4 * 4 = 84 pixels
    a = square((100, 100), 20, 30, 20, 30)
    b = square((100, 100), 20, 30, 21, 31)  # shifted one column
    assert np.count_nonzero(mask_boundary(a, 3)) == 84
    # bands overlap on the 10 x 9 common part minus the two interiors there (4 x 5)
    assert boundary_iou(a, b) == pytest.approx(70 / 98)
    assert mask_iou(a, b) == pytest.approx(90 / 110)


def test_image_border_counts_as_background():
    full = np.ones((20, 20), bool)
    band = mask_boundary(full, 2)
    assert band[:2].all() and band[-2:].all() and band[:, :2].all()
    assert not band[2:-2, 2:-2].any()


def _reference_boundary(mask, d):
    eroded = ndi.binary_erosion(mask, structure=np.ones((3, 3)), iterations=d, border_value=0)
    return mask & ~eroded


@pytest.mark.parametrize("seed", range(5))
def test_cropped_boundary_iou_equals_whole_image(seed):
    rng = np.random.default_rng(seed)
    shape = (90, 130)
    a = ndi.binary_opening(rng.random(shape) > 0.6, iterations=1)
    a[:15] = False
    a[:, 100:] = False  # masks away from some borders and touching others
    b = ndi.binary_dilation(a, iterations=2) & (rng.random(shape) > 0.1)
    d = boundary_width(shape)
    ba, bb = _reference_boundary(a, d), _reference_boundary(b, d)
    expected = np.count_nonzero(ba & bb) / np.count_nonzero(ba | bb)
    assert boundary_iou(a, b) == pytest.approx(expected)
    assert np.array_equal(mask_boundary(a, d), ba)


def test_class_ious_and_mean_iou_hand_computed():
    pred = np.array([[1, 1], [2, 0]])
    true = np.array([[1, 2], [2, 0]])
    assert class_ious(pred, true) == {1: 0.5, 2: 0.5}
    assert mean_iou(pred, true) == pytest.approx(0.5)
    # background: pred 0 at (1, 1) only, true 0 at (1, 1) only
    assert class_ious(pred, true, include_background=True)[0] == 1.0
    assert mean_iou(pred, true, include_background=True) == pytest.approx(2 / 3)
    pred3 = pred.copy()
    pred3[1, 1] = 3  # a class the truth lacks scores 0
    assert mean_iou(pred3, true) == pytest.approx(1 / 3)
    assert mean_iou(np.zeros((2, 2), int), np.zeros((2, 2), int)) == 1.0


def test_labels_must_be_integers_and_non_negative():
    with pytest.raises(ValueError, match="must hold integers"):
        mean_iou(np.zeros((2, 2), float), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="negative"):
        match_objects(np.full((2, 2), -1), np.zeros((2, 2), int))


def test_match_objects_hungarian():
    true = np.zeros((10, 20), np.uint16)
    true[0:4, 0:4] = 1  # 16 px
    true[0:4, 10:14] = 2  # 16 px
    true[6:9, 16:19] = 3  # missed
    pred = np.zeros_like(true)
    pred[0:4, 0:3] = 7  # 12 px inside true 1 -> IoU 12/16
    pred[0:4, 11:15] = 5  # overlaps true 2 by 12 px -> IoU 12/20
    pred[8:10, 0:2] = 9  # false positive
    m = match_objects(pred, true)
    order = np.argsort(m.true_ids)
    assert m.true_ids[order].tolist() == [1, 2]
    assert m.pred_ids[order].tolist() == [7, 5]
    assert m.ious[order] == pytest.approx([0.75, 0.6])
    assert m.unmatched_true.tolist() == [3]
    assert m.unmatched_pred.tolist() == [9]
    strict = match_objects(pred, true, threshold=0.7)
    assert strict.true_ids.tolist() == [1] and strict.unmatched_pred.tolist() == [5, 9]


def test_match_objects_picks_the_best_assignment_below_one_half():
    # true 1 overlaps pred 1 (IoU 4/15) and pred 2 (3/10); true 2 overlaps only pred 1
    # (5/14): the assignment maximising the sum is (1-2, 2-1), not (1-1)
    true = np.zeros((1, 100), int)
    pred = np.zeros((1, 100), int)
    true[0, 0:10] = 1
    pred[0, 0:4] = 1  # 4 px of true 1 ...
    pred[0, 10:15] = 1  # ... plus 5 px of true 2 -> IoU(t1, p1) = 4/15, IoU(t2, p1) = 5/14
    true[0, 10:20] = 2
    pred[0, 4:7] = 2  # IoU(t1, p2) = 3/10
    m = match_objects(pred, true, threshold=0.25)
    pairs = dict(zip(m.true_ids.tolist(), m.pred_ids.tolist(), strict=True))
    assert pairs == {1: 2, 2: 1}
    assert sorted(m.ious) == pytest.approx(sorted([3 / 10, 5 / 14]))


def test_object_ious_by_id_and_by_match():
    true = np.zeros((40, 40), np.uint16)
    true[5:15, 5:15] = 1
    true[20:30, 20:30] = 2
    true[32:38, 2:8] = 3
    pred = np.zeros_like(true)
    pred[5:15, 5:14] = 2  # true 1 predicted under another id
    pred[20:30, 20:30] = 1  # true 2 exactly, under id 1
    by_id = object_ious(pred, true)
    assert by_id.label_ids.tolist() == [1, 2, 3]
    assert by_id.iou.tolist() == [0.0, 0.0, 0.0]
    by_match = object_ious(pred, true, by="match")
    assert by_match.iou == pytest.approx([0.9, 1.0, 0.0])
    assert by_match.boundary_iou[1] == 1.0 and by_match.boundary_iou[2] == 0.0
    a, b = true == 1, pred == 2
    assert by_match.boundary_iou[0] == pytest.approx(boundary_iou(a, b))
    with pytest.raises(ValueError, match="'id' or 'match'"):
        object_ious(pred, true, by="nearest")
