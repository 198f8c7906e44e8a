"""The refinement pipeline (SPEC section 1) on the tiny SAM and real DSB2018 crops."""

import copy

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from segment_anything import SamPredictor

import napari_samrefine as nsr
from _cascade_steps import Output, assert_outputs_agree, state_output, step_cascade
from napari_samrefine.engine.embedding import EmbeddingCache, embed_image
from napari_samrefine.engine.frame import SamFrame
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.labels.objects import objects_from_labels, trim
from napari_samrefine.samrefiner.cascade import (
    ChosenLogits,
    ObjectState,
    PromptSettings,
    run_cascade,
)
from napari_samrefine.samrefiner.decode import PromptSwitches, decode_prompts, prompt_tensors
from napari_samrefine.samrefiner.prompts import excavate_object
from napari_samrefine.samrefiner.writeback import write_back


def test_refine_keeps_shape_dtype_ids_and_inputs(sam, dsb_pair):
    image, labels = dsb_pair
    labels = labels.astype(np.uint16)
    img0, lab0 = image.copy(), labels.copy()
    result = nsr.refine(image, labels, sam, iterations=3, embedding_cache=None)
    assert result.labels.shape == labels.shape and result.labels.dtype == labels.dtype
    assert set(np.unique(result.labels)) <= set(np.unique(labels))
    np.testing.assert_array_equal(image, img0)
    np.testing.assert_array_equal(labels, lab0)
    table = result.table()
    assert sorted(table["label_id"]) == sorted(set(np.unique(labels)) - {0})
    assert set(table["status"]) <= {"ok", "empty-output"}
    assert (table["iterations"].between(1, 3)).all()
    assert len(result.prompts) == len(table)


def test_one_encoder_pass_per_image_and_cache_reuse(sam, dsb_pair, encoder_passes):
    image, labels = dsb_pair
    cache = EmbeddingCache()
    calls = encoder_passes
    nsr.refine(image, labels, sam, iterations=5, convergence=None, embedding_cache=cache)
    assert calls.n == 1
    nsr.refine(image, labels, sam, iterations=2, embedding_cache=cache)
    assert calls.n == 1


@pytest.mark.float_sensitive
def test_batched_equals_each_object_alone(sam, dsb_pair):
    image, labels = dsb_pair
    emb = embed_image(sam, to_sam_rgb(image))
    objects = objects_from_labels(labels)[:12]
    settings = PromptSettings()
    shape = labels.shape

    def alone(masks):  # each object in a batch of its own, from the same masks
        return [state_output(run_cascade(sam, emb, [m], settings, iterations=1, batch_size=1)[0], shape)
                for m in masks]

    # batches of 5 and of 1 round differently (float32), so each iteration is compared from
    # the same masks: logits within float32 rounding, masks equal except at rounding ties
    stepped = step_cascade(sam, emb, objects, settings, alone, iterations=3, batch_size=5)
    assert max(stepped.iterations) > 1 and stepped.counts["mask"] > 1000


@pytest.mark.float_sensitive
def test_decode_matches_segment_anything_predictor(sam, dsb_pair):
    """Chosen candidate, upsampled in crops, equals SamPredictor.predict_torch's full-res mask."""
    image, labels = dsb_pair
    rgb = to_sam_rgb(image)
    emb = embed_image(sam, rgb)
    objects = objects_from_labels(labels)[:6]
    prompts = [excavate_object(o, frame=emb.frame, embedding=emb) for o in objects]
    switches = PromptSwitches()
    decoded = decode_prompts(sam, emb, prompts, switches)
    predictor = SamPredictor(sam)
    predictor.set_image(rgb)
    points, boxes, masks = prompt_tensors(prompts, emb, switches, torch.device("cpu"))
    with torch.no_grad():
        full, iou, _ = predictor.predict_torch(
            points[0], points[1], boxes, masks, multimask_output=True, return_logits=True
        )
    best = iou.argmax(1)
    for i in range(len(prompts)):
        assert decoded.index[i] == best[i]
        ref = full[i, best[i]].numpy()
        low = decoded.lowres[i].numpy()
        ext = emb.frame.lowres_extent(low > 0)
        logits = np.full(ref.shape, np.nan, np.float32)
        if ext is not None:
            y0, x0, y1, x1 = ext
            logits[y0:y1, x0:x1] = emb.frame.lowres_to_original(low, ext)
        # logits within float32 rounding, masks equal wherever the logit is clear of 0
        mine = Output(logits, np.nan_to_num(logits) > 0, float(decoded.iou[i]))
        assert_outputs_agree(mine, Output(ref, ref > 0, float(iou[i, best[i]])), f"object {i}")


def _state(label, logits, offset, shape):
    """A refined object whose chosen logits are ``logits`` at ``offset`` (no resizing)."""
    h, w = logits.shape
    # a frame whose low-res frame is the image itself: upsampling is the identity
    frame = SamFrame(shape, image_size=shape[0], lowres_size=shape[0], embedding_size=1)
    region = (offset[0], offset[1], offset[0] + h, offset[1] + w)
    chosen = ChosenLogits(frame, logits.astype(np.float32), offset, region)
    mask = trim(logits > 0, offset, label, shape)
    return ObjectState(coarse=mask, mask=mask, region=region, chosen=chosen)


def test_write_back_highest_logit_wins_and_protects_others():
    coarse = np.zeros((10, 10), np.int32)
    coarse[0:2, 0:2] = 9  # an object that is not refined
    coarse[5:7, 5:7] = 1
    a = _state(1, np.full((6, 6), 1.0), (0, 0), (10, 10))
    logits_b = np.full((6, 6), 2.0)
    logits_b[0, 0] = -1  # b does not claim (3, 3)
    b = _state(2, logits_b, (3, 3), (10, 10))
    out = write_back(coarse, [a, b])
    assert (out[0:2, 0:2] == 9).all()  # untouched
    assert (out[3:6, 3:6][1:, 1:] == 2).all()  # overlap: higher logit
    assert out[3, 3] == 1 and out[2, 2] == 1
    assert (out[6:9, 6:9] == 2).all() and out[9, 9] == 0
    assert (coarse[5:7, 5:7] == 1).all()  # input untouched


def test_empty_output_keeps_coarse(sam):
    coarse = np.zeros((10, 10), np.uint8)
    coarse[2:5, 2:5] = 3
    s = ObjectState(coarse=objects_from_labels(coarse)[0], mask=objects_from_labels(coarse)[0])
    s.status = "empty-output"
    np.testing.assert_array_equal(write_back(coarse, [s]), coarse)


def test_empty_output_at_a_later_iteration_keeps_the_previous_mask(sam, dsb_pair):
    """SPEC 1 / issue 12: an empty output at t > 0 keeps the t-1 result, not the coarse mask."""
    from copy import deepcopy

    from napari_samrefine.pipeline.plane import records
    from napari_samrefine.samrefiner.cascade import _update

    image, labels = dsb_pair
    embedding = embed_image(sam, to_sam_rgb(image))
    objects = objects_from_labels(labels)[:3]
    states = run_cascade(sam, embedding, objects, iterations=1, convergence=None)
    assert [s.status for s in states] == ["ok"] * 3
    before = write_back(labels, states)
    after_t0 = deepcopy(states[1])
    empty = torch.full((embedding.frame.lowres_size,) * 2, -10.0)
    _update(states[1], embedding, empty, 0.5, None)  # iteration t = 1 comes out empty
    assert states[1].status == "kept-previous" and not states[1].active
    np.testing.assert_array_equal(states[1].mask.mask, after_t0.mask.mask)
    np.testing.assert_array_equal(write_back(labels, states), before)  # t-1 pixels, same claims
    table = records(states, None, "instance")
    assert table[1].status == "kept-previous" and table[1].refined_area == after_t0.mask.area
    # at t = 0 the coarse mask stays
    fresh = ObjectState(coarse=objects[0], mask=objects[0])
    _update(fresh, embedding, empty, 0.5, None)
    assert fresh.status == "empty-output"
    only = write_back(labels, [fresh])
    np.testing.assert_array_equal(only, labels)


def test_a_semantic_class_of_specks_stays_in_the_table(sam, dsb_pair):
    image, _ = dsb_pair
    semantic = np.zeros(image.shape, np.uint8)
    semantic[40:80, 40:80] = 1
    semantic[10, 10:12] = 2  # class 2: two specks of 2 pixels, dropped by STM
    semantic[200, 200:202] = 2
    result = nsr.refine(image, semantic, sam, mode="semantic", iterations=1)
    table = result.table()
    assert list(table.loc[table["label_id"] == 2, "status"]) == ["specks"]
    np.testing.assert_array_equal(result.labels == 2, semantic == 2)  # kept as they were


def test_semantic_mode_refines_stm_groups_and_keeps_class_ids(sam, dsb_pair):
    """Semantic mode: one object per STM group (nearby components merged), written as its class."""
    image, labels = dsb_pair
    semantic = np.where(labels > 0, np.where(labels % 2 == 0, 3, 7), 0).astype(np.uint8)
    groups = nsr.split_then_merge(semantic)
    components = {c: ndi.label(semantic == c, np.ones((3, 3)))[1] for c in (3, 7)}
    per_class = {c: sum(g.label_id == c for g in groups) for c in (3, 7)}
    assert per_class[3] < components[3]  # STM merged nuclei of class 3: the case under test

    # one iteration: the recorded prompts are those mined from the coarse groups
    result = nsr.refine(image, semantic, sam, mode="semantic", iterations=1)
    table = result.table()
    # one row and one prompt set per group, numbered per class, under the class id
    assert table["label_id"].tolist() == [g.label_id for g in groups]
    for c in (3, 7):
        assert table.loc[table["label_id"] == c, "group"].tolist() == list(range(per_class[c]))
    assert table["coarse_area"].tolist() == [int(g.mask.sum()) for g in groups]
    assert [p.label_id for p in result.prompts] == [g.label_id for g in groups]
    assert [p.tight_box.tolist() for p in result.prompts] == [g.tight_box.tolist() for g in groups]
    # the output holds class ids, never group numbers or instance ids
    assert set(np.unique(result.labels)) == {0, 3, 7}


def test_stack_refined_plane_by_plane(sam, stardist_stack):
    image, labels = stardist_stack
    result = nsr.refine(image, labels, sam, planes=[1, 2], iterations=2)
    assert result.labels.shape == labels.shape
    np.testing.assert_array_equal(result.labels[0], labels[0])
    np.testing.assert_array_equal(result.labels[3], labels[3])
    assert set(result.table()["plane"]) <= {1, 2}


def test_rgb_and_channel_axis(sam, stained_pair):
    image, labels = stained_pair
    a = nsr.refine(image, labels, sam, iterations=1)
    b = nsr.refine(np.moveaxis(image, -1, 0), labels, sam, iterations=1, channel_axis=0)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_label_ids_subset_and_missing(sam, dsb_pair):
    image, labels = dsb_pair
    ids = sorted(set(np.unique(labels)) - {0})[:2]
    result = nsr.refine(image, labels, sam, label_ids=[*ids, 9999], iterations=1)
    table = result.table().set_index("label_id")
    assert table.loc[9999, "status"] == "empty-input"
    assert (table.loc[ids, "status"] != "skipped").all()
    assert (table.drop([*ids, 9999])["status"] == "skipped").all()
    assert len(table) == len(np.unique(labels)) - 1 + 1
    others = ~np.isin(labels, ids) & (labels > 0)
    np.testing.assert_array_equal(result.labels[others], labels[others])


def test_progress_reaches_total_and_cancel_leaves_inputs(sam, dsb_pair):
    image, labels = dsb_pair
    seen = []
    nsr.refine(image, labels, sam, iterations=2, progress=lambda d, t, m: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] and all(a[0] <= b[0] for a, b in zip(seen, seen[1:], strict=False))

    lab0 = labels.copy()

    def cancel(done, total, message):
        if "iteration" in message:
            raise nsr.Cancelled

    with pytest.raises(nsr.Cancelled):
        nsr.refine(image, labels, sam, iterations=3, progress=cancel)
    np.testing.assert_array_equal(labels, lab0)


# the prompt encoder's parameters that only a given prompt kind reads: SAM embeds a
# negative point with point_embeddings[0], a positive one with [1], the box corners
# with [2] and [3], and the mask prompt with mask_downscaling
PROMPT_PARAMETERS = {
    "use_points": ("point_embeddings.0", "point_embeddings.1"),
    "use_negative_point": ("point_embeddings.0",),
    "use_box": ("point_embeddings.2", "point_embeddings.3"),
    "use_mask": ("mask_downscaling",),
}


def _with_other_prompt_weights(sam, prefixes):
    """A copy of ``sam`` whose prompt-encoder parameters under ``prefixes`` hold other values."""
    other = copy.deepcopy(sam)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in other.prompt_encoder.named_parameters():
            if name.startswith(prefixes):
                param.add_(torch.randn(param.shape, generator=gen))
    return other


@pytest.mark.parametrize("switch", list(PROMPT_PARAMETERS))
def test_a_switched_off_prompt_kind_does_not_reach_the_decoder(sam, dsb_pair, switch):
    """With a prompt kind off, the weights that embed it cannot change the result; with it on they do."""
    image, labels = dsb_pair
    other = _with_other_prompt_weights(sam, PROMPT_PARAMETERS[switch])
    cache = EmbeddingCache()

    def run(model, on):
        return nsr.refine(image, labels, model, iterations=1, embedding_cache=cache, **{switch: on})

    off, off_other = run(sam, False), run(other, False)
    np.testing.assert_array_equal(off.labels, off_other.labels)
    np.testing.assert_array_equal(off.table()["predicted_iou"], off_other.table()["predicted_iou"])
    on, on_other = run(sam, True), run(other, True)
    assert (on.table()["predicted_iou"] != on_other.table()["predicted_iou"]).any()
    if switch in ("use_points", "use_negative_point"):
        assert all(p.negative_point is None for p in off.prompts)  # none recorded either
        assert any(p.negative_point is not None for p in on.prompts)


def test_all_prompt_kinds_off_is_refused(sam, dsb_pair):
    image, labels = dsb_pair
    with pytest.raises(ValueError, match="at least one"):
        nsr.refine(image, labels, sam, use_points=False, use_box=False, use_mask=False)


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.zeros((20, 20), np.float32), "integer"),
        (-np.ones((20, 20), np.int32), "negative"),
        (np.zeros((20, 20), np.int32), "empty"),
        (np.ones((20, 21), np.int32), "does not match"),
        (np.ones((2, 3, 20, 20), np.int32), "2D"),
    ],
)
def test_bad_labels(sam, labels, match):
    image = np.random.default_rng(0).integers(0, 255, (20, 20)).astype(np.uint8)
    with pytest.raises(ValueError, match=match):
        nsr.refine(image, labels, sam)


def test_bad_images_and_mode(sam):
    labels = np.zeros((20, 20), np.int32)
    labels[5:10, 5:10] = 1
    with pytest.raises(ValueError, match="constant"):
        nsr.refine(np.full((20, 20), 3.0), labels, sam)
    with pytest.raises(ValueError, match="no finite"):
        nsr.refine(np.full((20, 20), np.nan), labels, sam)
    with pytest.raises(ValueError, match="mode"):
        nsr.refine(np.eye(20), labels, sam, mode="panoptic")
    with pytest.raises(TypeError, match="Sam model"):
        nsr.refine(np.eye(20), labels, sam=42)


def test_degenerate_objects(sam):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (40, 50)).astype(np.uint8)
    labels = np.zeros((40, 50), np.uint32)
    labels[10, 10] = 1  # one pixel
    labels[0:8, 42:50] = 2  # touches the border
    result = nsr.refine(image, labels, sam, iterations=2)
    assert set(result.table()["status"]) <= {"ok", "empty-output"}
    full = np.full((40, 50), 5, np.uint8)  # one object covers the whole image
    result = nsr.refine(image, full, sam, iterations=1)
    assert result.objects[0].status in ("ok", "empty-output")
    prompts = result.prompts[0]
    assert prompts.negative_point is None  # the box holds no background
    x, y = prompts.positive_point  # at a maximum of the distance to the image border
    assert min(x + 1, 50 - x, y + 1, 40 - y) == 20
