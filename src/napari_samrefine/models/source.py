"""Where a model came from: its registry name or file, architecture and file hash.

:func:`~napari_samrefine.models.loading.load_sam` records a
:class:`ModelSource` for each model it loads; :func:`model_source` reads it
back. The record is kept beside the model (a table with weak references to
the models), never as an attribute on it: a model built in code has none,
and a copy (``copy.deepcopy``) is a model of its own, without one.
:func:`~napari_samrefine.models.info.model_info` gathers this with the
model's other facts.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

__all__ = ["ModelSource", "model_source", "set_model_source"]


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights were read from.

    Attributes
    ----------
    name : str
        The registry name (also for a file whose hash is registered), else the
        file's name.
    arch : str
        ``"vit_b"``, ``"vit_l"``, ``"vit_h"``, ``"vit_t"``, ``"lite_medsam"`` or
        ``"custom"`` (:func:`~napari_samrefine.models.architecture.infer_sam_config`).
    checkpoint : str or None
        Absolute path of the file read.
    xxh128 : str or None
        xxh128 hex digest of that file.
    base_xxh128 : str or None
        For a taught model (``load_sam(base, finetune=FILE)``), the digest of its
        base model's checkpoint; ``checkpoint`` and ``xxh128`` are the taught file's.
    base_name : str or None
        For a taught model, its base model's name.
    """

    name: str
    arch: str
    checkpoint: str | None = None
    xxh128: str | None = None
    base_xxh128: str | None = None
    base_name: str | None = None


_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def set_model_source(sam, source: ModelSource | None) -> None:
    """Record where ``sam`` came from (``load_sam`` does), or forget it with None.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
    source : ModelSource or None
    """
    if source is not None and not isinstance(source, ModelSource):
        raise TypeError(f"source must be a ModelSource or None, got {type(source).__name__}.")
    with _LOCK:
        if source is None:
            _SOURCES.pop(sam, None)
        else:
            _SOURCES[sam] = source


def model_source(sam) -> ModelSource | None:
    """Where ``sam`` came from: what :func:`set_model_source` recorded, or None.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam

    Returns
    -------
    ModelSource or None
        None for a model built in code (e.g. :func:`~napari_samrefine.testing.tiny_sam`).
    """
    try:
        with _LOCK:
            return _SOURCES.get(sam)
    except TypeError:  # not a model (no weak reference to it): nothing recorded
        return None
