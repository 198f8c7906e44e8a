"""The objects of a label plane, found block by block: the one object scanner.

One pass over the plane reads it a block at a time (numpy, dask, zarr, memmaps
alike: :mod:`~napari_samrefine.labels.arrays`) and merges, per id, the pixel
count and the bounding box; ids may be anything up to the dtype's maximum
(2**63 - 1 and beyond for uint64): above :data:`DENSE_MAX_ID` a block's ids are
first mapped to 1..n, so memory and time grow with the image and the number of
objects, never with the largest id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_samrefine.labels.arrays import block_side, blocks, is_lazy, read

__all__ = ["ObjectTable", "ObjectBox", "scan_objects", "object_slices", "DENSE_MAX_ID"]

DENSE_MAX_ID = 1 << 20
"""Above this id, a block's ids are first mapped to 1..n (find_objects' list is as long as the id)."""


@dataclass(frozen=True)
class ObjectTable:
    """Ids, pixel counts and boxes of the objects of one plane, in increasing id order.

    Attributes
    ----------
    ids : numpy.ndarray
        The ids (the labels' dtype; uint8 for bool labels).
    counts : numpy.ndarray
        int64 pixel count of each id.
    boxes : numpy.ndarray
        int64 (n, 4) half-open (y0, x0, y1, x1) of each id's pixels.
    background : int
        Number of 0 pixels.
    low : int
        The smallest value (negative labels are refused by the caller).
    shape : (int, int)
        (H, W) of the plane.
    """

    ids: np.ndarray
    counts: np.ndarray
    boxes: np.ndarray
    background: int
    low: int
    shape: tuple[int, int]

    def box(self, i: int) -> ObjectBox:
        """The ``i``-th object's box (it has ``bbox`` and ``image_shape``, as an ObjectMask)."""
        return ObjectBox(tuple(int(v) for v in self.boxes[i]), self.shape)


@dataclass(frozen=True)
class ObjectBox:
    """An object's box and image shape: all that tile assignment looks at."""

    bbox: tuple[int, int, int, int]
    image_shape: tuple[int, int]


def _block_objects(block: np.ndarray, y: int, x: int):
    """ids, counts and (n, 4) boxes of one block's non-zero values, in the plane's frame."""
    if block.dtype == np.bool_:
        block = block.view(np.uint8)
    top = int(block.max())
    if top <= DENSE_MAX_ID:
        counts = np.bincount(block.ravel().astype(np.intp, copy=False), minlength=top + 1)
        ids = np.flatnonzero(counts[1:]) + 1
        found = ndi.find_objects(block.astype(np.int32, copy=False), max_label=top)
        slices = [found[i - 1] for i in ids]
        counts = counts[ids]
        ids = ids.astype(block.dtype)
    else:  # large ids: number the runs of equal values 1..n (sorting runs, not pixels)
        flat = block.ravel()
        heads = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
        lengths = np.diff(heads, append=flat.size)
        values, inverse = np.unique(flat[heads], return_inverse=True)
        zero = int(values[0] == 0)  # values are sorted and non-negative
        counts = np.bincount(inverse.ravel(), weights=lengths).astype(np.int64)
        local = np.repeat((inverse.ravel() + (1 - zero)).astype(np.int32), lengths)
        slices = ndi.find_objects(local.reshape(block.shape))[: len(values) - zero]
        ids, counts = values[zero:], counts[zero:]
    boxes = np.array(
        [(s[0].start + y, s[1].start + x, s[0].stop + y, s[1].stop + x) for s in slices],
        dtype=np.int64,
    ).reshape(-1, 4)
    return ids, counts.astype(np.int64), boxes


def _merge(ids: np.ndarray, counts: np.ndarray, boxes: np.ndarray):
    """One row per id: counts summed, boxes united."""
    if ids.size == 0:
        return ids, counts, boxes
    order = np.argsort(ids, kind="stable")
    ids, counts, boxes = ids[order], counts[order], boxes[order]
    start = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    merged = np.empty((start.size, 4), np.int64)
    merged[:, :2] = np.minimum.reduceat(boxes[:, :2], start, axis=0)
    merged[:, 2:] = np.maximum.reduceat(boxes[:, 2:], start, axis=0)
    return ids[start], np.add.reduceat(counts, start), merged


def scan_objects(labels, lead: tuple = ()) -> ObjectTable:
    """Find the objects of one plane of a label array, block by block: the one object scanner.

    A numpy array is read like a lazy one (dask, zarr, memmap), a block at a
    time (:func:`~napari_samrefine.labels.arrays.block_side`); for numpy a block
    is a view, and a plane of up to 2048 px a side is one block. Memory grows
    with a block and the number of objects, never with the largest id.

    Parameters
    ----------
    labels : array
        Integer or bool labels; the plane is ``labels[lead]`` (2D).
    lead : tuple of int
        Index of the plane in the leading axes (empty for 2D labels).

    Returns
    -------
    ObjectTable
    """
    shape = tuple(int(s) for s in labels.shape[-2:])
    dtype = np.uint8 if labels.dtype == np.bool_ else np.dtype(labels.dtype)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    background, low = 0, None
    for y0, x0, y1, x1 in blocks(shape, block_side(labels)):
        block = read(labels, (*lead, slice(y0, y1), slice(x0, x1)))
        zeros = block.size - int(np.count_nonzero(block))
        background += zeros
        if block.dtype.kind == "i":
            m = int(block.min())
            low = m if low is None else min(low, m)
            if m < 0:
                continue  # refused by the caller, which names the minimum
        if zeros < block.size:
            parts.append(_block_objects(block, y0, x0))
        if sum(len(p[0]) for p in parts) > 4 * 65536:  # keep the pending rows few
            parts = [_merge(*(np.concatenate(c) for c in zip(*parts, strict=True)))]
    if parts:
        ids, counts, boxes = _merge(*(np.concatenate(c) for c in zip(*parts, strict=True)))
    else:
        ids, counts, boxes = np.zeros(0, dtype), np.zeros(0, np.int64), np.zeros((0, 4), np.int64)
    return ObjectTable(ids.astype(dtype), counts, boxes, background, 0 if low is None else low, shape)


def object_slices(labels) -> dict[int, tuple[slice, slice]]:
    """The tight box of every object of a 2D label image, by id.

    Like :func:`scipy.ndimage.find_objects`, whose list is as long as the
    largest id, but keyed by id (:func:`scan_objects`): memory and time grow
    with the image and the number of objects whatever the ids (any integer
    dtype, ids up to its maximum).

    Parameters
    ----------
    labels : numpy.ndarray or lazy array
        2D non-negative integer or bool label image; 0 is background.

    Returns
    -------
    dict of int to (slice, slice)
        Present ids (Python ints), in increasing order, to their half-open
        (rows, columns) box.

    Examples
    --------
    >>> labels = np.zeros((4, 5), np.uint64); labels[1:3, 2:4] = 2**64 - 1
    >>> object_slices(labels)
    {18446744073709551615: (slice(1, 3, None), slice(2, 4, None))}
    """
    labels = labels if is_lazy(labels) else np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"object_slices takes a 2D label image, got shape {tuple(labels.shape)}.")
    table = scan_objects(labels)
    return {
        i: (slice(y0, y1), slice(x0, x1))
        for i, (y0, x0, y1, x1) in zip(table.ids.tolist(), table.boxes.tolist(), strict=True)
    }
