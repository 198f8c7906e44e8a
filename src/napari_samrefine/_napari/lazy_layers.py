"""Layers backed by lazy data (dask, zarr, multiscale): what a run reads and where it writes.

A layer held in memory is refined from a copy taken when Run is pressed, so the
user may paint meanwhile. A lazy labels layer (a whole slide in zarr, a dask
stack) is not copied: :func:`~napari_samrefine.refine` reads it tile by tile and
writes the result into a new zarr store, shown as a new layer that stays lazy
(for a multiscale source, with the source's levels as views of the result).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_samrefine._napari.layers import layer_data
from napari_samrefine.pipeline.lazy_arrays import is_lazy

__all__ = ["RefineInputs", "refine_inputs", "result_layer_data", "is_lazy_layer"]


def is_lazy_layer(layer) -> bool:
    """Whether a layer's data lives outside memory (dask, zarr) or is multiscale."""
    return bool(getattr(layer, "multiscale", False)) or is_lazy(layer.data)


@dataclass(frozen=True)
class RefineInputs:
    """What a refinement of two layers reads and where it writes.

    Attributes
    ----------
    image : array
        The image (the level of a multiscale image whose pixels match the labels,
        else its finest), as stored: numpy, dask or zarr.
    labels : array
        A copy of the labels taken now (in memory), or the lazy labels themselves.
    snapshot : numpy.ndarray or None
        The copy, for in-place writing; None for lazy labels.
    out : str or None
        A new zarr store for the result of lazy labels (in the temporary folder).
    """

    image: object
    labels: object
    snapshot: np.ndarray | None
    out: str | None

    @property
    def lazy(self) -> bool:
        """Whether the labels are read and written tile by tile."""
        return self.snapshot is None


def refine_inputs(image_layer, labels_layer, output: str) -> RefineInputs:
    """The image, labels and output of a refinement of two layers (see the module notes).

    Raises
    ------
    ValueError
        In-place output asked for lazy labels (naming the fix).
    """
    if is_lazy_layer(labels_layer):
        if output == "inplace":
            raise ValueError(
                f"{labels_layer.name!r} is held on disk (zarr, dask or multiscale), so it cannot "
                "be refined in place as one undo step: choose output 'new layer' (the result "
                "goes to a new zarr store, shown as a new layer)."
            )
        labels = layer_data(labels_layer)
        folder = Path(tempfile.mkdtemp(prefix="samrefine-"))
        out = str(folder / f"{_safe(labels_layer.name)} refined.zarr")
        return RefineInputs(layer_data(image_layer, like=labels.shape), labels, None, out)
    snapshot = np.array(labels_layer.data, copy=True)  # the user may paint during the run
    return RefineInputs(layer_data(image_layer, like=snapshot.shape), snapshot, snapshot, None)


def result_layer_data(labels, source_layer):
    """Data for the layer showing refined ``labels``: a multiscale source gets matching levels.

    The coarser levels are strided views of the result (read on demand, as napari
    shows them), with the source's level shapes.
    """
    if not getattr(source_layer, "multiscale", False) or not is_lazy(labels):
        return labels
    import dask.array as da

    full = da.from_array(labels, chunks=getattr(labels, "chunks", "auto"))
    levels = [full]
    for level in list(source_layer.data)[1:]:
        steps = [max(1, round(a / b)) for a, b in zip(full.shape, level.shape, strict=True)]
        levels.append(full[tuple(slice(None, None, s) for s in steps)])
    return levels


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in " ._-" else "_" for c in name).strip() or "labels"
