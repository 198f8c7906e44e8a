"""Teaching views: the windows refine shows the model, cut from coarse masks made from true labels.

Teaching SAM to refine needs what refine will give it (the prompts mined from an
imperfect mask, in the window of the object's scale) paired with what it should
answer (the true mask). For each annotated image, coarse labels of several kinds
are made from its true labels (:func:`~napari_samrefine.evaluation.coarse_kinds.coarse_labels`:
superpixel defects, erosion, dilation, merged neighbours), grouped into windows
exactly as :func:`~napari_samrefine.refine` groups them at ``scale="auto"``
(:func:`~napari_samrefine.pipeline.tiling.group_objects` with the model's
layout), and each coarse object gets as its target the true objects it stands
for (:func:`coarse_targets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_samrefine.engine.preprocess import PERCENTILES, to_sam_rgb
from napari_samrefine.evaluation.coarse_kinds import coarse_labels
from napari_samrefine.labels.objects import objects_from_labels
from napari_samrefine.pipeline.scale import resolve_layout
from napari_samrefine.pipeline.tiling import group_objects

__all__ = ["TEACH_KINDS", "TeachingView", "coarse_targets", "teaching_views"]

TEACH_KINDS = ("defects", "eroded", "dilated", "merged")
"""The coarse-mask kinds teaching makes from each image's labels by default."""


@dataclass(frozen=True)
class TeachingView:
    """One window of one image, as refine shows it to the model, with its objects' targets.

    Attributes
    ----------
    rgb : numpy.ndarray
        uint8 (h, w, 3): the window of the image as SAM sees it.
    coarse : numpy.ndarray
        int32 (h, w): the coarse labels of the window's objects (others are 0).
    ids : tuple of int
        The objects refined in this window (ids in ``coarse``).
    targets : numpy.ndarray
        bool (n, h, w): the true mask each of ``ids`` should become.
    image : int
        Index of the training image the window comes from.
    kind : str
        The coarse-mask kind.
    """

    rgb: np.ndarray
    coarse: np.ndarray
    ids: tuple[int, ...]
    targets: np.ndarray
    image: int
    kind: str


def coarse_targets(coarse: np.ndarray, truth: np.ndarray) -> dict[int, list[int]]:
    """The true objects each coarse object stands for.

    A true object belongs to the coarse object that covers more than half of it;
    a coarse object that covers no true object by half stands for the true object
    it overlaps most. Coarse objects that overlap no true object have no target
    (they are left out of teaching).

    Parameters
    ----------
    coarse, truth : numpy.ndarray
        2D instance labels of one image.

    Returns
    -------
    dict of int to list of int
        Coarse id -> true ids.
    """
    fg = (coarse > 0) & (truth > 0)
    pairs, counts = np.unique(np.stack([coarse[fg], truth[fg]]), axis=1, return_counts=True)
    true_area = np.bincount(truth.ravel())
    out: dict[int, list[int]] = {}
    best: dict[int, tuple[int, int]] = {}
    for (c, t), n in zip(pairs.T.tolist(), counts.tolist(), strict=True):
        if n * 2 > true_area[t]:
            out.setdefault(c, []).append(t)
        if n > best.get(c, (0, 0))[0]:
            best[c] = (n, t)
    for c, (_, t) in best.items():
        out.setdefault(c, [t])
    return out


def teaching_views(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    sam,
    *,
    kinds: Sequence[str] = TEACH_KINDS,
    seeds: Sequence[int] = (0,),
    channel: int | str | None = None,
    percentiles: tuple[float, float] = PERCENTILES,
    scale="auto",
) -> list[TeachingView]:
    """The windows refine would show ``sam`` for coarse masks made from ``labels``.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        2D images (grey, RGB or channels last, as :func:`~napari_samrefine.refine` takes).
    labels : sequence of numpy.ndarray
        Their true instance labels (2D integers, 0 = background).
    sam : segment_anything.modeling.Sam
        The model whose object scale and input size set the windows.
    kinds : sequence of str
        Coarse-mask kinds (:data:`TEACH_KINDS`; "classical" is allowed too).
    seeds : sequence of int
        Seeds of the random kinds; each seed makes another set of coarse masks
        ("eroded" and "dilated" are made once).
    channel, percentiles, scale
        As in :func:`~napari_samrefine.refine`.

    Returns
    -------
    list of TeachingView
    """
    views = []
    for i, (image, truth) in enumerate(zip(images, labels, strict=True)):
        truth = np.asarray(truth).astype(np.int32)
        rgb = to_sam_rgb(np.asarray(image), channel=channel, percentiles=percentiles)
        shape = truth.shape
        layout = resolve_layout("auto", None, scale, sam, shape)
        for kind in kinds:
            for seed in (seeds if kind in ("defects", "merged") else seeds[:1]):
                coarse = coarse_labels(kind, np.asarray(image), truth, seed=seed)
                stands = coarse_targets(coarse, truth)
                objects = [o for o in objects_from_labels(coarse) if o.label_id in stands]
                for window, members in group_objects(objects, shape, layout):
                    y0, x0, y1, x1 = window if window is not None else (0, 0, *shape)
                    ids = tuple(objects[m].label_id for m in members)
                    crop = coarse[y0:y1, x0:x1]
                    kept = np.where(np.isin(crop, ids), crop, 0).astype(np.int32)
                    true_crop = truth[y0:y1, x0:x1]
                    targets = np.stack([np.isin(true_crop, stands[k]) for k in ids])
                    views.append(TeachingView(
                        np.ascontiguousarray(rgb[y0:y1, x0:x1]), kept, ids, targets, i, kind))
    return views
