import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_samrefine.engine.frame import SamFrame, resize_longest_side_shape
from napari_samrefine.engine.resize import Band, bilinear_band


def torch_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The dense reference: torch's bilinear resize of an identity (float64, then float32)."""
    eye = torch.eye(n_in, dtype=torch.float64)[None, None]
    mat = F.interpolate(eye, size=(n_out, n_in), mode="bilinear", align_corners=False)
    return mat[0, 0].to(torch.float32).numpy()


def torch_columns(n_in: int, n_out: int, cols) -> np.ndarray:
    """Columns ``cols`` of :func:`torch_matrix` from one-hot inputs (no n_in x n_in identity)."""
    onehot = torch.zeros(1, 1, n_in, len(cols), dtype=torch.float64)
    onehot[0, 0, list(cols), range(len(cols))] = 1
    out = F.interpolate(onehot, size=(n_out, len(cols)), mode="bilinear", align_corners=False)
    return out[0, 0].to(torch.float32).numpy()


SIZES = [1, 2, 3, 5, 7, 13, 31, 64, 97, 100, 173, 256, 1000, 1023, 1024]


def assert_torch_weights(band: np.ndarray, torch_weights: np.ndarray, n_in: int, msg=""):
    """Equal to torch's weights as far as torch defines them across CPUs.

    torch computes a weight from ``src = n_in / n_out * (i + 0.5) - 0.5`` in float64, and its
    kernels round that product differently (fused or not: where the exact ``src`` is an integer,
    the weight 0 comes out as 0 or as 1.4e-17), then to float32. So: within the float64 rounding
    of ``src`` (a few ulps of ``n_in``) and one float32 ulp of the weight (that rounding may flip).
    """
    np.testing.assert_allclose(band, torch_weights, rtol=2.0**-23, atol=n_in * 2.0**-50, err_msg=msg)


@pytest.mark.float_sensitive
@pytest.mark.parametrize("n_in", SIZES)
def test_bilinear_band_is_torch(n_in):
    for n_out in SIZES:
        band = bilinear_band(n_in, n_out)
        assert_torch_weights(band.to_dense(), torch_matrix(n_in, n_out), n_in, f"{n_in}->{n_out}")
        assert band.weights.shape[1] <= 2


@pytest.mark.float_sensitive
@pytest.mark.parametrize("n_in, n_out", [(1024, 256), (256, 1024), (2000, 1024), (1024, 2000), (4099, 641)])
def test_bilinear_band_is_torch_for_sam_sizes(n_in, n_out):
    band = bilinear_band(n_in, n_out)
    assert_torch_weights(band.to_dense(), torch_matrix(n_in, n_out), n_in)
    np.testing.assert_allclose(band.to_dense().sum(1), 1, atol=1e-6)


@pytest.mark.float_sensitive
@pytest.mark.parametrize("n_in, n_out", [(50000, 1024), (1024, 50000), (49999, 1023), (31, 50000)])
def test_bilinear_band_of_a_50000_px_side_is_torch_on_sampled_columns(n_in, n_out):
    band = bilinear_band(n_in, n_out)
    assert band.nbytes < 2e6
    cols = sorted({0, 1, 2, n_in // 2, n_in - 2, n_in - 1} | set(
        np.random.default_rng(n_in).integers(0, n_in, 40).tolist()
    ))
    cols = [c for c in cols if 0 <= c < n_in]
    ref = torch_columns(n_in, n_out, cols)
    got = band.to_sparse()[:, cols].toarray().astype(np.float32)
    assert_torch_weights(got, ref, n_in)


def test_resize_shape_like_segment_anything():
    from segment_anything.utils.transforms import ResizeLongestSide

    for h, w in [(100, 173), (520, 696), (1024, 1024), (31, 3000)]:
        assert resize_longest_side_shape(h, w, 1024) == ResizeLongestSide.get_preprocess_shape(h, w, 1024)


@pytest.mark.float_sensitive
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
    mat = torch_matrix(n_in, n_out)
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


def test_band_from_matrix_round_trips_and_keeps_the_narrowest_window():
    mat = torch_matrix(173, 64)
    band = Band.from_matrix(mat)
    np.testing.assert_array_equal(band.to_dense(), mat)
    np.testing.assert_array_equal(Band.from_sparse(band.to_sparse()).weights, band.weights)
    assert band.weights.shape[1] == 2 and np.array_equal(band.start, bilinear_band(173, 64).start)
    empty = Band.from_matrix(np.zeros((3, 5)))
    used, first, last = empty.nonzero_range()
    assert not used.any() and (last < first).all()


@pytest.mark.parametrize("n_orig", [1, 41, 100, 173, 300, 517, 1023, 1024, 1025, 3001])
@pytest.mark.parametrize("long_side", [None, 2048, 5000])
def test_composed_maps_equal_the_dense_products(n_orig, long_side):
    """to_lowres / from_lowres: the old dense products (pad @ down, up-chain), built here with torch."""
    s, low = 1024, 256
    shape = (n_orig, long_side or n_orig)
    frame = SamFrame(shape, image_size=s, lowres_size=low)
    n_in = frame.input_size[0]
    if n_in == 0:  # a 1 px high, 5000 px wide image has no row in SAM's frame
        return
    pad = torch_matrix(s, low)[:, :n_in]
    down = torch_matrix(n_orig, n_in)
    up = torch_matrix(low, s)[:n_in]
    back = torch_matrix(n_in, n_orig)
    for key, (a, b) in {"to_lowres_rows": (pad, down), "from_lowres_rows": (back, up)}.items():
        band = frame.band(key)
        exact = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float32)
        np.testing.assert_array_equal(band.to_dense(), exact)  # the product, rounded once
        # the old float32 product (BLAS) differs by at most one float32 rounding
        np.testing.assert_allclose(band.to_dense(), a @ b, rtol=0, atol=6e-8)
        np.testing.assert_array_equal(getattr(frame, key), exact)
        assert band.weights.shape[1] <= max(3, 2 * int(np.ceil(n_orig / n_in)) + 2)


def test_band_composition_equals_dense_product_of_random_bands():
    a, b = bilinear_band(97, 31), bilinear_band(300, 97)
    c = a @ b
    ref = a.to_dense().astype(np.float64) @ b.to_dense().astype(np.float64)
    np.testing.assert_array_equal(c.to_dense(), ref.astype(np.float32))
    assert c.shape == (31, 300)
    with pytest.raises(ValueError, match="compose"):
        a @ bilinear_band(300, 98)


def test_frame_of_a_50000_px_image_builds_its_maps_in_little_memory():
    """No n x n (nor n x 1024 dense) array: every map of a 50 000 px square image is a band."""
    frame = SamFrame((50000, 50000), image_size=1024, lowres_size=256, embedding_size=64)
    keys = ["to_lowres_rows", "to_lowres_cols", "from_lowres_rows", "from_lowres_cols",
            "from_embedding_rows", "from_embedding_cols"]  # fmt: skip
    tracemalloc.start()
    bands = {key: frame.band(key) for key in keys}
    low = np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32)
    ext = frame.lowres_extent(low > 2.5)
    crop = frame.original_crop_to_lowres(np.ones((400, 300), bool), (25000, 31000))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 30e6, peak  # the old dense identity alone was 50000**2 * 8 bytes = 20 GB
    assert all(b.nbytes < 2e6 for b in bands.values()), {k: b.nbytes for k, b in bands.items()}
    assert ext is not None and crop is not None
    # sampled columns of the maps equal torch's resize chain applied to one-hot vectors
    cols = [0, 7, 24999, 49950, 49999]
    onehot = torch.zeros(1, 1, 50000, len(cols), dtype=torch.float64)
    onehot[0, 0, cols, range(len(cols))] = 1
    r = F.interpolate(onehot, size=(1024, len(cols)), mode="bilinear", align_corners=False)
    r = F.interpolate(r, size=(256, len(cols)), mode="bilinear", align_corners=False)[0, 0]
    got = bands["to_lowres_rows"].to_sparse()[:, cols].toarray()
    np.testing.assert_allclose(got, r.numpy(), rtol=0, atol=1e-6)
    onehot = torch.zeros(1, 1, 256, 4, dtype=torch.float64)
    onehot[0, 0, [0, 100, 254, 255], range(4)] = 1
    r = F.interpolate(onehot, size=(1024, 4), mode="bilinear", align_corners=False)
    r = F.interpolate(r, size=(50000, 4), mode="bilinear", align_corners=False)[0, 0]
    got = bands["from_lowres_rows"].to_sparse()[:, [0, 100, 254, 255]].toarray()
    np.testing.assert_allclose(got, r.numpy(), rtol=0, atol=1e-6)


def test_frame_of_a_wide_50000_px_image_keeps_sam_padding_out():
    """A 50 000 x 3000 image: its columns fill only 61 px of SAM's frame, the rest is padding."""
    frame = SamFrame((50000, 3000), image_size=1024, lowres_size=256)
    assert frame.input_size == (1024, 61)
    used, _, _ = frame.band("to_lowres_cols").nonzero_range()
    assert used[:15].all() and not used[16:].any()
    low = -np.ones((256, 256), np.float32)
    low[:, 20:] = 1.0  # positive only over padding
    assert frame.lowres_extent(low > 0) is None
