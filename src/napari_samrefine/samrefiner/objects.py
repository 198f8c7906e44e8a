"""Objects of a label image as small crops (memory scales with the objects' boxes)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["ObjectMask", "objects_from_labels", "label_components", "crop_iou", "trim"]

EIGHT = np.ones((3, 3), dtype=bool)

# find_objects returns a list as long as the largest id: above this, ids are first
# mapped to 1..n (label images with hashed or very large ids, e.g. uint64)
_DENSE_MAX_ID = 1 << 22


@dataclass(frozen=True)
class ObjectMask:
    """One object's binary mask, stored as its tight crop.

    Attributes
    ----------
    label_id : int
        The object's id in the label image (or class id in semantic mode).
    mask : numpy.ndarray
        bool crop of the object's tight bounding box.
    offset : (int, int)
        (row, column) of the crop's top-left pixel in the image.
    image_shape : (int, int)
        (H, W) of the image the object lives in.
    """

    label_id: int
    mask: np.ndarray
    offset: tuple[int, int]
    image_shape: tuple[int, int]

    @property
    def area(self) -> int:
        """Number of pixels of the object."""
        return int(np.count_nonzero(self.mask))

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Half-open (y0, x0, y1, x1) of the crop in the image."""
        y0, x0 = self.offset
        return y0, x0, y0 + self.mask.shape[0], x0 + self.mask.shape[1]

    @property
    def tight_box(self) -> np.ndarray:
        """Inclusive [x1, y1, x2, y2] of the object's pixels (SPEC section 2); int64."""
        rows = np.flatnonzero(self.mask.any(axis=1))
        cols = np.flatnonzero(self.mask.any(axis=0))
        y0, x0 = self.offset
        return np.array([x0 + cols[0], y0 + rows[0], x0 + cols[-1], y0 + rows[-1]], dtype=np.int64)

    def to_image(self, dtype=bool) -> np.ndarray:
        """The object as a full-image array (for tests and small images only)."""
        out = np.zeros(self.image_shape, dtype=dtype)
        y0, x0, y1, x1 = self.bbox
        out[y0:y1, x0:x1][self.mask] = 1
        return out

    @classmethod
    def from_full(cls, mask: np.ndarray, label_id: int = 1) -> ObjectMask:
        """Crop a full-image boolean mask to its tight box (an empty mask gives an empty crop)."""
        mask = np.asarray(mask, dtype=bool)
        sl = ndi.find_objects(mask.astype(np.uint8))
        if not sl or sl[0] is None:
            return cls(label_id, np.zeros((0, 0), bool), (0, 0), mask.shape)
        ys, xs = sl[0]
        return cls(label_id, mask[ys, xs].copy(), (ys.start, xs.start), mask.shape)


def _dense_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels that ``find_objects`` can index, and the ids they stand for (None: the same)."""
    if labels.dtype == np.bool_:
        return labels.view(np.uint8), None
    if labels.size == 0 or int(labels.max()) <= _DENSE_MAX_ID:
        return labels, None
    ids = np.union1d(np.zeros(1, labels.dtype), labels)
    return np.searchsorted(ids, labels), ids


def objects_from_labels(
    labels: np.ndarray, label_ids: Iterable[int] | None = None
) -> list[ObjectMask]:
    """Split a 2D label image into per-object crops, in increasing label order.

    Parameters
    ----------
    labels : numpy.ndarray
        2D non-negative integer label image (any width, ids up to the dtype's
        maximum), or bool (one object with id 1); 0 is background.
    label_ids : iterable of int, optional
        Only these ids (missing ones are left out; the caller reports them).

    Returns
    -------
    list of ObjectMask
    """
    labels = np.asarray(labels)
    wanted = None if label_ids is None else {int(i) for i in label_ids}
    indexed, ids = _dense_ids(labels)
    out = []
    # find_objects indexes by label value; its list is as long as the largest id
    for index, sl in enumerate(ndi.find_objects(indexed)):
        lid = index + 1 if ids is None else int(ids[index + 1])
        if sl is None or (wanted is not None and lid not in wanted):
            continue
        crop = indexed[sl] == index + 1
        out.append(ObjectMask(lid, crop, (sl[0].start, sl[1].start), labels.shape))
    return out


def label_components(mask: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Number the 8-connected components of a 2D mask, or of each plane of a stack.

    Parameters
    ----------
    mask : numpy.ndarray
        2D (Y, X) or 3D (Z, Y, X) boolean mask.

    Returns
    -------
    components : numpy.ndarray
        int32 labels: each plane's components numbered 1..n in raster order
        (:func:`scipy.ndimage.label`); planes are never joined.
    counts : list of int
        Number of components of each plane (one entry for 2D).

    Examples
    --------
    >>> m = np.array([[1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], bool)
    >>> components, counts = label_components(m)
    >>> components.tolist(), counts
    ([[1, 1, 0, 0], [0, 0, 0, 2], [0, 0, 2, 0]], [2])
    """
    mask = np.asarray(mask, dtype=bool)
    planes = mask[None] if mask.ndim == 2 else mask
    out = np.zeros(planes.shape, dtype=np.int32)
    counts = []
    for z, plane in enumerate(planes):
        counts.append(int(ndi.label(plane, structure=EIGHT, output=out[z])))
    return (out[0] if mask.ndim == 2 else out), counts


def crop_iou(a: ObjectMask, b: ObjectMask) -> float:
    """IoU of two objects of the same image, computed on their crops only.

    Two empty objects have IoU 1.
    """
    area_a, area_b = a.area, b.area
    if area_a == 0 and area_b == 0:
        return 1.0
    ay0, ax0, ay1, ax1 = a.bbox
    by0, bx0, by1, bx1 = b.bbox
    y0, x0, y1, x1 = max(ay0, by0), max(ax0, bx0), min(ay1, by1), min(ax1, bx1)
    inter = 0
    if y1 > y0 and x1 > x0:
        pa = a.mask[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0]
        pb = b.mask[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
        inter = int(np.count_nonzero(pa & pb))
    return inter / (area_a + area_b - inter)


def trim(mask: np.ndarray, offset: tuple[int, int], label_id: int, image_shape) -> ObjectMask:
    """An ObjectMask from a boolean crop at ``offset``, trimmed to its tight box."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return ObjectMask(label_id, np.zeros((0, 0), bool), offset, tuple(image_shape))
    cols = np.flatnonzero(mask.any(axis=0))
    sub = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return ObjectMask(
        label_id, sub.copy(), (offset[0] + int(rows[0]), offset[1] + int(cols[0])), tuple(image_shape)
    )
