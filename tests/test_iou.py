"""The one IoU (labels/iou.py): every integer dtype, ids up to 2**64 - 1, crops equal full masks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_samrefine.evaluation.metrics import class_ious, match_objects
from napari_samrefine.labels.iou import candidate_ious, crop_iou, iou, iou_matrix, soft_iou
from napari_samrefine.labels.objects import ObjectMask, objects_from_labels

INTEGER_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
U64 = np.iinfo(np.uint64).max


def two_label_images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two 40 x 50 label images with ids 0..4 whose objects overlap in many ways."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 5, (8, 10)).repeat(5, axis=0).repeat(5, axis=1)
    b = np.roll(a, (2, 3), axis=(0, 1))
    b[b == 4] = 3  # b has fewer objects than a
    return a, b


def top_ids(dtype) -> np.ndarray:
    """Background 0, then the four largest values of ``dtype`` in increasing order."""
    top = int(np.iinfo(dtype).max)
    return np.array([0, top - 3, top - 2, top - 1, top], dtype=dtype)


def brute_force(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every pair of non-zero ids, one pair at a time (Python ints, no numpy ids)."""
    a_ids = sorted(set(a.ravel().tolist()) - {0})
    b_ids = sorted(set(b.ravel().tolist()) - {0})
    return np.array([[iou(a == i, b == j) for j in b_ids] for i in a_ids])


def test_iou_hand_computed_and_the_empty_convention():
    a = np.array([[1, 1, 0], [0, 0, 0]])
    b = np.array([[0, 1, 1], [0, 0, 1]])
    assert iou(a, b) == 1 / 4
    assert iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    assert iou(a, np.zeros_like(a)) == 0.0
    with pytest.raises(ValueError, match="different shapes"):
        iou(a, a[:1])


@pytest.mark.parametrize("dtype", INTEGER_DTYPES)
def test_iou_matrix_with_the_largest_ids_of_every_dtype(dtype):
    small_a, small_b = two_label_images()
    table = top_ids(dtype)
    big_a, big_b = table[small_a], table[small_b]
    matrix, a_ids, b_ids = iou_matrix(big_a, big_b)
    want, small_a_ids, small_b_ids = iou_matrix(small_a, small_b)
    assert a_ids.dtype == b_ids.dtype == np.dtype(dtype)
    assert a_ids.tolist() == table[small_a_ids].tolist() == table[1:].tolist()
    assert b_ids.tolist() == table[small_b_ids].tolist() == table[1:4].tolist()
    np.testing.assert_array_equal(matrix, want)
    np.testing.assert_allclose(matrix, brute_force(big_a, big_b), rtol=0, atol=1e-15)
    # a mask of any dtype: non-zero is foreground, the largest id included
    assert iou(big_a, small_a) == 1.0 and iou(big_a == table[-1], small_a == 4) == 1.0


def test_uint64_ids_near_two_to_the_64_are_never_wrapped():
    """Ids across 2**63 stay distinct and in uint64 (a cast to int64 would make them negative)."""
    ids = np.array([0, 2**63 - 1, 2**63, U64 - 1, U64], dtype=np.uint64)
    small_a, small_b = two_label_images(1)
    a, b = ids[small_a], ids[small_b]
    matrix, a_ids, b_ids = iou_matrix(a, b)
    assert a_ids.tolist() == [2**63 - 1, 2**63, U64 - 1, U64]
    np.testing.assert_array_equal(matrix, iou_matrix(small_a, small_b)[0])
    m = match_objects(b, a, threshold=0.1)
    assert m.true_ids.dtype == np.uint64 and set(m.true_ids.tolist()) <= set(a_ids.tolist())
    assert {int(t) for t in m.true_ids} | {int(u) for u in m.unmatched_true} == set(a_ids.tolist())


def test_two_images_of_different_dtypes():
    small_a, small_b = two_label_images(2)
    a = np.array([0, 5, 2**63, U64 - 1, U64], np.uint64)[small_a]
    b = np.array([0, 5, 6, 7], np.int8)[small_b]
    matrix, a_ids, b_ids = iou_matrix(a, b)
    assert (a_ids.dtype, b_ids.dtype) == (np.uint64, np.int8)
    np.testing.assert_array_equal(matrix, iou_matrix(small_a, small_b)[0])
    # class IoU: only id 5 is in both; U64 is no class of an int8 image (and not -1)
    scores = class_ious(b, a)
    assert scores[5] == iou(a == 5, b == 5) > 0
    assert scores[U64] == 0.0 and set(scores) == {5, 6, 7, 2**63, U64 - 1, U64}


def test_crop_iou_equals_the_iou_of_full_masks():
    a, b = two_label_images(3)
    objects_a, objects_b = objects_from_labels(a), objects_from_labels(b)
    for oa in objects_a:
        for ob in objects_b:
            assert crop_iou(oa, ob) == iou(oa.to_image(), ob.to_image())
    empty = ObjectMask(9, np.zeros((0, 0), bool), (3, 3), a.shape)
    assert crop_iou(empty, empty) == 1.0 and crop_iou(objects_a[0], empty) == 0.0


def test_candidate_ious_score_each_candidate_and_zero_for_none():
    a, b = two_label_images(4)
    reference = objects_from_labels(a)[0]
    candidates = [*objects_from_labels(b), None, ObjectMask(1, np.zeros((0, 0), bool), (0, 0), a.shape)]
    got = candidate_ious(reference, candidates)
    assert got.dtype == np.float64 and got.shape == (len(candidates),)
    assert got[:-2].tolist() == [crop_iou(reference, c) for c in candidates[:-2]]
    assert got[-2:].tolist() == [0.0, 0.0] and got.max() > 0


def test_soft_iou_is_the_iou_for_binary_probabilities():
    a, b = two_label_images(5)
    assert soft_iou((a == 1).astype(float), b == 1) == iou(a == 1, b == 1)
    assert soft_iou(np.array([1.0, 0.5, 0.5, 0.0]), np.array([1, 1, 0, 0])) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="differ in shape"):
        soft_iou(np.zeros(3), np.zeros(4))
