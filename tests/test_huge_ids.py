"""Label images with huge ids (up to 2**63 - 1, 2**64 - 1 for uint64) work as ids 1..n do.

Each test relabels a real DSB2018 crop to ids 1..n and to huge ids in the same
order, runs the same code path on both and maps the results back: they must be
identical. Memory must not grow with the ids (no id-sized array anywhere).
"""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest

from napari_samrefine import judge_refinement, refine
from napari_samrefine.evaluation.metrics import class_ious, match_objects, object_ious
from napari_samrefine.judge.crops import support_candidates
from napari_samrefine.labels.iou import iou_matrix
from napari_samrefine.labels.objects import isin_ids, object_slices, objects_from_labels
from napari_samrefine.samrefiner.prompts import excavate_prompts
from napari_samrefine.samrefiner.stm import split_then_merge

I64, U64 = np.iinfo(np.int64).max, np.iinfo(np.uint64).max


def huge_ids(n: int, kind: str) -> tuple[np.dtype, np.ndarray]:
    """Increasing ids for objects 1..n (index 0 is the background): dtype and lookup table."""
    rng = np.random.default_rng(n)

    def some(low: int, high: int, count: int) -> list[int]:  # distinct, increasing
        values = np.unique(rng.integers(low, high, size=4 * count + 8, dtype=np.int64))
        return sorted(rng.permutation(values)[:count].tolist())

    if kind == "int64":  # 2**40, 2**40 + 7, ..., 2**63 - 1
        ids = [2**40, 2**40 + 7, *some(2**40 + 8, 2**41, n - 3), I64]
        return np.dtype(np.int64), np.array([0, *ids], dtype=np.int64)
    if kind == "uint64":  # up to 2**64 - 1, across 2**63
        ids = [2**40, I64, *(2**63 + v for v in some(0, 2**20, n - 4)), U64 - 1, U64]
        return np.dtype(np.uint64), np.array([0, *ids], dtype=np.uint64)
    if kind == "int32":  # the n ids just below 2**31 - 1
        top = np.iinfo(np.int32).max
        return np.dtype(np.int32), np.array([0, *range(top - n + 1, top + 1)], dtype=np.int32)
    raise ValueError(kind)


KINDS = ["int64", "uint64", "int32"]


@pytest.fixture(scope="module")
def crop(dsb_pair):
    """A 128 x 128 crop of the DSB2018 pair (17 nuclei), its objects numbered 1..n (uint16)."""
    image, labels = dsb_pair
    image, labels = image[128:, 64:192].copy(), labels[128:, 64:192]
    _, small = np.unique(labels, return_inverse=True)
    return image, small.reshape(labels.shape).astype(np.uint16)


def relabel(small: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``small`` with huge ids, and the lookup table (huge id of small id i at index i)."""
    dtype, table = huge_ids(int(small.max()), kind)
    return table[small].astype(dtype), table


def back(table: np.ndarray, ids) -> list[int]:
    """Small ids of huge ones."""
    where = {int(v): i for i, v in enumerate(table.tolist())}
    return [where[int(i)] for i in ids]


@pytest.mark.parametrize("kind", KINDS)
def test_matching_and_iou_matrix_equal_those_of_small_ids(crop, kind):
    """Object matching keeps every id in its dtype: uint64 ids above 2**63 - 1 come back as they are."""
    _, small = crop
    big, table = relabel(small, kind)
    shifted = np.roll(small, 3, axis=0)
    big_shifted = table[shifted].astype(big.dtype)
    want, got = iou_matrix(small, shifted), iou_matrix(big, big_shifted)
    np.testing.assert_array_equal(got[0], want[0])
    for ids_want, ids_got in zip(want[1:], got[1:], strict=True):
        assert ids_got.dtype == big.dtype
        np.testing.assert_array_equal(ids_got, table[ids_want])
    m_want, m_got = match_objects(shifted, small, 0.3), match_objects(big_shifted, big, 0.3)
    assert len(m_got.true_ids) >= 10 and len(m_got.unmatched_true) >= 1
    for field in ("true_ids", "pred_ids", "unmatched_true", "unmatched_pred"):
        ids_want, ids_got = getattr(m_want, field), getattr(m_got, field)
        assert ids_got.dtype == big.dtype, field
        np.testing.assert_array_equal(ids_got, table[ids_want], err_msg=field)
    np.testing.assert_array_equal(m_got.ious, m_want.ious)
    if kind == "uint64":  # the ids across 2**63 are there, and matched
        assert int(m_got.true_ids.max()) == U64 and int(table[-2]) > I64


@pytest.mark.parametrize("kind", KINDS)
def test_objects_and_slices_equal_those_of_small_ids(crop, kind):
    _, small = crop
    big, table = relabel(small, kind)
    want = objects_from_labels(small)
    got = objects_from_labels(big)
    assert back(table, [o.label_id for o in got]) == [o.label_id for o in want]
    for a, b in zip(want, got, strict=True):
        assert a.offset == b.offset and np.array_equal(a.mask, b.mask)
    assert list(object_slices(big).values()) == list(object_slices(small).values())
    # a selection by (huge) id, and ids the labels lack
    picked = [int(table[3]), int(table[5]), 12345]
    assert [o.label_id for o in objects_from_labels(big, picked)] == picked[:2]


def test_object_slices_across_row_blocks(monkeypatch):
    """Objects that span several blocks of rows get one box, the union of their parts."""
    from napari_samrefine.labels import objects
    monkeypatch.setattr(objects, "_BLOCK_PIXELS", 64)  # 2 rows of 32 px per block
    labels = np.zeros((9, 32), np.uint64)
    labels[1:8, 3:5] = U64
    labels[4, 20:30] = 2**40
    labels[0, 31] = labels[8, 0] = 2**63
    boxes = object_slices(labels)
    assert list(boxes) == [2**40, 2**63, U64]
    assert boxes[U64] == (slice(1, 8), slice(3, 5)) and boxes[2**40] == (slice(4, 5), slice(20, 30))
    assert boxes[2**63] == (slice(0, 9), slice(0, 32))
    assert object_slices(np.zeros((3, 3), np.int64)) == {} and object_slices(np.zeros((0, 4), int)) == {}


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64, bool])
def test_every_integer_dtype_lists_its_largest_id(dtype):
    top = 1 if dtype is bool else np.iinfo(dtype).max
    labels = np.zeros((5, 6), dtype)
    labels[1:3, 2:5] = top
    if dtype is not bool:
        labels[4, 0] = 1
    obj = objects_from_labels(labels)[-1]
    assert obj.label_id == int(top) and obj.bbox == (1, 2, 3, 5) and obj.area == 6
    assert isin_ids(labels, [int(top)]).sum() == 6


def test_isin_ids_equals_np_isin():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 6, (40, 50))
    for kind in KINDS:
        big, table = relabel(base, kind)
        wanted = [int(table[2]), int(table[5]), -3, 2**70]  # values the dtype cannot hold match nothing
        np.testing.assert_array_equal(isin_ids(big, wanted), np.isin(base, [2, 5]))
    assert not isin_ids(base, []).any()


def test_object_listing_memory_does_not_grow_with_the_ids():
    """A 2048 x 2048 int64 image (32 MB) with ids near 2**63: the listing needs far less than the image."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:2048, :2048]
    labels = ((yy // 64) * 32 + xx // 64).astype(np.int64)  # 1024 squares
    labels[(yy % 64 < 4) | (xx % 64 < 4)] = 0
    big = np.where(labels > 0, I64 - 3 * labels, 0)
    del yy, xx, rng
    tracemalloc.start()
    slices = object_slices(big)
    selected = isin_ids(big, list(slices)[:10])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(slices) == 1023 and selected.sum() == 10 * 60 * 60
    assert peak < 0.75 * big.nbytes, peak  # block temporaries and the bool result only


@pytest.mark.parametrize("kind", KINDS)
def test_excavate_prompts_equal_those_of_small_ids(crop, kind):
    _, small = crop
    big, table = relabel(small, kind)
    want = excavate_prompts(small, image_size=256, lowres_size=64)
    got = excavate_prompts(big, image_size=256, lowres_size=64)
    assert back(table, [p.label_id for p in got]) == [p.label_id for p in want]
    for a, b in zip(want, got, strict=True):
        for field in dataclasses.fields(a):
            if field.name != "label_id":
                va, vb = getattr(a, field.name), getattr(b, field.name)
                assert np.array_equal(va, vb) if isinstance(va, np.ndarray) else va == vb, field.name


@pytest.mark.parametrize("kind", KINDS)
def test_refine_equals_refine_of_small_ids(sam, crop, kind):
    image, small = crop
    big, table = relabel(small, kind)
    want = refine(image, small, sam=sam, iterations=2)
    got = refine(image, big, sam=sam, iterations=2)
    assert got.labels.dtype == big.dtype
    np.testing.assert_array_equal(got.labels, table[want.labels])
    assert back(table, [o.label_id for o in got.objects]) == [o.label_id for o in want.objects]
    assert [o.status for o in got.objects] == [o.status for o in want.objects]
    # only some objects, by huge id
    ids = [int(table[2]), int(table[7])]
    part = refine(image, big, sam=sam, iterations=1, label_ids=ids)
    np.testing.assert_array_equal(part.labels, table[refine(image, small, sam=sam, iterations=1, label_ids=[2, 7]).labels])


def test_semantic_refine_and_stm_with_huge_class_ids(sam, crop):
    image, small = crop
    classes = np.where(small > 0, 1 + small % 3, 0).astype(np.uint8)  # three classes
    table = np.array([0, 2**40, 2**62, I64], np.int64)
    big = table[classes]
    want, got = split_then_merge(classes), split_then_merge(big)
    assert [int(table[o.label_id]) for o in want] == [o.label_id for o in got]
    assert all(a.bbox == b.bbox and np.array_equal(a.mask, b.mask) for a, b in zip(want, got, strict=True))
    np.testing.assert_array_equal(
        refine(image, big, sam=sam, mode="semantic", iterations=1).labels,
        table[refine(image, classes, sam=sam, mode="semantic", iterations=1).labels],
    )


@pytest.mark.parametrize("kind", KINDS)
def test_support_candidates_and_object_scores_with_huge_ids(crop, kind):
    _, small = crop
    big, table = relabel(small, kind)
    want, got = support_candidates([small]), support_candidates([big])
    assert [int(table[c.label_id]) for c in want] == [c.label_id for c in got]
    assert [(c.area, c.box) for c in want] == [(c.area, c.box) for c in got]
    shifted = np.roll(small, 2, axis=1)
    big_shifted = table[shifted].astype(big.dtype)
    for by in ("id", "match"):
        a, b = object_ious(shifted, small, by=by), object_ious(big_shifted, big, by=by)
        assert b.label_ids.dtype == big.dtype
        np.testing.assert_array_equal(b.label_ids, table[a.label_ids])
        assert (a.iou > 0).sum() >= 10
        np.testing.assert_array_equal(a.iou, b.iou)
        np.testing.assert_array_equal(a.boundary_iou, b.boundary_iou)
    assert class_ious(big_shifted, big) == {
        int(table[c]): v for c, v in class_ious(shifted, small).items()
    }


@pytest.mark.parametrize("kind", ["int32", "int64", "uint64"])
def test_judge_refinement_equals_judging_small_ids(sam, crop, kind):
    image, small = crop
    big, table = relabel(small, kind)
    refined = np.where(small == np.roll(small, 1, axis=0), small, 0)  # top edges removed
    ids = [int(i) for i in np.unique(small)[1:4]]
    want = judge_refinement(image, small, refined, image, small, sam=sam, k=1, label_ids=ids)
    got = judge_refinement(
        image, big, table[refined].astype(big.dtype), image, big, sam=sam, k=1,
        label_ids=[int(table[i]) for i in ids],
    )  # fmt: skip
    np.testing.assert_array_equal(got.accepted, table[want.accepted])
    tw, tg = want.table(), got.table()
    assert back(table, tg["label_id"]) == list(tw["label_id"])
    for column in ("e1", "e2", "delta", "verdict"):
        assert list(tg[column]) == list(tw[column]), column
