"""The teaching loop: epochs of optimiser steps, validation after each, the best epoch kept.

Teaching stops after ``epochs``, after ``patience`` epochs without a better
validation IoU, or when ``max_minutes`` have passed (the epoch under way ends
there and is validated). Epoch 0 is the untaught student, so a lesson that
only makes validation worse keeps the base's weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from napari_samrefine._progress import ProgressCallback, report
from napari_samrefine.models.finetune_file import taught_weights
from napari_samrefine.teach.examples import TeachingExample
from napari_samrefine.teach.losses import refine_loss
from napari_samrefine.teach.steps import (
    decode_example,
    epoch_batches,
    validation_iou,
    window_batches,
    window_features,
)

__all__ = ["Lesson", "teach_epochs"]


@dataclass
class Lesson:
    """What :func:`teach_epochs` learnt.

    Attributes
    ----------
    weights : dict of str to torch.Tensor
        The best epoch's taught tensors (:func:`~napari_samrefine.models.finetune_file.taught_weights`).
    best_epoch : int
        That epoch (0: before teaching).
    best_iou, coarse_iou : float
        Its validation IoU, and the coarse masks' own.
    history : list of dict
        Per epoch: ``epoch``, ``loss``, ``val_iou``, ``val_coarse_iou``, ``seconds``.
    """

    weights: dict
    best_epoch: int
    best_iou: float
    coarse_iou: float
    history: list = field(default_factory=list)


def _eta(start: float, done: int, total: int) -> str:
    if done == 0:
        return ""
    left = (time.perf_counter() - start) / done * (total - done)
    return f"; about {left / 60:.0f} min left" if left >= 60 else f"; about {left:.0f} s left"


def _step_loss(student, train: Sequence[TeachingExample], step: dict, encode: bool) -> tuple[torch.Tensor, int]:
    """The mean loss of one step's objects (with ``encode``, their one window encoded with gradients)."""
    n = sum(map(len, step.values()))
    features = window_features(student, train[next(iter(step))]) if encode else None
    loss = 0.0
    for e, rows in step.items():
        low, iou = decode_example(student, train[e], rows, features=features)
        loss = loss + refine_loss(low, iou, train[e].targets[torch.as_tensor(rows)].to(low.device))
    return loss / n, n


def teach_epochs(
    student,
    params: list,
    train: Sequence[TeachingExample],
    val: Sequence[TeachingExample],
    opts,
    rng: np.random.Generator,
    *,
    progress: ProgressCallback | None = None,
    log=None,
) -> Lesson:
    """Train ``params`` of ``student`` on ``train``; validate on ``val`` after each epoch.

    Parameters
    ----------
    student : segment_anything.modeling.Sam
        The model taught (:func:`~napari_samrefine.teach.student.student_of`).
    params : list of torch.nn.Parameter
        What the optimiser (AdamW) changes.
    train, val : sequence of TeachingExample
    opts : TeachOptions
        ``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``patience``,
        ``max_minutes``, ``lora_rank`` (an adapted encoder encodes each step's window).
    rng : numpy.random.Generator
        Orders the examples.
    progress : callable, optional
        ``progress(done, total, message)`` on a 0-1000 scale from 350 (after the
        examples were made); raise ``Cancelled`` in it to stop.
    log : callable, optional
        Called with one line per epoch.

    Returns
    -------
    Lesson
    """
    encode = bool(opts.lora_rank)
    batches = window_batches if encode else epoch_batches
    optimiser = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    best_iou, coarse_iou = validation_iou(student.eval(), val, encode=encode)
    lesson = Lesson(taught_weights(student), 0, best_iou, coarse_iou, [
        dict(epoch=0, loss=math.nan, val_iou=best_iou, val_coarse_iou=coarse_iou, seconds=0.0)])
    if log is not None:
        log(f"epoch 0: validation IoU {best_iou:.3f} (coarse masks {coarse_iou:.3f}), "
            f"{sum(map(len, train))} training objects in {len(train)} views, "
            f"{sum(p.numel() for p in params)} numbers taught")
    start, done, stale, total = time.perf_counter(), 0, 0, None

    def out_of_time() -> bool:
        return opts.max_minutes is not None and time.perf_counter() - start > 60 * opts.max_minutes

    for epoch in range(1, opts.epochs + 1):
        student.train()
        losses, count = 0.0, 0
        steps = batches(train, opts.batch_size, rng)
        total = total or len(steps) * opts.epochs
        for step in steps:
            optimiser.zero_grad()
            loss, n = _step_loss(student, train, step, encode)
            loss.backward()
            optimiser.step()
            losses, count, done = losses + float(loss.detach()) * n, count + n, done + 1
            report(progress, 350 + int(650 * min(done / total, 1)), 1000,
                   f"epoch {epoch}/{opts.epochs}, loss {losses / count:.3f}{_eta(start, done, total)}")
            if out_of_time():
                break
        val_iou, _ = validation_iou(student.eval(), val, encode=encode)
        seconds = time.perf_counter() - start
        lesson.history.append(dict(epoch=epoch, loss=losses / count, val_iou=val_iou,
                                   val_coarse_iou=coarse_iou, seconds=seconds))
        if log is not None:
            log(f"epoch {epoch}: loss {losses / count:.4f}, validation IoU {val_iou:.3f} "
                f"(coarse {coarse_iou:.3f}), {seconds:.0f} s")
        if val_iou > lesson.best_iou:
            lesson.weights, lesson.best_epoch, lesson.best_iou, stale = taught_weights(student), epoch, val_iou, 0
        else:
            stale += 1
        if stale >= opts.patience or out_of_time():
            break
    return lesson
