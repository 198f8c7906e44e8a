"""The objects of one 2D label plane, numpy or lazy, binary masks included.

The plane is scanned once (:func:`~napari_samrefine.labels.scan.scan_objects`),
then each object is cut from a read of its box; a binary mask of several
connected components (``binary="components"``) is loaded whole and split
(:mod:`~napari_samrefine.labels.binary`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from napari_samrefine.labels import arrays
from napari_samrefine.labels.arrays import is_lazy, read
from napari_samrefine.labels.binary import BINARY_CHOICES, BinaryMode, announce_components
from napari_samrefine.labels.objects import (
    ObjectMask,
    label_components,
    objects_from_labels,
    read_object,
)
from napari_samrefine.labels.scan import ObjectTable, scan_objects
from napari_samrefine.labels.values import check_label_values, negative_labels

__all__ = ["plane_objects", "table_foreground"]


def table_foreground(tables: Sequence[ObjectTable], dtype):
    """The foreground value of a binary mask, from its planes' object tables; else None.

    The same value as :func:`~napari_samrefine.labels.binary.binary_foreground`
    gives on the whole labels, without reading them again.
    """
    if np.dtype(dtype) == np.bool_:
        return True
    ids = np.unique(np.concatenate([t.ids for t in tables]))
    if ids.size == 1 and sum(t.background for t in tables) > 0:
        return ids[0].item()
    return None


def plane_objects(
    labels,
    binary: BinaryMode = "components",
    label_ids: Iterable[int] | None = None,
    stacklevel: int = 1,
) -> tuple[list[ObjectMask], tuple[int, int]]:
    """The objects of a 2D label image (numpy or lazy), in increasing id order.

    Parameters
    ----------
    labels : numpy.ndarray or lazy array
        2D non-negative integer or bool labels; 0 is background. A lazy array
        is read block by block, then one object's box at a time.
    binary : {"components", "one"}
        For a binary mask (see :func:`~napari_samrefine.labels.binary.binary_objects`):
        "components" splits a mask of several 8-connected components into
        objects numbered 1..n in raster order, with a UserWarning; "one" keeps
        it one object.
    label_ids : iterable of int, optional
        Only these ids (absent ones are left out).
    stacklevel : int
        Where the warning points: 1 (default) is the code that calls this function.

    Returns
    -------
    objects : list of ObjectMask
    shape : (int, int)

    Raises
    ------
    ValueError
        For labels that are not 2D, not integers, negative, or a lazy binary
        mask too large to split in memory
        (:data:`~napari_samrefine.labels.arrays.MEMORY_BUDGET`).
    """
    if binary not in BINARY_CHOICES:
        raise ValueError(f"binary must be 'components' or 'one', got {binary!r}.")
    lazy = is_lazy(labels)
    labels = labels if lazy else np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(
            f"Labels must be a 2D image, got shape {tuple(labels.shape)}: pass one plane of a stack."
        )
    check_label_values(labels)
    table = scan_objects(labels)
    if table.low < 0:
        raise negative_labels(table.low, labels.dtype)
    fg = table_foreground([table], labels.dtype)
    if fg is not None and binary == "components":
        h, w = table.shape
        if lazy and 6 * h * w > arrays.MEMORY_BUDGET:
            raise ValueError(
                f"This {h} x {w} binary mask is too large to split into connected components "
                "in memory: split it yourself (e.g. dask_image.ndmeasure.label) and pass "
                "instance labels, or pass binary='one'."
            )
        components, counts = label_components(read(labels, ()) != 0)
        if counts[0] > 1:
            announce_components(fg, counts, stacklevel + 1)
            return objects_from_labels(components, label_ids), table.shape
    wanted = None if label_ids is None else {int(i) for i in label_ids}
    objects = [
        read_object(labels, (), lid, box, table.shape)
        for lid, box in zip(table.ids.tolist(), table.boxes.tolist(), strict=True)
        if wanted is None or lid in wanted
    ]
    return objects, table.shape
