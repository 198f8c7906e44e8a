"""One teaching step's pieces: decoding an example with gradients, batches, validation.

Training decodes through segment-anything's own prompt encoder and mask decoder
(differentiable); validation decodes as refine does
(:func:`~napari_samrefine.samrefiner.decode.decode_batch`, the lean decoder).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from napari_samrefine.samrefiner.decode import decode_batch, sam_frame_prompts
from napari_samrefine.teach.examples import TeachingExample
from napari_samrefine.teach.losses import mask_iou

__all__ = ["decode_example", "epoch_batches", "validation_iou", "validation_subset"]


def decode_example(model, ex: TeachingExample, rows=None):
    """Low-res logits (n, L, L) and predicted IoU (n,) of ``ex``'s objects (``rows`` of them),
    through segment-anything's prompt encoder and mask decoder (differentiable), single mask."""
    device = next(model.mask_decoder.parameters()).device
    rows = None if rows is None else np.asarray(rows, dtype=np.int64)
    chosen = {k: None if v is None else (v if rows is None else v[rows]) for k, v in ex.prompts.items()}
    points, boxes, masks = sam_frame_prompts(ex.embedding.frame, device, **chosen)
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=masks)
    low, iou = model.mask_decoder(
        image_embeddings=ex.embedding.features.to(device), image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
    return low[:, 0], iou[:, 0]


def validation_iou(model, examples: Sequence[TeachingExample]) -> tuple[float, float]:
    """Mean IoU with the truth, per object, of ``model``'s masks and of the coarse masks.

    The masks are decoded as refine decodes them
    (:func:`~napari_samrefine.samrefiner.decode.decode_batch`, single mask).
    """
    ious, coarse = [], []
    for ex in examples:
        low = decode_batch(model, ex.embedding, **ex.prompts, multimask=False).lowres
        ious.append(mask_iou(low, ex.targets))
        coarse.append(mask_iou(ex.coarse.float() * 2 - 1, ex.targets))
    if not ious:
        return math.nan, math.nan
    return float(torch.cat(ious).mean()), float(torch.cat(coarse).mean())


def validation_subset(examples: list, most: int, rng) -> list:
    """At most about ``most`` objects' examples, drawn once (validation stays cheap)."""
    if sum(map(len, examples)) <= most:
        return examples
    out, n = [], 0
    for i in rng.permutation(len(examples)).tolist():
        if n >= most:
            break
        out.append(examples[i])
        n += len(examples[i])
    return out


def epoch_batches(examples: Sequence[TeachingExample], size: int, rng) -> list[dict[int, list[int]]]:
    """One epoch's optimiser steps: per step, the objects (example -> rows) it learns from."""
    items = [(e, r) for e, ex in enumerate(examples) for r in range(len(ex))]
    order = rng.permutation(len(items))
    out = []
    for start in range(0, len(order), size):
        step: dict[int, list[int]] = {}
        for j in order[start:start + size]:
            e, r = items[j]
            step.setdefault(e, []).append(r)
        out.append(step)
    return out
