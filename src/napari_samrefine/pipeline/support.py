"""``refine(..., support=)``: each refined object's JFS verdict as a column of the result.

The JFS judge (:func:`napari_samrefine.judge.jfs.judge_refinement`) is run once,
after refinement, on the coarse labels and the labels ``refine`` returns (after
the keep policy), with the given support pairs. Its per-object verdicts become
``ObjectResult.jfs_verdict``; they are reported, never acted on: the keep
decision does not read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from napari_samrefine.engine.embedding import EmbeddingCache
from napari_samrefine.labels.binary import binary_foreground
from napari_samrefine.labels.objects import label_components
from napari_samrefine.labels.values import label_plane
from napari_samrefine.samrefiner.result import RefineResult

__all__ = ["NOT_REFINED", "support_pairs", "check_support_inputs", "add_jfs_verdicts"]

NOT_REFINED = ("skipped", "empty-input", "specks", "too-large-for-tile")
"""Statuses of records whose object was not refined: their ``jfs_verdict`` stays ""."""

_FORM = (
    "Pass support=(support_image, support_labels), or a list of such pairs: images of "
    "the same kind of objects with trusted instance labels."
)


def support_pairs(support) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The support images and their labels, from one ``(image, labels)`` pair or a list of pairs.

    Raises
    ------
    ValueError
        For anything that is not a pair or a non-empty sequence of pairs.
    """
    if not isinstance(support, Sequence) or isinstance(support, str):
        raise ValueError(f"support must be an (image, labels) pair, got {type(support).__name__}. "
                         + _FORM)  # fmt: skip
    one = len(support) == 2 and not isinstance(support[0], Sequence | str)
    pairs = [support] if one else list(support)
    if not pairs:
        raise ValueError("support is an empty list. " + _FORM)
    for i, pair in enumerate(pairs):
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise ValueError(f"support pair {i} is not an (image, labels) pair. " + _FORM)
    return [np.asarray(p[0]) for p in pairs], [np.asarray(p[1]) for p in pairs]


def check_support_inputs(support, labels, *, in_memory: bool, mode: str, binary: str, out) -> None:
    """Refuse, before any work, what the JFS column cannot be computed for.

    The judge compares one 2D plane of instance labels held in memory; a binary
    mask split into components has ids that are not in the labels. The support
    pairs are checked too (2D labels of their image's plane, with objects).
    """
    simages, slabels = support_pairs(support)
    for i, (im, lb) in enumerate(zip(simages, slabels, strict=True)):
        lb = label_plane(lb, f"Support labels {i}")
        if im.shape[:2] != lb.shape:
            raise ValueError(
                f"Support pair {i}: the image plane is {im.shape[:2]} but its labels are "
                f"{lb.shape}. Pass the labels that belong to this support image."
            )
    if not any(lb.any() for lb in slabels):
        raise ValueError(
            "The support labels hold no object: label at least one object of the same kind "
            "in a support image (0 is background)."
        )
    if not in_memory or out is not None:
        raise ValueError(
            "support= (the JFS verdict column) needs the image and labels in memory (numpy "
            "arrays) and no out=: load them (np.asarray) or judge the result afterwards with "
            "napari_samrefine.judge_refinement, one plane at a time."
        )
    if labels.ndim != 2:
        raise ValueError(
            f"support= (the JFS verdict column) works on 2D labels only, got shape "
            f"{tuple(labels.shape)}: refine one plane (labels[z], image[z]) or judge each "
            "plane of the result with napari_samrefine.judge_refinement."
        )
    if mode != "instance":
        raise ValueError(
            "support= (the JFS verdict column) needs mode='instance': JFS judges objects, "
            "not the groups of semantic mode."
        )
    fg = binary_foreground(labels)
    if fg is not None and binary == "components" and max(label_components(labels != 0)[1]) > 1:
        raise ValueError(
            "support= (the JFS verdict column) needs the objects' ids in the labels, but this "
            "binary mask is split into numbered components: pass binary='one', or number the "
            "objects (scipy.ndimage.label) before refining."
        )


def add_jfs_verdicts(
    result: RefineResult,
    image: np.ndarray,
    labels: np.ndarray,
    support,
    *,
    sam,
    channel=None,
    embedding_cache=None,
    progress=None,
) -> RefineResult:
    """``result`` with each refined object's JFS verdict in ``jfs_verdict``.

    Parameters
    ----------
    result : RefineResult
        What refine returned for ``image`` and ``labels`` (2D, in memory).
    image : numpy.ndarray
        The image plane, channels last.
    labels : numpy.ndarray
        The coarse labels refine was given.
    support : pair or list of pairs
        ``(support_image, support_labels)`` (see :func:`support_pairs`).
    sam : Sam
        The model refine used; the judge's FSS backend runs on it.
    channel, progress
        As for refine.
    embedding_cache : EmbeddingCache or None
        refine's cache; where it keeps nothing in memory (None, or the disk-only
        cache of batch runs) the judge uses a memory-only cache of its own, so
        that the support crops are encoded once and no query crop goes to disk.

    Returns
    -------
    RefineResult
        The same labels and prompts; records of refined objects carry "improved",
        "degraded" or "uncertain", the others "".
    """
    from napari_samrefine.judge.jfs import judge_refinement

    simages, slabels = support_pairs(support)
    if embedding_cache is None or embedding_cache.max_items == 0:
        embedding_cache = EmbeddingCache()
    ids = sorted({o.label_id for o in result.objects if o.status not in NOT_REFINED})
    if not ids:
        return result
    judged = judge_refinement(
        image, labels, np.asarray(result.labels), simages, slabels, sam=sam, label_ids=ids,
        channel=channel, embedding_cache=embedding_cache, progress=progress,
    )  # fmt: skip
    verdicts = judged.verdicts
    objects = [
        o if o.status in NOT_REFINED else replace(o, jfs_verdict=verdicts.get(o.label_id, ""))
        for o in result.objects
    ]
    return replace(result, objects=objects)
