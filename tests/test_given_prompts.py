"""refine(..., prompts=...): objects decoded from given (edited) prompts, the others as usual."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

import napari_samrefine as nsr
from napari_samrefine.engine.embedding import EmbeddingCache
from napari_samrefine.engine.frame import SamFrame
from napari_samrefine.labels.objects import objects_from_labels
from napari_samrefine.pipeline.tiling import to_window
from napari_samrefine.samrefiner.given import prompts_for_frame, shift_prompts
from napari_samrefine.samrefiner.prompts import excavate_object

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # tiny random SAM: objects grow


def _refine(image, labels, sam, cache, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nsr.refine(image, labels, sam, embedding_cache=cache, **kw)


def _by_id(result):
    return {p.label_id: p for p in result.prompts if p is not None}


@pytest.mark.parametrize("layout", [{}, {"scale": 4}, {"tile": 96}], ids=["plane", "windows", "tiles"])
def test_the_mined_prompts_given_back_give_the_same_labels_bit_for_bit(sam, dsb_pair, layout):
    image, labels = dsb_pair
    cache = EmbeddingCache()
    first = _refine(image, labels, sam, cache, iterations=1, **layout)
    again = _refine(image, labels, sam, cache, iterations=1, prompts=_by_id(first), **layout)
    np.testing.assert_array_equal(again.labels, first.labels)
    assert again.objects == first.objects


def test_excavated_prompts_start_the_same_cascade(sam, dsb_pair):
    image, labels = dsb_pair
    cache = EmbeddingCache()
    emb = cache.get(sam, nsr.to_sam_rgb(image))
    given = {p.label_id: p for p in nsr.excavate_prompts(labels, emb)}
    first = _refine(image, labels, sam, cache, iterations=3)
    again = _refine(image, labels, sam, cache, iterations=3, prompts=given)
    np.testing.assert_array_equal(again.labels, first.labels)


def _moved(p, **points):
    x1, y1, x2, y2 = (int(v) for v in p.tight_box)
    return dataclasses.replace(p, points=np.array([[x1, y1], *p.points[1:]], float), **points)


@pytest.mark.parametrize("edit", ["moved", "added"])
def test_an_edited_prompt_changes_that_object_only_without_an_encoder_pass(
    sam, dsb_pair, encoder_passes, edit
):
    image, labels = dsb_pair
    cache = EmbeddingCache()
    before = _refine(image, labels, sam, cache, iterations=1)
    assert encoder_passes.n == 1
    p = _by_id(before)[5]
    x1, y1, x2, y2 = (int(v) for v in p.tight_box)
    if edit == "moved":  # the positive point dragged to the box's corner
        new = _moved(p)
    else:  # two points more than mining gives: decoded in a call of its own
        new = dataclasses.replace(p, points=np.array([[x1, y1], [x2, y2], [x1, y2]], float),
                                  point_labels=np.array([1, 1, 0]))
    after = _refine(image, labels, sam, cache, iterations=1, prompts={5: new})
    assert encoder_passes.n == 1  # the embedding came from the cache
    changed = after.labels != before.labels
    assert changed.sum() > 20
    # every changed pixel is object 5's before or after; all the rest is equal bit for bit
    assert not (changed & (before.labels != 5) & (after.labels != 5)).any()
    others = [(a, b) for a, b in zip(after.objects, before.objects, strict=True) if a.label_id != 5]
    assert all(a == b for a, b in others)
    (rec,) = [o for o in after.objects if o.label_id == 5]
    np.testing.assert_array_equal(after.prompts[after.objects.index(rec)].points, new.points)


def test_later_iterations_mine_from_the_mask_and_the_input_is_kept(sam, dsb_pair):
    image, labels = dsb_pair
    cache = EmbeddingCache()
    before = _refine(image, labels, sam, cache, iterations=1)
    p = _by_id(before)[5]
    new = _moved(p)
    kept = dataclasses.replace(new, points=new.points.copy())
    after = _refine(image, labels, sam, cache, iterations=3, convergence=None, prompts={5: new})
    np.testing.assert_array_equal(new.points, kept.points)  # the given prompts are not modified
    (i,) = [k for k, o in enumerate(after.objects) if o.label_id == 5]
    assert after.objects[i].iterations == 3
    assert not np.array_equal(after.prompts[i].points, new.points)  # iteration 3's, mined


def test_the_mask_prompt_is_rebuilt_in_the_frame_it_is_decoded_in(sam, dsb_pair):
    _, labels = dsb_pair
    obj = objects_from_labels(labels)[3]
    y0, x0 = (min(max(0, v - 40), 128) for v in obj.bbox[:2])
    window = (y0, x0, y0 + 128, x0 + 128)
    assert window[0] <= obj.bbox[0] and obj.bbox[2] <= window[2] <= 256
    assert window[1] <= obj.bbox[1] and obj.bbox[3] <= window[3] <= 256
    frame = SamFrame((128, 128), 256, 64, 16)
    in_window = to_window(obj, window)
    mined = excavate_object(in_window, frame=frame)
    # mined in the image frame, moved into the window: the window's mask prompt
    image_frame = excavate_object(obj, frame=SamFrame(labels.shape, 256, 64, 16))
    moved = prompts_for_frame(shift_prompts(image_frame, -window[0], -window[1]), frame)
    np.testing.assert_array_equal(moved.mask_input, mined.mask_input)
    np.testing.assert_array_equal(moved.points, mined.points)


def test_a_stack_takes_plane_and_id_keys(sam, dsb_pair):
    image, labels = dsb_pair
    stack_i, stack_l = np.stack([image, image[::-1]]), np.stack([labels, labels[::-1]])
    cache = EmbeddingCache()
    before = _refine(stack_i, stack_l, sam, cache, iterations=1)
    at = {(o.plane, o.label_id): p for o, p in zip(before.objects, before.prompts, strict=True)}
    new = _moved(at[(1, 5)])
    after = _refine(stack_i, stack_l, sam, cache, iterations=1, prompts={(1, 5): new})
    np.testing.assert_array_equal(after.labels[0], before.labels[0])
    changed = after.labels[1] != before.labels[1]
    assert changed.any() and not (changed & (before.labels[1] != 5) & (after.labels[1] != 5)).any()
    # one plane refined: a label id alone names the object, negative planes count from the end
    one = _refine(stack_i, stack_l, sam, cache, iterations=1, planes=[1], prompts={5: new})
    np.testing.assert_array_equal(one.labels[1], after.labels[1])
    minus = _refine(stack_i, stack_l, sam, cache, iterations=1, prompts={(-1, 5): new})
    np.testing.assert_array_equal(minus.labels, after.labels)
    with pytest.raises(ValueError, match=r"\(plane, label_id\) pairs"):
        nsr.refine(stack_i, stack_l, sam, prompts={5: new})
    with pytest.raises(ValueError, match="plane 0 .* is not refined"):
        nsr.refine(stack_i, stack_l, sam, planes=[1], prompts={(0, 5): new})


def test_bad_prompts_are_refused_before_any_work_naming_the_fix(sam, dsb_pair, encoder_passes):
    image, labels = dsb_pair
    emb = nsr.embed_image(sam, nsr.to_sam_rgb(image))
    p = {q.label_id: q for q in nsr.excavate_prompts(labels, emb)}[5]
    n = encoder_passes.n
    cases = [
        ({99: dataclasses.replace(p, label_id=99)}, ValueError, r"objects \[99\] are not in the labels"),
        ({5: "points"}, TypeError, "must be an ObjectPrompts"),
        ([p], TypeError, "must be a mapping"),
        ({6: p}, ValueError, "object 5's"),
        ({0: p}, ValueError, "not a label id"),
        ({5: dataclasses.replace(p, points=p.points + 300)}, ValueError, "another image frame"),
        ({5: dataclasses.replace(p, box=p.box + 300)}, ValueError, "another image frame"),
        ({5: dataclasses.replace(p, offset=(250, 250))}, ValueError, "another image frame"),
        ({5: dataclasses.replace(p, point_labels=p.point_labels + 3)}, ValueError, "1 .positive. or 0"),
    ]
    for prompts, error, match in cases:
        with pytest.raises(error, match=match):
            nsr.refine(image, labels, sam, prompts=prompts, embedding_cache=None)
    with pytest.raises(ValueError, match="instance mode"):
        nsr.refine(image, labels, sam, mode="semantic", prompts={5: p})
    with pytest.raises(ValueError, match="add it to label_ids"):
        nsr.refine(image, labels, sam, label_ids=[3], prompts={5: p})
    assert encoder_passes.n == n
