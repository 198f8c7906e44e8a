"""refine's fast paths compute SAMRefiner as written (SPEC sections 1 and 2), pinned on real images.

``refine`` crops every per-object computation to the object's box, resizes with
banded matrices, decodes with the lean decoder (first layer from per-image
terms) and writes back from masks where boxes do not meet. The reference here
does none of that: whole-image prompts (``test_prompts``' helpers), CEBox on
the whole upsampled feature map, segment-anything's ``SamPredictor.predict_torch``
with every candidate at full resolution, and a whole-image argmax write-back.
Any change to what refine computes shows up as a differing pixel; the only
differences allowed are float-rounding ties (a logit within ``TIE`` of 0 or of
the winning object's logit).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything import SamPredictor

import napari_samrefine as nsr
from napari_samrefine.engine.embedding import embed_image
from napari_samrefine.engine.frame import SamFrame
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.labels.objects import objects_from_labels
from napari_samrefine.samrefiner.cascade import PromptSettings, run_cascade
from napari_samrefine.samrefiner.writeback import write_back
from napari_samrefine.testing import tiny_sam
from test_prompts import torch_mask_input, whole_image_prompts

TIE = 1e-6
"""Logit differences this small are float rounding (the tiny SAM's logits are about 1e-3)."""


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


def refine_reference(sam, image, labels, iterations, convergence=0.99):
    """SAMRefiner instance mode on whole-image arrays; returns labels, predicted IoUs, iterations."""
    rgb = to_sam_rgb(image)
    emb = embed_image(sam, rgb)
    frame = SamFrame.from_sam(sam, labels.shape)
    gh, gw = frame.valid_embedding_size
    grid = emb.features[0, :, :gh, :gw].float()
    features = F.interpolate(grid[None].double(), size=labels.shape, mode="bilinear",
                             align_corners=False)[0]
    features = (features / features.norm(dim=0, keepdim=True)).numpy()
    predictor = SamPredictor(sam)
    predictor.set_image(rgb)
    ids = [int(i) for i in np.unique(labels) if i]
    masks = {i: labels == i for i in ids}
    logits, ious = {}, {i: float("nan") for i in ids}
    steps = dict.fromkeys(ids, 0)
    active, status = set(ids), dict.fromkeys(ids, "ok")
    sy, sx = frame.scale
    for _ in range(iterations):
        batch = sorted(active)
        if not batch:
            break
        assert len(batch) <= 32  # one decoder batch, as refine's default batch_size
        coords, point_labels, boxes, mask_inputs = [], [], [], []
        for i in batch:
            pos, neg, _, g, box = whole_image_prompts(masks[i])
            box, expanded = cebox_reference(masks[i], box, features, grid.numpy())
            coords.append([pos, neg if neg is not None else (0, 0)])
            point_labels.append([1, 0 if neg is not None else -1])
            boxes.append(box)
            mask_inputs.append(torch_mask_input(masks[i], g, frame, 1.0 if expanded else 15.0)[0])
        if all(lab[1] == -1 for lab in point_labels):  # the batch is padded to its longest
            coords, point_labels = [c[:1] for c in coords], [lab[:1] for lab in point_labels]
        coords = np.asarray(coords, np.float64) * [sx, sy]
        boxes = np.asarray(boxes, np.float64) * [sx, sy, sx, sy]
        with torch.no_grad():
            out, iou, _ = predictor.predict_torch(
                torch.as_tensor(coords, dtype=torch.float32),
                torch.as_tensor(point_labels, dtype=torch.float32),
                torch.as_tensor(boxes, dtype=torch.float32),
                torch.as_tensor(np.stack(mask_inputs)[:, None], dtype=torch.float32),
                multimask_output=True, return_logits=True,
            )
        best = iou.argmax(1)
        for k, i in enumerate(batch):
            chosen = out[k, best[k]].numpy()
            steps[i] += 1
            ious[i] = float(iou[k, best[k]])
            new = chosen > 0
            if not new.any():
                status[i] = "empty-output" if i not in logits else "kept-previous"
                active.discard(i)
                continue
            change = (new & masks[i]).sum() / (new | masks[i]).sum()
            masks[i], logits[i] = new, chosen
            if convergence is not None and change >= convergence:
                active.discard(i)
    out = labels.copy()
    refined = [i for i in ids if status[i] != "empty-output"]
    out[np.isin(out, refined)] = 0
    stack = np.stack([np.where(logits[i] > 0, logits[i], 0) for i in refined])
    winner = np.asarray(refined)[stack.argmax(0)]
    claimed = stack.max(0) > 0
    out[claimed] = winner[claimed]
    return out, stack, refined, ious, steps


def assert_same_up_to_ties(ours, reference, stack, refined):
    """Pixels may differ only where the reference's decision is a float-rounding tie."""
    differ = np.flatnonzero(ours.ravel() != reference.ravel())
    assert differ.size <= max(2, ours.size // 20000), f"{differ.size} pixels differ"
    flat = stack.reshape(len(refined), -1)
    order = {lab: k for k, lab in enumerate(refined)}
    for p in differ:
        a, b = reference.ravel()[p], ours.ravel()[p]
        la = flat[order[a], p] if a in order else 0.0
        lb = flat[order[b], p] if b in order else 0.0
        assert abs(la - lb) < TIE, (p, a, b, la, lb)


# ----------------------------------------------------------------------- tests


@pytest.mark.parametrize("case, iterations", [("grey", 3), ("stained", 2)])
def test_refine_equals_the_whole_image_reference(dsb_pair, stained_pair, case, iterations):
    image, labels = dsb_pair if case == "grey" else stained_pair
    if case == "grey":
        image, labels = image[:160, :200], labels[:160, :200]  # non-square: scaled prompts
    sam = tiny_sam(seed=0)
    result = nsr.refine(image, labels, sam, iterations=iterations, embedding_cache=None)
    reference, stack, refined, ious, steps = refine_reference(sam, image, labels, iterations)
    assert_same_up_to_ties(result.labels, reference, stack, refined)
    for o in result.objects:
        assert o.iterations == steps[o.label_id]
        assert o.predicted_iou == pytest.approx(ious[o.label_id], abs=1e-5)
    assert (result.labels != labels).sum() > 100  # the refinement changed something


def test_reference_decoder_path_gives_the_same_labels(dsb_pair):
    """The lean decoder (and its first-layer terms) against segment-anything's decoder in the cascade."""
    image, labels = dsb_pair
    sam = tiny_sam(seed=1)
    emb = embed_image(sam, to_sam_rgb(image))
    objects = objects_from_labels(labels)
    settings = PromptSettings.for_model(sam)
    lean = run_cascade(sam, emb, objects, settings, iterations=2, decoder="lean")
    ref = run_cascade(sam, emb, objects, settings, iterations=2, decoder="reference")
    for a, b in zip(lean, ref, strict=True):
        assert a.status == b.status and a.iterations == b.iterations
        assert a.predicted_iou == pytest.approx(b.predicted_iou, abs=1e-5)
    ours, theirs = write_back(labels, lean), write_back(labels, ref)
    assert (ours != theirs).sum() <= 2


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
