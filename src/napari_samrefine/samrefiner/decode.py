"""Batched SAM decoding of many objects' prompts against one image embedding.

This module is the one path from prompts to SAM's mask decoder: the cascade
(:func:`decode_prompts` on excavated :class:`~.prompts.ObjectPrompts`), IoU
adaption's candidates and the PerSAM judge (:func:`decode_batch` on plain
prompt arrays) all scale their prompts to SAM's frame and decode here, with
the lean decoder where the model allows it."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from napari_samrefine.engine.embedding import ImageEmbedding
from napari_samrefine.engine.lean_decoder import LeanMaskDecoder, supports_lean_decoder
from napari_samrefine.models.profile import model_profile
from napari_samrefine.samrefiner.defaults import BATCH_SIZE
from napari_samrefine.samrefiner.prompts import ObjectPrompts

__all__ = [
    "PromptSwitches",
    "Decoded",
    "decode_batch",
    "decode_prompts",
    "prompt_arrays",
    "prompt_tensors",
    "sam_frame_prompts",
    "lean_decoder",
]


@dataclass(frozen=True)
class PromptSwitches:
    """Which prompt types go to SAM (the paper's Table 1 ablation)."""

    points: bool = True
    box: bool = True
    mask: bool = True
    negative_point: bool = True

    def __post_init__(self):
        if not (self.points or self.box or self.mask):
            raise ValueError(
                "All prompt types are switched off: enable at least one of "
                "use_points, use_box or use_mask."
            )


@dataclass(frozen=True)
class Decoded:
    """The decoder's output for a batch of prompts: the chosen candidate of each.

    Attributes
    ----------
    lowres : torch.Tensor
        (N, L, L) float32 logits of the chosen candidate in the low-res frame, on
        the CPU; with ``all_candidates=True``, (N, M, L, L) logits of every candidate.
    iou : numpy.ndarray
        (N,) predicted IoU of the chosen candidate.
    index : numpy.ndarray
        (N,) index (0-2) of the chosen candidate among the multimask outputs
        (0 for a single-mask output).
    scores : numpy.ndarray or None
        (N, M) predicted IoU of every candidate (M = 3 multimask, 1 single).
    """

    lowres: torch.Tensor
    iou: np.ndarray
    index: np.ndarray
    scores: np.ndarray | None = None


def sam_frame_prompts(
    frame,
    device: torch.device | str,
    points: np.ndarray | torch.Tensor | None = None,
    point_labels: np.ndarray | torch.Tensor | None = None,
    boxes: np.ndarray | torch.Tensor | None = None,
    masks: np.ndarray | torch.Tensor | None = None,
) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None, torch.Tensor | None]:
    """Prompts of the original frame as SAM's prompt-encoder tensors (SAM frame).

    Coordinates are scaled as ``SamPredictor.predict`` scales them
    (``ResizeLongestSide.apply_coords`` in float64, then float32 tensors).

    Parameters
    ----------
    frame : SamFrame
        The image's geometry.
    device : torch.device or str
    points : array (N, P, 2), optional
        (x, y) = (column, row) in the original frame.
    point_labels : array (N, P), optional
        1 positive, 0 negative, -1 padding (ignored by SAM).
    boxes : array (N, 4), optional
        [x1, y1, x2, y2] in the original frame.
    masks : array (N, L, L), optional
        Mask prompts in the low-res frame (not scaled).

    Returns
    -------
    points : (coords (N, P, 2), labels (N, P)) or None
    boxes : (N, 4) or None
    masks : (N, 1, L, L) or None
    """
    sy, sx = frame.scale
    point_prompt = box_prompt = mask_prompt = None
    if points is not None:
        coords = _numpy(points).astype(np.float64) * np.array([sx, sy])
        point_prompt = (
            torch.as_tensor(coords, dtype=torch.float32, device=device),
            torch.as_tensor(_numpy(point_labels), dtype=torch.float32, device=device),
        )
    if boxes is not None:
        b = _numpy(boxes).astype(np.float64) * np.array([sx, sy, sx, sy])
        box_prompt = torch.as_tensor(b, dtype=torch.float32, device=device)
    if masks is not None:
        mask_prompt = torch.as_tensor(masks, dtype=torch.float32, device=device)[:, None]
    return point_prompt, box_prompt, mask_prompt


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def prompt_arrays(prompts: Sequence[ObjectPrompts], switches: PromptSwitches) -> dict:
    """The switched-on prompts of several objects, stacked (original frame).

    Every point of an object is given (mined prompts have a positive point and
    at most one negative one; edited ones may have any number); with
    ``switches.negative_point`` off, its negative points (label 0) are left out.
    Objects with fewer points are padded with SAM's ignore label -1.

    Returns
    -------
    dict
        ``points`` (N, P, 2) float32 and ``point_labels`` (N, P), ``boxes``
        (N, 4) float32, ``masks`` (N, L, L) float32; None for a switched-off kind.
    """
    out = dict(points=None, point_labels=None, boxes=None, masks=None)
    if switches.points:
        chosen = [
            np.ones(len(p.points), bool) if switches.negative_point
            else np.asarray(p.point_labels) != 0
            for p in prompts
        ]
        n_max = max(1, *(int(k.sum()) for k in chosen))
        coords = np.zeros((len(prompts), n_max, 2), dtype=np.float32)
        labels = -np.ones((len(prompts), n_max), dtype=np.float32)
        for i, (p, k) in enumerate(zip(prompts, chosen, strict=True)):
            c = np.asarray(p.points)[k]
            coords[i, : len(c)] = c
            labels[i, : len(c)] = np.asarray(p.point_labels)[k]
        out["points"], out["point_labels"] = coords, labels
    if switches.box:
        out["boxes"] = np.stack([p.box for p in prompts]).astype(np.float32)
    if switches.mask:
        if any(p.mask_input is None for p in prompts):
            raise ValueError("mask prompts need prompts excavated with a SAM frame")
        out["masks"] = np.stack([p.mask_input for p in prompts]).astype(np.float32, copy=False)
    return out


def prompt_tensors(
    prompts: Sequence[ObjectPrompts],
    embedding: ImageEmbedding,
    switches: PromptSwitches,
    device: torch.device,
) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None, torch.Tensor | None]:
    """Stack the prompts of several objects into SAM prompt-encoder tensors (SAM frame).

    :func:`prompt_arrays` scaled by :func:`sam_frame_prompts`.

    Returns
    -------
    points : (coords (N, P, 2), labels (N, P)) or None
    boxes : (N, 4) or None
    masks : (N, 1, L, L) or None
    """
    return sam_frame_prompts(embedding.frame, device, **prompt_arrays(prompts, switches))


def lean_decoder(sam, embedding: ImageEmbedding) -> LeanMaskDecoder | None:
    """A :class:`~napari_samrefine.engine.lean_decoder.LeanMaskDecoder` for this image, or None.

    None when the model's decoder is not segment-anything's layout (then
    :func:`decode_prompts` uses the model's own decoder). Build it once per
    image and pass it to every :func:`decode_prompts` call of that image.
    """
    if not supports_lean_decoder(sam):
        return None
    return LeanMaskDecoder(sam, embedding.features)


def _rows(x, sl: slice):
    return None if x is None else x[sl]


@torch.no_grad()
def decode_batch(
    sam,
    embedding: ImageEmbedding,
    *,
    points: np.ndarray | torch.Tensor | None = None,
    point_labels: np.ndarray | torch.Tensor | None = None,
    boxes: np.ndarray | torch.Tensor | None = None,
    masks: np.ndarray | torch.Tensor | None = None,
    batch_size: int = BATCH_SIZE,
    iou_adaptor=None,
    decoder: LeanMaskDecoder | str | None = "lean",
    multimask: bool | None = None,
    all_candidates: bool = False,
) -> Decoded:
    """Run SAM's prompt encoder and mask decoder on prompt arrays of the original frame.

    The prompts of N objects (any of points, boxes, mask prompts; at least one)
    are scaled to SAM's frame and decoded in chunks of ``batch_size``. Each
    object's candidate with the highest predicted IoU is chosen (ties: the
    lowest index).

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
    embedding : ImageEmbedding
        The image's embedding (computed once per image).
    points, point_labels, boxes, masks
        As in :func:`sam_frame_prompts` (original frame; ``masks`` low-res).
    batch_size : int
        Objects per decoder call; bounds memory only.
    iou_adaptor : optional
        A SAMRefiner++ IoU adaptor; its ``applied(sam)`` context selects candidates
        with the adapted IoU head.
    decoder : LeanMaskDecoder, "lean" or "reference"
        "reference" runs ``sam.prompt_encoder`` and ``sam.mask_decoder`` as
        segment-anything does; "lean" (default) computes the same with
        :class:`~napari_samrefine.engine.lean_decoder.LeanMaskDecoder` (less memory
        traffic, only the chosen mask upscaled), built for this call; pass one
        built by :func:`lean_decoder` to reuse it across calls on one image.
        Both give the same masks to float rounding. Models whose decoder is not
        segment-anything's layout always use their own decoder.
    multimask : bool, optional
        Choose among the multimask candidates (True) or take the single-mask
        output (False). Default: the model profile's choice, and always True
        with an ``iou_adaptor`` (ranking the candidates is what it adapts).
    all_candidates : bool
        Also return every candidate's low-res logits (``lowres`` is then
        (N, M, L, L)), e.g. to score all three against a reference mask. Like
        the rest of this function it runs without gradients: training on the
        candidates uses features recorded during this pass (a hook), not a
        backward pass through the decoder.

    Returns
    -------
    Decoded
    """
    if decoder == "lean":
        decoder = lean_decoder(sam, embedding)
    elif decoder == "reference":
        decoder = None
    elif not isinstance(decoder, LeanMaskDecoder):
        raise ValueError(f"decoder must be 'lean', 'reference' or a LeanMaskDecoder, got {decoder!r}")
    if multimask is None:
        multimask = model_profile(sam).multimask or iou_adaptor is not None
    present = [x for x in (points, boxes, masks) if x is not None]
    if not present:
        raise ValueError("decode_batch needs at least one of points, boxes or masks")
    n = len(present[0])
    if n == 0:
        size = embedding.frame.lowres_size
        m = 3 if multimask else 1
        shape = (0, m, size, size) if all_candidates else (0, size, size)
        return Decoded(torch.zeros(shape), np.zeros(0, np.float32), np.zeros(0, np.int64),
                       np.zeros((0, m), np.float32))
    device = embedding.features.device
    dense_pe = sam.prompt_encoder.get_dense_pe() if decoder is None else None
    context = iou_adaptor.applied(sam) if iou_adaptor is not None else contextlib.nullcontext()
    lows, ious = [], []
    with context:
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            p, b, m = sam_frame_prompts(
                embedding.frame, device, _rows(points, sl), _rows(point_labels, sl),
                _rows(boxes, sl), _rows(masks, sl),
            )
            k = len(next(x for x in (p and p[0], b, m) if x is not None))
            if decoder is not None:
                if p is None and b is None:
                    sparse = torch.empty((k, 0, sam.prompt_encoder.embed_dim), device=device)
                else:
                    sparse, _ = sam.prompt_encoder(points=p, boxes=b, masks=None)
                low, iou, _ = decoder.decode(
                    sparse, m, multimask=multimask, all_candidates=all_candidates
                )
            else:
                sparse, dense = sam.prompt_encoder(points=p, boxes=b, masks=m)
                low, iou = sam.mask_decoder(
                    image_embeddings=embedding.features,
                    image_pe=dense_pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=multimask,
                )
                if not all_candidates:
                    best = torch.argmax(iou, dim=1)
                    low = low[torch.arange(k, device=low.device), best]
            lows.append(low.float().cpu())
            ious.append(iou.float().cpu())
    scores = torch.cat(ious)
    best = torch.argmax(scores, dim=1)
    rows = torch.arange(n)
    return Decoded(
        lowres=torch.cat(lows),
        iou=scores[rows, best].numpy(),
        index=best.numpy(),
        scores=scores.numpy(),
    )


def decode_prompts(
    sam,
    embedding: ImageEmbedding,
    prompts: Sequence[ObjectPrompts],
    switches: PromptSwitches = PromptSwitches(),
    *,
    batch_size: int = BATCH_SIZE,
    iou_adaptor=None,
    decoder: LeanMaskDecoder | str | None = "lean",
    multimask: bool | None = None,
    all_candidates: bool = False,
) -> Decoded:
    """Run SAM's prompt encoder and mask decoder for many objects' excavated prompts.

    Every object gets three candidates (``multimask_output=True``); the one with
    the highest predicted IoU is kept (ties: the lowest index). Models whose IoU
    head cannot rank the candidates (their profile says ``multimask=False``,
    e.g. LiteMedSAM) give their single-mask output instead.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
    embedding : ImageEmbedding
        The image's embedding (computed once per image).
    prompts : sequence of ObjectPrompts
    switches : PromptSwitches
        Which prompt types to use.
    batch_size, iou_adaptor, decoder, multimask, all_candidates
        As in :func:`decode_batch`.

    Returns
    -------
    Decoded
    """
    if not prompts:
        size = embedding.frame.lowres_size
        return Decoded(torch.zeros((0, size, size)), np.zeros(0, np.float32), np.zeros(0, np.int64))
    return decode_batch(
        sam, embedding, **prompt_arrays(prompts, switches), batch_size=batch_size,
        iou_adaptor=iou_adaptor, decoder=decoder, multimask=multimask,
        all_candidates=all_candidates,
    )
