"""The mask prompt painted with napari's Labels brush: the "<labels> mask prompt region" layer holds
each object's region its Gaussian mask prompt is mined from; erasing or painting it, then "Refine
this object", decodes that object from the prompt mined from the painted region."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from _widgets import decode_one as decode
from _widgets import refine_again_with_e, review_with_mined_prompts
from napari.layers import Labels

import napari_samrefine as nsr
from napari_samrefine._napari.edited_prompts import (
    mask_region_plane,
    object_inputs,
    prompts_from_layers,
)
from napari_samrefine._napari.prompt_widget import show_prompts
from napari_samrefine.testing import tiny_sam

pytestmark = pytest.mark.gui


def mined_from(region: np.ndarray, label: int) -> nsr.ObjectPrompts:
    """The prompts the core mining gives for ``label``'s pixels of ``region`` as one object."""
    (p,) = nsr.excavate_prompts((region == label).astype(np.uint8), cebox=None, binary="one")
    return p


def assert_same_prompts(a: nsr.ObjectPrompts, b: nsr.ObjectPrompts) -> None:
    for field in dataclasses.fields(nsr.ObjectPrompts):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if field.name == "mask_input":
            continue  # mined here without a frame's use; refine rebuilds it
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype, field.name
            np.testing.assert_array_equal(x, y, err_msg=field.name)
        else:
            assert x == y, field.name


def test_an_object_refined_again_from_its_erased_mask_prompt_region(viewer, qtbot):
    # a tiny SAM whose mask prompt's content matters (see tiny_sam)
    sam = tiny_sam(seed=0, mask_in_chans=16)
    refined, coarse, review = review_with_mined_prompts(viewer, qtbot, sam)
    start, coarse_data, image = refined.data.copy(), coarse.data.copy(), viewer.layers["nuclei"].data

    # the region layer: each object's coarse mask, in its colours, ready for the brush
    region = viewer.layers["nuclei coarse mask prompt region"]
    np.testing.assert_array_equal(region.data, coarse_data)
    assert region.data.dtype == coarse_data.dtype
    ids = np.unique(coarse_data[coarse_data > 0])
    np.testing.assert_array_equal(region.colormap.map(ids), coarse.colormap.map(ids))
    gauss_before = viewer.layers["nuclei coarse Gaussian prompts"].data.copy()

    # unedited: every object's prompt is the mined one, bit for bit
    mined = {p.label_id: p for p in nsr.excavate_prompts(coarse_data, cebox=None)}
    for label in ids:
        _, _, read = object_inputs(viewer, viewer.layers["nuclei"], coarse, int(label))
        assert_same_prompts(read, mined[int(label)])
        np.testing.assert_array_equal(mined_from(region.data, label).gaussian, mined[int(label)].gaussian)

    # the worst object whose decode erasing the top half of its region changes
    for i in range(len(review.rows)):
        label = int(review.rows.at[i, "label_id"])
        rows, cols = np.nonzero(coarse_data == label)
        top = rows < np.median(rows)
        erased_region = coarse_data.copy()
        erased_region[rows[top], cols[top]] = 0
        want_prompts = dataclasses.replace(mined[label], gaussian=mined_from(erased_region, label).gaussian,
                                           offset=mined_from(erased_region, label).offset)
        again = decode(image, coarse_data, sam, want_prompts)
        if top.any() and not np.array_equal(again, decode(image, coarse_data, sam, mined[label])):
            break
    else:
        pytest.fail("erasing half a mask prompt region changed no object's decode")
    review.select(i)
    assert region.selected_label == label  # the label the brush paints

    # erased as the eraser does it: one undoable edit of the Labels layer
    region.data_setitem((rows[top], cols[top]), 0)
    np.testing.assert_array_equal(region.data, erased_region)
    _, _, read = object_inputs(viewer, viewer.layers["nuclei"], coarse, label)
    np.testing.assert_array_equal(read.gaussian, want_prompts.gaussian)
    assert read.offset == want_prompts.offset
    for other in ids[ids != label]:  # the other objects keep their mined prompts
        _, _, theirs = object_inputs(viewer, viewer.layers["nuclei"], coarse, int(other))
        np.testing.assert_array_equal(theirs.gaussian, mined[int(other)].gaussian)
        assert theirs.offset == mined[int(other)].offset

    kept = refine_again_with_e(qtbot, review, sam, refined, start, label, again)
    np.testing.assert_array_equal(kept.gaussian, want_prompts.gaussian)
    np.testing.assert_array_equal(kept.gaussian_full(coarse_data.shape) > 0, erased_region == label)
    np.testing.assert_array_equal(viewer.layers["nuclei coarse Gaussian prompts"].data, gauss_before)
    np.testing.assert_array_equal(coarse.data, coarse_data)  # the coarse layer is never written

    # undo: the refined layer, then the region; the object's prompt is the mined one again
    refined.undo()
    np.testing.assert_array_equal(refined.data, start)
    region.undo()
    np.testing.assert_array_equal(region.data, coarse_data)
    _, _, read = object_inputs(viewer, viewer.layers["nuclei"], coarse, label)
    np.testing.assert_array_equal(read.gaussian, mined[label].gaussian)


def test_a_brush_stroke_grows_one_objects_region_only():
    coarse = np.zeros((16, 24), np.int32)
    coarse[2:7, 2:7] = 1
    coarse[2:7, 12:17] = 2
    both = nsr.excavate_prompts(coarse, cebox=None)
    region = Labels(coarse.copy())
    region.brush_size = 3
    region.paint((9, 4), 1)  # the brush, label 1, below object 1
    grown = region.data == 1
    assert grown.sum() > (coarse == 1).sum() and (region.data[coarse == 2] == 2).all()
    edited = prompts_from_layers(None, None, coarse, 1, mask_region=region.data)
    want = mined_from(region.data, 1)
    np.testing.assert_array_equal(edited.gaussian, want.gaussian)
    assert edited.offset == want.offset and edited.offset[0] == 2 and want.gaussian.shape[0] > 5
    np.testing.assert_array_equal(edited.gaussian_full(coarse.shape) > 0, grown)
    theirs = prompts_from_layers(None, None, coarse, 2, mask_region=region.data)
    np.testing.assert_array_equal(theirs.gaussian, both[1].gaussian)  # the other object's, bit for bit
    assert theirs.offset == both[1].offset
    # an object erased whole: no mask prompt for it
    gone = np.where(coarse == 1, 0, coarse)
    erased = prompts_from_layers(None, None, coarse, 1, mask_region=gone)
    assert erased.offset == both[0].offset and not erased.gaussian.any()


def test_the_region_of_a_stack_is_read_in_the_plane_it_shows(viewer):
    coarse2d = viewer.layers["nuclei coarse"].data
    stack = viewer.add_labels(np.stack([coarse2d, coarse2d[::-1]]), name="stack coarse", scale=(2, 1, 1))
    assert mask_region_plane(viewer, stack, 1) is None  # no prompts shown yet
    prompts = nsr.excavate_prompts(stack.data[1], cebox=None)
    layers = show_prompts(viewer, stack, prompts, plane=1)
    region = layers["mask region"]
    assert region.data.shape == (1, *coarse2d.shape) and tuple(region.translate) == (2.0, 0.0, 0.0)
    np.testing.assert_array_equal(mask_region_plane(viewer, stack, 1), stack.data[1])
    assert mask_region_plane(viewer, stack, 0) is None  # another plane: the mined mask prompt


def test_an_object_whose_prompts_are_not_shown_keeps_its_mined_mask_prompt(viewer):
    coarse = viewer.layers["nuclei coarse"]
    first, second = (int(i) for i in np.unique(coarse.data[coarse.data > 0])[:2])
    show_prompts(viewer, coarse, nsr.excavate_prompts(coarse.data, label_ids=[first], cebox=None))
    region = viewer.layers["nuclei coarse mask prompt region"]
    assert set(np.unique(region.data)) == {0, first}  # the other objects are not in it
    assert mask_region_plane(viewer, coarse, None, second) is None  # not read as erased
    assert mask_region_plane(viewer, coarse, None, first) is not None
    (mined,) = nsr.excavate_prompts(coarse.data, label_ids=[second], cebox=None)
    _, _, read = object_inputs(viewer, viewer.layers["nuclei"], coarse, second)
    np.testing.assert_array_equal(read.gaussian, mined.gaussian)
    assert read.offset == mined.offset
