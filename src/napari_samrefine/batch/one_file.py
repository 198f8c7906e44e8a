"""One file of a batch, where it runs: the model loaded once per process, one pair refined.

What travels to a dask worker is a :class:`ModelSpec` and file paths; the
worker loads the model through :func:`~napari_samrefine.models.loading.load_sam`,
whose process-wide cache (:mod:`~napari_samrefine.models.cache`) reads the file
once per process, refines the pair with :func:`refine_file` and returns one row
of :func:`~napari_samrefine.batch.many.refine_many`'s result table
(:func:`refine_task`).
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from napari_samrefine._progress import ProgressCallback

__all__ = [
    "ModelSpec",
    "RESULT_COLUMNS",
    "error_line",
    "refine_file",
    "refine_task",
    "release_model",
    "result_row",
    "warm_up",
]


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
    finetune : str, optional
        Path of a taught model's file over ``model`` (``load_sam(model, finetune=...)``).
    """

    model: str = "vit_b_lm"
    device: str = "auto"
    allow_unsafe_pickle: bool = False
    iou_adaptor: str | None = None
    finetune: str | None = None

    def load(self, progressbar: bool = False):
        """Load the model (and adaptor); returns ``(sam, iou_adaptor or None)``.

        The model comes from the process-wide cache of
        :func:`~napari_samrefine.models.loading.load_sam`: a process reads its
        file once, however many files it refines.

        Parameters
        ----------
        progressbar : bool
            Show a download progress bar (for a registry model not yet in the cache).
        """
        from napari_samrefine.models.loading import load_sam

        sam = load_sam(
            self.model, device=self.device, allow_unsafe_pickle=self.allow_unsafe_pickle,
            progressbar=progressbar, finetune=self.finetune,
        )
        adaptor = None
        if self.iou_adaptor is not None:
            from napari_samrefine.adaption.adaptor import load_iou_adaptor

            adaptor = load_iou_adaptor(self.iou_adaptor)
        return sam, adaptor


def release_model(spec: ModelSpec | None = None) -> None:
    """Let this process drop its loaded models (after a batch on a shared cluster).

    Parameters
    ----------
    spec : ModelSpec, optional
        The batch's model; every model the process cache holds is dropped (the
        next batch loads its own).
    """
    from napari_samrefine.models.cache import clear_model_cache

    clear_model_cache()


async def warm_up(spec: ModelSpec) -> int:
    """Load the model on a worker, off its event loop (``Client.run``); returns the process id."""
    await asyncio.get_running_loop().run_in_executor(None, spec.load)
    return os.getpid()


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


def error_line(err: BaseException) -> str:
    """An error in one line for a result table: ``"TypeName: message"`` (300 characters at most)."""
    text = " ".join(str(err).split()) or "no message"
    return f"{type(err).__name__}: {text[:300]}"


def result_row(image, labels, output, status, **more) -> dict:
    """A row of the result table (:data:`RESULT_COLUMNS`); ``more`` fills other columns."""
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
    from napari_samrefine.samrefiner.summary import GrowthWarning, refine_summary, size_warnings

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
        if issubclass(w.category, GrowthWarning):
            continue  # the summary names these objects (size_warnings)
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
    return result_row(
        image, labels, output, DONE, objects=len(objects),
        refined=int(objects["status"].isin(REFINED_STATUSES).sum()),
        seconds=time.perf_counter() - start, worker=_where(), summary=summary,
        notes="\n".join(dict.fromkeys(notes)),
    )


def refine_task(image: str, labels: str, output: str, model, options: dict, table: bool) -> dict:
    """One file on a worker (or in this process): a row, never an exception.

    ``model`` is a :class:`ModelSpec` (loaded through the process cache) or a
    ``(sam, iou_adaptor or None)`` pair; ``options`` go to :func:`refine_file`.
    """
    start = time.perf_counter()
    try:
        if isinstance(model, ModelSpec):
            sam, adaptor = model.load()
        else:
            sam, adaptor = model
        return refine_file(image, labels, output, sam, table=table, iou_adaptor=adaptor, **options)
    except Exception as err:
        return result_row(image, labels, output, f"{FAILED}: {error_line(err)}",
                    seconds=time.perf_counter() - start, worker=_where())


# -- where to run -----------------------------------------------------------------------------
