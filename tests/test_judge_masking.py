"""FM / IM / HM feature masking on the tiny SAM with a real DSB2018 crop."""

from __future__ import annotations

import numpy as np
import pytest

from _data import DSB2018
from napari_samrefine.engine.embedding import EmbeddingCache, embed_image
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.judge.masking import (
    feature_masking,
    hybrid_masking,
    input_masked_image,
    mask_coverage,
    masked_features,
    masked_prototype,
    pixel_fill,
)


@pytest.fixture(scope="module")
def nuclei():
    """A 96 x 80 crop of a DSB2018 fluorescence image (as SAM RGB) and one nucleus' mask."""
    import tifffile
    from PIL import Image

    image = np.asarray(Image.open(DSB2018 / "images" / "35ca5f142a7d.png"))[:96, :80]
    labels = tifffile.imread(DSB2018 / "labels" / "35ca5f142a7d.tif")[:96, :80]
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    rgb = to_sam_rgb(image if image.ndim == 2 else image[..., 0])
    return rgb, labels == ids[np.argmax(counts)]


def test_coverage_is_the_masks_area_on_the_feature_grid(sam, nuclei):
    rgb, mask = nuclei
    image = embed_image(sam, rgb)
    cov = mask_coverage(mask, image.frame)
    assert cov.shape == image.frame.valid_embedding_size
    assert cov.min() >= 0 and cov.max() <= 1
    # total coverage x cell area (in original pixels) = the mask's area, to resampling error
    sy, sx = image.frame.scale
    cell = image.frame.image_size / image.frame.embedding_size
    area = cov.sum() * cell * cell / (sy * sx)
    assert area == pytest.approx(mask.sum(), rel=0.05)
    # cells more than one cell away from the object's box are not covered
    rows, cols = np.nonzero(mask)
    r0, r1 = int(rows.min() * sy // cell) - 1, int(rows.max() * sy // cell) + 2
    c0, c1 = int(cols.min() * sx // cell) - 1, int(cols.max() * sx // cell) + 2
    outside = np.ones_like(cov, bool)
    outside[max(r0, 0) : r1, max(c0, 0) : c1] = False
    assert outside.any() and (cov[outside] == 0).all()
    assert cov[int(rows.mean() * sy // cell), int(cols.mean() * sx // cell)] > 0.5


def test_fm_is_features_times_coverage(sam, nuclei):
    rgb, mask = nuclei
    cache = EmbeddingCache()
    fm, cov = masked_features(sam, rgb, mask, "fm", cache=cache)
    image = embed_image(sam, rgb)
    expected = image.valid_features() * mask_coverage(mask, image.frame)[None]
    np.testing.assert_allclose(fm, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(cov, mask_coverage(mask, image.frame))
    assert (fm[:, cov == 0] == 0).all() and (fm[:, cov > 0] != 0).any()
    assert cache.misses == 1  # FM needs the image's own embedding only


def test_im_reencodes_the_image_with_the_pixel_mean_outside_the_mask(sam, nuclei):
    rgb, mask = nuclei
    cache = EmbeddingCache()
    im, cov = masked_features(sam, rgb, mask, "im", cache=cache)
    fill = pixel_fill(sam)
    np.testing.assert_array_equal(fill, [124, 116, 104])  # SAM's pixel mean, 8-bit
    masked = input_masked_image(rgb, mask, fill)
    assert (masked[~mask] == fill).all() and (masked[mask] == rgb[mask]).all()
    # the masked image's features, taken under the mask once (times the coverage)
    im_raw = embed_image(sam, masked).valid_features()
    np.testing.assert_allclose(im, im_raw * cov[None], rtol=1e-5, atol=1e-6)
    assert (im[:, cov == 0] == 0).all()
    # a different input, so different features than the plain image's (FM's)
    fm = embed_image(sam, rgb).valid_features() * cov[None]
    assert not np.allclose(im, fm, atol=1e-3)
    # one encoder pass for the image, one for the masked image; repeats are cache hits
    assert cache.misses == 2
    masked_features(sam, rgb, mask, "im", cache=cache)
    assert cache.misses == 2 and cache.hits >= 2


def test_hm_takes_fm_where_positive_and_im_elsewhere(sam, nuclei):
    rgb, mask = nuclei
    cache = EmbeddingCache()
    fm, _ = masked_features(sam, rgb, mask, "fm", cache=cache)
    im, _ = masked_features(sam, rgb, mask, "im", cache=cache)
    hm, _ = masked_features(sam, rgb, mask, "hm", cache=cache)
    np.testing.assert_array_equal(hm, hybrid_masking(fm, im))
    positive = fm > 0
    assert positive.any() and (~positive).any()  # both sources are used
    np.testing.assert_array_equal(hm[positive], fm[positive])
    np.testing.assert_array_equal(hm[~positive], im[~positive])
    assert cache.misses == 2  # HM reuses FM's and IM's embeddings


def test_fm_prototype_weighs_coverage_once_by_hand():
    """FM features built by hand: the prototype is the coverage-weighted mean of the features.

    2 x 2 grid, two channels. Raw features f: channel 0 is 2 everywhere, channel 1
    is [[0, 1], [2, 3]]; coverage c = [[1, 0.5], [0, 0]]. FM = c * f already
    carries the coverage, so t = sum(FM) / sum(c) = ((2 + 1), (0 + 0.5)) / 1.5
    = (2, 1/3), L2-normalised. Weighing FM by c again gives sum(c^2 f) / sum(c)
    = (2.5, 0.25) / 1.5, direction (10, 1) instead of (6, 1).
    """
    feats = np.stack([np.full((2, 2), 2.0), np.arange(4.0).reshape(2, 2)]).astype(np.float32)
    cov = np.array([[1.0, 0.5], [0.0, 0.0]], np.float32)
    fm = feature_masking(feats, cov)
    np.testing.assert_allclose(fm, [[[2.0, 1.0], [0.0, 0.0]], [[0.0, 0.5], [0.0, 0.0]]])
    t = masked_prototype(fm, cov)
    np.testing.assert_allclose(t, np.array([2.0, 1 / 3]) / np.hypot(2.0, 1 / 3), rtol=1e-6)
    with pytest.raises(ValueError, match="covers no feature cell"):
        masked_prototype(fm, np.zeros((2, 2)))


def test_im_and_hm_prototypes_weigh_coverage_once_by_hand():
    """IM and HM on the 2 x 2 grid: each element counts once with its cell's coverage.

    Image features f: channel 0 = [[1, -1], [5, 5]], channel 1 = [[-2, 4], [5, 5]];
    masked-image (IM) features g: channel 0 = [[3, 6], [7, 7]], channel 1 =
    [[1, -4], [7, 7]]; coverage c = [[1, 0.5], [0, 0]], sum 1.5.
    IM: t = (1 * 3 + 0.5 * 6, 1 * 1 + 0.5 * (-4)) / 1.5 = (6, -1) / 1.5.
    HM: f where c * f > 0, else g: channel 0 takes f (1) in cell (0, 0) and g (6)
    in (0, 1); channel 1 takes g (1) in (0, 0) and f (4) in (0, 1); so
    t = (1 * 1 + 0.5 * 6, 1 * 1 + 0.5 * 4) / 1.5 = (4, 3) / 1.5.
    """
    f = np.array([[[1, -1], [5, 5]], [[-2, 4], [5, 5]]], np.float32)
    g = np.array([[[3, 6], [7, 7]], [[1, -4], [7, 7]]], np.float32)
    cov = np.array([[1.0, 0.5], [0.0, 0.0]], np.float32)
    fm, im = feature_masking(f, cov), feature_masking(g, cov)
    hm = hybrid_masking(fm, im)
    np.testing.assert_allclose(hm, [[[1.0, 3.0], [0.0, 0.0]], [[1.0, 2.0], [0.0, 0.0]]])
    np.testing.assert_allclose(
        masked_prototype(im, cov), np.array([6.0, -1.0]) / np.hypot(6, 1), rtol=1e-6
    )
    np.testing.assert_allclose(masked_prototype(hm, cov), [0.8, 0.6], rtol=1e-6)
    with pytest.raises(ValueError, match="pass the coverage"):
        masked_prototype(hm, cov[:1])


def test_masking_rejects_bad_input(sam, nuclei):
    rgb, mask = nuclei
    with pytest.raises(ValueError, match="not one of"):
        masked_features(sam, rgb, mask, "xm")
    with pytest.raises(ValueError, match="empty"):
        masked_features(sam, rgb, np.zeros_like(mask), "fm")
    with pytest.raises(ValueError, match="pass the mask of this image"):
        mask_coverage(mask[:10], embed_image(sam, rgb).frame)
