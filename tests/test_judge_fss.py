"""FSS backends for JFS: PerSAM-style on the tiny SAM, and the mask-transfer shape prior."""

from __future__ import annotations

import numpy as np
import pytest
from segment_anything import SamPredictor

from _data import DSB2018
from napari_samrefine.engine.embedding import EmbeddingCache
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.judge import FewShotSegmenter, MaskTransferFSS, PerSamFSS
from napari_samrefine.judge.fss_sam import location_map
from napari_samrefine.judge.masking import masked_features, masked_prototype


@pytest.fixture(scope="module")
def crops():
    """Query: a DSB2018 fluorescence crop and a nucleus mask; support: another image's crop."""
    import tifffile
    from PIL import Image

    def load(name, sl):
        image = np.asarray(Image.open(DSB2018 / "images" / f"{name}.png"))[sl]
        labels = tifffile.imread(DSB2018 / "labels" / f"{name}.tif")[sl]
        return to_sam_rgb(image if image.ndim == 2 else image[..., 0]), labels

    q_rgb, q_labels = load("35ca5f142a7d", np.s_[40:104, 24:88])
    s_rgb, s_labels = load("98c5ead89cd0", np.s_[:80, :72])
    return q_rgb, q_labels == 11, s_rgb, s_labels


def test_backends_follow_the_protocol(sam):
    assert isinstance(PerSamFSS(sam), FewShotSegmenter)
    assert isinstance(MaskTransferFSS(), FewShotSegmenter)
    with pytest.raises(ValueError, match="not one of"):
        PerSamFSS(sam, masking="xm")


@pytest.mark.parametrize("masking", ["fm", "im", "hm"])
def test_persam_points_come_from_the_location_map(sam, crops, masking):
    q_rgb, q_mask, s_rgb, _ = crops
    cache = EmbeddingCache()
    fss = PerSamFSS(sam, masking=masking, cache=cache)
    prob = fss.predict(q_rgb, q_mask, s_rgb)
    assert prob.shape == s_rgb.shape[:2] and prob.dtype == np.float32
    assert 0 <= prob.min() and prob.max() <= 1
    # the prototype's location map, computed independently: positive point at its
    # maximum, negative point at its minimum
    feats, cov = masked_features(sam, q_rgb, q_mask, masking, cache=EmbeddingCache())
    sim = location_map(masked_prototype(feats, cov), cache.get(sam, s_rgb))
    (px, py), (nx, ny) = fss.last_points
    assert sim[int(py), int(px)] == sim.max() and sim[int(ny), int(nx)] == sim.min()
    # one query image, its IM re-encoding (IM, HM), one support image
    assert cache.misses == (1 if masking == "fm" else 2) + 1


def test_location_map_finds_the_object_in_its_own_image(sam, crops):
    # FM prototype vs the same image's features: the object is more similar to its
    # own prototype than the rest of the image is
    q_rgb, q_mask, _, _ = crops
    cache = EmbeddingCache()
    feats, cov = masked_features(sam, q_rgb, q_mask, "fm", cache=cache)
    sim = location_map(masked_prototype(feats, cov), cache.get(sam, q_rgb))
    assert sim.shape == q_mask.shape
    assert sim[q_mask].mean() > sim[~q_mask].mean()
    assert sim.max() <= 1 + 1e-5 and sim.min() >= -1 - 1e-5


def test_persam_cascade_equals_segment_anythings_predictor(sam, crops):
    """The three decoder steps reproduce PerSAM's SamPredictor calls on the support image."""
    q_rgb, q_mask, s_rgb, _ = crops
    fss = PerSamFSS(sam, masking="hm", cache=EmbeddingCache())
    logits = fss.predict_logits(q_rgb, q_mask, s_rgb)
    points, labels = fss.last_points, np.array([1, 0])

    predictor = SamPredictor(sam)
    predictor.set_image(s_rgb)
    _, score, low = predictor.predict(
        point_coords=points, point_labels=labels, multimask_output=False
    )
    best = int(np.argmax(score))
    masks, score, low = predictor.predict(
        point_coords=points,
        point_labels=labels,
        mask_input=low[best : best + 1],
        multimask_output=True,
    )
    best = int(np.argmax(score))
    ys, xs = np.nonzero(masks[best])
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
    out, score, _ = predictor.predict(
        point_coords=points,
        point_labels=labels,
        box=box,
        mask_input=low[best : best + 1],
        multimask_output=True,
        return_logits=True,
    )
    reference = out[int(np.argmax(score))]
    np.testing.assert_allclose(logits, reference, atol=1e-5 * max(1.0, np.abs(reference).max()))
    np.testing.assert_allclose(
        fss.predict(q_rgb, q_mask, s_rgb), 1 / (1 + np.exp(-reference)), atol=1e-5
    )


def test_mask_transfer_is_the_resized_query_mask():
    fss = MaskTransferFSS()
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    same = fss.predict(np.zeros((8, 8, 3), np.uint8), mask, np.zeros((8, 8, 3), np.uint8))
    np.testing.assert_array_equal(same, mask.astype(np.float32))
    half = fss.predict(np.zeros((8, 8, 3), np.uint8), mask, np.zeros((4, 4, 3), np.uint8))
    np.testing.assert_array_equal(half > 0.5, np.pad(np.ones((2, 2), bool), 1))
