"""Context-aware elastic box (SPEC section 2): strips, similarity, expansion, memory."""

from __future__ import annotations

import math
import time
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _data import DSB2018
from napari_samrefine.engine.embedding import ImageEmbedding, embed_image
from napari_samrefine.engine.frame import SamFrame
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.labels.objects import ObjectMask, objects_from_labels
from napari_samrefine.samrefiner.cebox import FeatureGrid, cebox_strips, elastic_box
from napari_samrefine.samrefiner.prompts import excavate_object, excavate_prompts
from napari_samrefine.testing import tiny_sam


def brute_force_cebox(full: np.ndarray, emb: ImageEmbedding, lam: float):
    """SPEC's CEBox on whole-image tensors (the reference code's way, without its memory care)."""
    H, W = full.shape
    feats = torch.as_tensor(emb.valid_features())[None]  # (1, C, gh, gw)
    gh, gw = feats.shape[-2:]
    up = F.interpolate(feats, size=(H, W), mode="bilinear", align_corners=False)
    up = F.normalize(up, dim=1)[0]  # (C, H, W)
    small = F.interpolate(torch.as_tensor(full, dtype=torch.float32)[None, None], size=(gh, gw),
                          mode="nearest")[0, 0] > 0
    if not small.any():
        return None, None
    q = F.normalize(feats[0][:, small].mean(dim=1), dim=0)
    cos = torch.einsum("c,chw->hw", q, up).numpy()
    ys, xs = np.nonzero(full)
    x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
    sx = max(1, math.ceil(min((x2 - x1 + 1) / 10, 10)))
    sy = max(1, math.ceil(min((y2 - y1 + 1) / 10, 10)))
    strips = {
        0: (slice(y1, y2 + 1), slice(max(x1 - sx, 0), x1), -1),
        1: (slice(max(y1 - sy, 0), y1), slice(x1, x2 + 1), -1),
        2: (slice(y1, y2 + 1), slice(x2 + 1, min(x2 + 1 + sx, W)), 1),
        3: (slice(y2 + 1, min(y2 + 1 + sy, H)), slice(x1, x2 + 1), 1),
    }
    box = np.array([x1, y1, x2, y2])
    fractions = {}
    for k, (r, c, sign) in strips.items():
        strip = cos[r, c]
        if strip.size == 0:
            continue
        fractions[k] = (strip > 0.5).mean()
        # distance of the decision from its knife edge (to skip float-rounding ties)
        fractions[k, "margin"] = np.abs(strip - 0.5).min()
        if fractions[k] > lam:
            box[k] += sign * (strip.shape[1] if k in (0, 2) else strip.shape[0])
    return box, fractions


@pytest.fixture(scope="module")
def real_case():
    import tifffile
    from PIL import Image

    image = np.asarray(Image.open(DSB2018 / "images" / "00071198d059.png"))[150:256, 30:190]
    labels = tifffile.imread(DSB2018 / "labels" / "00071198d059.tif")[150:256, 30:190]
    emb = embed_image(tiny_sam(0), to_sam_rgb(image))
    return labels, image, emb


# --- strips --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "step"), [(1, 1), (5, 1), (10, 1), (11, 2), (30, 3), (31, 4), (99, 10), (400, 10)]
)
def test_strip_width_is_a_tenth_of_the_side_rounded_up_capped_at_10(width, step):
    strips = cebox_strips([200, 200, 200 + width - 1, 209], (1000, 1000))
    assert strips["left"][2] == strips["right"][2] == step
    assert strips["left"][1] == slice(200 - step, 200)
    assert strips["top"][2] == strips["bottom"][2] == 1  # height 10
    assert strips["top"][1] == slice(200, 200 + width)  # spans the box along the side


def test_strips_are_clipped_to_the_image_and_dropped_at_its_border():
    strips = cebox_strips([0, 2, 49, 20], (25, 52))  # width 50 -> step 5, height 19 -> step 2
    assert "left" not in strips
    assert strips["right"] == (slice(2, 21), slice(50, 52), 2)
    assert strips["top"] == (slice(0, 2), slice(0, 50), 2)
    assert strips["bottom"] == (slice(21, 23), slice(0, 50), 2)


# --- synthetic embedding with a known answer -------------------------------------------------


def synthetic_embedding() -> ImageEmbedding:
    """64 x 64 image, 16 x 16 grid of 4-px cells: cells in rows 4-11, columns 4-9 are +x."""
    frame = SamFrame((64, 64), image_size=64, lowres_size=64, embedding_size=16)
    f = torch.zeros(1, 2, 16, 16)
    f[0, 0] = -1.0
    f[0, 0, 4:12, 4:10] = 1.0  # region R: pixel rows 16..47, columns 16..39
    f[0, 1] = 0.1
    return ImageEmbedding(features=f, frame=frame, key="synthetic")


def test_synthetic_expansion_follows_the_similar_region():
    emb = synthetic_embedding()
    full = np.zeros((64, 64), bool)
    full[20:44, 16:30] = True  # inside R, touching its left edge; width 14, height 24
    box, expanded = elastic_box(ObjectMask.from_full(full), FeatureGrid.from_embedding(emb))
    # left strip (cols 14-15) lies outside R: stays; right (cols 30-31, step 2), top (rows
    # 17-19, step 3) and bottom (rows 44-46) lie inside R: move out by one step
    assert box.tolist() == [16, 17, 31, 46] and expanded
    ref, _ = brute_force_cebox(full, emb, 0.1)
    assert ref.tolist() == box.tolist()
    # no side moves when the threshold cannot be exceeded
    box, expanded = elastic_box(ObjectMask.from_full(full), FeatureGrid.from_embedding(emb), 1.0)
    assert box.tolist() == [16, 20, 29, 43] and not expanded


def test_uniform_neighbourhood_grows_every_side_and_sets_strength_1():
    emb = synthetic_embedding()
    full = np.zeros((64, 64), bool)
    full[50:60, 44:60] = True  # all outside R; its neighbourhood is outside R too
    p = excavate_object(ObjectMask.from_full(full), embedding=emb)
    # everything outside R has the object's feature: all sides grow by one step (2 px
    # left/right for the width 16, 1 px top/bottom for the height 10)
    assert p.box.tolist() == [42, 49, 61, 60] and p.expanded
    assert p.strength == 1.0
    assert np.abs(p.mask_input).max() <= 1.0  # amplitude 1 for an expanded box


def test_empty_downsampled_mask_means_no_expansion():
    emb = synthetic_embedding()
    full = np.zeros((64, 64), bool)
    full[21:23, 21:23] = True  # nearest sampling reads pixels 4i: rows/cols 20 and 24
    grid = FeatureGrid.from_embedding(emb)
    assert grid.query(ObjectMask.from_full(full)) is None
    box, expanded = elastic_box(ObjectMask.from_full(full), grid)
    assert box.tolist() == [21, 21, 22, 22] and not expanded
    assert brute_force_cebox(full, emb, 0.1)[0] is None


def test_cebox_off_keeps_the_tight_box_and_the_full_strength():
    emb = synthetic_embedding()
    full = np.zeros((64, 64), bool)
    full[20:44, 16:30] = True
    for off in (None, 0, 0.0):
        p = excavate_object(ObjectMask.from_full(full), embedding=emb, cebox=off)
        assert p.box.tolist() == p.tight_box.tolist() and not p.expanded
        assert p.strength == 15.0
    # and no embedding means no CEBox either
    (p,) = excavate_prompts(full.astype(np.uint8), image_size=64, lowres_size=64)
    assert not p.expanded


def test_embedding_of_another_image_is_refused():
    emb = synthetic_embedding()
    obj = ObjectMask(1, np.ones((2, 2), bool), (0, 0), (32, 32))
    with pytest.raises(ValueError, match="embed the image"):
        elastic_box(obj, FeatureGrid.from_embedding(emb))
    with pytest.raises(ValueError, match="embed the image"):
        excavate_prompts(np.ones((32, 32), np.uint8), emb)


# --- real image, tiny SAM --------------------------------------------------------------------


def image_derived_embedding(image: np.ndarray) -> ImageEmbedding:
    """An embedding whose features are the image's own intensities on a 4-px grid.

    The tiny random SAM's features are nearly uniform (every strip is similar); these
    make bright nuclei similar to each other and unlike the dark background, so that
    strips are partly similar and lambda decides.
    """
    frame = SamFrame(image.shape[:2], image_size=256, lowres_size=256, embedding_size=64)
    gh, gw = frame.valid_embedding_size
    grey = torch.tensor(image[..., 0] if image.ndim == 3 else image, dtype=torch.float32)
    small = F.interpolate(grey[None, None] / 255, size=(gh, gw), mode="area")[0, 0]
    f = torch.zeros(1, 3, 64, 64)
    f[0, 0, :gh, :gw] = small - small.median()
    f[0, 1] = 0.03
    f[0, 2] = 0.03 * torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    return ImageEmbedding(f, frame, "image-derived")


def compare_with_brute_force(labels, emb, lam):
    grid = FeatureGrid.from_embedding(emb)
    checked = sides_moved = sides = 0
    for obj in objects_from_labels(labels):
        full = obj.to_image()
        ref, fractions = brute_force_cebox(full, emb, lam)
        box, expanded = elastic_box(obj, grid, lam)
        if ref is None:
            assert not expanded
            continue
        ties = any(
            abs(fractions[k] - lam) < 1e-9 or fractions[k, "margin"] < 1e-5
            for k in range(4)
            if k in fractions
        )
        if ties:  # a decision on a float-rounding knife edge
            continue
        assert box.tolist() == ref.tolist(), obj.label_id
        assert expanded == bool((ref != obj.tight_box).any())
        checked += 1
        sides_moved += int((box != obj.tight_box).sum())
        sides += sum(1 for k in range(4) if k in fractions)
    return checked, sides_moved, sides


def test_tiny_sam_embedding_of_a_real_image_matches_brute_force(real_case):
    labels, image, emb = real_case
    checked, moved, sides = compare_with_brute_force(labels, emb, 0.1)
    assert checked > 10 and moved > 0


@pytest.mark.parametrize("lam", [0.1, 0.6, 0.8])
def test_image_derived_embedding_matches_brute_force(real_case, lam):
    labels, image, _ = real_case
    checked, moved, sides = compare_with_brute_force(labels, image_derived_embedding(image), lam)
    assert checked > 10
    if lam > 0.5:  # some sides move, others do not: the threshold decides
        assert 0 < moved < sides


def test_excavate_prompts_with_embedding_uses_cebox_per_object(real_case):
    labels, image, _ = real_case
    emb = image_derived_embedding(image)
    prompts = excavate_prompts(labels, emb, cebox=0.6)
    grid = FeatureGrid.from_embedding(emb)
    flags = []
    for p, obj in zip(prompts, objects_from_labels(labels), strict=True):
        box, expanded = elastic_box(obj, grid, 0.6)
        assert p.box.tolist() == box.tolist() and p.expanded == expanded
        assert p.strength == (1.0 if expanded else 15.0)  # this object's flag only
        assert p.mask_input.shape == (emb.frame.lowres_size,) * 2
        flags.append(expanded)
    assert any(flags) and not all(flags)
    # SAM's sizes are read off the embedding, not the 1024 defaults
    assert emb.frame.lowres_size == 256 and emb.frame.image_size == 256


# --- memory: only strips are upsampled ----------------------------------------------------


def test_large_image_touches_only_strip_sized_arrays():
    # a ViT-B sized embedding (256 x 64 x 64) of a 3000 x 3000 image: the full upsampled
    # feature map would be 3000 * 3000 * 256 * 4 bytes = 9.2 GB
    H = W = 3000
    frame = SamFrame((H, W), image_size=1024, lowres_size=256, embedding_size=64)
    gen = torch.Generator().manual_seed(0)
    emb = ImageEmbedding(torch.randn(1, 256, 64, 64, generator=gen), frame, "large")
    full_box = np.zeros((300, 400), bool)
    full_box[20:280, 30:370] = True
    obj = ObjectMask(1, full_box, (1200, 1500), (H, W))
    frame.from_embedding_rows, frame.from_embedding_cols  # noqa: B018 (cached matrices, 0.8 MB)
    tracemalloc.start()
    t0 = time.perf_counter()
    grid = FeatureGrid.from_embedding(emb)
    box, _ = elastic_box(obj, grid)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # the grid copy is 4 MB; each strip is at most 10 x 340 px x 256 channels in float64
    assert peak < 40e6, peak
    assert elapsed < 5
    assert box[0] <= 1530 and box[2] >= 1869
