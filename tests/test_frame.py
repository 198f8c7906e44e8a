import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_samrefine.sam.frame import (
    Band,
    SamFrame,
    interpolation_matrix,
    resize_longest_side_shape,
)


def test_interpolation_matrix_matches_torch():
    x = torch.rand(1, 1, 37, 5, dtype=torch.float64)
    ref = F.interpolate(x, size=(11, 5), mode="bilinear", align_corners=False)[0, 0]
    mat = interpolation_matrix(37, 11)
    np.testing.assert_allclose(mat @ x[0, 0].numpy(), ref.numpy(), atol=1e-6)
    np.testing.assert_allclose(mat.sum(1), 1, atol=1e-6)


def test_resize_shape_like_segment_anything():
    from segment_anything.utils.transforms import ResizeLongestSide

    for h, w in [(100, 173), (520, 696), (1024, 1024), (31, 3000)]:
        assert resize_longest_side_shape(h, w, 1024) == ResizeLongestSide.get_preprocess_shape(h, w, 1024)


@pytest.mark.parametrize("shape", [(100, 173), (64, 64), (300, 41)])
def test_lowres_to_original_equals_postprocess_masks(sam, shape):
    frame = SamFrame.from_sam(sam, shape)
    low = torch.randn(1, 1, frame.lowres_size, frame.lowres_size)
    ref = sam.postprocess_masks(low, frame.input_size, frame.original_size)[0, 0].numpy()
    full = frame.lowres_to_original(low[0, 0])
    np.testing.assert_allclose(full, ref, atol=1e-4)
    box = (3, 5, shape[0] - 7, shape[1] - 2)
    np.testing.assert_allclose(frame.lowres_to_original(low[0, 0], box), full[3:-7, 5:-2], atol=1e-5)


def test_lowres_extent_holds_every_positive_pixel(sam):
    frame = SamFrame.from_sam(sam, (90, 130))
    rng = np.random.default_rng(1)
    for _ in range(20):
        low = -np.ones((frame.lowres_size,) * 2, np.float32)
        y, x = rng.integers(0, 40, 2)
        low[y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = rng.uniform(0.1, 3)
        full = frame.lowres_to_original(low) > 0
        ext = frame.lowres_extent(low > 0)
        if ext is None:
            assert not full.any()
            continue
        y0, x0, y1, x1 = ext
        inside = np.zeros_like(full)
        inside[y0:y1, x0:x1] = True
        assert not (full & ~inside).any()


def test_lowres_extent_none_when_only_padding_is_positive(sam):
    frame = SamFrame.from_sam(sam, (40, 160))  # wide image: bottom of the SAM frame is padding
    low = -np.ones((frame.lowres_size,) * 2, np.float32)
    low[-3:, :] = 5.0
    assert frame.lowres_extent(low > 0) is None


def test_original_crop_to_lowres_equals_full(sam):
    frame = SamFrame.from_sam(sam, (100, 173))
    m = np.zeros((100, 173), np.float32)
    m[20:50, 30:90] = 1
    s = torch.tensor(2 * m - 1)[None, None]
    r = F.interpolate(s, frame.input_size, mode="bilinear", align_corners=False)
    pad = (0, frame.image_size - frame.input_size[1], 0, frame.image_size - frame.input_size[0])
    r = F.pad(r, pad, value=-1)
    r = F.interpolate(r, (frame.lowres_size,) * 2, mode="bilinear", align_corners=False)[0, 0]
    values, (r0, c0) = frame.original_crop_to_lowres(m[20:50, 30:90].astype(bool), (20, 30))
    low = np.zeros((frame.lowres_size,) * 2, np.float32)
    low[r0 : r0 + values.shape[0], c0 : c0 + values.shape[1]] = values
    # S = 2 m - 1 with the padding at -1 resizes to 2 * resize(m, padding 0) - 1
    np.testing.assert_allclose(2 * low - 1, r, atol=1e-5)
    # the rows and columns left out are those the crop has no weight in
    dense = frame.to_lowres_rows[:, 20:50] @ m[20:50, 30:90] @ frame.to_lowres_cols[:, 30:90].T
    outside = np.ones_like(dense, bool)
    outside[r0 : r0 + values.shape[0], c0 : c0 + values.shape[1]] = False
    assert not dense[outside].any()
    np.testing.assert_allclose(low, dense, rtol=1e-6, atol=1e-7)
    # a crop between the low-res samples reaches no low-res pixel (no antialiasing)
    wide = SamFrame((4000, 100), image_size=1024, lowres_size=256)
    assert wide.original_crop_to_lowres(np.ones((1, 100), bool), (1, 0)) is None


@pytest.mark.parametrize("n_in, n_out", [(256, 1024), (1024, 256), (97, 1000), (1000, 97), (64, 64)])
def test_band_apply_equals_the_dense_product(n_in, n_out):
    mat = interpolation_matrix(n_in, n_out)
    band = Band.from_matrix(mat)
    assert band.weights.shape[1] <= 3
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_in, 5)).astype(np.float32)
    np.testing.assert_allclose(band.apply(x, (0, n_out)), mat @ x, rtol=1e-6, atol=1e-6)
    # a slice of x at an offset, zero elsewhere, and a range of output rows
    lo, hi = n_in // 3, n_in // 3 + max(1, n_in // 4)
    zeroed = np.zeros_like(x)
    zeroed[lo:hi] = x[lo:hi]
    rows = (n_out // 5, n_out - n_out // 7)
    got = band.apply(x[lo:hi], rows, offset=lo)
    np.testing.assert_allclose(got, (mat @ zeroed)[rows[0] : rows[1]], rtol=1e-6, atol=1e-6)
    assert band.apply(x[lo:hi] > 0, rows, offset=lo).dtype == np.float32  # bool input


def test_upsampling_a_crop_does_not_depend_on_the_box(sam):
    """Each pixel's logit is computed the same way whatever box it is computed in (write-back)."""
    frame = SamFrame((300, 410), image_size=1024, lowres_size=256, embedding_size=64)
    low = np.random.default_rng(2).normal(size=(256, 256)).astype(np.float32)
    region = (10, 20, 250, 400)
    r0, c0, r1, c1 = frame.lowres_support(region)
    crop = low[r0:r1, c0:c1]
    big = frame.lowres_crop_to_original(crop, (r0, c0), region)
    small = frame.lowres_crop_to_original(crop, (r0, c0), (40, 60, 100, 333))
    np.testing.assert_array_equal(small, big[30:90, 40:313])
