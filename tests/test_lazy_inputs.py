"""Lazy inputs (dask, zarr, memmaps) and out=: the labels of the in-memory path, bounded memory."""

from __future__ import annotations

import tracemalloc
import warnings

import dask.array as da
import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi

import napari_samrefine as nsr
from napari_samrefine.engine.embedding import EmbeddingCache
from napari_samrefine.engine.preprocess import stretch_limits, to_sam_rgb
from napari_samrefine.labels import arrays
from napari_samrefine.labels.arrays import arrange_image
from napari_samrefine.labels.objects import objects_from_labels
from napari_samrefine.labels.scan import scan_objects
from napari_samrefine.pipeline import contrast
from napari_samrefine.pipeline.contrast import plane_limits
from napari_samrefine.pipeline.strips import StripWriter
from napari_samrefine.pipeline.tiling import TileSpec, assign_to_tiles, refine_plane, tile_windows
from napari_samrefine.samrefiner.cascade import PromptSettings
from napari_samrefine.samrefiner.writeback import write_back

TILE = dict(tile=256, halo=32)


def _ellipse(labels, image, rng, cy, cx, ry, rx, lid):
    yy, xx = np.ogrid[: labels.shape[0], : labels.shape[1]]
    m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    labels[m] = lid
    image[m] += rng.uniform(300, 2000)


def scene(h=700, w=900, seed=0):
    """uint16 image, uint32 labels: ~40 ellipses, some on tile borders, some touching, two huge."""
    rng = np.random.default_rng(seed)
    image = rng.normal(1000, 50, (h, w))
    labels = np.zeros((h, w), np.uint32)
    lid = 0
    borders = [(256, 300), (448, 500), (350, 192), (120, 448), (600, 640), (300, 576)]
    for cy, cx in borders:  # centred on tile borders (tile 256, halo 32: stride 192)
        lid += 1
        _ellipse(labels, image, rng, cy, cx, *rng.uniform(10, 30, 2), lid * 11)
    for _ in range(10):  # pairs of touching objects: their boxes and refined masks overlap
        cy, cx = rng.uniform(40, h - 40), rng.uniform(40, w - 40)
        for dy in (0, 25):
            lid += 1
            _ellipse(labels, image, rng, cy + dy, cx + dy, 15, 20, lid * 11)
    for _ in range(12):
        lid += 1
        _ellipse(labels, image, rng, rng.uniform(0, h), rng.uniform(0, w),
                 *rng.uniform(6, 35, 2), lid * 11)
    for cy, cx in ((200, 250), (520, 700)):  # wider than any tile with context
        lid += 1
        _ellipse(labels, image, rng, cy, cx, 100, 110, lid * 11)
    return np.clip(image, 0, 65535).astype(np.uint16), labels


def _zarr(path, array, chunks):
    return zarr.create_array(store=str(path), data=array, chunks=chunks)


@pytest.fixture(scope="module")
def slide():
    return scene()


@pytest.fixture(scope="module")
def cache():
    return EmbeddingCache(max_items=64)


@pytest.fixture(scope="module")
def in_memory(sam, slide, cache):
    image, labels = slide
    return nsr.refine(image, labels, sam, iterations=2, embedding_cache=cache, **TILE)


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a.labels[...]), np.asarray(b.labels[...]))
    assert a.table().equals(b.table())
    assert [p is None for p in a.prompts] == [p is None for p in b.prompts]


# -- contrast -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint16", "int16", "int32", "uint64", "float32", "float64"])
def test_lazy_contrast_limits_equal_np_percentile(dtype, monkeypatch):
    rng = np.random.default_rng(1)
    if dtype.startswith("float"):
        image = (rng.gamma(2.0, 300.0, (301, 457)) - 50).astype(dtype)
        image[rng.random(image.shape) < 0.02] = np.nan
        image[0, :3] = (np.inf, -np.inf, 1e30)
    else:
        info = np.iinfo(dtype)
        image = rng.integers(max(info.min, -3000), min(info.max, 60000), (301, 457)).astype(dtype)
        if dtype == "uint64":
            image[:5, :5] = np.iinfo(np.uint64).max - np.arange(25).reshape(5, 5).astype(np.uint64)
    monkeypatch.setattr(arrays, "BLOCK", 64)
    monkeypatch.setattr(contrast, "COLLECT", 100)  # every radix pass runs
    for percentiles in ((1.0, 99.8), (0, 100), (37.3, 50.0)):
        finite = image.astype(np.float64)
        finite = finite[np.isfinite(finite)]
        expected = tuple(np.percentile(finite, percentiles))
        got = plane_limits(da.from_array(image, chunks=50), percentiles=percentiles)
        assert got == expected == stretch_limits(image, percentiles)


def test_window_rgb_equals_the_crop_of_the_whole_rgb(slide):
    image, _ = slide
    whole = to_sam_rgb(image)
    limits = plane_limits(da.from_array(image, chunks=128))
    for y0, x0, y1, x1 in tile_windows(image.shape, TileSpec(**TILE)):
        window = to_sam_rgb(image[y0:y1, x0:x1], limits=limits)
        np.testing.assert_array_equal(window, whole[y0:y1, x0:x1])
    # channels: an RGB uint16 image stretched as a whole, and the mean of stretched channels
    rgb = np.stack([image, image[::-1], image[:, ::-1]], axis=-1)
    for channel in (None, "mean", 1):
        whole = to_sam_rgb(rgb, channel=channel)
        limits = plane_limits(rgb, channel=channel)
        np.testing.assert_array_equal(
            to_sam_rgb(rgb[100:300, 50:400], channel=channel, limits=limits), whole[100:300, 50:400]
        )


def test_a_lazy_channel_axis_is_moved_last_without_reading(slide):
    image, _ = slide
    channels_first = np.stack([image, image[::-1], image[:, ::-1]])
    lazy = arrange_image(da.from_array(channels_first, chunks=(1, 128, 128)), image.shape, 0)
    assert lazy.shape == (*image.shape, 3) and lazy.chunks == (128, 128, 1)
    window = (slice(50, 300), slice(100, 160), slice(None))
    np.testing.assert_array_equal(lazy[window], np.moveaxis(channels_first, 0, -1)[window])
    np.testing.assert_array_equal(lazy[5, slice(2, 9), 1], channels_first[1, 5, 2:9])
    assert plane_limits(lazy, channel=2) == stretch_limits(channels_first[2])


def test_constant_and_empty_planes_are_refused_as_in_memory():
    for image in (np.full((40, 50), 7, np.uint16), np.full((40, 50), 7, np.uint8)):
        with pytest.raises(ValueError, match="constant"):
            plane_limits(da.from_array(image, chunks=16))
    with pytest.raises(ValueError, match="no finite value"):
        plane_limits(da.from_array(np.full((40, 50), np.nan, np.float32), chunks=16))


# -- objects --------------------------------------------------------------------------------


def test_block_scan_merges_objects_across_blocks(slide, monkeypatch):
    """Objects cut by blocks and chunks come out whole: ids, areas and boxes of find_objects."""
    monkeypatch.setattr(arrays, "BLOCK", 100)
    _, labels = slide
    huge = labels.astype(np.uint64) * np.uint64(2**40)  # ids near 2**63 (above 2**20 per block)
    huge[huge == huge.max()] = np.uint64(2**63 - 1)
    for lab in (labels, huge):
        ids, dense, counts = np.unique(lab, return_inverse=True, return_counts=True)
        found = ndi.find_objects(dense.reshape(lab.shape).astype(np.int32))  # 0 is ids[0] == 0
        boxes = [(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in found[: ids.size - 1]]
        for source in (lab, da.from_array(lab, chunks=70)):
            table = scan_objects(source)
            assert table.ids.tolist() == ids[1:].tolist()
            assert table.counts.tolist() == counts[1:].tolist()
            assert [tuple(b) for b in table.boxes.tolist()] == boxes
            assert table.background == counts[0]
        got = objects_from_labels(da.from_array(lab, chunks=70))
        assert all(np.array_equal(g.to_image(), lab == g.label_id) for g in got[:5])


def test_strip_writeback_equals_write_back_across_tiles(sam, slide, cache):
    """Objects refined in different tiles overlap near tile borders; the strips resolve them alike."""
    image, labels = slide
    objects = objects_from_labels(labels)
    spec = TileSpec(**TILE)
    states = refine_plane(sam, to_sam_rgb(image), objects, PromptSettings.for_model(sam),
                          tiling=spec, embedding_cache=cache, iterations=1)
    windows = tile_windows(labels.shape, spec)
    where = assign_to_tiles(objects, windows)
    assert where.count(None) == 2  # the two huge objects use the whole image
    # the scene tests what it should: refined masks of objects from different tiles overlap
    boxes = [s.mask.bbox for s in states]
    across = sum(
        1 for i in range(len(states)) for j in range(i)
        if where[i] != where[j] and boxes[i][0] < boxes[j][2] and boxes[j][0] < boxes[i][2]
        and boxes[i][1] < boxes[j][3] and boxes[j][1] < boxes[i][3]
    )
    assert across > 10
    states[3].status = "empty-output"  # its coarse pixels are never taken
    keep = {objects[5].label_id, objects[8].label_id}  # not refined: never overwritten
    refined = [s for s in states if s.coarse.label_id not in keep]
    expected = write_back(labels, refined)
    tile_of = {id(s): w for s, w in zip(states, where, strict=True)}
    for order in (1, -1):  # painting order does not matter
        store = np.zeros_like(labels)
        whole = [s for s in refined if tile_of[id(s)] is None]
        writer = StripWriter(store, labels, (), labels.shape,
                             [s.coarse.label_id for s in refined], whole)
        for j, window in enumerate(windows):
            writer.advance(window[0], window[2])
            writer.paint([s for s in refined if tile_of[id(s)] == j][::order])
        writer.close()
        np.testing.assert_array_equal(store, expected)


# -- refine --------------------------------------------------------------------------------


def test_zarr_input_and_out_path(sam, slide, cache, in_memory, tmp_path):
    image, labels = slide
    zimage = _zarr(tmp_path / "image.zarr", image, (256, 256))
    zlabels = _zarr(tmp_path / "labels.zarr", labels, (200, 300))
    result = nsr.refine(zimage, zlabels, sam, iterations=2, embedding_cache=cache,
                        out=tmp_path / "refined.zarr", **TILE)
    assert isinstance(result.labels, zarr.Array) and result.labels.chunks == (200, 300)
    _same(in_memory, result)
    reopened = zarr.open_array(str(tmp_path / "refined.zarr"), mode="r")
    np.testing.assert_array_equal(reopened[...], in_memory.labels)
    np.testing.assert_array_equal(zlabels[...], labels)  # inputs are never modified
    with pytest.raises(ValueError, match="already exists"):
        nsr.refine(zimage, zlabels, sam, out=tmp_path / "refined.zarr", **TILE)


def test_label_ids_memmap_and_out_array(sam, slide, cache, tmp_path):
    image, labels = slide
    ids = [11, 22, 77, 99, 12345]
    expected = nsr.refine(image, labels, sam, iterations=1, embedding_cache=cache,
                          label_ids=ids, **TILE)
    np.save(tmp_path / "labels.npy", labels)
    memmap = np.load(tmp_path / "labels.npy", mmap_mode="r")
    out = np.zeros_like(labels)
    result = nsr.refine(image, memmap, sam, iterations=1, embedding_cache=cache,
                        label_ids=ids, out=out, **TILE)
    assert result.labels is out
    _same(expected, result)
    assert {"skipped", "empty-input", "ok"} <= set(result.table().status)


def test_stacks_3d_and_4d_plane_by_plane(sam, cache):
    image, labels = scene(300, 420, seed=3)
    opts = dict(iterations=1, embedding_cache=cache, tile=128, halo=16)
    images = np.stack([image, image[::-1], image[:, ::-1]])
    stack = np.stack([labels, labels[::-1], labels[:, ::-1]])
    result = nsr.refine(da.from_array(images, chunks=(1, 100, 100)),
                        da.from_array(stack, chunks=(1, 128, 128)), sam, planes=[0, 2], **opts)
    np.testing.assert_array_equal(result.labels[1], stack[1])  # a plane not chosen stays
    assert list(dict.fromkeys(result.table().plane)) == [0, 2]
    # 4D (T, Z, Y, X): plane by plane over (t, z); planes= takes (t, z) pairs and time points
    images4, stack4 = np.stack([images[:2], images[1:]]), np.stack([stack[:2], stack[1:]])
    expected = nsr.refine(images4, stack4, sam, planes=[(1, 0), 0], **opts)
    assert list(dict.fromkeys(expected.table().plane)) == [(0, 0), (0, 1), (1, 0)]
    for t, z in [(0, 0), (0, 1), (1, 0)]:
        one = nsr.refine(images4[t, z], stack4[t, z], sam, **opts)
        np.testing.assert_array_equal(expected.labels[t, z], one.labels)
    np.testing.assert_array_equal(expected.labels[1, 1], stack4[1, 1])


def test_binary_masks_stay_binary(sam, cache):
    image, labels = scene(300, 420, seed=4)
    opts = dict(iterations=1, embedding_cache=cache, tile=128, halo=16)
    mask = labels > 0
    with pytest.warns(UserWarning, match="connected components"):
        result = nsr.refine(image, da.from_array(mask, chunks=100), sam, **opts)
    assert result.labels.dtype == np.bool_
    one = (labels == labels.max()).astype(np.uint8) * 255
    result = nsr.refine(image, da.from_array(one, chunks=100), sam, binary="one", **opts)
    assert set(np.unique(result.labels).tolist()) == {0, 255}


def test_objects_too_large_for_a_tile_on_a_slide_too_large_to_downscale(sam, slide, cache,
                                                                        monkeypatch):
    image, labels = slide
    monkeypatch.setattr(arrays, "MEMORY_BUDGET", 3 * image.size - 1)
    with pytest.warns(UserWarning, match="tile="):
        result = nsr.refine(da.from_array(image), da.from_array(labels), sam, iterations=1,
                            embedding_cache=cache, out=np.zeros_like(labels), **TILE)
    table = result.table()
    big = table[table.status == "too-large-for-tile"]
    assert len(big) == 2 and (big.coarse_area == big.refined_area).all()
    for lid in big.label_id:
        np.testing.assert_array_equal(result.labels == lid, labels == lid)
    with pytest.raises(ValueError, match="out="):
        nsr.refine(da.from_array(image), da.from_array(labels), sam, **TILE)


def test_bad_lazy_input_is_refused_with_the_fix(sam, slide, tmp_path):
    image, labels = slide
    lazy = da.from_array(labels)
    cases = [
        (da.from_array(labels.astype(np.float32)), {}, "astype"),
        (da.from_array(-labels.astype(np.int32)), {}, "negative"),
        (da.zeros_like(lazy), {}, "empty"),
        (lazy[:, :-1], {}, "does not match"),
        (lazy, {"out": np.zeros(labels.shape, np.uint16)}, "dtype"),
        (lazy, {"out": lazy}, "itself"),
    ]
    for bad, kw, match in cases:
        with pytest.raises(ValueError, match=match):
            nsr.refine(image, bad, sam, **kw)
    with pytest.raises(ValueError, match="out="):
        nsr.refine(image, labels, sam, out=zarr.create_array(
            store=str(tmp_path / "x.zarr"), shape=(3, 3), dtype=labels.dtype))


def test_whole_planes_over_the_budget_are_refused_before_any_work(sam, slide, tmp_path,
                                                                  monkeypatch):
    image, labels = slide
    monkeypatch.setattr(arrays, "MEMORY_BUDGET", 1 << 16)
    with pytest.raises(ValueError, match="Semantic mode.*instance mode"):
        nsr.refine(image, da.from_array(labels), sam, mode="semantic", out=tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()
    with pytest.raises(ValueError, match="tile='auto'"):
        nsr.refine(image, da.from_array(labels), sam, tile=None, out=np.zeros_like(labels))
    with pytest.raises(ValueError, match="binary='one'"):
        nsr.refine(image, da.from_array(labels > 0), sam, out=np.zeros(labels.shape, bool))


# -- memory -----------------------------------------------------------------------------------


class NoFullRead:
    """A zarr array that refuses to be read whole and records the largest read."""

    def __init__(self, array):
        self.array, self.largest = array, 0
        self.shape, self.dtype, self.ndim, self.chunks = array.shape, array.dtype, array.ndim, array.chunks

    def __getitem__(self, key):
        out = self.array[key]
        self.largest = max(self.largest, out.size)
        return out

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole slide was read into memory")


def test_a_large_zarr_slide_is_never_read_whole(sam, tmp_path, monkeypatch):
    side, chunk = 8192, 1024
    image = zarr.create_array(store=str(tmp_path / "i.zarr"), shape=(side, side), dtype=np.uint16,
                              chunks=(chunk, chunk))
    labels = zarr.create_array(store=str(tmp_path / "l.zarr"), shape=(side, side),
                               dtype=np.uint32, chunks=(chunk, chunk), fill_value=0)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:chunk, :chunk]
    for k, (by, bx) in enumerate([(0, 0), (3, 5), (7, 7), (5, 1), (2, 6)]):
        block = (rng.normal(800, 40, (chunk, chunk))).astype(np.uint16)
        disc = (yy - 500) ** 2 + (xx - 300 - 40 * k) ** 2 < (6 + 2 * k) ** 2  # fit a tile
        block[disc] += 1500
        window = (slice(by * chunk, (by + 1) * chunk), slice(bx * chunk, (bx + 1) * chunk))
        image[window] = block
        labels[window] = disc.astype(np.uint32) * (k + 1)
    image, labels = NoFullRead(image), NoFullRead(labels)
    monkeypatch.setattr(arrays, "MEMORY_BUDGET", 32 << 20)  # no whole-slide RGB either
    tracemalloc.start()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = nsr.refine(image, labels, sam, iterations=1, embedding_cache=None,
                                out=tmp_path / "out.zarr")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    slide_bytes = side * side * (2 + 4)
    assert peak < slide_bytes / 4, f"peak {peak / 2**20:.0f} MiB"
    assert not [w for w in caught if "tile=" in str(w.message)]
    assert max(image.largest, labels.largest) <= 2048 * 2048  # one block, or one strip of rows
    assert set(result.table().status) <= {"ok", "kept-previous", "empty-output"}
    assert len(result.objects) == 5 and isinstance(result.labels, zarr.Array)


def test_judge_of_dask_and_zarr_planes_equals_numpy(sam, tmp_path):
    """The judge reads 2D planes (a field of view, a crop of a slide) from dask or zarr."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 40, (96, 96), dtype=np.uint8)
    coarse = np.zeros((96, 96), np.uint16)
    for k, (y, x) in enumerate([(20, 20), (20, 70), (70, 30), (70, 75)], start=1):
        yy, xx = np.ogrid[:96, :96]
        disc = (yy - y) ** 2 + (xx - x) ** 2 <= 100
        coarse[disc] = k
        image[disc] = 200
    refined = np.where(np.roll(coarse, 1, axis=1) == coarse, coarse, 0)
    want = nsr.judge_refinement(image, coarse, refined, image, coarse, sam=sam, k=1)

    def stored(a, name):
        z = zarr.open_array(str(tmp_path / name), mode="w", shape=a.shape, dtype=a.dtype, chunks=(32, 32))
        z[...] = a
        return z

    for wrap in (lambda a, name: da.from_array(a, chunks=32), stored):
        got = nsr.judge_refinement(
            wrap(image, "i"), wrap(coarse, "c"), wrap(refined, "r"), wrap(image, "si"),
            wrap(coarse, "sc"), sam=sam, k=1,
        )  # fmt: skip
        np.testing.assert_array_equal(got.accepted, want.accepted)
        cols = ["label_id", "verdict", "e1", "e2", "delta"]
        assert got.table()[cols].equals(want.table()[cols])
