import numpy as np
import pytest

from napari_samrefine.engine.preprocess import percentile_stretch, to_sam_rgb


def test_uint8_grey_and_rgb_pass_unchanged(dsb_pair, stained_pair):
    grey = dsb_pair[0]
    out = to_sam_rgb(grey)
    assert out.shape == (*grey.shape, 3) and out.dtype == np.uint8
    assert all(np.array_equal(out[..., c], grey) for c in range(3))
    rgb = stained_pair[0]
    np.testing.assert_array_equal(to_sam_rgb(rgb), rgb)


def test_uint16_and_float_are_stretched_ignoring_nan(stardist_stack):
    img = stardist_stack[0][0].astype(np.float32)
    img[0, 0] = np.nan
    img[0, 1] = np.inf
    out = to_sam_rgb(img)
    assert out.dtype == np.uint8 and out[0, 0, 0] == 0 and out[0, 1, 0] == 0
    assert out.max() == 255 and out.min() == 0
    u16 = (np.arange(100 * 100, dtype=np.uint16).reshape(100, 100) * 3)
    out16 = to_sam_rgb(u16, percentiles=(0, 100))
    assert out16[0, 0, 0] == 0 and out16[-1, -1, 0] == 255


def test_input_not_modified():
    img = np.random.default_rng(0).normal(size=(20, 20)).astype(np.float32)
    before = img.copy()
    to_sam_rgb(img)
    np.testing.assert_array_equal(img, before)


def test_constant_and_nan_images_are_refused():
    with pytest.raises(ValueError, match="constant"):
        to_sam_rgb(np.full((10, 10), 7, np.uint16))
    with pytest.raises(ValueError, match="constant"):
        to_sam_rgb(np.full((10, 10), 7, np.uint8))
    with pytest.raises(ValueError, match="no finite value"):
        percentile_stretch(np.full((10, 10), np.nan))


def test_multichannel_needs_a_choice():
    img = np.random.default_rng(0).integers(0, 4000, (30, 30, 5)).astype(np.uint16)
    with pytest.raises(ValueError, match="channel="):
        to_sam_rgb(img)
    one = to_sam_rgb(img, channel=2)
    np.testing.assert_array_equal(one, to_sam_rgb(img[..., 2]))
    assert to_sam_rgb(img, channel="mean").shape == (30, 30, 3)
    with pytest.raises(ValueError, match="does not exist"):
        to_sam_rgb(img, channel=9)
