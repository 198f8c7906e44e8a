"""One process-wide cache of loaded models: each model is loaded once per process.

:func:`~napari_samrefine.models.loading.load_sam` keeps its models here, keyed
by the checkpoint file's content hash, the device, the encoder path and the
profile, so ``refine(image, labels, "vit_b_lm")`` called twice reads the file
once, and the widgets, the command line, scripts and dask workers share one
loaded model. Other models the package loads (the widgets' SegGPT) use
:func:`cached_model` too.

A model stays in the cache while anything holds it (the cache keeps weak
references), and the most recently used one stays even when nothing does, so
a loop of ``refine(..., "vit_b_lm")`` calls loads once; loading another model
lets the previous one go (ViT-H alone is 2.5 GB). A model that was changed
since it was loaded (moved to another device, weights changed, another profile
or encoder path) is not handed out again: the next request loads a fresh one.
The cache is thread-safe: two threads asking for the same model at once load
it once.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

__all__ = ["KEEP", "ModelCacheInfo", "cached_model", "clear_model_cache", "model_cache_info"]

KEEP = 1
"""Models kept in memory when nothing else holds them: the most recently used."""


class ModelCacheInfo(NamedTuple):
    """Counts of :func:`model_cache_info`.

    Attributes
    ----------
    hits : int
        Requests answered from memory.
    loads : int
        Models loaded (for ``load_sam``: checkpoint files read).
    models : int
        Models in memory that the cache can hand out now.
    """

    hits: int
    loads: int
    models: int


_LOCK = threading.Lock()
_MODELS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_STAMPS: dict[Hashable, Hashable] = {}
_KEPT: OrderedDict[Hashable, Any] = OrderedDict()
_LOADING: dict[Hashable, threading.Lock] = {}
_COUNTS = {"hits": 0, "loads": 0}


def _stamp_of(value, stamp: Callable[[Any], Hashable] | None) -> Hashable:
    return None if stamp is None else stamp(value)


def _found(key: Hashable, stamp: Callable[[Any], Hashable] | None):
    """The cached value of ``key`` if it is there and unchanged; called under the lock."""
    value = _MODELS.get(key)
    if value is None:
        _STAMPS.pop(key, None)
        return None
    if _stamp_of(value, stamp) != _STAMPS.get(key):  # changed since it was loaded: not again
        del _MODELS[key]
        _KEPT.pop(key, None)
        return None
    _COUNTS["hits"] += 1
    _keep(key, value)
    return value


def _keep(key: Hashable, value) -> None:
    _KEPT[key] = value
    _KEPT.move_to_end(key)
    while len(_KEPT) > KEEP:
        _KEPT.popitem(last=False)


def cached_model(key: Hashable, load: Callable[[], Any], stamp: Callable[[Any], Hashable] | None = None):
    """The model stored under ``key``, made with ``load()`` when it is not in memory.

    Parameters
    ----------
    key : hashable
        What identifies the model, e.g. ``("sam", file hash, device, ...)``.
    load : callable
        ``load()`` makes the model (an object that supports weak references,
        such as a ``torch.nn.Module``). Called at most once at a time per key;
        what it raises is raised here, and nothing is stored.
    stamp : callable, optional
        ``stamp(model)`` gives a hashable summary of the model's state; a model
        whose stamp differs from the one it had when loaded is not handed out
        again (the next call loads anew).

    Returns
    -------
    object
        The model.
    """
    with _LOCK:
        value = _found(key, stamp)
        if value is not None:
            return value
        key_lock = _LOADING.setdefault(key, threading.Lock())
    with key_lock:
        with _LOCK:  # another thread may have loaded it meanwhile
            value = _found(key, stamp)
        if value is not None:
            return value
        try:
            value = load()
            state = _stamp_of(value, stamp)
            with _LOCK:
                _MODELS[key] = value
                _STAMPS[key] = state
                _COUNTS["loads"] += 1
                _keep(key, value)
        finally:
            with _LOCK:
                if _LOADING.get(key) is key_lock:
                    del _LOADING[key]
    return value


def clear_model_cache(model=None) -> None:
    """Forget the loaded models (all, or one), so the next request loads again.

    Models that something else still holds stay usable there; the memory of
    the others is freed.

    Parameters
    ----------
    model : object, optional
        A model from the cache (e.g. from ``load_sam``): only that one is forgotten.
    """
    with _LOCK:
        if model is None:
            _MODELS.clear()
            _STAMPS.clear()
            _KEPT.clear()
            return
        for key in [k for k, v in _MODELS.items() if v is model]:
            del _MODELS[key]
            _STAMPS.pop(key, None)
            _KEPT.pop(key, None)


def model_cache_info() -> ModelCacheInfo:
    """How the cache did in this process so far, as ``functools``' ``cache_info`` does.

    Returns
    -------
    ModelCacheInfo
        ``hits``, ``loads`` (for ``load_sam``: checkpoint files read) and
        ``models`` (in memory now).

    Examples
    --------
    >>> before = model_cache_info().loads
    >>> model = cached_model(("example", 1), lambda: type("Model", (), {})())
    >>> model is cached_model(("example", 1), lambda: None)
    True
    >>> model_cache_info().loads - before
    1
    """
    with _LOCK:
        return ModelCacheInfo(_COUNTS["hits"], _COUNTS["loads"], len(_MODELS))
