"""Label-free quality signals of one refined object (issue 20, "keep or replace").

Each refined object gets numbers computed without the truth that may predict
whether the refined mask is better than the coarse one:

- ``iou_coarse``: IoU of the coarse and the refined mask (agreement);
- ``area_ratio``: refined area / coarse area;
- ``predicted_iou``: SAM's predicted IoU of the chosen candidate (given);
- ``stability``: SAM's stability score, the IoU of the mask thresholded at
  logit +1 and at logit -1 (``segment_anything.utils.amg.calculate_stability_score``
  with offset 1), when the logits are given;
- ``edge_contrast``: mean Sobel gradient magnitude of the image on the refined
  mask's boundary minus the mean on the coarse mask's boundary
  (:func:`skimage.filters.sobel`; a boundary pixel is a mask pixel with a
  4-neighbour outside the mask, the image border counting as outside).

:func:`object_signals` computes them for full-image masks (small images, tests);
:func:`plane_signals` for all objects of a plane from their crops, at the cost
of the objects' boxes, never of the image; :func:`state_signals` from the
cascade's :class:`~napari_samrefine.samrefiner.cascade.ObjectState` list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.color import rgb2gray
from skimage.filters import sobel
from skimage.util import img_as_float

from napari_samrefine.labels.objects import ObjectMask
from napari_samrefine.samrefiner.cascade import REFINED_STATUSES, ObjectState

__all__ = [
    "SIGNALS",
    "ObjectSignals",
    "grey",
    "inner_boundary",
    "stability_score",
    "object_signals",
    "plane_signals",
    "state_signals",
]

SIGNALS = ("iou_coarse", "area_ratio", "predicted_iou", "stability", "edge_contrast")
"""The names of the signals, in the order of :class:`ObjectSignals`' fields."""

STABILITY_OFFSET = 1.0
"""The logit offset of SAM's stability score (``stability_score_offset`` in its generator)."""

_CROSS = ndi.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class ObjectSignals:
    """Label-free quality signals of one refined object.

    Attributes
    ----------
    label_id : int
        The object's id.
    iou_coarse : float
        IoU of the coarse and the refined mask (1 for identical masks).
    area_ratio : float
        Refined area / coarse area (NaN for an empty coarse mask).
    predicted_iou : float
        SAM's predicted IoU of the chosen candidate; NaN when not given.
    stability : float
        Pixels with logit > +1 over pixels with logit > -1; NaN without logits
        or when no logit exceeds -1.
    edge_contrast : float
        Mean Sobel magnitude on the refined boundary minus on the coarse
        boundary, in the units of the image as :func:`grey` makes it; NaN when
        either mask is empty.
    """

    label_id: int
    iou_coarse: float
    area_ratio: float
    predicted_iou: float
    stability: float
    edge_contrast: float

    def as_dict(self) -> dict:
        """The fields as a dict (a row of a table)."""
        return asdict(self)


def grey(image: np.ndarray) -> np.ndarray:
    """The image as one float channel: RGB(A) by luminance, integers scaled to [0, 1].

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) grey or (H, W, 3|4) colour image. Pass the image SAM sees (uint8,
        contrast-stretched) so that edge contrasts are comparable across images.

    Returns
    -------
    numpy.ndarray
        float64 (H, W).
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        return rgb2gray(image[..., :3])
    if image.ndim != 2:
        raise ValueError(
            f"The image must be (H, W) grey or (H, W, 3) colour, got shape {image.shape}; "
            "pass one plane and one channel set."
        )
    return img_as_float(image).astype(np.float64, copy=False)


def inner_boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask (the array border counts as outside).

    Examples
    --------
    >>> m = np.zeros((5, 5), bool); m[1:4, 1:4] = True
    >>> int(inner_boundary(m).sum())
    8
    """
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndi.binary_erosion(mask, _CROSS, border_value=0)


def stability_score(logits: np.ndarray | None, offset: float = STABILITY_OFFSET) -> float:
    """SAM's stability score: pixels with logit > +offset over pixels with logit > -offset.

    Parameters
    ----------
    logits : numpy.ndarray or None
        Logits of one mask (NaN where unknown: ignored).
    offset : float
        Threshold offset (SAM: 1.0).

    Returns
    -------
    float
        In [0, 1]; NaN without logits or when no logit exceeds ``-offset``.

    Examples
    --------
    >>> stability_score(np.array([-3.0, -0.5, 0.5, 3.0]))
    0.3333333333333333
    """
    if logits is None:
        return float("nan")
    logits = np.asarray(logits, dtype=np.float32)
    union = int(np.count_nonzero(logits > -offset))  # NaN compares False: ignored
    if union == 0:
        return float("nan")
    return int(np.count_nonzero(logits > offset)) / union


def _edge_contrast(gradient: np.ndarray, coarse: np.ndarray, refined: np.ndarray) -> float:
    rb, cb = inner_boundary(refined), inner_boundary(coarse)
    if not rb.any() or not cb.any():
        return float("nan")
    return float(gradient[rb].mean() - gradient[cb].mean())


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def object_signals(
    image: np.ndarray,
    coarse_mask: np.ndarray,
    refined_mask: np.ndarray,
    logits: np.ndarray | None = None,
    predicted_iou: float | None = None,
    *,
    label_id: int = 1,
) -> ObjectSignals:
    """The quality signals of one refined object from full-image masks.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) grey or (H, W, 3) colour image (see :func:`grey`).
    coarse_mask, refined_mask : numpy.ndarray
        (H, W) boolean masks of the object before and after refinement.
    logits : numpy.ndarray, optional
        (H, W) logits of the refined mask (NaN where unknown), for the stability score.
    predicted_iou : float, optional
        SAM's predicted IoU of the refined mask.
    label_id : int
        The object's id in the result.

    Returns
    -------
    ObjectSignals

    Examples
    --------
    >>> m = np.zeros((8, 8), bool); m[2:6, 2:6] = True
    >>> s = object_signals(np.zeros((8, 8), np.uint8), m, m)
    >>> s.iou_coarse, s.area_ratio, s.edge_contrast
    (1.0, 1.0, 0.0)
    """
    gray = grey(image)
    coarse = np.asarray(coarse_mask, dtype=bool)
    refined = np.asarray(refined_mask, dtype=bool)
    if not (coarse.shape == refined.shape == gray.shape):
        raise ValueError(
            f"The masks {coarse.shape} and {refined.shape} must have the image's shape "
            f"{gray.shape[:2]}."
        )
    if logits is not None and np.shape(logits) != coarse.shape:
        raise ValueError(f"The logits {np.shape(logits)} must have the masks' shape {coarse.shape}.")
    inter = int(np.count_nonzero(coarse & refined))
    union = int(np.count_nonzero(coarse | refined))
    return ObjectSignals(
        label_id=int(label_id),
        iou_coarse=1.0 if union == 0 else inter / union,
        area_ratio=_ratio(int(refined.sum()), int(coarse.sum())),
        predicted_iou=float("nan") if predicted_iou is None else float(predicted_iou),
        stability=stability_score(logits),
        edge_contrast=_edge_contrast(sobel(gray), coarse, refined),
    )


def _paste(obj: ObjectMask, box: tuple[int, int, int, int]) -> np.ndarray:
    """``obj``'s mask inside ``box`` (half-open y0, x0, y1, x1 that holds its crop)."""
    out = np.zeros((box[2] - box[0], box[3] - box[1]), bool)
    if obj.mask.size:
        y, x = obj.offset[0] - box[0], obj.offset[1] - box[1]
        out[y : y + obj.mask.shape[0], x : x + obj.mask.shape[1]] = obj.mask
    return out


def _union_box(a: ObjectMask, b: ObjectMask, pad: int) -> tuple[int, int, int, int]:
    boxes = [o.bbox for o in (a, b) if o.mask.size]
    h, w = a.image_shape
    if not boxes:
        return 0, 0, 0, 0
    y0, x0 = min(q[0] for q in boxes), min(q[1] for q in boxes)
    y1, x1 = max(q[2] for q in boxes), max(q[3] for q in boxes)
    return max(y0 - pad, 0), max(x0 - pad, 0), min(y1 + pad, h), min(x1 + pad, w)


def plane_signals(
    image: np.ndarray,
    coarse: Sequence[ObjectMask],
    refined: Sequence[ObjectMask],
    logits: Sequence[tuple[np.ndarray, tuple[int, int]] | None] | None = None,
    predicted_iou: Sequence[float] | None = None,
) -> list[ObjectSignals]:
    """The quality signals of all objects of one plane, from their crops.

    Each object costs the box around its coarse and refined masks (plus one
    pixel of context for the Sobel filter), never the whole image; the result
    equals :func:`object_signals` on full-image masks.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) grey or (H, W, 3) colour plane (see :func:`grey`).
    coarse, refined : sequence of ObjectMask
        Each object's coarse and refined mask, aligned (the coarse mask's id is
        the result's ``label_id``).
    logits : sequence of (numpy.ndarray, (int, int)) or None, optional
        Per object, the refined mask's logits over a box and the box's top-left
        pixel in the plane (or None). Pixels outside the box count as unknown.
    predicted_iou : sequence of float, optional
        Per object, SAM's predicted IoU.

    Returns
    -------
    list of ObjectSignals
        In the order of ``coarse``.
    """
    if len(coarse) != len(refined):
        raise ValueError(f"{len(coarse)} coarse and {len(refined)} refined objects: give one each.")
    n = len(coarse)
    logits = [None] * n if logits is None else list(logits)
    ious = [None] * n if predicted_iou is None else list(predicted_iou)
    if len(logits) != n or len(ious) != n:
        raise ValueError(f"logits and predicted_iou must hold one entry per object ({n}).")
    rgb = np.asarray(image)
    if n and rgb.shape[:2] != tuple(coarse[0].image_shape):
        raise ValueError(
            f"The image {rgb.shape[:2]} and the objects' plane {coarse[0].image_shape} differ."
        )
    out = []
    for c, r, lg, piou in zip(coarse, refined, logits, ious, strict=True):
        box = _union_box(c, r, pad=1)
        cm, rm = _paste(c, box), _paste(r, box)
        inter = int(np.count_nonzero(cm & rm))
        union = int(np.count_nonzero(cm | rm))
        gradient = sobel(grey(rgb[box[0] : box[2], box[1] : box[3]])) if union else None
        out.append(
            ObjectSignals(
                label_id=int(c.label_id),
                iou_coarse=1.0 if union == 0 else inter / union,
                area_ratio=_ratio(r.area, c.area),
                predicted_iou=float("nan") if piou is None else float(piou),
                stability=stability_score(None if lg is None else lg[0]),
                edge_contrast=float("nan") if gradient is None else _edge_contrast(gradient, cm, rm),
            )
        )
    return out


def state_signals(image: np.ndarray, states: Sequence[ObjectState]) -> list[ObjectSignals]:
    """The quality signals of the cascade's objects of one plane.

    An object whose refinement came out empty at the first iteration (status
    "empty-output") keeps its coarse mask: its refined mask is the coarse one
    and it has no logits. The stability score counts the logits the cascade
    keeps, those inside the box outside which they cannot be positive
    (``ObjectState.region``): pixels beyond it whose logit lies in (-1, 0] are
    not counted, so it can exceed SAM's whole-image value slightly.

    Parameters
    ----------
    image : numpy.ndarray
        The plane (see :func:`grey`), in the states' frame.
    states : sequence of ObjectState
        From :func:`~napari_samrefine.samrefiner.cascade.run_cascade` or
        :func:`~napari_samrefine.pipeline.tiling.refine_plane`.

    Returns
    -------
    list of ObjectSignals
        In the order of ``states``.
    """
    refined, logits, ious = [], [], []
    for s in states:
        done = s.status in REFINED_STATUSES and s.chosen is not None
        refined.append(s.mask if done else s.coarse)
        logits.append((s.region_logits(), s.region[:2]) if done else None)
        ious.append(s.predicted_iou if done else None)
    return plane_signals(image, [s.coarse for s in states], refined, logits, ious)
