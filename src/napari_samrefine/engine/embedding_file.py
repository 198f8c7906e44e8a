"""One image embedding in one file: a zarr store in a zip, with its frame and a checksum.

The file is a :class:`zarr.storage.ZipStore` (zarr format 2, so zarr 2.18 and 3
both read it; uncompressed: encoder features barely compress) holding a single
array, the encoder output bit for bit, in one chunk. Its attributes name the
format, the cache key, the torch dtype (bfloat16, which numpy lacks, is stored
as its 16-bit patterns), an xxh3-64 checksum of the values and the
:class:`~napari_samrefine.engine.frame.SamFrame` sizes. A zip's own CRC and the
checksum catch a truncated or overwritten file. The file is written atomically
(:func:`~napari_samrefine.io.atomic_path`): a reader finds the old file, the new
one or none, never a part of one.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
import xxhash
import zarr
from zarr.storage import ZipStore

from napari_samrefine.engine.frame import SamFrame
from napari_samrefine.io import atomic_path

__all__ = ["read_embedding_file", "write_embedding_file"]

_FORMAT = "napari-samrefine image embedding"


def _as_numpy(features: torch.Tensor) -> np.ndarray:
    """The tensor's values on the CPU; bfloat16 (no numpy type) as its 16-bit patterns."""
    t = features.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy()


def _checksum(data: np.ndarray) -> str:
    return xxhash.xxh3_64(np.ascontiguousarray(data).data).hexdigest()


def write_embedding_file(path: Path, key: str, features: torch.Tensor, frame: SamFrame) -> None:
    """Write ``features`` and ``frame`` under ``key`` into the file ``path``, atomically.

    The store is written to a temporary file next to ``path`` and moved over it
    once complete and flushed (:func:`~napari_samrefine.io.atomic_path`); if
    writing fails, ``path`` is left as it was.

    Parameters
    ----------
    path : pathlib.Path
        The file (replaced if it exists; its folder is created if needed).
    key : str
        The cache key, recorded so that a file under another name is never taken for it.
    features : torch.Tensor
        Encoder output on any device, in any float dtype.
    frame : SamFrame
        The embedding's frame.
    """
    data = _as_numpy(features)
    attrs = {
        "format": _FORMAT,
        "key": key,
        "torch_dtype": str(features.dtype).removeprefix("torch."),
        "xxh3_64": _checksum(data),
        "original_size": list(frame.original_size),
        "image_size": frame.image_size,
        "lowres_size": frame.lowres_size,
        "embedding_size": frame.embedding_size,
    }
    with atomic_path(path) as tmp:
        store = ZipStore(str(tmp), mode="w")
        try:
            if int(zarr.__version__.split(".")[0]) >= 3:
                zarr.create_array(
                    store, data=data, chunks=data.shape, compressors=None, filters=None,
                    attributes=attrs, zarr_format=2,
                )
            else:  # zarr 2.18
                arr = zarr.create(
                    shape=data.shape, chunks=data.shape, dtype=data.dtype, compressor=None,
                    store=store,
                )
                arr[...] = data
                arr.attrs.put(attrs)
        finally:
            store.close()


def read_embedding_file(path: Path, key: str) -> tuple[torch.Tensor, SamFrame]:
    """Read what :func:`write_embedding_file` wrote.

    Returns
    -------
    (torch.Tensor, SamFrame)
        The features on the CPU, bit for bit as written, and the frame.

    Raises
    ------
    Exception
        Any error of zipfile or zarr for an unreadable file, or ValueError for
        a file of another format or key, or one that fails its checksum.
    """
    store = ZipStore(str(path), mode="r")
    try:
        arr = zarr.open_array(store=store, mode="r")
        attrs = dict(arr.attrs)
        data = np.array(arr[...], copy=True)
    finally:
        with contextlib.suppress(Exception):  # a file that failed to open has nothing to close
            store.close()
    if attrs.get("format") != _FORMAT or attrs.get("key") != key:
        raise ValueError(f"{path} does not hold the embedding {key}")
    if attrs.get("xxh3_64") != _checksum(data):
        raise ValueError(f"{path} fails its checksum")
    features = torch.from_numpy(data)
    dtype = attrs["torch_dtype"]
    if dtype == "bfloat16":
        features = features.view(torch.bfloat16)
    elif features.dtype != getattr(torch, dtype):
        raise ValueError(f"{path} holds {features.dtype}, not {dtype}")
    frame = SamFrame(
        original_size=tuple(int(v) for v in attrs["original_size"]),
        image_size=int(attrs["image_size"]),
        lowres_size=int(attrs["lowres_size"]),
        embedding_size=int(attrs["embedding_size"]),
    )
    return features, frame
