"""Prompt excavation (SPEC section 2): distance-guided points, tight box, Gaussian mask prompt."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage as ndi

from _data import DSB2018
from napari_samrefine.engine.frame import SamFrame
from napari_samrefine.labels.objects import ObjectMask, objects_from_labels
from napari_samrefine.samrefiner.distance import (
    inside_distance,
    object_crop,
    outside_distance_squared,
)
from napari_samrefine.samrefiner.prompts import (
    excavate_object,
    excavate_prompts,
    gaussian_map,
    mask_prompt,
)


def dsb_labels(name: str = "00071198d059") -> np.ndarray:
    import tifffile

    return tifffile.imread(DSB2018 / "labels" / f"{name}.tif")


# --- whole-image reference implementations (what the crop computations must equal) -------


def whole_image_prompts(full: np.ndarray, gamma: float = 4.0):
    """Positive point, D+, G and the inclusive tight box computed on the whole image."""
    d_in = ndi.distance_transform_edt(full) if not full.all() else None
    if d_in is None:  # no background anywhere: distance to the image border
        d_in = ndi.distance_transform_edt(np.pad(full, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(np.argmax(d_in), full.shape)  # first maximum, row-major
    positive = (c, r)
    ys, xs = np.nonzero(full)
    y1, y2, x1, x2 = ys.min(), ys.max(), xs.min(), xs.max()
    g = np.exp(-((d_in - d_in.max()) ** 2) / max(full.sum() / gamma, 1.0))
    g = np.where(full, g, 0.0)
    return positive, d_in, g, [x1, y1, x2, y2]


def authors_negative_point(full: np.ndarray):
    """The reference code's negative point: its box is half-open (x0 <= x < x1, y0 <= y < y1).

    The box's corners are the first and last rows and columns of the mask, and the
    candidates are the background pixels of ``[y0:y1, x0:x1]``: the box's last row
    and column are never candidates, and a one-row or one-column mask has none. D-
    is the exact distance here (the reference code's chamfer distance is a separate,
    documented difference), the first maximum in row-major order is taken. Where
    there is no candidate the reference code emits (0, 0) (also documented); this
    returns None there.
    """
    ys, xs = np.nonzero(full)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    in_box = np.zeros_like(full)
    in_box[y0:y1, x0:x1] = True
    candidates = in_box & ~full
    if not candidates.any():
        return None
    d_out = np.where(candidates, ndi.distance_transform_edt(~full), -1.0)
    r, c = np.unravel_index(np.argmax(d_out), full.shape)
    return int(c), int(r)


def assert_negative_point_deviates_only_where_documented(full: np.ndarray, p) -> str:
    """Our negative point against the reference code's (docs/deviations.md, prompt excavation).

    Ours searches the inclusive tight box. The two agree except: our point is on
    the box's last row or column (the reference box cannot reach it), which
    includes one-row and one-column masks (the reference box is empty there).
    Returns which case ``full`` is: "agree", "last row/column" or "one row/column".
    """
    authors = authors_negative_point(full)
    x1, y1, x2, y2 = p.tight_box.tolist()
    ours = p.negative_point
    if ours is None:
        # no background in the inclusive box, so none in the half-open one
        assert authors is None
        assert full[y1 : y2 + 1, x1 : x2 + 1].all()
        return "agree"
    x, y = (int(v) for v in ours)
    assert x1 <= x <= x2 and y1 <= y <= y2 and not full[y, x]
    assert p.point_labels.tolist() == [1, 0]
    if (x, y) == authors:
        return "agree"
    assert x == x2 or y == y2, f"ours {(x, y)} and the reference {authors} differ off the last row/column"
    if authors is None:
        # the reference box holds no background: a one-row/column mask, or background
        # only on the last row/column
        assert y1 == y2 or x1 == x2 or full[y1:y2, x1:x2].all()
        return "one row/column" if (y1 == y2 or x1 == x2) else "last row/column"
    d_out = ndi.distance_transform_edt(~full)
    assert d_out[y, x] >= d_out[authors[1], authors[0]]  # the larger box finds one as far
    return "last row/column"


def torch_mask_input(full: np.ndarray, g: np.ndarray, frame: SamFrame, w: float):
    """SPEC's mask input built on full-image tensors with torch's F.interpolate."""
    h, wd = frame.input_size
    s, low = frame.image_size, frame.lowres_size

    def resize(x, pad):
        x = F.interpolate(x[None, None], size=(h, wd), mode="bilinear", align_corners=False)
        x = F.pad(x, (0, s - wd, 0, s - h), value=pad)
        return F.interpolate(x, size=(low, low), mode="bilinear", align_corners=False)[0, 0]

    S = resize(torch.where(torch.as_tensor(full), 1.0, -1.0), -1.0)
    G = resize(torch.as_tensor(g, dtype=torch.float32), 0.0)
    A = torch.where(S > 0, w, -w)
    return (A * torch.where(G <= 0, 1.0, G)).numpy(), S.numpy(), G.numpy()


def assert_mask_input_close(ours: np.ndarray, full, g, frame, w):
    """Equal to the torch implementation wherever float rounding cannot flip a decision.

    Two decisions sit on knife edges: the sign of S where S is (nearly) 0, and G <= 0
    where G is (nearly) 0 (torch's resize leaves values like 1e-9 where the exact
    value is 0, and G' jumps from that tiny value to 1).
    """
    expected, S, G = torch_mask_input(full, g, frame, w)
    near_zero_g = (np.abs(G) <= 1e-5) & (G != 0) | (np.abs(ours) <= 1e-5 * w) & (ours != 0)
    decided = (np.abs(S) > 1e-5) & ~near_zero_g
    assert decided.mean() > 0.8
    np.testing.assert_allclose(ours[decided], expected[decided], rtol=1e-4, atol=1e-4)


masks = hnp.arrays(
    bool, st.tuples(st.integers(1, 18), st.integers(1, 18)), elements=st.booleans()
).filter(lambda m: m.any())


# --- properties on random masks -----------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(full=masks, use_neg=st.booleans())
def test_prompts_equal_whole_image_computation(full, use_neg):
    obj = ObjectMask.from_full(full)
    p = excavate_object(obj, use_negative_point=use_neg)
    positive, d_in, g, box = whole_image_prompts(full)

    # crop distance map == whole-image distance map
    crop, (y0, x0) = object_crop(obj)
    pasted = np.zeros(full.shape)
    pasted[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = inside_distance(crop)
    np.testing.assert_array_equal(pasted, d_in)

    # box contains the mask, tightly
    assert p.tight_box.tolist() == box
    assert p.box.tolist() == box and not p.expanded

    # positive point: inside the mask, at the first maximum of D+
    x, y = p.positive_point.astype(int)
    assert full[y, x] and d_in[y, x] == d_in.max()
    assert (x, y) == positive
    assert p.point_labels[0] == 1

    # negative point: the reference code's, except where docs/deviations.md says
    if use_neg:
        assert_negative_point_deviates_only_where_documented(full, p)
    else:
        assert p.negative_point is None and p.point_labels.tolist() == [1]

    # Gaussian: in [0, 1], 1 at the positive point, equal to the whole-image formula
    gf = p.gaussian_full(full.shape)
    assert gf.min() >= 0 and gf.max() <= 1
    x, y = p.positive_point.astype(int)
    assert gf[y, x] == 1
    np.testing.assert_allclose(gf, g, rtol=1e-6, atol=1e-7)
    assert p.mask_input is None  # no frame


@settings(max_examples=60, deadline=None)
@given(
    full=masks,
    image_size=st.sampled_from([16, 32, 64]),
    lowres=st.sampled_from([8, 16]),
    strength=st.sampled_from([1.0, 15.0, 30.0]),
)
def test_mask_input_equals_full_image_torch(full, image_size, lowres, strength):
    frame = SamFrame(full.shape, image_size=image_size, lowres_size=lowres, embedding_size=4)
    p = excavate_object(ObjectMask.from_full(full), frame=frame, strength=strength)
    _, _, g, _ = whole_image_prompts(full)
    assert p.mask_input.shape == (lowres, lowres) and p.mask_input.dtype == np.float32
    assert_mask_input_close(p.mask_input, full, g, frame, strength)
    assert p.strength == strength


@pytest.mark.parametrize("shape", [(300, 410), (2048, 1500), (50, 30)])
def test_mask_prompt_on_a_crop_equals_the_whole_frame(shape):
    # the band-limited resizes of the crop equal the full resize matrices applied to the
    # whole low-res frame, and SPEC's full-image torch resizes
    frame = SamFrame(shape, image_size=1024, lowres_size=256, embedding_size=64)
    rng = np.random.default_rng(1)
    for (h, w) in [(1, 1), (3, 2), (17, 25), (40, 9)]:
        y0, x0 = rng.integers(0, shape[0] - h), rng.integers(0, shape[1] - w)
        mask = rng.random((h, w)) > 0.3
        g = np.where(mask, rng.random((h, w)), 0).astype(np.float32)
        rows = frame.to_lowres_rows[:, y0 : y0 + h]
        cols = frame.to_lowres_cols[:, x0 : x0 + w].T
        m_full = rows @ mask.astype(np.float32) @ cols
        g_full = rows @ g @ cols
        expected = np.where(m_full > 0.5, 15.0, -15.0) * np.where(g_full > 0, g_full, 1.0)
        got = mask_prompt(frame, mask, g, (y0, x0), 15.0)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        full = np.zeros(shape, bool)
        full[y0 : y0 + h, x0 : x0 + w] = mask
        g_image = np.zeros(shape, np.float32)
        g_image[y0 : y0 + h, x0 : x0 + w] = g
        assert_mask_input_close(got, full, g_image, frame, 15.0)


def test_mask_input_background_and_padding_hold_minus_w():
    full = np.zeros((40, 24), bool)
    full[10:30, 6:18] = True
    frame = SamFrame(full.shape, image_size=64, lowres_size=16, embedding_size=4)
    p = excavate_object(ObjectMask.from_full(full), frame=frame, strength=15.0)
    # the image is 64 x 38 in SAM's frame: the right low-res columns are padding
    assert frame.input_size == (64, 38)
    assert np.all(p.mask_input[:, 10:] == -15.0)
    assert np.all(p.mask_input[0] == -15.0)
    core = p.mask_input[6:10, 3:6]
    assert core.max() == pytest.approx(15.0, rel=0.2) and core.min() > 0


@settings(max_examples=60, deadline=None)
@given(full=masks)
def test_distances_are_scipys_exactly(full):
    """D+ and D- from the integer feature transform: scipy's float64 values bit for bit."""
    if not full.all():
        np.testing.assert_array_equal(inside_distance(full), ndi.distance_transform_edt(full))
    squared = outside_distance_squared(full)
    assert np.issubdtype(squared.dtype, np.integer)
    np.testing.assert_array_equal(np.sqrt(squared), ndi.distance_transform_edt(~full))


def test_object_covering_the_whole_image_uses_the_distance_to_the_border():
    full = np.ones((7, 9), bool)
    p = excavate_object(ObjectMask.from_full(full))
    assert p.positive_point.tolist() == [3.0, 3.0]  # first pixel of the central ridge (depth 4)
    assert p.negative_point is None
    expected = np.minimum.reduce(np.meshgrid(np.arange(1, 8), np.arange(1, 10), indexing="ij"))
    expected = np.minimum(expected, np.minimum.reduce(np.meshgrid(
        np.arange(7, 0, -1), np.arange(9, 0, -1), indexing="ij")))
    np.testing.assert_array_equal(inside_distance(full), expected)


def test_image_border_is_not_background():
    # a half-plane object touching the left border: the deepest pixel is at the border
    full = np.zeros((9, 12), bool)
    full[:, :5] = True
    p = excavate_object(ObjectMask.from_full(full))
    assert p.positive_point.tolist() == [0.0, 0.0]  # distance 5 to column 5, first in row-major
    assert p.negative_point is None  # the box [0, 0, 4, 8] is full


def test_filled_rectangle_has_no_negative_point_and_ridge_gaussian():
    full = np.zeros((20, 20), bool)
    full[4:9, 3:15] = True
    p = excavate_object(ObjectMask.from_full(full))
    assert p.negative_point is None and p.points.shape == (1, 2)
    assert p.positive_point.tolist() == [5.0, 6.0]  # middle row, first column at depth 3
    assert np.all(p.gaussian[2, 2:-2] == 1)  # the medial ridge
    assert p.gaussian.shape == (5, 12) and p.offset == (4, 3)


def test_hole_gives_negative_point_at_the_hole():
    full = np.zeros((30, 30), bool)
    full[5:25, 5:25] = True
    full[12:17, 14:17] = False
    p = excavate_object(ObjectMask.from_full(full))
    x, y = p.negative_point
    assert 14 <= x <= 16 and 12 <= y <= 16


def test_negative_point_agrees_with_the_reference_code_inside_the_box():
    full = np.ones((10, 10), bool)
    full[4:6, 3:6] = False  # a hole well inside the box
    (p,) = excavate_prompts(full.astype(np.uint8), image_size=16, lowres_size=8)
    assert tuple(p.negative_point.astype(int)) == authors_negative_point(full) == (3, 4)
    assert assert_negative_point_deviates_only_where_documented(full, p) == "agree"


def test_negative_point_on_the_box_last_row_and_column_where_the_reference_cannot_go():
    # a 10 x 10 square whose bottom-right corner is cut off along a diagonal: the
    # background pixel farthest from the mask is the corner (9, 9), on the box's last
    # row and column; the reference code's half-open box stops at (8, 8)
    r, c = np.mgrid[:10, :10]
    full = r + c <= 14
    p = excavate_object(ObjectMask.from_full(full))
    assert p.tight_box.tolist() == [0, 0, 9, 9]
    assert tuple(p.negative_point.astype(int)) == (9, 9)
    assert authors_negative_point(full) == (8, 8)
    assert assert_negative_point_deviates_only_where_documented(full, p) == "last row/column"


def test_negative_point_of_a_one_row_mask_where_the_reference_box_is_empty():
    full = np.zeros((6, 12), bool)
    full[3, 2:10] = True
    full[3, 5:7] = False  # a gap in the row
    p = excavate_object(ObjectMask.from_full(full))
    assert tuple(p.negative_point.astype(int)) == (5, 3)
    assert authors_negative_point(full) is None  # the reference emits (0, 0) here
    assert assert_negative_point_deviates_only_where_documented(full, p) == "one row/column"
    assert assert_negative_point_deviates_only_where_documented(full.T.copy(), excavate_object(
        ObjectMask.from_full(full.T.copy()))) == "one row/column"


# --- excavate_prompts ----------------------------------------------------------------------


def test_excavate_prompts_on_real_labels_matches_whole_image():
    labels = dsb_labels()[156:256, 60:160].copy()
    before = labels.copy()
    frame_args = dict(image_size=64, lowres_size=16)
    prompts = excavate_prompts(labels, **frame_args)
    np.testing.assert_array_equal(labels, before)  # input untouched
    ids = [int(i) for i in np.unique(labels) if i]
    assert [p.label_id for p in prompts] == ids and len(ids) > 5
    frame = SamFrame(labels.shape, 64, 16, 4)
    touching = 0
    for p in prompts:
        full = labels == p.label_id
        positive, _, g, box = whole_image_prompts(full)
        assert p.tight_box.tolist() == box
        assert tuple(p.positive_point.astype(int)) == positive
        assert_negative_point_deviates_only_where_documented(full, p)
        np.testing.assert_allclose(p.gaussian_full(full.shape), g, rtol=1e-6, atol=1e-7)
        assert_mask_input_close(p.mask_input, full, g, frame, 15.0)
        touching += box[0] == 0 or box[1] == 0 or box[2] == 99 or box[3] == 99
    assert touching > 0  # objects cut by the crop border are covered too


def test_excavate_prompts_frame_defaults_and_label_ids():
    labels = np.zeros((50, 70), np.int32)
    labels[5:15, 5:20] = 3
    labels[30:45, 30:60] = 7
    prompts = excavate_prompts(labels, label_ids=[7, 9])
    assert [p.label_id for p in prompts] == [7]
    assert prompts[0].mask_input.shape == (256, 256)
    assert prompts[0].strength == 15.0
    (p,) = excavate_prompts(labels, label_ids=[3], image_size=64, lowres_size=16)
    assert p.mask_input.shape == (16, 16)
    assert excavate_prompts(np.zeros((5, 5), np.uint8)) == []
    # a bool mask is one object with id 1
    (p,) = excavate_prompts(labels == 3, image_size=64, lowres_size=16)
    assert p.label_id == 1 and p.tight_box.tolist() == [5, 5, 19, 14]


def test_no_negative_point_when_switched_off():
    labels = np.zeros((30, 30), np.uint8)
    labels[5:25, 5:25] = 1
    labels[10:12, 10:12] = 0
    (with_neg,) = excavate_prompts(labels)
    (without,) = excavate_prompts(labels, use_negative_point=False)
    assert with_neg.points.shape == (2, 2) and without.points.shape == (1, 2)
    np.testing.assert_array_equal(with_neg.points[0], without.points[0])


def test_gaussian_gamma_controls_the_span():
    full = np.zeros((40, 40), bool)
    full[5:35, 5:35] = True
    d = ndi.distance_transform_edt(full)
    narrow, wide = gaussian_map(d, full, gamma=16.0), gaussian_map(d, full, gamma=1.0)
    assert narrow.sum() < wide.sum()
    assert narrow.max() == wide.max() == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: excavate_prompts(np.zeros((2, 3, 4), np.uint8)), "2D"),
        (lambda: excavate_prompts(np.zeros((3, 4), np.float32)), "integers"),
        (lambda: excavate_prompts(-np.ones((3, 4), np.int16)), "non-negative"),
        (lambda: excavate_prompts(np.ones((3, 4), np.uint8), cebox=1.5), "cebox"),
        (lambda: excavate_prompts(np.ones((3, 4), np.uint8), strength=0), "strength"),
        (lambda: excavate_prompts(np.ones((3, 4), np.uint8), gamma=-1), "gamma"),
        (
            lambda: excavate_object(ObjectMask(1, np.zeros((2, 2), bool), (0, 0), (4, 4))),
            "empty",
        ),
        (
            lambda: excavate_object(
                ObjectMask(1, np.ones((2, 2), bool), (0, 0), (4, 4)), frame=SamFrame((5, 4))
            ),
            "embed the image",
        ),
    ],
)
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_objects_and_crops_agree_with_find_objects_order():
    labels = dsb_labels()[180:244, 100:164]
    objs = objects_from_labels(labels)
    assert len(objs) > 3
    prompts = excavate_prompts(labels, cebox=None)
    assert [o.label_id for o in objs] == [p.label_id for p in prompts]
    for o, p in zip(objs, prompts, strict=True):
        assert p.tight_box.tolist() == o.tight_box.tolist()
