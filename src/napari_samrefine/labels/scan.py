"""The objects of a lazy label plane, found block by block (memory grows with the objects).

One pass over the plane reads it a block at a time and merges, per id, the
pixel count and the bounding box; ids may be anything up to the dtype's maximum
(2**63 - 1 and beyond for uint64). Each object's mask is then cut from a read of
its box alone (:func:`read_object`). The boxes and counts equal what
:func:`~napari_samrefine.labels.objects.objects_from_labels` gives on the
whole plane.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_samrefine.labels.objects import ObjectMask, label_components, objects_from_labels
from napari_samrefine.labels.values import check_label_values
from napari_samrefine.pipeline import lazy_arrays
from napari_samrefine.pipeline.inputs import _announce_components, check_lazy_labels
from napari_samrefine.pipeline.lazy_arrays import block_side, blocks, read

__all__ = [
    "ObjectTable",
    "ObjectBox",
    "scan_objects",
    "read_object",
    "lazy_objects",
    "lazy_plane_objects",
]

# above this id, a block's ids are first mapped to 1..n (find_objects' list is as long as the id)
_DENSE_MAX_ID = 1 << 20


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
        """The ``i``-th object's box, shaped for :func:`~.tiling.context_box`."""
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
    if top <= _DENSE_MAX_ID:
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
    """Find the objects of one plane of a (lazy) label array, block by block.

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


def read_object(labels, lead: tuple, label_id: int, box, shape: tuple[int, int]) -> ObjectMask:
    """One object's mask, cut from a read of its box alone.

    Parameters
    ----------
    labels : array
        The label array; the plane is ``labels[lead]``.
    lead : tuple of int
        Index of the plane in the leading axes.
    label_id : int
        The object's id.
    box : (y0, x0, y1, x1)
        The object's tight box (from :func:`scan_objects`).
    shape : (int, int)
        (H, W) of the plane.
    """
    y0, x0, y1, x1 = (int(v) for v in box)
    crop = read(labels, (*lead, slice(y0, y1), slice(x0, x1)))
    if crop.dtype == np.bool_:
        crop = crop.view(np.uint8)
    return ObjectMask(int(label_id), crop == crop.dtype.type(label_id), (y0, x0), shape)


def lazy_objects(labels, label_ids: Iterable[int] | None = None) -> Iterator[ObjectMask]:
    """The objects of a lazy 2D label image, in increasing id order, one crop read at a time.

    The lazy counterpart of :func:`~napari_samrefine.labels.objects.objects_from_labels`
    (same objects); ids in ``label_ids`` that are absent are left out.
    """
    return _read_each(labels, scan_objects(labels), label_ids)


def lazy_plane_objects(labels, binary: str = "components", label_ids=None, stacklevel: int = 2):
    """The objects of a lazy 2D label image, as :func:`~.prompts.excavate_prompts` takes them.

    A binary mask with several connected components (``binary="components"``)
    is loaded whole (if it fits :data:`~.lazy_arrays.MEMORY_BUDGET`) and split,
    with the in-memory path's warning; otherwise the objects are read one box at
    a time.

    Returns
    -------
    objects : iterable of ObjectMask
    shape : (int, int)

    Raises
    ------
    ValueError
        For labels that are not 2D, not integers, negative, or a binary mask too
        large to split in memory.
    """
    if labels.ndim != 2:
        raise ValueError(
            f"Labels must be a 2D image, got shape {tuple(labels.shape)}: pass one plane of a stack."
        )
    check_lazy_labels(labels, max_ndim=2)
    table = scan_objects(labels)
    if table.low < 0:
        check_label_values(np.array([table.low], np.dtype(labels.dtype)))
    binary_mask = labels.dtype == np.bool_ or (table.ids.size == 1 and table.background > 0)
    if binary_mask and binary == "components":
        h, w = table.shape
        if 6 * h * w > lazy_arrays.MEMORY_BUDGET:
            raise ValueError(
                f"This {h} x {w} binary mask is too large to split into connected components "
                "in memory: split it yourself (e.g. dask_image.ndmeasure.label) and pass "
                "instance labels, or pass binary='one'."
            )
        components, counts = label_components(read(labels, ()) != 0)
        if counts[0] > 1:
            fg = True if labels.dtype == np.bool_ else table.ids[0].item()
            _announce_components(fg, counts, stacklevel)
            return objects_from_labels(components, label_ids), table.shape
    return _read_each(labels, table, label_ids), table.shape


def _read_each(labels, table: ObjectTable, label_ids) -> Iterator[ObjectMask]:
    wanted = None if label_ids is None else {int(i) for i in label_ids}
    for i, lid in enumerate(table.ids.tolist()):
        if wanted is None or lid in wanted:
            yield read_object(labels, (), lid, table.boxes[i], table.shape)
