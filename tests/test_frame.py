import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_samrefine.sam.frame import SamFrame, interpolation_matrix, resize_longest_side_shape


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


def test_original_to_lowres_crop_equals_full(sam):
    frame = SamFrame.from_sam(sam, (100, 173))
    m = np.zeros((100, 173), np.float32)
    m[20:50, 30:90] = 1
    s = torch.tensor(2 * m - 1)[None, None]
    r = F.interpolate(s, frame.input_size, mode="bilinear", align_corners=False)
    pad = (0, frame.image_size - frame.input_size[1], 0, frame.image_size - frame.input_size[0])
    r = F.pad(r, pad, value=-1)
    r = F.interpolate(r, (frame.lowres_size,) * 2, mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(2 * frame.original_to_lowres(m[20:50, 30:90], (20, 30)) - 1, r, atol=1e-5)
    np.testing.assert_allclose(frame.original_to_lowres(2 * m - 1, pad_value=-1), r, atol=1e-5)
