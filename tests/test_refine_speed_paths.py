"""refine's fast paths compute SAMRefiner as written (SPEC sections 1 and 2), pinned on real images.

``refine`` crops every per-object computation to the object's box, resizes with
banded matrices, decodes with the lean decoder (first layer from per-image
terms) and writes back from masks where boxes do not meet. The reference here
does none of that: whole-image prompts (``test_prompts``' helpers), CEBox on
the whole upsampled feature map, segment-anything's ``SamPredictor.predict_torch``
with every candidate at full resolution, and a whole-image argmax write-back.
Any change to what refine computes shows up as a logit that differs by more
than float32 rounding (``_cascade_steps.LOGIT_TOL``) or a differing pixel; the
only pixels allowed to differ are rounding ties (a logit within
``_cascade_steps.MARGIN`` of 0 or of the winning object's logit). The cascade
feeds its masks back, which grows any tie into many pixels after a few
iterations, so each iteration is compared from the same masks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from segment_anything import SamPredictor

import napari_samrefine as nsr
from _cascade_steps import (
    LOGIT_TOL,
    Output,
    assert_same_up_to_ties,
    state_output,
    step_cascade,
)
from napari_samrefine.engine.embedding import embed_image
from napari_samrefine.engine.frame import SamFrame
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.labels.objects import objects_from_labels
from napari_samrefine.samrefiner.cascade import PromptSettings, run_cascade
from napari_samrefine.samrefiner.writeback import write_back
from napari_samrefine.testing import tiny_sam
from test_prompts import torch_mask_input, whole_image_prompts

# ------------------------------------------------------------------ the reference


def cebox_reference(full: np.ndarray, box, features: np.ndarray, grid: np.ndarray, lam=0.1):
    """SPEC's CEBox on whole-image arrays: ``features`` (C, H, W) upsampled and unit-normalised,
    ``grid`` (C, gh, gw) the valid low-res features."""
    H, W = full.shape
    gh, gw = grid.shape[1:]
    down = F.interpolate(torch.as_tensor(full, dtype=torch.float32)[None, None], size=(gh, gw),
                         mode="nearest")[0, 0].numpy() > 0
    if not down.any():
        return np.array(box), False
    q = grid[:, down].astype(np.float64).mean(axis=1)
    q /= np.linalg.norm(q)
    similar = np.tensordot(q, features, axes=1) > 0.5
    x1, y1, x2, y2 = box
    sx = int(np.ceil(min(0.1 * (x2 - x1 + 1), 10)))
    sy = int(np.ceil(min(0.1 * (y2 - y1 + 1), 10)))
    strips = {
        0: (slice(y1, y2 + 1), slice(max(x1 - sx, 0), x1), -1),
        1: (slice(max(y1 - sy, 0), y1), slice(x1, x2 + 1), -1),
        2: (slice(y1, y2 + 1), slice(x2 + 1, min(x2 + 1 + sx, W)), 1),
        3: (slice(y2 + 1, min(y2 + 1 + sy, H)), slice(x1, x2 + 1), 1),
    }
    new = list(box)
    for k, (rows, cols, sign) in strips.items():
        strip = similar[rows, cols]
        if strip.size and strip.mean() > lam:
            new[k] += sign * (strip.shape[1] if k in (0, 2) else strip.shape[0])
    return np.array(new), new != list(box)


def negative_point(full: np.ndarray):
    """The package's negative point on the whole image: the background pixel of the
    inclusive tight box farthest from the mask (first maximum, row-major); None if none."""
    ys, xs = np.nonzero(full)
    in_box = np.zeros_like(full)
    in_box[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
    candidates = in_box & ~full
    if not candidates.any():
        return None
    d_out = np.where(candidates, ndi.distance_transform_edt(~full), -1.0)
    r, c = np.unravel_index(np.argmax(d_out), full.shape)
    return c, r


class WholeImageReference:
    """SAMRefiner instance mode on whole-image arrays, one cascade iteration at a time."""

    def __init__(self, sam, image, shape, convergence=0.99):
        rgb = to_sam_rgb(image)
        emb = embed_image(sam, rgb)
        self.frame = SamFrame.from_sam(sam, shape)
        gh, gw = self.frame.valid_embedding_size
        self.grid = emb.features[0, :, :gh, :gw].float()
        features = F.interpolate(self.grid[None].double(), size=shape, mode="bilinear",
                                 align_corners=False)[0]
        self.features = (features / features.norm(dim=0, keepdim=True)).numpy()
        self.predictor = SamPredictor(sam)
        self.predictor.set_image(rgb)
        self.convergence = convergence

    def __call__(self, objects) -> list[Output]:
        """One iteration for every object: prompts from its mask, predict_torch, the chosen logits."""
        coords, point_labels, boxes, mask_inputs, previous = [], [], [], [], []
        for obj in objects:
            full = obj.to_image()
            previous.append(full)
            pos, _, g, box = whole_image_prompts(full)
            neg = negative_point(full)
            box, expanded = cebox_reference(full, box, self.features, self.grid.numpy())
            coords.append([pos, neg if neg is not None else (0, 0)])
            point_labels.append([1, 0 if neg is not None else -1])
            boxes.append(box)
            mask_inputs.append(torch_mask_input(full, g, self.frame, 1.0 if expanded else 15.0)[0])
        if all(lab[1] == -1 for lab in point_labels):  # the batch is padded to its longest
            coords, point_labels = [c[:1] for c in coords], [lab[:1] for lab in point_labels]
        sy, sx = self.frame.scale
        coords = np.asarray(coords, np.float64) * [sx, sy]
        boxes = np.asarray(boxes, np.float64) * [sx, sy, sx, sy]
        with torch.no_grad():
            out, iou, _ = self.predictor.predict_torch(
                torch.as_tensor(coords, dtype=torch.float32),
                torch.as_tensor(point_labels, dtype=torch.float32),
                torch.as_tensor(boxes, dtype=torch.float32),
                torch.as_tensor(np.stack(mask_inputs)[:, None], dtype=torch.float32),
                multimask_output=True, return_logits=True,
            )
        best = iou.argmax(1)
        outputs = []
        for k, prev in enumerate(previous):
            chosen = out[k, best[k]].numpy()
            new = chosen > 0
            change = (new & prev).sum() / (new | prev).sum()
            active = bool(new.any()) and (self.convergence is None or change < self.convergence)
            outputs.append(Output(chosen, new, float(iou[k, best[k]]), active))
        return outputs


def reference_write_back(labels, final: dict):
    """The whole-image rule: refined objects' pixels cleared, then the highest positive logit wins.

    ``final`` maps every refined id to its last logits (None: its first output was
    empty, its coarse pixels stay)."""
    out = labels.copy()
    refined = [i for i, logits in final.items() if logits is not None]
    out[np.isin(out, refined)] = 0
    stack = np.stack([np.where(final[i] > 0, final[i], 0) for i in refined])
    winner = np.asarray(refined)[stack.argmax(0)]
    claimed = stack.max(0) > 0
    out[claimed] = winner[claimed]
    return out


# ----------------------------------------------------------------------- tests


def final_logits(labels, stepped) -> dict:
    """Refined id -> the reference's logits at its last iteration (None: coarse mask kept)."""
    ids = [s.coarse.label_id for s in stepped.states]
    return {i: (f.logits if f is not None else None) for i, f in zip(ids, stepped.final, strict=True)}


def assert_mostly_decided(stepped):
    """The comparison is not empty: at least 99% of the mask pixels are clear of the margin
    (about 0.2% are not with the tiny SAM's smooth logits), so a tie rule cannot excuse a real
    difference."""
    counts = stepped.counts
    assert counts["mask"] > 1000 and counts["compared"] > counts["mask"]
    assert counts["undecided"] <= counts["mask"] // 100, counts


@pytest.mark.float_sensitive
@pytest.mark.parametrize("case, iterations", [("grey", 3), ("stained", 2)])
def test_refine_equals_the_whole_image_reference(dsb_pair, stained_pair, case, iterations):
    """refine's cascade (cropped prompts, banded resizing, lean decoder) and write-back against
    the whole-image reference, each iteration from the same masks; refine end to end after one
    iteration (nothing fed back yet)."""
    image, labels = dsb_pair if case == "grey" else stained_pair
    if case == "grey":
        image, labels = image[:160, :200], labels[:160, :200]  # non-square: scaled prompts
    sam = tiny_sam(seed=0)
    reference = WholeImageReference(sam, image, labels.shape)
    objects = objects_from_labels(labels)
    emb = embed_image(sam, to_sam_rgb(image))
    stepped = step_cascade(sam, emb, objects, PromptSettings.for_model(sam), reference,
                           iterations=iterations)
    assert_mostly_decided(stepped)
    assert max(stepped.iterations) == iterations  # the cascade went on to the last iteration
    final = final_logits(labels, stepped)
    ours = write_back(labels, stepped.states)
    assert_same_up_to_ties(ours, reference_write_back(labels, final), final)
    assert (ours != labels).sum() > 100  # the refinement changed something

    result = nsr.refine(image, labels, sam, iterations=1, embedding_cache=None)
    first = {o.label_id: out for o, out in zip(objects, reference(objects), strict=True)}
    logits = {i: (out.logits if out.mask.any() else None) for i, out in first.items()}
    assert_same_up_to_ties(result.labels, reference_write_back(labels, logits), logits)
    for o in result.objects:
        assert o.iterations == 1
        assert abs(o.predicted_iou - first[o.label_id].iou) <= LOGIT_TOL
    assert (result.labels != labels).sum() > 100


@pytest.mark.float_sensitive
def test_reference_decoder_path_gives_the_same_labels(dsb_pair):
    """The lean decoder (and its first-layer terms) against segment-anything's decoder in the
    cascade: each iteration from the same masks, then the write-back."""
    image, labels = dsb_pair
    sam = tiny_sam(seed=1)
    emb = embed_image(sam, to_sam_rgb(image))
    objects = objects_from_labels(labels)
    settings = PromptSettings.for_model(sam)

    def reference(masks):
        states = run_cascade(sam, emb, masks, settings, iterations=1, decoder="reference")
        return [state_output(s, labels.shape) for s in states]

    stepped = step_cascade(sam, emb, objects, settings, reference, iterations=2, decoder="lean")
    assert_mostly_decided(stepped)
    assert max(stepped.iterations) == 2
    final = final_logits(labels, stepped)
    ours_logits = {s.coarse.label_id: state_output(s, labels.shape).logits for s in stepped.states}
    ours = write_back(labels, stepped.states)
    assert_same_up_to_ties(ours, reference_write_back(labels, final), final, ours_logits)


def test_write_back_from_masks_equals_comparing_logits():
    """Objects whose boxes meet no other box are pasted from their masks; the others compare
    logits. Pasting every object by comparing logits gives the same labels."""
    from napari_samrefine.labels.objects import trim
    from napari_samrefine.samrefiner import writeback
    from napari_samrefine.samrefiner.cascade import ChosenLogits, ObjectState

    shape = (64, 64)
    frame = SamFrame(shape, image_size=64, lowres_size=64, embedding_size=4)  # no resizing
    rng = np.random.default_rng(0)
    coarse = np.zeros(shape, np.uint16)
    states = []
    for k, (y, x, h, w) in enumerate([(2, 2, 10, 12), (8, 8, 10, 10), (30, 30, 8, 8), (40, 5, 9, 9),
                                      (44, 10, 12, 6), (50, 50, 14, 14)]):
        logits = rng.normal(0.5, 1.0, (h, w)).astype(np.float32)
        region = (y, x, y + h, x + w)
        mask = trim(logits > 0, (y, x), k + 1, shape)
        coarse[y : y + h, x : x + w][mask.to_image()[y : y + h, x : x + w]] = k + 1
        chosen = ChosenLogits(frame, logits, (y, x), region)
        states.append(ObjectState(coarse=mask, mask=mask, region=region, chosen=chosen))
    coarse[60:, 60:] = 99  # not refined: never overwritten
    boxes = np.array([s.mask.bbox for s in states])
    shared = writeback._overlapping(boxes)
    assert shared.any() and not shared.all()  # both paths are exercised
    fast = write_back(coarse, states)
    original = writeback._overlapping
    try:
        writeback._overlapping = lambda b: np.ones(len(b), bool)
        slow = write_back(coarse, states)
    finally:
        writeback._overlapping = original
    np.testing.assert_array_equal(fast, slow)
    assert (fast[60:, 60:] == 99).all()
    # and the whole-image rule: the highest positive logit wins
    full = np.zeros((len(states),) + shape, np.float32)
    for k, s in enumerate(states):
        y0, x0, y1, x1 = s.region
        full[k, y0:y1, x0:x1] = s.chosen.values
    expected = np.where(full.max(0) > 0, full.argmax(0) + 1, 0)
    expected[60:, 60:] = 99
    np.testing.assert_array_equal(fast, expected)


def test_overlapping_boxes():
    from napari_samrefine.samrefiner.writeback import _overlapping

    boxes = np.array([[0, 0, 5, 5], [4, 4, 8, 8], [5, 0, 9, 3], [20, 20, 30, 30], [0, 5, 3, 9]])
    # half-open boxes: [0, 0, 5, 5] and [5, 0, 9, 3] or [0, 5, 3, 9] only touch
    assert _overlapping(boxes).tolist() == [True, True, False, False, False]
    rng = np.random.default_rng(0)
    starts = rng.integers(0, 100, (60, 2))
    many = np.concatenate([starts, starts + rng.integers(1, 15, (60, 2))], axis=1)
    brute = [any(i != j and b[0] < c[2] and c[0] < b[2] and b[1] < c[3] and c[1] < b[3]
                 for j, c in enumerate(many)) for i, b in enumerate(many)]
    assert _overlapping(many).tolist() == brute
