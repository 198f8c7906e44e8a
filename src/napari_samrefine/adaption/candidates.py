"""SAM's three multimask candidates per object, scored against the coarse mask (SAMRefiner++).

IoU adaption and its evaluation both need, for every object, the three
candidates SAM proposes, the IoU of each candidate with the object's coarse
mask (and optionally with a ground-truth object), and the input of the IoU
head's last linear layer: the only thing a LoRA on that layer sees. That input
does not depend on the adaptor, so the decoder runs once per object and the
adaptor can be trained and compared on the recorded features.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from napari_samrefine.adaption.lora import LoRALinear
from napari_samrefine.engine.embedding import (
    EmbeddingCache,
    ImageEmbedding,
    default_cache,
    embed_image,
)
from napari_samrefine.engine.preprocess import PERCENTILES, to_sam_rgb
from napari_samrefine.labels.arrays import arrange_image
from napari_samrefine.labels.iou import candidate_ious
from napari_samrefine.labels.objects import ObjectMask, objects_from_labels, trim
from napari_samrefine.labels.values import check_labels
from napari_samrefine.samrefiner.decode import decode_batch, decode_prompts, lean_decoder
from napari_samrefine.samrefiner.defaults import BATCH_SIZE

__all__ = ["Plane", "CandidateSet", "plan_planes", "collect_candidates", "iou_head_last_layer"]


@dataclass(frozen=True)
class Plane:
    """One 2D plane of one (image, labels) pair, ready to be decoded.

    Attributes
    ----------
    pair : int
        Index of the pair in the caller's lists.
    plane : int
        Index of the plane in a stack, -1 for 2D input.
    image : numpy.ndarray
        The plane's image (view, channels last when there are channels).
    objects : list of ObjectMask
        The coarse objects of the plane.
    ground_truth : numpy.ndarray or None
        The plane's ground-truth labels, when given.
    """

    pair: int
    plane: int
    image: np.ndarray
    objects: list[ObjectMask]
    ground_truth: np.ndarray | None = None


@dataclass
class CandidateSet:
    """SAM's candidates for many objects, and how good each one is.

    Attributes
    ----------
    hidden : torch.Tensor
        (N, D) input of the IoU head's last linear layer, on the model's device.
    scores : numpy.ndarray
        (N, 3) IoU the unadapted head predicts for the multimask candidates.
    coarse_iou : numpy.ndarray
        (N, 3) IoU of each candidate with the object's coarse mask.
    ground_truth_iou : numpy.ndarray or None
        (N, 3) IoU with the ground-truth object that overlaps the coarse mask most
        (NaN rows where none does); None without ground truth.
    label_id, pair, plane : numpy.ndarray
        (N,) object id, index of its (image, labels) pair and plane (-1 for 2D).
    """

    hidden: torch.Tensor
    scores: np.ndarray
    coarse_iou: np.ndarray
    ground_truth_iou: np.ndarray | None
    label_id: np.ndarray
    pair: np.ndarray
    plane: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def _as_pairs(images, labels, ground_truth) -> tuple[list, list, list]:
    if isinstance(labels, (list, tuple)):
        if not isinstance(images, (list, tuple)) or len(images) != len(labels):
            raise ValueError(
                "images and labels must be lists of the same length (one image per label "
                f"image); got {len(labels)} label images and "
                f"{len(images) if isinstance(images, (list, tuple)) else 'a single'} image(s)."
            )
        gts = [None] * len(labels) if ground_truth is None else ground_truth
        if not isinstance(gts, (list, tuple)) or len(gts) != len(labels):
            raise ValueError(
                "ground_truth must be a list with one label image per item of labels."
            )
        return list(images), list(labels), list(gts)
    return [images], [labels], [ground_truth]


def plan_planes(
    images, labels, ground_truth=None, *, channel_axis: int | None = None
) -> list[Plane]:
    """Split (image, labels) pairs into 2D planes with their coarse objects.

    Parameters
    ----------
    images, labels : array or list of arrays
        One image and its coarse labels, or lists of them (same length). Labels
        are (Y, X) or stacks (Z, Y, X); images match them, optionally with channels.
    ground_truth : array or list of arrays, optional
        Reference labels aligned with ``labels``.
    channel_axis : int, optional
        Channel axis of the images when it is not the last one.

    Returns
    -------
    list of Plane
    """
    out = []
    for i, (img, lab, gt) in enumerate(zip(*_as_pairs(images, labels, ground_truth), strict=True)):
        where = f"pair {i}: " if isinstance(labels, (list, tuple)) else ""
        try:
            lab = check_labels(lab)
            img = arrange_image(img, lab.shape, channel_axis)
        except ValueError as err:
            raise ValueError(where + str(err)) from None
        if gt is not None:
            gt = np.asarray(gt)
            if gt.shape != lab.shape:
                raise ValueError(
                    f"{where}ground truth shape {gt.shape} differs from the labels' {lab.shape}: "
                    "give the ground truth of the same image."
                )
        if lab.ndim == 2:
            out.append(Plane(i, -1, img, objects_from_labels(lab), gt))
        else:
            for z in range(lab.shape[0]):
                g = None if gt is None else gt[z]
                out.append(Plane(i, z, img[z], objects_from_labels(lab[z]), g))
    return out


def iou_head_last_layer(sam) -> torch.nn.Linear:
    """The last linear layer of SAM's IoU prediction head (where the LoRA goes)."""
    layer = sam.mask_decoder.iou_prediction_head.layers[-1]
    if isinstance(layer, LoRALinear):
        raise RuntimeError(
            "An IoU adaptor is applied to this model right now (another refinement or "
            "training is using it): wait for it to finish, or use a separate model."
        )
    if not isinstance(layer, torch.nn.Linear):
        raise TypeError(f"SAM's IoU head ends in {type(layer).__name__}, expected nn.Linear.")
    return layer


def _decode_all(sam, chunk: Sequence[ObjectMask], emb: ImageEmbedding, prompts: str, settings,
                decoder):
    """Every candidate of each object of ``chunk`` (one decoder pass; see :mod:`.decode`)."""
    options = dict(batch_size=len(chunk), decoder=decoder, multimask=True, all_candidates=True)
    if prompts == "box":
        return decode_batch(sam, emb, boxes=np.stack([o.tight_box for o in chunk]), **options)
    excavated = [settings.excavate(o, emb) for o in chunk]
    return decode_prompts(sam, emb, excavated, settings.switches, **options)


def _candidate_masks(emb: ImageEmbedding, low: np.ndarray, obj: ObjectMask) -> list[ObjectMask | None]:
    """The candidates' binary masks in the original frame (None where a candidate is empty)."""
    frame = emb.frame
    out: list[ObjectMask | None] = []
    for logits in low:
        region = frame.lowres_extent(logits > 0)
        if region is None:
            out.append(None)
            continue
        crop = frame.lowres_to_original(logits, region) > 0
        out.append(trim(crop, region[:2], obj.label_id, obj.image_shape))
    return out


def _match(obj: ObjectMask, gt: np.ndarray, gt_objects: dict) -> ObjectMask | None:
    y0, x0, y1, x1 = obj.bbox
    under = gt[y0:y1, x0:x1][obj.mask]
    under = under[under > 0]
    if under.size == 0:
        return None
    ids, counts = np.unique(under, return_counts=True)
    return gt_objects[int(ids[np.argmax(counts)])]


@torch.no_grad()
def collect_candidates(
    sam,
    planes: Sequence[Plane],
    *,
    prompts: str = "box",
    settings=None,
    channel: int | str | None = None,
    percentiles: tuple[float, float] = PERCENTILES,
    batch_size: int = BATCH_SIZE,
    embedding_cache: EmbeddingCache | None = default_cache,
    step: Callable[[str], None] | None = None,
) -> CandidateSet:
    """Decode every object once and score SAM's three candidates.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        The unadapted model.
    planes : sequence of Plane
        From :func:`plan_planes`.
    prompts : {"box", "refine"}
        "box": the tight box only (the IoU-adaption training prompt).
        "refine": SAMRefiner's prompts of the first cascade iteration (inference).
    settings : PromptSettings, optional
        Prompt excavation settings for ``prompts="refine"``.
    channel, percentiles
        Passed to :func:`~napari_samrefine.engine.preprocess.to_sam_rgb`.
    batch_size : int
        Objects per decoder call (bounds memory).
    embedding_cache : EmbeddingCache or None
        Where image embeddings are kept (one encoder pass per plane).
    step : callable, optional
        ``step(message)`` after each plane (progress; it may raise to cancel).

    Returns
    -------
    CandidateSet
    """
    if prompts not in ("box", "refine"):
        raise ValueError(f"prompts must be 'box' or 'refine', got {prompts!r}")
    if prompts == "refine" and settings is None:
        from napari_samrefine.samrefiner.cascade import PromptSettings

        settings = PromptSettings()
    layer = iou_head_last_layer(sam)
    captured: list[torch.Tensor] = []
    me = threading.get_ident()

    def record(_module, inputs, _output):
        if threading.get_ident() == me:  # not another thread decoding with the same model
            captured.append(inputs[0].detach())

    handle = layer.register_forward_hook(record)
    hidden, scores, coarse, gts, ids, pairs, zs = [], [], [], [], [], [], []
    with_gt = any(p.ground_truth is not None for p in planes)
    try:
        for plane in planes:
            where = f"image {plane.pair + 1}" + (f" plane {plane.plane}" if plane.plane >= 0 else "")
            if plane.objects:
                rgb = to_sam_rgb(plane.image, channel=channel, percentiles=percentiles)
                if embedding_cache is not None:
                    emb = embedding_cache.get(sam, rgb)
                else:
                    emb = embed_image(sam, rgb)
                gt_objects = {}
                if plane.ground_truth is not None:
                    gt_objects = {o.label_id: o for o in objects_from_labels(plane.ground_truth)}
                decoder = lean_decoder(sam, emb) or "reference"  # built once per plane
                for start in range(0, len(plane.objects), batch_size):
                    chunk = plane.objects[start : start + batch_size]
                    captured.clear()
                    decoded = _decode_all(sam, chunk, emb, prompts, settings, decoder)
                    hidden.append(captured[-1].float())
                    scores.append(decoded.scores)
                    low = decoded.lowres.numpy()
                    for obj, cand in zip(chunk, low, strict=True):
                        masks = _candidate_masks(emb, cand, obj)
                        coarse.append(candidate_ious(obj, masks))
                        if with_gt:
                            ref = None
                            if plane.ground_truth is not None:
                                ref = _match(obj, plane.ground_truth, gt_objects)
                            gts.append(
                                np.full(3, np.nan) if ref is None else candidate_ious(ref, masks)
                            )
                        ids.append(obj.label_id)
                        pairs.append(plane.pair)
                        zs.append(plane.plane)
            if step is not None:
                step(f"{where}: {len(plane.objects)} objects decoded")
    finally:
        handle.remove()
    if not scores:
        device = sam.mask_decoder.iou_token.weight.device
        return CandidateSet(
            torch.zeros((0, layer.in_features), device=device), np.zeros((0, 3), np.float32),
            np.zeros((0, 3)), np.zeros((0, 3)) if with_gt else None,
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
        )
    return CandidateSet(
        hidden=torch.cat(hidden),
        scores=np.concatenate(scores),
        coarse_iou=np.stack(coarse),
        ground_truth_iou=np.stack(gts) if with_gt else None,
        label_id=np.asarray(ids, np.int64),
        pair=np.asarray(pairs, np.int64),
        plane=np.asarray(zs, np.int64),
    )
