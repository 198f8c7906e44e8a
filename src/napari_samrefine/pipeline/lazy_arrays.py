"""Arrays that are read a window at a time: dask, zarr, numpy memmaps and the like.

Duck typing only: anything with ``shape``, ``dtype``, ``ndim`` and numpy-style
slicing is read with ``np.asarray(array[window])``, one window at a time, so
neither dask nor zarr is imported here. Blocks follow the array's own chunks
(zarr ``chunks``, dask ``chunksize``) grown to about :data:`BLOCK` pixels a side.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

__all__ = [
    "BLOCK",
    "MEMORY_BUDGET",
    "is_lazy",
    "read",
    "block_side",
    "chunk_shape",
    "blocks",
    "ChannelLast",
    "open_out",
]

BLOCK = 2048
"""Side (pixels) of the blocks a plane is scanned in, rounded up to whole chunks."""

MEMORY_BUDGET = 2 << 30
"""Bytes the lazy path may spend on one whole-plane (or whole-result) array: the
result returned without ``out=``, the RGB of a plane whose objects fit no tile, a
plane loaded for semantic mode or for binary components. Raise it to allow more."""

Window = tuple[int, int, int, int]


def is_lazy(array) -> bool:
    """True for an array to read window by window: not an in-memory numpy array.

    numpy memmaps count as lazy (they live on disk); lists and other array-likes
    without ``shape``, ``dtype``, ``ndim`` and slicing do not (they are read whole).
    """
    if isinstance(array, np.memmap):
        return True
    if isinstance(array, np.ndarray):
        return False
    if not all(hasattr(array, a) for a in ("shape", "dtype", "ndim", "__getitem__")):
        return False
    try:
        np.dtype(array.dtype)
    except TypeError:
        return False
    return True


def read(array, key: tuple) -> np.ndarray:
    """``array[key]`` as a numpy array (a dask slice is computed, a zarr slice read)."""
    return np.asarray(array[key])


def chunk_shape(array) -> tuple[int, ...] | None:
    """The array's chunk shape (zarr ``chunks``, dask ``chunksize``), or None (numpy)."""
    return _chunks(array)


def _chunks(array) -> tuple[int, ...] | None:
    chunks = getattr(array, "chunksize", None)  # dask
    if chunks is None:
        chunks = getattr(array, "chunks", None)  # zarr (dask's .chunks is a tuple of tuples)
    if chunks is None or not all(isinstance(c, (int, np.integer)) for c in chunks):
        return None
    return tuple(int(c) for c in chunks)


def block_side(array, spatial_axes: tuple[int, int] = (-2, -1)) -> tuple[int, int]:
    """(rows, columns) of the blocks to scan ``array`` in: whole chunks, about BLOCK a side."""
    chunks = _chunks(array)
    out = []
    for axis in spatial_axes:
        c = BLOCK if chunks is None else max(1, chunks[axis])
        out.append(c * max(1, round(BLOCK / c)))
    return out[0], out[1]


def blocks(shape: tuple[int, int], side: tuple[int, int]) -> Iterator[Window]:
    """Half-open (y0, x0, y1, x1) blocks of side ``side`` covering ``shape``, row by row."""
    h, w = shape
    for y in range(0, h, side[0]):
        for x in range(0, w, side[1]):
            yield y, x, min(y + side[0], h), min(x + side[1], w)


class ChannelLast:
    """A view of a lazy image with its channel axis moved last (reads stay lazy).

    Only indexing with a full tuple of ints and slices is supported, which is
    how the lazy refinement reads windows.
    """

    def __init__(self, array, channel_axis: int):
        self.array = array
        self.axis = channel_axis % array.ndim
        shape = list(array.shape)
        c = shape.pop(self.axis)
        self.shape = (*shape, c)
        self.dtype = np.dtype(array.dtype)
        self.ndim = array.ndim
        self.chunks = _moved(_chunks(array), self.axis)

    def __getitem__(self, key: tuple):
        key = list(key)
        key.insert(self.axis, key.pop())
        out = read(self.array, tuple(key))
        # the axes that survive the indexing keep their order; the channel one goes last
        kept = [k for k in key[: self.axis] if isinstance(k, slice)]
        return np.moveaxis(out, len(kept), -1) if isinstance(key[self.axis], slice) else out


def _moved(chunks, axis):
    if chunks is None:
        return None
    chunks = list(chunks)
    chunks.append(chunks.pop(axis))
    return tuple(chunks)


def _same_store(a, b) -> bool:
    if a is b:
        return True
    path_a, path_b = getattr(a, "store_path", None), getattr(b, "store_path", None)
    return path_a is not None and str(path_a) == str(path_b)


def open_out(out, labels, create: bool = True) -> object:
    """The array the refined labels are written into: ``out`` itself, or a new zarr array.

    Parameters
    ----------
    out : zarr array, writable array or path
        An array with the labels' shape and dtype that supports slice assignment
        (a zarr array, a numpy array or memmap); or a path (str or os.PathLike)
        where a new zarr store is created, chunked like the labels (zarr or dask
        chunks; else planes of up to 1024 x 1024).
    labels : array
        The input labels (never written into).
    create : bool
        False only checks ``out`` (a path is not created; None is returned for it).

    Raises
    ------
    ValueError
        For a shape or dtype other than the labels', an existing path, or ``out``
        being the labels themselves.
    """
    shape, dtype = tuple(labels.shape), np.dtype(labels.dtype)
    if isinstance(out, (str, os.PathLike)):
        if os.path.exists(out):
            raise ValueError(
                f"out={os.fspath(out)!r} already exists: pass a new path, or open the array "
                "yourself (zarr.open_array(path, mode='r+')) and pass it as out=."
            )
        if not create:
            return None
        import zarr

        chunks = _chunks(labels) or (*([1] * (len(shape) - 2)), *(min(s, 1024) for s in shape[-2:]))
        return zarr.create_array(
            store=os.fspath(out), shape=shape, dtype=dtype, chunks=chunks, fill_value=dtype.type(0)
        )
    if not (hasattr(out, "shape") and hasattr(out, "dtype") and hasattr(out, "__setitem__")):
        raise ValueError(
            f"out= must be a zarr array, a writable array or a path for a new zarr store, "
            f"got {type(out).__name__}."
        )
    if tuple(out.shape) != shape or np.dtype(out.dtype) != dtype:
        raise ValueError(
            f"out= has shape {tuple(out.shape)} and dtype {np.dtype(out.dtype)}, but the labels "
            f"have {shape} and {dtype}: create it with the labels' shape and dtype."
        )
    if _same_store(out, labels):
        raise ValueError(
            "out= is the labels array itself: the input is never modified; write into a "
            "new array or path."
        )
    return out
