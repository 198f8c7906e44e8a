"""Split-then-merge (SPEC section 3): semantic masks to the objects SAM refines."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from _data import DSB2018
from napari_samrefine.samrefiner.stm import should_merge, split_then_merge


def groups(result):
    return [(o.label_id, o.bbox, o.area) for o in result]


def test_two_nearby_blobs_merge_and_a_far_one_does_not():
    sem = np.zeros((12, 60), np.uint8)
    sem[2:8, 2:8] = 1
    sem[2:8, 11:17] = 1  # 3 px gap: U = 6 * 15, 72 > 45 and 72 / 90 > 0.5
    sem[2:8, 50:56] = 1  # far: with the merged pair U = 6 * 54, 108 > 162 fails
    out = split_then_merge(sem)
    assert groups(out) == [(1, (2, 2, 8, 17), 72), (1, (2, 50, 8, 56), 36)]
    merged = out[0]
    assert merged.mask[:, 6:9].sum() == 0 and merged.mask.sum() == 72  # gap stays empty


def test_merge_uses_the_updated_box_and_area():
    # A and C alone are too far apart (U = 6 * 25: 72 > 75 fails); after B joins A, the
    # group's box (6 x 14, area 84) and area (72) make C join (120 > 75, 108 / 150 > 0.5)
    sem = np.zeros((8, 25), np.uint8)
    sem[0:6, 0:6] = 1  # A
    sem[0:6, 8:14] = 1  # B
    sem[0:6, 19:25] = 1  # C
    assert not should_merge((0, 0, 5, 5), 36, (0, 19, 5, 24), 36)
    assert should_merge((0, 0, 5, 13), 72, (0, 19, 5, 24), 36)
    assert groups(split_then_merge(sem)) == [(1, (0, 0, 6, 25), 108)]
    # without B, A and C stay apart
    sem[0:6, 8:14] = 0
    assert len(split_then_merge(sem)) == 2


def ring(sem, y, x, value=1):
    """A 10 x 10 square ring of width 2 (64 px, fill 0.64) with its corner at (y, x)."""
    sem[y : y + 10, x : x + 10] = value
    sem[y + 2 : y + 8, x + 2 : x + 8] = 0


@pytest.mark.parametrize(("gap", "merged"), [(3, True), (5, True), (6, False), (8, False)])
def test_fill_ratio_condition_blocks_sparse_unions(gap, merged):
    # side by side with a gap g: U = 10 * (20 + g). Boxes: 200 > 0.5 * U up to g = 19;
    # fill: 128 / U > min(0.5, 0.64 - 0.1) only for g < 5.6
    sem = np.zeros((10, 40), np.uint8)
    ring(sem, 0, 0)
    ring(sem, 0, 10 + gap)
    u = 10 * (20 + gap)
    assert 200 > 0.5 * u  # the box condition holds in every case
    assert len(split_then_merge(sem)) == (1 if merged else 2)
    assert should_merge((0, 0, 9, 9), 64, (0, 10 + gap, 9, 19 + gap), 64) == merged


def test_small_components_dropped_only_when_the_class_has_several():
    sem = np.zeros((20, 40), np.uint16)
    sem[2:12, 2:12] = 3
    sem[15, 30] = 3  # a 1-px speck of class 3: dropped
    sem[17:19, 35:37] = 3  # 4 px: dropped
    sem[10:12, 30:32] = 5  # the only component of class 5: kept although 4 px
    out = split_then_merge(sem)
    assert groups(out) == [(3, (2, 2, 12, 12), 100), (5, (10, 30, 12, 32), 4)]
    # min_size is configurable
    out = split_then_merge(sem, min_size=2)
    assert (3, (17, 35, 19, 37), 4) in groups(out)


def test_eight_connectivity_and_class_order():
    sem = np.zeros((10, 10), np.int32)
    sem[1, 1] = sem[2, 2] = sem[3, 3] = sem[4, 4] = sem[5, 5] = 9  # one diagonal component
    sem[8, 0:3] = 2
    out = split_then_merge(sem)
    assert groups(out) == [(2, (8, 0, 9, 3), 3), (9, (1, 1, 6, 6), 5)]
    np.testing.assert_array_equal(out[1].mask, np.eye(5, dtype=bool))


def test_one_pixel_high_components_do_not_divide_by_zero():
    # the reference code's exclusive union area would be 0 here; inclusive areas never are
    sem = np.zeros((3, 20), np.uint8)
    sem[1, 0:5] = 1
    sem[1, 7:12] = 1
    assert groups(split_then_merge(sem)) == [(1, (1, 0, 2, 12), 10)]
    assert should_merge((1, 1, 1, 1), 1, (1, 1, 1, 1), 1)


def test_mu_is_the_merge_threshold():
    sem = np.zeros((12, 60), np.uint8)
    sem[2:8, 2:8] = 1
    sem[2:8, 11:17] = 1
    assert len(split_then_merge(sem, mu=0.5)) == 1
    assert len(split_then_merge(sem, mu=0.9)) == 2  # 72 > 0.9 * 90 fails


def test_input_is_not_modified_and_bad_input_is_refused():
    sem = np.zeros((10, 10), np.uint8)
    sem[2:5, 2:5] = 1
    before = sem.copy()
    split_then_merge(sem)
    np.testing.assert_array_equal(sem, before)
    assert split_then_merge(np.zeros((4, 4), np.uint8)) == []
    assert groups(split_then_merge(sem.astype(bool))) == [(1, (2, 2, 5, 5), 9)]
    with pytest.raises(ValueError, match="2D"):
        split_then_merge(np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="integer"):
        split_then_merge(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="non-negative"):
        split_then_merge(-np.ones((4, 4), np.int8))


def reference_stm(sem: np.ndarray, min_size: int = 5, mu: float = 0.5):
    """SPEC section 3 on full-image masks, written independently of the module."""
    out = []
    for cls in [c for c in np.unique(sem) if c]:
        comps, n = ndi.label(sem == cls, structure=np.ones((3, 3)))
        masks = [comps == k for k in range(1, n + 1)]
        if n > 1:
            masks = [m for m in masks if m.sum() >= min_size]

        def box(m):
            ys, xs = np.nonzero(m)
            return ys.min(), xs.min(), ys.max(), xs.max()

        alive = [True] * len(masks)
        for i in range(len(masks)):
            if not alive[i]:
                continue
            for j in range(i + 1, len(masks)):
                if not alive[j]:
                    continue
                (a0, a1, a2, a3), (b0, b1, b2, b3) = box(masks[i]), box(masks[j])
                bi = (a2 - a0 + 1) * (a3 - a1 + 1)
                bj = (b2 - b0 + 1) * (b3 - b1 + 1)
                u = (max(a2, b2) - min(a0, b0) + 1) * (max(a3, b3) - min(a1, b1) + 1)
                ai, aj = masks[i].sum(), masks[j].sum()
                if bi + bj > mu * u and (ai + aj) / u > min(mu, min(ai / bi, aj / bj) - 0.1):
                    masks[i] = masks[i] | masks[j]
                    alive[j] = False
        out += [(int(cls), m) for m, keep in zip(masks, alive, strict=True) if keep]
    return out


def test_real_nuclei_as_one_class_match_the_reference():
    import tifffile

    inst = tifffile.imread(DSB2018 / "labels" / "00071198d059.tif")[150:256, 30:190]
    sem = (inst > 0).astype(np.uint8)
    sem[inst % 3 == 0] = 2  # a second class
    sem[::7, ::5] = 0  # cut objects into fragments and leave specks
    out = split_then_merge(sem)
    ref = reference_stm(sem)
    assert len(out) == len(ref) > 10
    n_components = sum(ndi.label(sem == c, structure=np.ones((3, 3)))[1] for c in (1, 2))
    assert len(out) < n_components  # merges happened
    for o, (cls, m) in zip(out, ref, strict=True):
        assert o.label_id == cls
        np.testing.assert_array_equal(o.to_image(), m)
