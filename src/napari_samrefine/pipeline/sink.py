"""Where a lazy refinement writes: ``out=`` checked and opened.

Reading arrays a window at a time (numpy, dask, zarr, memmaps) lives in
:mod:`napari_samrefine.labels.arrays`, with the memory budget
(:data:`~napari_samrefine.labels.arrays.MEMORY_BUDGET`).
"""

from __future__ import annotations

import os

import numpy as np

from napari_samrefine.labels.arrays import chunk_shape

__all__ = ["open_out"]


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

        chunks = chunk_shape(labels) or (*([1] * (len(shape) - 2)), *(min(s, 1024) for s in shape[-2:]))
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
