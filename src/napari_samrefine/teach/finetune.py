"""Teach SAM to refine: fine-tune its mask decoder on a few annotated images.

:func:`finetune` makes coarse masks from the user's true labels
(:mod:`~napari_samrefine.teach.views`), mines the prompts refine would mine from
them at the object scale refine uses, and trains SAM's prompt encoder and mask
decoder (the image encoder is frozen, so every embedding is computed once and
shared with refine; with ``lora_rank``, low-rank adaptors in its attention are
trained too, :mod:`~napari_samrefine.models.lora`) to answer the true masks,
with SAM's own losses (:mod:`~napari_samrefine.teach.losses`). A validation
split of whole images is scored after every epoch (mean IoU in SAM's low-res
frame, beside the coarse masks' own); the best epoch is kept and teaching stops
early when validation stops improving. The result is saved as a small file
(:mod:`~napari_samrefine.models.finetune_file`) that
``load_sam(base, finetune=FILE)`` applies.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import xxhash

from napari_samrefine._progress import ProgressCallback, report
from napari_samrefine.engine.embedding import EmbeddingCache
from napari_samrefine.engine.preprocess import PERCENTILES
from napari_samrefine.labels.values import check_label_values
from napari_samrefine.models.finetune_file import (
    FinetuneFile,
    apply_finetune,
    base_identity,
    write_finetune_file,
)
from napari_samrefine.models.profile import PROMPT_KINDS, model_profile
from napari_samrefine.models.source import model_source
from napari_samrefine.teach.epochs import teach_epochs
from napari_samrefine.teach.examples import DIHEDRAL, teaching_examples
from napari_samrefine.teach.steps import validation_subset
from napari_samrefine.teach.student import student_of
from napari_samrefine.teach.views import TEACH_KINDS, teaching_views

__all__ = ["TeachOptions", "Taught", "check_teaching_data", "finetune"]


@dataclass(frozen=True)
class TeachOptions:
    """How a model is taught (all saved in the taught file).

    Attributes
    ----------
    prompts : tuple of str
        Prompt kinds the taught model is given, at teaching and at refine.
    kinds : tuple of str
        Coarse-mask kinds made from the labels (:data:`~.views.TEACH_KINDS`).
    seeds : tuple of int
        Seeds of the random coarse-mask kinds (more seeds, more examples).
    augment : tuple of int
        Turns and flips used (:data:`~.examples.DIHEDRAL`; ``(0,)``, the default:
        none). Each one is another encoder pass per window: on a CPU the
        measured runs used none (docs/benchmarks.md).
    epochs : int
        At most this many passes over the training examples.
    batch_size : int
        Objects per optimiser step.
    lr : float
        AdamW learning rate.
    weight_decay : float
        AdamW weight decay.
    validation : float
        Fraction of the images (at least one when there are two or more) held
        out to validate; with one image, its unturned views validate.
    validation_objects : int
        At most about this many validation objects are scored after each epoch.
    patience : int
        Epochs without a better validation IoU before teaching stops.
    max_minutes : float or None
        Stop training after this many minutes (counted from the first step; the
        epoch under way ends there, is validated, and the best epoch is kept).
    keep : {"better", "refined"}
        The keep policy the taught model refines with by default.
    seed : int
        Seed of the split, the order of the examples and the adaptors' start.
    lora_rank : int
        0 (the default): the image encoder is not taught. r >= 1: low-rank
        adaptors of rank r in the image encoder's attention
        (:mod:`~napari_samrefine.models.lora`) are taught too. Each step then
        encodes its window again with gradients (several seconds per step on a
        CPU for LiteMedSAM; see docs/training.md).
    lora_scale : float
        Factor of the adaptors' update.
    """

    prompts: tuple[str, ...] = ("box", "mask")
    kinds: tuple[str, ...] = TEACH_KINDS
    seeds: tuple[int, ...] = (1,)
    augment: tuple[int, ...] = (0,)
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    validation: float = 0.2
    validation_objects: int = 400
    patience: int = 3
    max_minutes: float | None = None
    keep: str = "better"
    seed: int = 0
    lora_rank: int = 0
    lora_scale: float = 1.0

    def __post_init__(self):
        if not self.prompts or any(p not in PROMPT_KINDS for p in self.prompts):
            raise ValueError(f"prompts must be a non-empty subset of {PROMPT_KINDS}, got {self.prompts!r}.")
        if any(k not in DIHEDRAL for k in self.augment) or not self.augment:
            raise ValueError(f"augment must be a non-empty subset of {DIHEDRAL}, got {self.augment!r}.")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1 or not self.lr > 0:
            raise ValueError("epochs, batch_size and patience must be at least 1, and lr > 0.")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be more than 0 (or None: no limit), got {self.max_minutes!r}.")
        if not 0 <= self.validation < 1:
            raise ValueError(f"validation must be a fraction in [0, 1), got {self.validation!r}.")
        if self.lora_rank < 0 or not self.lora_scale > 0:
            raise ValueError(f"lora_rank must be 0 (off) or more and lora_scale > 0, got "
                             f"{self.lora_rank!r} and {self.lora_scale!r}.")
        if self.keep not in ("better", "refined"):
            raise ValueError(f"keep must be 'better' or 'refined', got {self.keep!r}.")


@dataclass
class Taught:
    """What :func:`finetune` returns.

    Attributes
    ----------
    model : segment_anything.modeling.Sam
        The taught model, ready for :func:`~napari_samrefine.refine` (it shares the
        base model's image encoder, or its weights under the adaptors).
    path : pathlib.Path or None
        The file written, if ``out`` was given.
    history : list of dict
        Per epoch: ``epoch``, ``loss`` (mean training loss per object),
        ``val_iou`` (mean IoU of the taught masks with the truth on the validation
        objects), ``val_coarse_iou`` (the coarse masks' own), ``seconds``.
    best_epoch : int
        The epoch whose weights were kept (0: before teaching).
    metadata : dict
        What the file holds beside the weights.
    """

    model: object
    path: Path | None
    history: list = field(default_factory=list)
    best_epoch: int = 0
    metadata: dict = field(default_factory=dict)


def _hash_pair(image: np.ndarray, labels: np.ndarray) -> str:
    h = xxhash.xxh3_128()
    for a in (np.ascontiguousarray(image), np.ascontiguousarray(labels)):
        h.update(f"{a.dtype}|{a.shape}|".encode())
        h.update(a.data)
    return h.hexdigest()


def _split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Training and validation image indices (validation: whole images)."""
    if n < 2 or fraction == 0:
        return list(range(n)), []
    order = np.random.default_rng(seed).permutation(n).tolist()
    k = max(1, round(n * fraction))
    return sorted(order[k:]), sorted(order[:k])


def check_teaching_data(images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> None:
    """Refuse what :func:`finetune` cannot learn from, before any model is loaded.

    Raises
    ------
    ValueError
        For no images, images and labels of different counts or shapes, labels
        that are not 2D integers, or labels without objects (the message names
        the pair and the fix).
    """
    if not images or len(images) != len(labels):
        raise ValueError(f"finetune needs pairs of images and labels; got {len(images)} images "
                         f"and {len(labels)} label images.")
    for i, (im, lab) in enumerate(zip(images, labels, strict=True)):
        check_label_values(lab, f"labels[{i}]")
        if np.ndim(lab) != 2:
            raise ValueError(f"labels[{i}] has shape {np.shape(lab)}: finetune takes 2D label images "
                             "(give the planes of a stack one by one).")
        if np.shape(im)[:2] != np.shape(lab) and np.shape(im)[-2:] != np.shape(lab):
            raise ValueError(f"images[{i}] has shape {np.shape(im)}, its labels {np.shape(lab)}: "
                             "give each image with labels of its own height and width.")
        if not np.any(lab):
            raise ValueError(f"labels[{i}] holds no object: give labels with the objects to learn.")


def finetune(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    sam,
    *,
    out: str | os.PathLike | None = None,
    options: TeachOptions | None = None,
    channel: int | str | None = None,
    percentiles: tuple[float, float] = PERCENTILES,
    embedding_cache: EmbeddingCache | None = None,
    progress: ProgressCallback | None = None,
    log=None,
) -> Taught:
    """Teach ``sam`` to refine coarse masks into the given labels.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        2D images (grey, RGB, or channels last with ``channel``), as refine takes them.
    labels : sequence of numpy.ndarray
        Their corrected instance labels (2D integers, 0 = background). Neither
        images nor labels are modified.
    sam : segment_anything.modeling.Sam
        The base model (left unchanged); a taught model's file names it.
    out : path-like, optional
        Where to write the taught model's file (atomically, once teaching ends;
        a cancelled call writes nothing).
    options : TeachOptions, optional
        How to teach (default :class:`TeachOptions`).
    channel, percentiles
        As in :func:`~napari_samrefine.refine`.
    embedding_cache : EmbeddingCache, optional
        Where the teaching windows' embeddings are looked up and kept.
    progress : callable, optional
        ``progress(done, total, message)``; raise
        :class:`~napari_samrefine._progress.Cancelled` in it to stop (nothing is written).
    log : callable, optional
        Called with one line per epoch (e.g. ``print``).

    Returns
    -------
    Taught

    Raises
    ------
    ValueError
        For no images, images and labels of different counts or shapes, or labels
        without objects.
    """
    opts = options or TeachOptions()
    images, labels = list(images), list(labels)
    check_teaching_data(images, labels)
    cache = embedding_cache if embedding_cache is not None else EmbeddingCache(max_items=4)
    train_ids, val_ids = _split(len(images), opts.validation, opts.seed)

    def stage(lo: float, hi: float):
        return None if progress is None else (
            lambda d, t, m: progress(int(1000 * (lo + (hi - lo) * d / max(t, 1))), 1000, m))

    views = teaching_views([images[i] for i in train_ids], [labels[i] for i in train_ids], sam,
                           kinds=opts.kinds, seeds=opts.seeds, channel=channel, percentiles=percentiles)
    train = teaching_examples(views, sam, prompts=opts.prompts, augment=opts.augment, cache=cache,
                              progress=stage(0.0, 0.3))
    if val_ids:
        val_views = teaching_views([images[i] for i in val_ids], [labels[i] for i in val_ids], sam,
                                   kinds=opts.kinds, seeds=(0,), channel=channel, percentiles=percentiles)
        val = teaching_examples(val_views, sam, prompts=opts.prompts, augment=(0,), cache=cache,
                                progress=stage(0.3, 0.35))
    elif 0 in opts.augment:  # one image: its unturned views validate (mined once)
        val = [ex for ex in train if ex.turn == 0]
    else:
        val = teaching_examples(views, sam, prompts=opts.prompts, augment=(0,), cache=cache)
    if not train:
        raise ValueError("The labels give no object to learn from.")

    rng = np.random.default_rng(opts.seed)
    val = validation_subset(val, opts.validation_objects, rng)
    with torch.random.fork_rng(devices=[]):  # the adaptors' start is seeded; the caller's seed is kept
        torch.manual_seed(opts.seed)
        with student_of(sam, opts.lora_rank, opts.lora_scale) as (student, params):
            lesson = teach_epochs(student, params, train, val, opts, rng, progress=progress, log=log)
    best_iou, coarse_iou, history = lesson.best_iou, lesson.coarse_iou, lesson.history
    report(progress, 1000, 1000, f"taught: validation IoU {best_iou:.3f} at epoch {lesson.best_epoch}")
    source = model_source(sam)
    base_defaults = model_profile(sam).defaults
    metadata = dict(
        base_model=source.base_name or source.name if source is not None else "a model built in code",
        architecture=source.arch if source is not None else "custom",
        base_identity=base_identity(sam),
        prompts=list(opts.prompts),
        defaults=dict(iterations=1, keep=opts.keep, keep_min_iou=base_defaults.keep_min_iou,
                      source=f"taught; validation IoU {best_iou:.3f} (coarse {coarse_iou:.3f})"),
        images=[_hash_pair(np.asarray(images[i]), np.asarray(labels[i])) for i in train_ids],
        options={**asdict(opts), "validation_images": [_hash_pair(np.asarray(images[i]),
                                                                   np.asarray(labels[i])) for i in val_ids]},
        validation=dict(best_epoch=lesson.best_epoch, best_iou=best_iou, coarse_iou=coarse_iou,
                        history=history, on_training_images=not val_ids),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        package_version=_version(),
    )
    path = None
    if out is not None:
        path = write_finetune_file(lesson.weights, metadata, out)
        model = apply_finetune(sam, path)
    else:
        model = apply_finetune(sam, FinetuneFile(lesson.weights, metadata))
    return Taught(model=model, path=path, history=history, best_epoch=lesson.best_epoch, metadata=metadata)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("napari-samrefine")
    except PackageNotFoundError:
        return "unknown"
