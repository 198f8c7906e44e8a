"""Batched SAM decoding of many objects' prompts against one image embedding."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..sam.embedding import ImageEmbedding
from ..sam.lean_decoder import LeanMaskDecoder, supports_lean_decoder
from ..sam.profile import model_profile
from .prompts import ObjectPrompts

__all__ = ["PromptSwitches", "Decoded", "decode_prompts", "prompt_tensors", "lean_decoder"]


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
    """The chosen candidate of each object of one decoder batch.

    Attributes
    ----------
    lowres : torch.Tensor
        (N, L, L) float32 logits of the chosen candidate in the low-res frame, on the CPU.
    iou : numpy.ndarray
        (N,) predicted IoU of the chosen candidate.
    index : numpy.ndarray
        (N,) index (0-2) of the chosen candidate among the multimask outputs
        (0 for a single-mask output).
    """

    lowres: torch.Tensor
    iou: np.ndarray
    index: np.ndarray


def prompt_tensors(
    prompts: Sequence[ObjectPrompts],
    embedding: ImageEmbedding,
    switches: PromptSwitches,
    device: torch.device,
) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None, torch.Tensor | None]:
    """Stack the prompts of several objects into SAM prompt-encoder tensors (SAM frame).

    Objects with fewer points are padded with SAM's ignore label -1.

    Returns
    -------
    points : (coords (N, P, 2), labels (N, P)) or None
    boxes : (N, 4) or None
    masks : (N, 1, L, L) or None
    """
    sy, sx = embedding.frame.scale
    scale = np.array([sx, sy])
    points = boxes = masks = None
    if switches.points:
        per_object = [
            (p.points[: 1 + switches.negative_point], p.point_labels[: 1 + switches.negative_point])
            for p in prompts
        ]
        n_max = max(len(c) for c, _ in per_object)
        coords = np.zeros((len(prompts), n_max, 2), dtype=np.float32)
        labels = -np.ones((len(prompts), n_max), dtype=np.float32)
        for i, (c, lab) in enumerate(per_object):
            coords[i, : len(c)] = c * scale
            labels[i, : len(c)] = lab
        points = (torch.as_tensor(coords, device=device), torch.as_tensor(labels, device=device))
    if switches.box:
        b = np.stack([p.box for p in prompts]).astype(np.float32)
        b = b * np.tile(scale, 2)
        boxes = torch.as_tensor(b, device=device)
    if switches.mask:
        if any(p.mask_input is None for p in prompts):
            raise ValueError("mask prompts need prompts excavated with a SAM frame")
        m = np.stack([p.mask_input for p in prompts])[:, None]
        masks = torch.as_tensor(m, dtype=torch.float32, device=device)
    return points, boxes, masks


def lean_decoder(sam, embedding: ImageEmbedding) -> LeanMaskDecoder | None:
    """A :class:`~napari_samrefine.sam.lean_decoder.LeanMaskDecoder` for this image, or None.

    None when the model's decoder is not segment-anything's layout (then
    :func:`decode_prompts` uses the model's own decoder). Build it once per
    image and pass it to every :func:`decode_prompts` call of that image.
    """
    if not supports_lean_decoder(sam):
        return None
    return LeanMaskDecoder(sam, embedding.features)


@torch.no_grad()
def decode_prompts(
    sam,
    embedding: ImageEmbedding,
    prompts: Sequence[ObjectPrompts],
    switches: PromptSwitches = PromptSwitches(),
    *,
    batch_size: int = 32,
    iou_adaptor=None,
    decoder: LeanMaskDecoder | str | None = "lean",
    multimask: bool | None = None,
) -> Decoded:
    """Run SAM's prompt encoder and mask decoder for many objects, in chunks.

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
    batch_size : int
        Objects per decoder call; bounds memory only.
    iou_adaptor : optional
        A SAMRefiner++ IoU adaptor; its ``applied(sam)`` context selects candidates
        with the adapted IoU head.
    decoder : LeanMaskDecoder, "lean" or "reference"
        "reference" runs ``sam.prompt_encoder`` and ``sam.mask_decoder`` as
        segment-anything does; "lean" (default) computes the same with
        :class:`~napari_samrefine.sam.lean_decoder.LeanMaskDecoder` (less memory
        traffic, only the chosen mask upscaled), built for this call; pass one
        built by :func:`lean_decoder` to reuse it across calls on one image.
        Both give the same masks to float rounding.
    multimask : bool, optional
        Choose among the multimask candidates (True) or take the single-mask
        output (False). Default: the model profile's choice, and always True
        with an ``iou_adaptor`` (ranking the candidates is what it adapts).

    Returns
    -------
    Decoded
    """
    if not prompts:
        size = embedding.frame.lowres_size
        return Decoded(torch.zeros((0, size, size)), np.zeros(0, np.float32), np.zeros(0, np.int64))
    if decoder == "lean":
        decoder = lean_decoder(sam, embedding)
    elif decoder == "reference":
        decoder = None
    elif not isinstance(decoder, LeanMaskDecoder):
        raise ValueError(f"decoder must be 'lean', 'reference' or a LeanMaskDecoder, got {decoder!r}")
    if multimask is None:
        multimask = model_profile(sam).multimask or iou_adaptor is not None
    device = embedding.features.device
    dense_pe = sam.prompt_encoder.get_dense_pe() if decoder is None else None
    context = iou_adaptor.applied(sam) if iou_adaptor is not None else contextlib.nullcontext()
    lows, ious, idxs = [], [], []
    with context:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            points, boxes, masks = prompt_tensors(chunk, embedding, switches, device)
            if decoder is not None:
                if points is None and boxes is None:
                    sparse = torch.empty((len(chunk), 0, sam.prompt_encoder.embed_dim), device=device)
                else:
                    sparse, _ = sam.prompt_encoder(points=points, boxes=boxes, masks=None)
                low, iou, best = decoder.decode(sparse, masks, multimask=multimask)
                rows = torch.arange(len(chunk), device=low.device)
                lows.append(low.float().cpu())
                ious.append(iou[rows, best].float().cpu().numpy())
                idxs.append(best.cpu().numpy())
                continue
            sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=masks)
            low, iou = sam.mask_decoder(
                image_embeddings=embedding.features,
                image_pe=dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
            best = torch.argmax(iou, dim=1)
            rows = torch.arange(len(chunk), device=low.device)
            lows.append(low[rows, best].float().cpu())
            ious.append(iou[rows, best].float().cpu().numpy())
            idxs.append(best.cpu().numpy())
    return Decoded(torch.cat(lows), np.concatenate(ious), np.concatenate(idxs))
