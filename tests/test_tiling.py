"""Tiles with a halo (SPEC section 6): geometry, assignment, identity with the untiled path."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import napari_samrefine as nsr
from napari_samrefine.engine.embedding import EmbeddingCache
from napari_samrefine.labels.objects import ObjectMask, objects_from_labels
from napari_samrefine.pipeline.tiling import (
    TileSpec,
    assign_to_tiles,
    context_box,
    refine_plane,
    resolve_tiling,
    tile_windows,
)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 700), w=st.integers(1, 700), tile=st.integers(32, 300), frac=st.floats(0, 0.49)
)
def test_windows_cover_the_image_and_overlap_by_twice_the_halo(h, w, tile, frac):
    spec = TileSpec(tile, int(frac * tile))
    windows = tile_windows((h, w), spec)
    cover = np.zeros((h, w), np.int32)
    for y0, x0, y1, x1 in windows:
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
        assert y1 - y0 == min(tile, h) and x1 - x0 == min(tile, w)
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    # any box up to 2 * halo + 1 pixels wide fits whole in some window
    side = 2 * spec.halo + 1
    for y in range(0, max(1, h - side + 1), max(1, h // 7)):
        for x in range(0, max(1, w - side + 1), max(1, w // 7)):
            assert any(
                y0 <= y and x0 <= x and min(y + side, h) <= y1 and min(x + side, w) <= x1
                for y0, x0, y1, x1 in windows
            )


def _square(y, x, size, shape, label=1):
    full = np.zeros(shape, bool)
    full[y : y + size, x : x + size] = True
    return ObjectMask.from_full(full, label)


def test_assignment_picks_a_window_holding_the_context_box():
    shape = (600, 600)
    spec = TileSpec(256, 32)
    windows = tile_windows(shape, spec)
    small = _square(300, 10, 20, shape)  # near the left border
    big = _square(100, 100, 300, shape, 2)  # larger than any tile
    where = assign_to_tiles([small, big], windows)
    assert where[1] is None
    y0, x0, y1, x1 = windows[where[0]]
    cy0, cx0, cy1, cx1 = context_box(small)
    assert (cx0, cx1) == (0, 46) and (cy0, cy1) == (284, 336)
    assert y0 <= cy0 and x0 <= cx0 and cy1 <= y1 and cx1 <= x1


def test_resolve_tiling_and_bad_options(sam):
    assert resolve_tiling(None, None, sam, (5000, 5000)) is None
    assert resolve_tiling("auto", None, sam, (512, 300)) is None  # not much larger than 256
    assert resolve_tiling("auto", None, sam, (513, 300)) == TileSpec(256, 32)
    assert resolve_tiling(128, 10, sam, (100, 128)) is None  # fits in one tile
    assert resolve_tiling(128, None, sam, (100, 129)) == TileSpec(128, 16)
    with pytest.raises(ValueError, match="halo"):
        resolve_tiling(128, 64, sam, (500, 500))
    with pytest.raises(ValueError, match="at least 32"):
        resolve_tiling(16, 0, sam, (500, 500))
    with pytest.raises(ValueError, match="auto"):
        resolve_tiling("big", None, sam, (500, 500))
    with pytest.raises(TypeError, match="int"):
        resolve_tiling(100.5, None, sam, (500, 500))


@pytest.fixture(scope="module")
def big_scene(dsb_pair):
    """Four DSB crops side by side (512 x 512 uint8, over 100 nuclei) plus one huge object."""
    image, labels = dsb_pair
    big_image = np.block([[image, image[:, ::-1]], [image[::-1], image[::-1, ::-1]]])
    parts = [labels, labels[:, ::-1], labels[::-1], labels[::-1, ::-1]]
    offset, shifted = 0, []
    for part in parts:
        shifted.append(np.where(part > 0, part.astype(np.int32) + offset, 0))
        offset += int(part.max())
    big_labels = np.block([[shifted[0], shifted[1]], [shifted[2], shifted[3]]])
    big_labels[180:330, 180:330] = big_labels.max() + 1  # fits no 256 px tile
    return big_image, big_labels


def test_tiled_objects_equal_the_untiled_path_on_their_tile(sam, big_scene):
    image, labels = big_scene
    rgb = np.repeat(image[..., None], 3, -1)
    objects = objects_from_labels(labels)
    spec = TileSpec(256, 32)
    windows = tile_windows(labels.shape, spec)
    where = assign_to_tiles(objects, windows)
    assert where[-1] is None and sum(w is not None for w in where) > 50
    kw = dict(iterations=2, convergence=None, batch_size=8)
    tiled = refine_plane(sam, rgb, objects, tiling=spec, **kw)
    for j, (y0, x0, y1, x1) in enumerate(windows):
        members = [i for i, w in enumerate(where) if w == j]
        if not members:
            continue
        crop_labels = np.where(np.isin(labels[y0:y1, x0:x1], [objects[i].label_id for i in members]),
                               labels[y0:y1, x0:x1], 0)
        alone = refine_plane(sam, rgb[y0:y1, x0:x1], objects_from_labels(crop_labels), **kw)
        for i, a in zip(members, alone, strict=True):
            t = tiled[i]
            assert (t.status, t.iterations, t.predicted_iou) == (a.status, a.iterations, a.predicted_iou)
            assert t.mask.offset == (a.mask.offset[0] + y0, a.mask.offset[1] + x0)
            np.testing.assert_array_equal(t.mask.mask, a.mask.mask)
            np.testing.assert_array_equal(t.prompts.box, a.prompts.box + [x0, y0, x0, y0])
    # the object that fits no tile is refined on the whole image, as untiled
    untiled = refine_plane(sam, rgb, [objects[-1]], **kw)[0]
    np.testing.assert_array_equal(tiled[-1].mask.to_image(), untiled.mask.to_image())


def test_image_equal_to_one_tile_is_refined_as_untiled(sam, dsb_pair):
    image, labels = dsb_pair
    rgb = np.repeat(image[..., None], 3, -1)
    objects = objects_from_labels(labels)
    one = TileSpec(image.shape[0], 16)
    assert tile_windows(image.shape, one) == [(0, 0, *image.shape)]
    a = refine_plane(sam, rgb, objects, tiling=one, iterations=2)
    b = refine_plane(sam, rgb, objects, tiling=None, iterations=2)
    for s, t in zip(a, b, strict=True):
        assert (s.status, s.iterations, s.predicted_iou, s.region) == (
            t.status, t.iterations, t.predicted_iou, t.region
        )
        np.testing.assert_array_equal(s.mask.to_image(), t.mask.to_image())
    r1 = nsr.refine(image, labels, sam, iterations=2, tile=image.shape[0])
    r2 = nsr.refine(image, labels, sam, iterations=2, tile=None)
    np.testing.assert_array_equal(r1.labels, r2.labels)


def test_refine_with_tiles_encodes_each_tile_once_and_reports_progress(sam, big_scene):
    image, labels = big_scene
    cache = EmbeddingCache(max_items=64)
    seen = []
    result = nsr.refine(image, labels, sam, iterations=2, tile=256, embedding_cache=cache,
                        progress=lambda d, t, m: seen.append((d, t, m)))
    done = [d for d, _, _ in seen]
    assert done == sorted(done) and done[-1] == seen[-1][1] == 3
    assert any("tile" in m for _, _, m in seen)
    n_tiles = cache.misses
    assert 1 < n_tiles <= len(tile_windows(labels.shape, TileSpec(256, 32))) + 1
    nsr.refine(image, labels, sam, iterations=1, tile=256, embedding_cache=cache)
    assert cache.misses == n_tiles  # every tile embedding reused
    assert result.labels.shape == labels.shape and result.labels.dtype == labels.dtype
    table = result.table()
    assert len(table) == len(np.unique(labels)) - 1
    assert set(table["status"]) <= {"ok", "empty-output"}
