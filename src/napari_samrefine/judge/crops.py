"""Context crops for JFS: each object seen at a useful scale, with its surroundings.

Small cells in a large image would be a few pixels in SAM's frame. JFS
therefore crops the query around each object, and each support around a
support object, with context on every side of at least one object size and at
least ``min_context`` pixels; SAM then resizes every crop to its input size.
The support mask Ms of a crop is the union of all the support's labels in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from napari_samrefine.labels.objects import object_slices

__all__ = [
    "context_window",
    "SupportCandidate",
    "SupportCrop",
    "support_candidates",
    "pick_supports",
]


def context_window(
    box: tuple[int, int, int, int],
    image_shape: tuple[int, int],
    context: float = 1.0,
    min_context: int = 32,
) -> tuple[int, int, int, int]:
    """A square window around a box with context, kept inside the image.

    Parameters
    ----------
    box : (y0, x0, y1, x1)
        Half-open box of the object.
    image_shape : (H, W)
        Size of the image.
    context : float
        Margin on each side in units of the box's longer side.
    min_context : int
        Smallest margin in pixels.

    Returns
    -------
    (y0, x0, y1, x1)
        Half-open window: side ``s = max(h, w) + 2 * margin`` centred on the box,
        shifted (not shrunk) to stay inside the image, and clipped only where the
        image is smaller than ``s``. The window always contains the box.
    """
    y0, x0, y1, x1 = (int(v) for v in box)
    side = max(y1 - y0, x1 - x0)
    margin = max(int(math.ceil(context * side)), int(min_context))
    size = side + 2 * margin
    out = []
    for lo, hi, n in ((y0, y1, image_shape[0]), (x0, x1, image_shape[1])):
        start = lo - margin - (side - (hi - lo)) // 2
        start = min(max(start, 0), max(n - size, 0))
        out.append((start, min(start + size, n)))
    (wy0, wy1), (wx0, wx1) = out
    return wy0, wx0, wy1, wx1


@dataclass(frozen=True)
class SupportCandidate:
    """One object of a support label image, a possible centre of a support crop."""

    pair: int
    label_id: int
    area: int
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class SupportCrop:
    """A support crop: the uint8 RGB window, its mask Ms, and where it came from.

    Attributes
    ----------
    candidate : SupportCandidate
        The support object the window is centred on.
    window : (y0, x0, y1, x1)
        Half-open window in the support image.
    rgb : numpy.ndarray
        uint8 (h, w, 3) crop of the support image as SAM sees it.
    mask : numpy.ndarray
        bool (h, w) Ms: the union of the support's labels in the window.
    """

    candidate: SupportCandidate
    window: tuple[int, int, int, int]
    rgb: np.ndarray
    mask: np.ndarray


def support_candidates(support_labels: list[np.ndarray]) -> list[SupportCandidate]:
    """Every object of every support label image, in (pair, label id) order."""
    out = []
    for pair, labels in enumerate(support_labels):
        labels = np.asarray(labels)
        # per object, its box only: no id-sized array (ids may be up to the dtype's maximum)
        for lid, sl in object_slices(labels).items():
            area = int(np.count_nonzero(labels[sl] == labels.dtype.type(lid)))
            box = (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)
            out.append(SupportCandidate(pair, lid, area, box))
    return out


def pick_supports(
    query_area: int, candidates: list[SupportCandidate], k: int
) -> list[SupportCandidate]:
    """The ``k`` support objects closest in size to the query object.

    Size distance is ``|log(area_support / area_query)|`` (a cell twice as large
    and one half as large are equally far); ties keep (pair, label id) order.
    Fewer than ``k`` are returned when there are fewer candidates.
    """
    q = max(int(query_area), 1)
    order = sorted(
        range(len(candidates)), key=lambda i: (abs(math.log(max(candidates[i].area, 1) / q)), i)
    )
    return [candidates[i] for i in order[:k]]
