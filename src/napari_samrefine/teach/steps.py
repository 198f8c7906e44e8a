"""One teaching step's pieces: decoding an example with gradients, batches, validation.

Training decodes through segment-anything's own prompt encoder and mask decoder
(differentiable); validation decodes as refine does
(:func:`~napari_samrefine.samrefiner.decode.decode_batch`, the lean decoder).
A model whose image encoder is taught too (adaptors, ``lora_rank``) encodes
each window again: once per step with gradients (:func:`window_features`), once
per validation without.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from napari_samrefine.engine.embedding import ImageEmbedding, encoder_input
from napari_samrefine.samrefiner.decode import decode_batch, sam_frame_prompts
from napari_samrefine.teach.examples import TeachingExample
from napari_samrefine.teach.losses import mask_iou

__all__ = [
    "decode_example",
    "epoch_batches",
    "validation_iou",
    "validation_subset",
    "window_batches",
    "window_features",
]


def window_features(model, ex: TeachingExample) -> torch.Tensor:
    """``model``'s image embedding (1, C, 64, 64) of ``ex``'s window, with gradients when enabled."""
    x, _ = encoder_input(model, ex.window)
    return model.image_encoder(x)


def decode_example(model, ex: TeachingExample, rows=None, features: torch.Tensor | None = None):
    """Low-res logits (n, L, L) and predicted IoU (n,) of ``ex``'s objects (``rows`` of them),
    through segment-anything's prompt encoder and mask decoder (differentiable), single mask.

    ``features`` replaces the example's stored embedding (:func:`window_features`)."""
    device = next(model.mask_decoder.parameters()).device
    rows = None if rows is None else np.asarray(rows, dtype=np.int64)
    chosen = {k: None if v is None else (v if rows is None else v[rows]) for k, v in ex.prompts.items()}
    points, boxes, masks = sam_frame_prompts(ex.embedding.frame, device, **chosen)
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=masks)
    embedding = ex.embedding.features if features is None else features
    low, iou = model.mask_decoder(
        image_embeddings=embedding.to(device), image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
    return low[:, 0], iou[:, 0]


@torch.no_grad()
def validation_iou(model, examples: Sequence[TeachingExample], encode: bool = False) -> tuple[float, float]:
    """Mean IoU with the truth, per object, of ``model``'s masks and of the coarse masks.

    The masks are decoded as refine decodes them
    (:func:`~napari_samrefine.samrefiner.decode.decode_batch`, single mask),
    from the stored embeddings, or with ``encode`` from ``model``'s own
    encoding of each window (once per window).
    """
    ious, coarse, encoded = [], [], {}
    for ex in examples:
        emb = ex.embedding
        if encode:
            if emb.key not in encoded:
                encoded[emb.key] = window_features(model, ex)
            emb = ImageEmbedding(encoded[emb.key], emb.frame, emb.key)
        low = decode_batch(model, emb, **ex.prompts, multimask=False).lowres
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
    return _steps([(e, r) for e, ex in enumerate(examples) for r in range(len(ex))], size, rng)


def _steps(items: list[tuple[int, int]], size: int, rng) -> list[dict[int, list[int]]]:
    """``items`` (example, row) in a random order, ``size`` per step, as example -> rows."""
    order = rng.permutation(len(items))
    out = []
    for start in range(0, len(order), size):
        step: dict[int, list[int]] = {}
        for j in order[start:start + size]:
            e, r = items[j]
            step.setdefault(e, []).append(r)
        out.append(step)
    return out


def window_batches(examples: Sequence[TeachingExample], size: int, rng) -> list[dict[int, list[int]]]:
    """One epoch's optimiser steps for an adapted encoder: each step's objects share one window.

    The examples of one window (its coarse-mask kinds) are learnt together, so
    a step encodes one window; a window with more than ``size`` objects gives
    several steps. Windows come in a random order.
    """
    windows: dict[str, list[int]] = {}
    for e, ex in enumerate(examples):
        windows.setdefault(ex.embedding.key, []).append(e)
    out = []
    for key in rng.permutation(sorted(windows)).tolist():
        out += _steps([(e, r) for e in windows[key] for r in range(len(examples[e]))], size, rng)
    return out
