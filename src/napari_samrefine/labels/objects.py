"""Objects of a label image as small crops (memory scales with the objects' boxes).

Ids may be anything the dtype holds (up to 2**63 - 1, or 2**64 - 1 for uint64):
listing the objects and selecting pixels by id cost memory and time that grow
with the image and the number of objects, never with the largest id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_samrefine.labels.arrays import is_lazy, read
from napari_samrefine.labels.scan import object_slices, scan_objects

__all__ = [
    "ObjectMask",
    "objects_from_labels",
    "object_slices",
    "read_object",
    "isin_ids",
    "label_components",
    "trim",
]

EIGHT = np.ones((3, 3), dtype=bool)

_BLOCK_PIXELS = 1 << 22


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


def _rows(labels: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Blocks of about ``_BLOCK_PIXELS`` pixels: (first row, rows) of a 2D array."""
    step = max(1, _BLOCK_PIXELS // max(labels.shape[1], 1))
    for y in range(0, labels.shape[0], step):
        yield y, labels[y : y + step]


def _runs(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values and lengths of the runs of equal values of a block in raster order.

    Label images are mostly runs (an object's row, the background between
    objects), so sorting or searching the run values instead of the pixels is
    cheap whatever the ids are.
    """
    flat = np.ravel(block)
    change = np.empty(flat.size, dtype=bool)
    change[:1] = True
    np.not_equal(flat[1:], flat[:-1], out=change[1:])
    heads = np.flatnonzero(change)
    return flat[heads], np.diff(heads, append=flat.size)


def isin_ids(labels: np.ndarray, ids: Iterable[int]) -> np.ndarray:
    """Where a label image holds one of ``ids`` (``np.isin`` without its id-sized table).

    ``np.isin`` on integers may build a lookup table as long as the range of
    ``ids`` (up to six times the image's size) and temporaries of 8 bytes per
    pixel; this works on blocks of rows and on runs of equal values, so beyond
    the result its memory is a block's.

    Parameters
    ----------
    labels : numpy.ndarray
        2D integer or bool label image.
    ids : iterable of int
        Ids to select (any Python ints; those the dtype cannot hold match nothing).

    Returns
    -------
    numpy.ndarray
        bool, the shape of ``labels``.

    Examples
    --------
    >>> isin_ids(np.array([[0, 5, 2**40]], np.int64), [2**40, 7]).tolist()
    [[False, False, True]]
    """
    labels = np.asarray(labels)
    if labels.dtype == np.bool_:
        labels = labels.view(np.uint8)
    out = np.zeros(labels.shape, dtype=bool)
    info = np.iinfo(labels.dtype)
    wanted = np.unique(
        np.array([int(i) for i in ids if info.min <= int(i) <= info.max], dtype=labels.dtype)
    )
    if wanted.size == 0 or labels.size == 0:
        return out
    for y, block in _rows(labels):
        values, lengths = _runs(block)
        at = np.minimum(np.searchsorted(wanted, values), wanted.size - 1)
        hit = wanted[at] == values
        out[y : y + block.shape[0]] = np.repeat(hit, lengths).reshape(block.shape)
    return out


def objects_from_labels(labels, label_ids: Iterable[int] | None = None) -> list[ObjectMask]:
    """Split a 2D label image into per-object crops, in increasing label order.

    The objects are found by the one scanner
    (:func:`~napari_samrefine.labels.scan.scan_objects`), then each is cut from
    a read of its box (:func:`read_object`): numpy and lazy labels alike.

    Parameters
    ----------
    labels : numpy.ndarray or lazy array
        2D non-negative integer label image (any width, ids up to the dtype's
        maximum), or bool (one object with id 1); 0 is background.
    label_ids : iterable of int, optional
        Only these ids (missing ones are left out; the caller reports them).

    Returns
    -------
    list of ObjectMask
    """
    labels = labels if is_lazy(labels) else np.asarray(labels)
    table = scan_objects(labels)
    wanted = None if label_ids is None else {int(i) for i in label_ids}
    return [
        read_object(labels, (), lid, box, table.shape)
        for lid, box in zip(table.ids.tolist(), table.boxes.tolist(), strict=True)
        if wanted is None or lid in wanted
    ]


def read_object(labels, lead: tuple, label_id: int, box, shape: tuple[int, int]) -> ObjectMask:
    """One object's mask, cut from a read of its box alone (numpy or lazy labels).

    Parameters
    ----------
    labels : array
        The label array; the plane is ``labels[lead]``.
    lead : tuple of int
        Index of the plane in the leading axes.
    label_id : int
        The object's id.
    box : (y0, x0, y1, x1)
        The object's tight half-open box
        (:func:`~napari_samrefine.labels.scan.scan_objects`).
    shape : (int, int)
        (H, W) of the plane.
    """
    y0, x0, y1, x1 = (int(v) for v in box)
    crop = read(labels, (*lead, slice(y0, y1), slice(x0, x1)))
    if crop.dtype == np.bool_:
        crop = crop.view(np.uint8)
    return ObjectMask(int(label_id), crop == crop.dtype.type(label_id), (y0, x0), shape)


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
