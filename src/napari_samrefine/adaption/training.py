"""SAMRefiner++ IoU adaption: teach SAM's IoU head to pick the candidate that fits the data.

SAM proposes three candidate masks per prompt and keeps the one its IoU head
rates best. IoU adaption (SPEC section 4) trains a rank-4 LoRA on the last
linear layer of that head, with no annotations: on the user's own images, each
coarse object's tight box is decoded, the candidate that overlaps the coarse
mask most is the positive, and a pairwise margin ranking loss pushes its score
above the other two. Everything else in SAM stays frozen, so the masks SAM
generates never change; only the choice among the three does.

The adaptor is a small object (the two LoRA tensors plus metadata naming the
base model). :meth:`IoUAdaptor.applied` plugs it into a model for the duration
of a ``with`` block; :meth:`IoUAdaptor.save` / :func:`load_iou_adaptor` store it
as a file of a few kilobytes that is loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import datetime
import math

import torch

from napari_samrefine._progress import ProgressCallback, report
from napari_samrefine.adaption.adaptor import IoUAdaptor
from napari_samrefine.adaption.candidates import collect_candidates, plan_planes
from napari_samrefine.adaption.lora import lora_delta
from napari_samrefine.adaption.selection import top1_correct
from napari_samrefine.engine.embedding import EmbeddingCache, default_cache
from napari_samrefine.engine.preprocess import PERCENTILES
from napari_samrefine.samrefiner.defaults import BATCH_SIZE

__all__ = ["adapt_iou_head", "ranking_loss"]


def ranking_loss(scores: torch.Tensor, targets: torch.Tensor, margin: float = 0.02) -> torch.Tensor:
    """Pairwise margin ranking loss of SAMRefiner++ (SPEC section 4), per sample.

    For each sample the positive is the candidate with the highest target
    (ties: the lowest index); the loss is the sum over the negatives of
    ``max(0, margin - (s_pos - s_neg))``. A candidate whose target equals the
    positive's is not a negative (no order to learn between equal candidates).

    Parameters
    ----------
    scores : torch.Tensor
        (N, 3) predicted IoU of the candidates.
    targets : torch.Tensor
        (N, 3) IoU of the candidates with the coarse mask.
    margin : float
        m (0.02).

    Returns
    -------
    torch.Tensor
        (N,) losses.
    """
    targets = targets.to(scores.device, scores.dtype)
    pos = torch.argmax(targets, dim=1, keepdim=True)
    s_pos = torch.gather(scores, 1, pos)
    t_pos = torch.gather(targets, 1, pos)
    negative = targets < t_pos
    hinge = torch.clamp(margin - (s_pos - scores), min=0.0)
    return (hinge * negative).sum(dim=1)


def adapt_iou_head(
    sam,
    images,
    labels,
    *,
    rank: int = 4,
    margin: float = 0.02,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    accumulate: int = 5,
    milestones: tuple[int, ...] = (60, 100),
    epochs: int = 1,
    seed: int = 0,
    channel: int | str | None = None,
    channel_axis: int | None = None,
    percentiles: tuple[float, float] = PERCENTILES,
    batch_size: int = BATCH_SIZE,
    device: str = "auto",
    embedding_cache: EmbeddingCache | None = default_cache,
    progress: ProgressCallback | None = None,
) -> IoUAdaptor:
    """Train a SAMRefiner++ IoU adaptor on coarse masks alone (self-boosted, no annotations).

    Every object of every image is one sample. Its tight box is decoded once
    (multimask output); the IoU of each of the three candidates with the coarse
    mask is the target, and the best candidate is the positive. A rank-``rank``
    LoRA on the last linear layer of the IoU head (zero-initialised
    up-projection; everything else frozen) is trained with the pairwise margin
    ranking loss by SGD, the gradient accumulated over ``accumulate`` samples,
    the learning rate divided by 10 after the optimizer steps in ``milestones``.

    The model is not modified: its parameters, gradients and modules are left
    exactly as they were.

    Parameters
    ----------
    sam : Sam, str or path
        The model to adapt, a registry name or a checkpoint file.
    images, labels : array or list of arrays
        The user's images and their coarse labels: one pair, or lists of pairs
        (2D, or stacks whose planes are used one by one).
    rank : int
        LoRA rank (4).
    margin : float
        Ranking margin m (0.02).
    lr, momentum, weight_decay : float
        SGD settings (0.01, 0.9, 5e-4).
    accumulate : int
        Samples per optimizer step (5). A last, shorter group also makes a step.
    milestones : tuple of int
        Optimizer steps after which the learning rate is multiplied by 0.1.
    epochs : int
        Passes over the samples (1).
    seed : int
        Seed of the LoRA initialisation and of the sample order (0).
    channel, channel_axis, percentiles
        How images become SAM's RGB input (as in :func:`napari_samrefine.refine`).
    batch_size : int
        Objects per decoder call (bounds memory only).
    device : str
        Device for a model loaded by name.
    embedding_cache : EmbeddingCache or None
        Where image embeddings are kept (one encoder pass per image).
    progress : callable, optional
        ``progress(done, total, message)``; raise
        :class:`napari_samrefine.Cancelled` in it to stop (nothing is changed).

    Returns
    -------
    IoUAdaptor
        With ``metadata`` holding the base model's identity and the training
        summary (loss and top-1 agreement with the coarse-IoU argmax before and
        after, on the training objects); ``save(path)`` writes it.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_samrefine import adapt_iou_head
    >>> from napari_samrefine.testing import tiny_sam
    >>> image = np.zeros((64, 64), np.uint8); image[10:30, 10:30] = 200
    >>> coarse = np.zeros((64, 64), np.uint16); coarse[12:28, 8:31] = 1
    >>> adaptor = adapt_iou_head(tiny_sam(), image, coarse)
    >>> adaptor.rank, adaptor.metadata["n_objects"]
    (4, 1)
    """
    from napari_samrefine.models.loading import resolve_sam

    if rank < 1 or accumulate < 1 or epochs < 1:
        raise ValueError(
            f"rank, accumulate and epochs must be at least 1 (got {rank}, {accumulate}, {epochs})."
        )
    sam = resolve_sam(sam, device)
    planes = plan_planes(images, labels, channel_axis=channel_axis)
    n_objects = sum(len(p.objects) for p in planes)
    if n_objects == 0:
        raise ValueError("The labels hold no object: IoU adaption needs coarse masks to learn from.")
    steps_per_epoch = math.ceil(n_objects / accumulate)
    total = len(planes) + steps_per_epoch * epochs
    done = 0
    report(progress, done, total, "decoding objects")

    def step(message: str) -> None:
        nonlocal done
        done += 1
        report(progress, done, total, message)

    adaptor = IoUAdaptor.untrained(sam, rank=rank, seed=seed)
    cands = collect_candidates(
        sam, planes, prompts="box", channel=channel, percentiles=percentiles,
        batch_size=batch_size, embedding_cache=embedding_cache, step=step,
    )
    dev = cands.hidden.device
    targets = torch.as_tensor(cands.coarse_iou, dtype=torch.float32, device=dev)
    down = torch.nn.Parameter(adaptor.down.to(dev))
    up = torch.nn.Parameter(adaptor.up.to(dev))
    scale = adaptor.scale
    optimizer = torch.optim.SGD([down, up], lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma=0.1)
    generator = torch.Generator().manual_seed(seed)  # sample order

    with torch.no_grad():
        base_scores = torch.as_tensor(cands.scores, device=dev)
        loss_before = ranking_loss(base_scores, targets, margin).mean().item()
    history = []
    n_steps = 0
    for epoch in range(epochs):
        order = torch.randperm(n_objects, generator=generator).to(dev)
        for start in range(0, n_objects, accumulate):
            idx = order[start : start + accumulate]
            optimizer.zero_grad(set_to_none=True)
            scores = base_scores[idx] + lora_delta(cands.hidden[idx], down, up, scale)[:, 1:]
            losses = ranking_loss(scores, targets[idx], margin)
            (losses.sum() / accumulate).backward()
            optimizer.step()
            scheduler.step()
            n_steps += 1
            history.append(float(losses.mean().item()))
            step(f"epoch {epoch + 1}/{epochs}, step {n_steps}: loss {history[-1]:.4f}")

    with torch.no_grad():
        adapted = base_scores + lora_delta(cands.hidden, down, up, scale)[:, 1:]
        loss_after = ranking_loss(adapted, targets, margin).mean().item()
        top1_before = float(top1_correct(cands.scores, cands.coarse_iou).mean())
        top1_after = float(top1_correct(adapted.cpu().numpy(), cands.coarse_iou).mean())
    meta = dict(adaptor.metadata)
    meta.update(
        n_images=len({p.pair for p in planes}),
        n_objects=n_objects,
        n_steps=n_steps,
        epochs=epochs,
        margin=float(margin),
        loss_before=loss_before,
        loss_after=loss_after,
        train_top1_before=top1_before,
        train_top1_after=top1_after,
        loss_history=history,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return IoUAdaptor(down.detach(), up.detach(), meta)
