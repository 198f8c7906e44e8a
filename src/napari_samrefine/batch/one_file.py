"""One file of a batch, where it runs: the model loaded once per process, one pair refined.

What travels to a dask worker is a :class:`ModelSpec` and file paths; the
worker loads the model once (:func:`cached_model`), refines the pair with
:func:`refine_file` and returns one row of :mod:`.batch`'s result table.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_samrefine._progress import ProgressCallback

__all__ = ["ModelSpec", "RESULT_COLUMNS", "cached_model", "refine_file"]


RESULT_COLUMNS = (
    "image", "labels", "output", "status", "objects", "refined", "seconds", "worker", "summary",
    "notes",
)
"""Columns of :func:`refine_many`'s result table, one row per file."""

DONE, SKIPPED, FAILED = "done", "skipped (already done)", "failed"

# -- the model, once per process --------------------------------------------------------------


@functools.cache
def _disk_only_cache():
    """The embedding cache of batch runs: the disk tier only (see engine/disk_cache.py)."""
    from napari_samrefine.engine.embedding import EmbeddingCache

    return EmbeddingCache(max_items=0, disk=True)


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to load the model itself: names and paths, no weights.

    Parameters
    ----------
    model : str
        A registry name, or the (absolute) path of a checkpoint file that every
        worker can read.
    device : str
        Passed to :func:`~napari_samrefine.models.loading.load_sam` on the worker.
    allow_unsafe_pickle : bool
        Passed to :func:`~napari_samrefine.models.loading.load_sam`.
    iou_adaptor : str, optional
        Path of a SAMRefiner++ IoU adaptor file, loaded with the model.
    """

    model: str = "vit_b_lm"
    device: str = "auto"
    allow_unsafe_pickle: bool = False
    iou_adaptor: str | None = None

    def load(self, progressbar: bool = False):
        """Load the model (and adaptor); returns ``(sam, iou_adaptor or None)``.

        Parameters
        ----------
        progressbar : bool
            Show a download progress bar (for a registry model not yet in the cache).
        """
        from napari_samrefine.models.loading import load_sam

        sam = load_sam(
            self.model, device=self.device, allow_unsafe_pickle=self.allow_unsafe_pickle,
            progressbar=progressbar,
        )
        adaptor = None
        if self.iou_adaptor is not None:
            from napari_samrefine.adaption.adaptor_file import load_iou_adaptor

            adaptor = load_iou_adaptor(self.iou_adaptor)
        return sam, adaptor


_MODELS: dict[ModelSpec, tuple[Any, Any]] = {}
_MODELS_LOCK = threading.Lock()
_LOADS: Counter[ModelSpec] = Counter()  # loads per spec in this process (a diagnostic)


def cached_model(spec: ModelSpec):
    """The model of ``spec``, loaded once per process and then reused.

    Thread-safe: two threads asking at once load it once.

    Returns
    -------
    tuple
        ``(sam, iou_adaptor or None)``.
    """
    with _MODELS_LOCK:
        if spec not in _MODELS:
            _MODELS[spec] = spec.load()
            _LOADS[spec] += 1
        return _MODELS[spec]


def _release_model(spec: ModelSpec) -> None:
    """Drop the cached model of ``spec`` from this process (after a batch on a shared cluster)."""
    with _MODELS_LOCK:
        _MODELS.pop(spec, None)


async def _warm_up(spec: ModelSpec) -> int:
    """Load the model on a worker, off its event loop (``Client.run``); returns the process id."""
    await asyncio.get_running_loop().run_in_executor(None, cached_model, spec)
    return os.getpid()


def _model_loads(spec: ModelSpec) -> int:
    """How often this process loaded the model of ``spec`` (tests, diagnostics)."""
    return _LOADS[spec]


# -- one file ---------------------------------------------------------------------------------


def _where() -> str:
    """The dask worker's address, or ``"in-process"``."""
    distributed = sys.modules.get("distributed")
    if distributed is not None:
        try:
            return distributed.get_worker().address
        except ValueError:  # not in a worker
            pass
    return "in-process"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "no message"
    return f"{type(err).__name__}: {text[:300]}"


def _row(image, labels, output, status, **more) -> dict:
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(image=str(image), labels=str(labels), output=str(output), status=status,
               objects=0, refined=0, seconds=0.0, worker="")
    row.update(more)
    return row


def refine_file(
    image: str | os.PathLike,
    labels: str | os.PathLike,
    output: str | os.PathLike,
    sam,
    *,
    table: bool = False,
    iou_adaptor=None,
    progress: ProgressCallback | None = None,
    **refine_kwargs,
) -> dict:
    """Refine one image/label file pair and write the result atomically.

    Parameters
    ----------
    image, labels : path-like
        The image and its coarse labels (TIFF, PNG, JPEG).
    output : path-like
        The refined label file (``.tif``/``.png``); written atomically, replacing
        an existing file.
    sam : Sam, str or path-like
        A loaded model, a registry name or a checkpoint file.
    table : bool
        Also write ``output`` with the suffix ``.csv``: one row per object. It is
        written before the labels, so an output label file means a finished file.
    iou_adaptor : IoUAdaptor, optional
        Passed to :func:`~napari_samrefine.refine`.
    progress : callable, optional
        ``progress(done, total, message)`` of the cascade.
    **refine_kwargs
        Options of :func:`~napari_samrefine.refine` (``mode``, ``iterations``, ...).

    Returns
    -------
    dict
        A row of :func:`refine_many`'s table, status ``"done"``; ``notes`` holds
        the warnings refine issued (one per line).

    Raises
    ------
    Exception
        Whatever reading, refining or writing raised (:func:`refine_many` turns
        it into a ``"failed: ..."`` row).
    """
    from napari_samrefine.io import read_image, write_labels, write_table
    from napari_samrefine.pipeline.refiner import refine
    from napari_samrefine.samrefiner.cascade import REFINED_STATUSES
    from napari_samrefine.samrefiner.summary import refine_summary, size_warnings

    start = time.perf_counter()
    image, labels, output = Path(image), Path(labels), Path(output)
    # nothing held in memory (every file is a new image), but a file refined again (a rerun
    # with other options, another worker after a failure) reuses its embeddings from disk
    refine_kwargs.setdefault("embedding_cache", _disk_only_cache())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = refine(read_image(image), read_image(labels), sam, iou_adaptor=iou_adaptor,
                        progress=progress, **refine_kwargs)
    notes = []
    for w in caught:
        if issubclass(w.category, UserWarning):
            notes.append(" ".join(str(w.message).split()))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    objects = result.table()
    if table:
        write_table(output.with_suffix(".csv"), objects)
    write_labels(output, result.labels)
    headline, more = refine_summary(objects, refine_kwargs.get("mode", "instance"))
    summary = " ".join(["; ".join([headline, *more]) + ".", *size_warnings(objects)])
    return _row(
        image, labels, output, DONE, objects=len(objects),
        refined=int(objects["status"].isin(REFINED_STATUSES).sum()),
        seconds=time.perf_counter() - start, worker=_where(), summary=summary,
        notes="\n".join(dict.fromkeys(notes)),
    )


def _refine_task(image: str, labels: str, output: str, model, options: dict, table: bool) -> dict:
    """One file on a worker (or in this process): a row, never an exception."""
    start = time.perf_counter()
    try:
        if isinstance(model, ModelSpec):
            sam, adaptor = cached_model(model)
        else:
            sam, adaptor = model
        return refine_file(image, labels, output, sam, table=table, iou_adaptor=adaptor, **options)
    except Exception as err:
        return _row(image, labels, output, f"{FAILED}: {_one_line(err)}",
                    seconds=time.perf_counter() - start, worker=_where())


# -- where to run -----------------------------------------------------------------------------
