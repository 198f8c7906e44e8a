"""Object scale (issue 20): windows of input_size / scale around objects, mapped back exactly."""

from dataclasses import replace

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import napari_samrefine as nsr
from napari_samrefine.cli import build_parser
from napari_samrefine.cli.refine import refine_options
from napari_samrefine.labels.objects import ObjectMask, objects_from_labels
from napari_samrefine.models.profile import SAM_PROFILE, model_profile, set_model_profile
from napari_samrefine.pipeline.scale import ScaleSpec, resolve_layout
from napari_samrefine.pipeline.tiling import TileSpec, context_box, refine_plane


def _box(y0, x0, y1, x1, shape, label=1):
    mask = np.ones((y1 - y0, x1 - x0), bool)
    return ObjectMask(label, mask, (y0, x0), shape)


@settings(max_examples=80, deadline=None)
@given(
    h=st.integers(40, 900), w=st.integers(40, 900), scale=st.floats(0.3, 8),
    boxes=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.integers(1, 120), st.integers(1, 120)),
                   min_size=1, max_size=25),
)
def test_every_object_is_in_one_window_that_holds_its_context(h, w, scale, boxes):
    shape = (h, w)
    objects = []
    for fy, fx, bh, bw in boxes:
        bh, bw = min(bh, h), min(bw, w)
        y0, x0 = int(fy * (h - bh)), int(fx * (w - bw))
        objects.append(_box(y0, x0, y0 + bh, x0 + bw, shape))
    spec = ScaleSpec(256, scale)
    groups = spec.groups(objects, shape)
    members = sorted(i for _, m in groups for i in m)
    assert members == list(range(len(objects)))  # each object exactly once
    windows = [g[0] for g in groups if g[0] is not None]
    assert windows == sorted(windows, key=lambda v: v[:2])  # top to bottom: the strip writer's order
    assert sum(g[0] is None for g in groups) <= 1 and (groups[0][0] is None or None not in windows)
    wanted = int(np.ceil(256 / scale - 1e-9))
    for window, m in groups:
        for i in m:
            cy0, cx0, cy1, cx1 = context_box(objects[i])
            need = max(cy1 - cy0, cx1 - cx0)
            by0, bx0, by1, bx1 = objects[i].bbox
            side = spec.window_side(max(by1 - by0, bx1 - bx0), need)
            # the asked side, unless the context needs more
            assert side == wanted or (wanted < need <= side)
            if window is None:  # its window would cover the plane: the whole plane
                assert side >= max(h, w)
                continue
            y0, x0, y1, x1 = window
            assert (y1 - y0, x1 - x0) == (min(side, h), min(side, w)) and side < max(h, w)
            assert 0 <= y0 <= cy0 and 0 <= x0 <= cx0 and cy1 <= y1 <= h and cx1 <= x1 <= w


def test_auto_zooms_each_object_into_the_profiles_size():
    spec = ScaleSpec(256, None, object_size=(40, 120), max_scale=4)
    assert spec.level(60) == 0  # in range: as it is
    assert 2 ** (spec.level(20) / 2) == 2  # 20 px -> 40 px
    assert 2 ** (spec.level(15) / 2) == pytest.approx(2 ** 1.5)  # 15 -> 42 px (levels of sqrt 2)
    assert 2 ** (spec.level(3) / 2) == 4  # capped at max_scale
    assert 2 ** (spec.level(300) / 2) <= 120 / 300  # larger objects are zoomed out
    assert spec.window_side(20, 40) == 128 and spec.window_side(3, 35) == 64
    assert spec.window_side(3, 100) >= 100  # the context must fit: zoomed out until it does
    with pytest.raises(ValueError, match="scale or an object_size"):
        ScaleSpec(256)


@pytest.mark.float_sensitive
def test_scale_none_and_auto_without_a_measured_size_are_todays_refine(sam, dsb_pair):
    image, labels = dsb_pair
    assert model_profile(sam).defaults.object_size is None
    kw = dict(iterations=2, embedding_cache=nsr.EmbeddingCache())
    today = nsr.refine(image, labels, sam, scale=None, **kw)
    auto = nsr.refine(image, labels, sam, **kw)
    np.testing.assert_array_equal(today.labels, auto.labels)
    assert today.table().equals(auto.table())
    # a window as large as the image is the image: scale 1 on a 256 px image for a 256 px model
    np.testing.assert_array_equal(nsr.refine(image, labels, sam, scale=1, **kw).labels, today.labels)
    assert resolve_layout("auto", None, "auto", sam, (5000, 5000)) == TileSpec(256, 32)
    assert resolve_layout(None, None, "auto", sam, (100, 100)) is None


@pytest.mark.float_sensitive
def test_objects_refined_in_their_window_equal_refining_the_cropped_window(sam, dsb_pair):
    image, labels = dsb_pair
    rgb = np.repeat(image[..., None], 3, -1)
    objects = objects_from_labels(labels)
    spec = ScaleSpec(256, 4.0)  # windows of 64 px
    groups = spec.groups(objects, labels.shape)
    assert all(w is not None for w, _ in groups) and len(groups) > 3
    kw = dict(iterations=2, convergence=None, batch_size=8)
    zoomed = refine_plane(sam, rgb, objects, tiling=spec, **kw)
    for (y0, x0, y1, x1), members in groups[:4]:
        assert (y1 - y0, x1 - x0) == (64, 64)
        ids = [objects[i].label_id for i in members]
        crop = np.where(np.isin(labels[y0:y1, x0:x1], ids), labels[y0:y1, x0:x1], 0)
        by_id = {o.label_id: o for o in objects_from_labels(crop)}
        assert sorted(by_id) == sorted(ids)
        # in the window's order, so that the decoder batches match (float kernels differ
        # in the last bits between batch layouts on some CPUs)
        alone = refine_plane(sam, rgb[y0:y1, x0:x1], [by_id[i] for i in ids], **kw)
        for i, a in zip(members, alone, strict=True):
            z = zoomed[i]
            assert (z.status, z.iterations, z.predicted_iou) == (a.status, a.iterations, a.predicted_iou)
            assert z.mask.offset == (a.mask.offset[0] + y0, a.mask.offset[1] + x0)
            np.testing.assert_array_equal(z.mask.mask, a.mask.mask)


@pytest.mark.float_sensitive
def test_lazy_and_numpy_inputs_give_the_same_zoomed_result(sam, dsb_pair, tmp_path):
    image, labels = dsb_pair
    kw = dict(iterations=1, scale=2.5, embedding_cache=None)
    in_memory = nsr.refine(image, labels, sam, **kw)
    z_image = zarr.open(str(tmp_path / "i.zarr"), mode="w", shape=image.shape, chunks=(64, 64),
                        dtype=image.dtype)
    z_image[:] = image
    z_labels = zarr.open(str(tmp_path / "l.zarr"), mode="w", shape=labels.shape, chunks=(64, 64),
                         dtype=labels.dtype)
    z_labels[:] = labels
    lazy = nsr.refine(z_image, z_labels, sam, out=str(tmp_path / "out.zarr"), **kw)
    np.testing.assert_array_equal(np.asarray(lazy.labels[:]), in_memory.labels)
    assert lazy.table().equals(in_memory.table())
    assert not np.array_equal(in_memory.labels, nsr.refine(image, labels, sam, iterations=1,
                                                           embedding_cache=None).labels)


def test_auto_uses_the_profiles_measured_size(sam, dsb_pair):
    image, labels = dsb_pair
    sized = replace(SAM_PROFILE, defaults=replace(SAM_PROFILE.defaults, object_size=(60, 120), max_scale=4))
    set_model_profile(sam, sized)
    try:
        auto = nsr.refine(image, labels, sam, iterations=1, embedding_cache=None)
        spec = resolve_layout("auto", None, "auto", sam, labels.shape)
    finally:
        set_model_profile(sam, None)
    assert spec == ScaleSpec(256, None, (60, 120), 4)
    # auto equals the zoom it chose, given by hand per object: the nuclei of this image
    # (8 to 30 px) are each refined zoomed in, not on the whole image
    groups = spec.groups(objects_from_labels(labels), labels.shape)
    assert all(w is not None for w, _ in groups)
    whole = nsr.refine(image, labels, sam, iterations=1, embedding_cache=None)
    assert not np.array_equal(auto.labels, whole.labels)


def test_semantic_mode_is_zoomed_too(sam, dsb_pair):
    image, labels = dsb_pair
    semantic = (labels > 0).astype(np.uint8) * 2
    zoomed = nsr.refine(image, semantic, sam, mode="semantic", iterations=1, scale=3)
    assert set(np.unique(zoomed.labels)) <= {0, 2} and len(zoomed.objects) > 5


def test_a_scale_and_a_tile_are_refused_together_and_cli_parses_scale(sam, dsb_pair):
    image, labels = dsb_pair
    with pytest.raises(ValueError, match="pass one of them"):
        nsr.refine(image, labels, sam, scale=2, tile=128)
    parser = build_parser()
    for text, value in (("2", 2.0), ("auto", "auto"), ("none", None), ("0.5", 0.5)):
        args = parser.parse_args(["refine", "i.png", "l.tif", "-o", "o.tif", "--scale", text])
        assert refine_options(args).scale == value
    with pytest.raises(SystemExit):
        parser.parse_args(["refine", "i.png", "l.tif", "-o", "o.tif", "--scale", "big"])
    with pytest.raises(ValueError, match="scale must be"):
        refine_options(parser.parse_args(["refine", "i.png", "l.tif", "-o", "o.tif", "--scale", "-1"]))


def test_the_table_says_at_which_zoom_each_object_was_refined(sam, dsb_pair):
    image, labels = dsb_pair
    objects = objects_from_labels(labels)
    skipped = objects[0].label_id
    ids = [o.label_id for o in objects[1:]]
    table = nsr.refine(image, labels, sam, iterations=1, scale=4, label_ids=ids,
                       embedding_cache=None).table().set_index("label_id")
    assert np.isnan(table.loc[skipped, "scale"])
    groups = ScaleSpec(256, 4.0).groups(objects[1:], labels.shape)
    for window, members in groups:
        y0, x0, y1, x1 = (0, 0, *labels.shape) if window is None else window
        for i in members:
            assert table.loc[objects[1 + i].label_id, "scale"] == 256 / max(y1 - y0, x1 - x0)
    assert (table.loc[ids, "scale"] == 4).mean() > 0.5  # most windows are the asked 64 px
    whole = nsr.refine(image, labels, sam, iterations=1, scale=None, embedding_cache=None).table()
    assert (whole.scale == 1).all()  # a 256 px image seen whole by a 256 px model


def test_windows_lie_on_a_grid_so_that_a_small_edit_keeps_them_and_their_embeddings(sam, dsb_pair):
    image, labels = dsb_pair
    spec = ScaleSpec(256, 4.0)  # 64 px windows on a 16 px grid
    before = spec.groups(objects_from_labels(labels), labels.shape)
    edited = labels.copy()
    target = objects_from_labels(labels)[5]
    y0, x0, y1, x1 = target.bbox
    edited[y0, x0:x1][edited[y0, x0:x1] == target.label_id] = 0  # one row of it painted away
    after = spec.groups(objects_from_labels(edited), labels.shape)
    assert [w for w, _ in before] == [w for w, _ in after]
    h, w = labels.shape
    on_grid = [(y % 16 == 0 or y == h - 64) and (x % 16 == 0 or x == w - 64) for (y, x, *_), _ in before]
    assert np.mean(on_grid) > 0.7  # off it only where an object's context leaves no choice
    # so the edited labels are refined without encoding anything again
    cache = nsr.EmbeddingCache()
    nsr.refine(image, labels, sam, iterations=1, scale=4, embedding_cache=cache)
    misses = cache.misses
    nsr.refine(image, edited, sam, iterations=1, scale=4, embedding_cache=cache)
    assert cache.misses == misses


def test_choose_view_keeps_the_view_that_agrees_most_with_the_coarse_mask():
    from napari_samrefine.quality.keep import choose_view, keep_objects
    from napari_samrefine.samrefiner.cascade import ObjectState

    shape = (40, 40)
    coarse = _box(10, 10, 20, 20, shape)
    near, far = _box(10, 10, 20, 21, shape), _box(5, 5, 25, 25, shape)  # IoU 0.91 and 0.25
    a, b = ObjectState(coarse, far), ObjectState(coarse, near)
    assert choose_view([a, b]) is b and choose_view([b, a]) is b and choose_view([a]) is a
    empty = ObjectState(coarse, coarse, status="empty-output")
    assert choose_view([empty, a]) is a  # a refined view before one that came out empty
    # choosing before or after the keep policy picks the same view
    for views in ([a, b], [b, a], [a, ObjectState(coarse, _box(0, 0, 25, 25, shape))]):
        before = keep_objects([choose_view(views)], "better")[0]
        after = choose_view(keep_objects(views, "better"))
        assert (after.status, after.mask.bbox) == (before.status, before.mask.bbox)


@pytest.mark.float_sensitive
def test_two_views_per_object_paint_the_chosen_view_as_in_memory(sam, dsb_pair):
    """native_too: the plane loop (numpy and zarr alike) defers painting until an object's
    last view; it equals refining the plane in memory with the same views."""
    from napari_samrefine.engine.preprocess import to_sam_rgb
    from napari_samrefine.quality.keep import keep_objects
    from napari_samrefine.samrefiner.writeback import write_back

    image, labels = dsb_pair
    profile = replace(SAM_PROFILE, defaults=replace(SAM_PROFILE.defaults, object_size=(64, 128),
                                                    max_scale=2, native_too=True))
    set_model_profile(sam, profile)
    try:
        spec = resolve_layout("auto", None, "auto", sam, labels.shape)
        result = nsr.refine(image, labels, sam, iterations=1, keep="better", embedding_cache=None)
    finally:
        set_model_profile(sam, None)
    assert spec.also == 1.0
    objects = objects_from_labels(labels)
    groups = spec.groups(objects, labels.shape)
    counts = np.bincount([i for _, m in groups for i in m], minlength=len(objects))
    assert (counts == 2).sum() > 10  # most nuclei have a zoomed view and a whole-image one
    states = keep_objects(refine_plane(sam, to_sam_rgb(image), objects, tiling=spec, iterations=1), "better")
    np.testing.assert_array_equal(result.labels, write_back(labels, states))
    table = result.table().set_index("label_id")
    for s in states:
        row = table.loc[s.coarse.label_id]
        assert (row.status, row.scale) == (s.status, s.zoom)
    assert set(table.scale) <= {1.0, 2.0}  # one of its two views each
