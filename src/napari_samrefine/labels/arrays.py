"""Arrays read a window at a time: numpy arrays, dask, zarr, memmaps and the like.

Duck typing only: anything with ``shape``, ``dtype``, ``ndim`` and numpy-style
slicing is read with ``np.asarray(array[window])``, one window at a time, so
neither dask nor zarr is imported here. A numpy array is such an array too (its
windows are views). Blocks follow the array's own chunks (zarr ``chunks``, dask
``chunksize``) grown to about :data:`BLOCK` pixels a side.
"""

from __future__ import annotations

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
    "arrange_image",
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


def arrange_image(
    image: np.ndarray, labels_shape: tuple[int, ...], channel_axis: int | None = None
) -> np.ndarray:
    """Return a view of ``image`` with spatial axes matching the labels and channels last.

    Parameters
    ----------
    image : numpy.ndarray or lazy array
        (..., Y, X) grey or (..., Y, X, C) with channels last, or any layout with
        ``channel_axis`` naming the channel axis. A lazy array (dask, zarr,
        memmap) stays lazy: nothing is read.
    labels_shape : tuple of int
        Shape of the labels ((Y, X), (Z, Y, X) or (T, Z, Y, X)).
    channel_axis : int, optional
        Axis of the channels in ``image`` when it is not the last one.

    Raises
    ------
    ValueError
        When the image's spatial shape differs from the labels'.
    """
    lazy = is_lazy(image)
    img = image if lazy else np.asarray(image)
    if channel_axis is not None:
        if not -img.ndim <= channel_axis < img.ndim:
            raise ValueError(
                f"channel_axis={channel_axis} does not exist: the image has {img.ndim} axes."
            )
        if lazy:
            if channel_axis % img.ndim != img.ndim - 1:
                img = ChannelLast(img, channel_axis)
        else:
            img = np.moveaxis(img, channel_axis, -1)
    shape = tuple(img.shape)
    if shape == tuple(labels_shape):
        return img
    if len(shape) == len(labels_shape) + 1 and shape[:-1] == tuple(labels_shape):
        return img
    dims = ""
    if len(shape) not in (len(labels_shape), len(labels_shape) + 1):
        dims = f" (a {len(image.shape)}D image for {len(labels_shape)}D labels)"
    raise ValueError(
        f"Image shape {tuple(image.shape)} does not match labels shape {tuple(labels_shape)}"
        f"{dims}: "
        "the image must have the labels' shape, optionally with a channel axis (last, or "
        "named with channel_axis=...). Check that image and labels belong together "
        "(same crop, same scale)."
    )
