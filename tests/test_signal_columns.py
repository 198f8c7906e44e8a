"""The label-free estimates (quality.signals) as columns of refine's table, on every path."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import zarr

import napari_samrefine as nsr
from napari_samrefine.engine.embedding import embed_image
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.evaluation.defects import synthesize_coarse_labels
from napari_samrefine.labels.objects import objects_from_labels
from napari_samrefine.models.profile import SAM_PROFILE, set_model_profile
from napari_samrefine.pipeline.options import RefineOptions
from napari_samrefine.pipeline.tiling import TileSpec, group_objects, refine_plane
from napari_samrefine.quality.signals import state_signals
from napari_samrefine.samrefiner.cascade import REFINED_STATUSES, run_cascade

COLUMNS = ["iou_coarse", "stability", "edge_contrast"]


@pytest.fixture(scope="module")
def pair(dsb_pair):
    image, truth = dsb_pair
    image, truth = image[106:, 53:203].copy(), truth[106:, 53:203].copy()  # 19 nuclei
    return image, synthesize_coarse_labels(image, truth, seed=0).labels


def _expected(image, states) -> dict[int, dict]:
    """The signals computed directly from the cascade's states, by label id."""
    return {q.label_id: q.as_dict() for q in state_signals(to_sam_rgb(image), states)}


def _assert_columns_equal(table, expected, ids, columns=COLUMNS):
    for lid in ids:
        for c in columns:
            np.testing.assert_equal(table.loc[lid, c], expected[lid][c], err_msg=f"id {lid}, {c}")


def test_the_table_holds_the_signals_of_the_cascade_and_nan_where_nothing_was_refined(sam, pair):
    image, coarse = pair
    ids = sorted(set(np.unique(coarse)) - {0})
    chosen = ids[: len(ids) // 2]
    result = nsr.refine(image, coarse, sam, iterations=2, keep="refined", label_ids=[*chosen, 9999])
    table = result.table().set_index("label_id")
    # added at the end of the record (then scale, jfs_verdict)
    assert list(result.table().columns[-5:-2]) == COLUMNS
    # the same cascade, run directly
    objects = [o for o in objects_from_labels(coarse) if o.label_id in chosen]
    options = RefineOptions(iterations=2)
    states = run_cascade(sam, embed_image(sam, to_sam_rgb(image)), objects,
                         options.prompt_settings(sam), iterations=2,
                         convergence=options.convergence)
    assert any(s.status in REFINED_STATUSES for s in states)
    _assert_columns_equal(table, _expected(image, states), chosen)
    assert table.loc[chosen, "iou_coarse"].between(0, 1).all()
    # objects that were not refined have no estimate
    others = [9999, *ids[len(ids) // 2 :]]
    assert set(table.loc[others, "status"]) == {"empty-input", "skipped"}
    assert table.loc[others, COLUMNS].isna().all().all()


def test_a_kept_coarse_object_keeps_the_estimate_of_the_mask_it_rejected(sam, pair):
    image, coarse = pair
    cache = nsr.EmbeddingCache()
    refined = nsr.refine(image, coarse, sam, iterations=1, keep="refined", embedding_cache=cache)
    # a threshold between the tiny random SAM's agreements (0 to 0.01) splits the objects
    set_model_profile(sam, replace(SAM_PROFILE, defaults=replace(SAM_PROFILE.defaults, keep_min_iou=0.005)))
    try:
        better = nsr.refine(image, coarse, sam, iterations=1, keep="better", embedding_cache=cache)
    finally:
        set_model_profile(sam, None)
    a, b = refined.table().set_index("label_id"), better.table().set_index("label_id")
    kept = b.index[b["status"] == "kept-coarse"]
    assert len(kept) and (b["status"] == "ok").any()
    # the decision is a column; the estimate is the same whatever was decided
    assert (a.loc[kept, "status"] == "ok").all()
    assert a[COLUMNS].equals(b[COLUMNS])
    assert (b.loc[kept, "iou_coarse"] < 0.005).all() and b.loc[kept, "stability"].notna().all()


def test_the_lazy_path_has_the_same_columns(sam, pair, tmp_path):
    image, coarse = pair
    z_image = zarr.open(str(tmp_path / "image.zarr"), mode="w", shape=image.shape,
                        chunks=(64, 64), dtype=image.dtype)
    z_image[:] = image
    z_labels = zarr.open(str(tmp_path / "labels.zarr"), mode="w", shape=coarse.shape,
                         chunks=(64, 64), dtype=coarse.dtype)
    z_labels[:] = coarse
    cache = nsr.EmbeddingCache()
    # untiled: the lazy plane is refined whole, as the numpy one
    memory = nsr.refine(image, coarse, sam, iterations=1, embedding_cache=cache).table()
    lazy = nsr.refine(z_image, z_labels, sam, iterations=1, embedding_cache=cache).table()
    assert memory[COLUMNS].notna().any().all()
    assert lazy.equals(memory)

    # tiles of 64 px: each object's estimate is computed in the tile it was refined in
    tiled = nsr.refine(z_image, z_labels, sam, iterations=1, tile=64,
                       embedding_cache=cache).table().set_index("label_id")
    objects = objects_from_labels(coarse)
    spec = TileSpec(64, 8)
    states = refine_plane(sam, to_sam_rgb(image), objects, RefineOptions().prompt_settings(sam),
                          tiling=spec, iterations=1, embedding_cache=cache)
    expected = _expected(image, states)
    ids = [o.label_id for o in objects]
    assert list(tiled.index) == ids
    _assert_columns_equal(tiled, expected, ids, ["iou_coarse", "stability", "predicted_iou"])
    # the edge contrast sees the same pixels unless the masks reach a tile's inner edge
    window_of = {i: w for w, members in group_objects(objects, coarse.shape, spec) for i in members}
    assert any(w is not None for w in window_of.values())  # the plane was tiled
    same_pixels = []
    for i, s in enumerate(states):
        boxes = [m.bbox for m in (s.coarse, s.mask) if m.area]
        y0, x0 = min(b[0] for b in boxes) - 1, min(b[1] for b in boxes) - 1
        y1, x1 = max(b[2] for b in boxes) + 1, max(b[3] for b in boxes) + 1
        wy0, wx0, wy1, wx1 = window_of[i] or (0, 0, *coarse.shape)
        if (max(y0, wy0), max(x0, wx0), min(y1, wy1), min(x1, wx1)) == (
            max(y0, 0), max(x0, 0), min(y1, coarse.shape[0]), min(x1, coarse.shape[1])
        ):
            same_pixels.append(ids[i])
    assert same_pixels
    _assert_columns_equal(tiled, expected, same_pixels, ["edge_contrast"])


def test_semantic_groups_have_their_estimates_and_specks_none(sam, dsb_pair):
    image, _ = dsb_pair
    semantic = np.zeros(image.shape, np.uint8)
    semantic[40:80, 40:80] = 1
    semantic[120:150, 100:160] = 1
    semantic[10, 10:12] = 2  # only specks: nothing to refine
    table = nsr.refine(image, semantic, sam, mode="semantic", iterations=1).table()
    groups = table[table["label_id"] == 1]
    assert len(groups) == 2 and groups["iou_coarse"].between(0, 1).all()
    assert table.loc[table["status"] == "specks", COLUMNS].isna().all().all()
