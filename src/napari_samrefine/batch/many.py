"""Many image/label files: refined in this process, or spread over a dask.distributed cluster.

:func:`refine_many` refines a list of (image file, coarse label file) pairs and
writes one label file per pair. Paths travel to the workers, never arrays: each
task reads its own files, refines them with :func:`~napari_samrefine.refine`
and writes the result atomically (:func:`~napari_samrefine.io.atomic_path`), so
an interrupted batch leaves only complete files behind. A second run skips the
outputs that exist (unless ``overwrite``), which makes a batch restartable.

Where the work runs:

- ``client``: a ``distributed.Client`` or a scheduler address (``"tcp://host:8786"``):
  the workers of that cluster. They must see the same file paths (a shared file
  system) and have napari-samrefine installed.
- otherwise ``workers`` processes of a ``distributed.LocalCluster`` on this
  machine (one thread each), or this process alone for ``workers`` 0 or 1, when
  there is one file to do, or when dask.distributed is not installed
  (``pip install "napari-samrefine[distributed]"``). The default is
  :func:`default_workers`.

The model travels as a :class:`ModelSpec` (registry name or checkpoint path,
device, adaptor file), never as a model object: each worker process loads it
once, on first use, into the process-wide model cache
(:mod:`~napari_samrefine.models.cache`, keyed by the checkpoint's content), and
reuses it for every file it refines. Before any
file is submitted the model is loaded on every worker (``Client.run``, off the
worker's event loop), so a wrong model name fails at once; after the batch the
workers of a cluster you passed in drop it again.

A file that fails (unreadable, labels that do not fit the image, ...) becomes a
row of the result table with the error in one line; the other files are
finished.
"""

from __future__ import annotations

import inspect
import os
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from napari_samrefine._progress import ProgressCallback, report
from napari_samrefine.batch.cluster import connect, default_workers, prefetch
from napari_samrefine.batch.one_file import (
    DONE,
    FAILED,
    RESULT_COLUMNS,
    SKIPPED,
    ModelSpec,
    error_line,
    refine_task,
    release_model,
    result_row,
    warm_up,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["batch_summary", "refine_many"]

# arguments of refine that refine_many sets itself
_NOT_PASSED = ("image", "labels", "sam", "device", "iou_adaptor", "progress")


def _model_spec(model, device, allow_unsafe_pickle, iou_adaptor, finetune) -> ModelSpec | None:
    """A :class:`ModelSpec`, or None for a loaded model (in-process only)."""
    if isinstance(model, ModelSpec):
        return model
    if not isinstance(model, (str, os.PathLike)):
        return None
    from napari_samrefine.models.registry import list_models

    name = str(model)
    if not (isinstance(model, str) and name in list_models()) and (
        isinstance(model, os.PathLike) or Path(name).expanduser().exists()
    ):
        name = str(Path(name).expanduser().absolute())  # the workers may run elsewhere
    adaptor = None if iou_adaptor is None else str(Path(iou_adaptor).expanduser().absolute())
    taught = None if finetune is None else str(Path(finetune).expanduser().absolute())
    return ModelSpec(name, str(device), bool(allow_unsafe_pickle), adaptor, taught)


def _check_model_here(spec: ModelSpec) -> None:
    """Refuse, before a cluster starts, a model that is neither a registry name nor a file."""
    from napari_samrefine.models.registry import list_models

    if spec.model not in list_models() and not Path(spec.model).is_file():
        raise ValueError(
            f"Unknown model {spec.model!r}: neither a registered name nor an existing file. "
            f"Registered models: {', '.join(list_models())}."
        )
    if spec.iou_adaptor is not None and not Path(spec.iou_adaptor).is_file():
        raise FileNotFoundError(f"No such IoU adaptor file: {spec.iou_adaptor}")
    if spec.finetune is not None and not Path(spec.finetune).is_file():
        raise FileNotFoundError(f"No such taught-model file: {spec.finetune}")


def _check_options(refine_kwargs: dict) -> dict:
    """``refine``'s options, checked here before any work (a typo fails once, not per file)."""
    from napari_samrefine.pipeline.options import OPTION_NAMES, RefineOptions
    from napari_samrefine.pipeline.refiner import refine

    accepted = set(inspect.signature(refine).parameters) - set(_NOT_PASSED)
    unknown = sorted(set(refine_kwargs) - accepted)
    if unknown:
        raise TypeError(
            f"refine_many() got unexpected option(s) {', '.join(map(repr, unknown))}; "
            f"it passes these on to refine(): {', '.join(sorted(accepted))}"
        )
    options = RefineOptions(**{k: v for k, v in refine_kwargs.items() if k in OPTION_NAMES})
    others = {k: v for k, v in refine_kwargs.items() if k not in OPTION_NAMES}
    return {**{k: getattr(options, k) for k in refine_kwargs if k in OPTION_NAMES}, **others}


def _outputs(pairs: list[tuple[Path, Path]], output) -> list[Path]:
    if isinstance(output, (str, os.PathLike)):
        folder = Path(output)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} is a file: give a folder, or one output file per pair.")
        return [folder / (labels.stem + ".tif") for _, labels in pairs]
    outputs = [Path(p) for p in output]
    if len(outputs) != len(pairs):
        raise ValueError(f"{len(pairs)} pairs but {len(outputs)} outputs: give one output per pair.")
    return outputs


def _plan(pairs, output, overwrite: bool, table: bool):
    """Absolute pairs and outputs, checked; and which outputs are done already."""
    from napari_samrefine.io import check_outputs

    pairs = [(Path(i).absolute(), Path(lab).absolute()) for i, lab in pairs]
    outputs = [p.absolute() for p in _outputs(pairs, output)]
    for out in outputs:
        if out.suffix.lower() not in (".tif", ".tiff", ".png"):
            raise ValueError(f"Output {out} must end in .tif or .png.")
    twice = [str(p) for p, n in Counter(map(str, outputs)).items() if n > 1]
    if twice:
        raise ValueError(f"Two pairs would write the same output {twice[0]}: give distinct outputs.")
    folder = Path(output) if isinstance(output, (str, os.PathLike)) else None
    check_outputs(
        outputs + ([o.with_suffix(".csv") for o in outputs] if table else []),
        [p for pair in pairs for p in pair], output_dir=folder,
        input_dirs={p.parent for pair in pairs for p in pair}, overwrite=True,
    )
    done = [not overwrite and out.exists() for out in outputs]
    return pairs, outputs, done


def refine_many(
    pairs: Iterable[tuple[str | os.PathLike, str | os.PathLike]],
    output: str | os.PathLike | Sequence[str | os.PathLike],
    model="vit_b_lm",
    *,
    client=None,
    workers: int | None = None,
    device: str = "auto",
    allow_unsafe_pickle: bool = False,
    iou_adaptor: str | os.PathLike | None = None,
    finetune: str | os.PathLike | None = None,
    overwrite: bool = False,
    table: bool = False,
    progress: ProgressCallback | None = None,
    **refine_kwargs,
) -> pd.DataFrame:
    """Refine many image/label file pairs, on a dask.distributed cluster or in this process.

    Each pair is read, refined with :func:`~napari_samrefine.refine` and written
    to its output atomically by whichever worker runs it. Outputs that exist
    already are skipped (a finished file of an earlier, interrupted run) unless
    ``overwrite``; a file that fails becomes a ``"failed: ..."`` row and the
    others are finished.

    Parameters
    ----------
    pairs : iterable of (path-like, path-like)
        (image file, coarse label file) pairs, e.g. from
        :func:`~napari_samrefine.io.find_pairs`.
    output : path-like or sequence of path-like
        A folder, which receives ``<labels stem>.tif`` per pair, or one output
        file (``.tif``/``.png``) per pair. Never an input file or folder.
    model : str, path-like, ModelSpec or Sam
        A registry name or checkpoint file, loaded once per worker process. A
        loaded ``Sam`` model works in this process only.
    client : distributed.Client or str, optional
        A client of a running cluster, or its scheduler's address. Its workers
        must read and write the same paths as this process. Default: a local
        cluster of ``workers`` processes, or this process.
    workers : int, optional
        Without ``client``: processes of a ``LocalCluster`` (one thread each) on
        this machine; 0 or 1 runs in this process. Default
        :func:`default_workers`.
    device : str
        Device of the model on each worker (``"auto"``, ``"cpu"``, ``"cuda"``, ...).
    allow_unsafe_pickle : bool
        See :func:`~napari_samrefine.models.loading.load_sam`.
    iou_adaptor : path-like, optional
        A SAMRefiner++ IoU adaptor file, loaded with the model.
    finetune : path-like, optional
        A taught model's file over ``model``
        (:func:`~napari_samrefine.teach.finetune.finetune`), loaded with it.
    overwrite : bool
        Refine again and replace outputs that exist.
    table : bool
        Also write ``<output>.csv`` per file, one row per object.
    progress : callable, optional
        ``progress(done, total, message)`` once at the start and after each
        finished file; ``message`` is that file's line ("cells.png: 27 objects
        refined. -> out/cells.tif" or "cells.png: failed: ..."). Raising
        :class:`~napari_samrefine._progress.Cancelled` cancels the files not
        yet finished and re-raises.
    **refine_kwargs
        Options of :func:`~napari_samrefine.refine` (``mode``, ``iterations``,
        ``tile``, ...; their defaults are
        :class:`~napari_samrefine.pipeline.options.RefineOptions`'), checked by
        it before any work; ``refine_many(..., **options.as_kwargs())`` passes
        a prepared one.

    Returns
    -------
    pandas.DataFrame
        One row per pair, in the order of ``pairs``, columns
        :data:`RESULT_COLUMNS`: ``image``, ``labels``, ``output``; ``status``
        ``"done"``, ``"skipped (already done)"`` or ``"failed: <error in one
        line>"``; ``objects`` (objects in the coarse labels) and ``refined``;
        ``seconds``; ``worker`` (address, or ``"in-process"``); ``summary`` (in
        words); ``notes`` (warnings of refine, one per line).

    Raises
    ------
    ValueError, TypeError
        For unsafe or ambiguous outputs, unknown or out-of-range options, an
        unknown model: before any work.
    ModuleNotFoundError
        When a cluster is asked for (``client``, ``workers`` > 1) and
        dask.distributed is not installed.

    See Also
    --------
    batch_summary : the result in one line.

    Examples
    --------
    >>> from napari_samrefine.io import find_pairs
    >>> pairs = find_pairs("images/", "coarse/")  # doctest: +SKIP
    >>> result = refine_many(pairs, "refined/", "vit_b_lm", workers=4)  # doctest: +SKIP
    >>> result[result.status.str.startswith("failed")]  # doctest: +SKIP
    >>> refine_many(pairs, "refined/", "vit_b_lm", client="tcp://10.0.0.5:8786")  # doctest: +SKIP
    """
    import pandas as pd

    options = _check_options(refine_kwargs)
    pairs, outputs, done = _plan(list(pairs), output, overwrite, table)
    spec = _model_spec(model, device, allow_unsafe_pickle, iou_adaptor, finetune)
    if spec is None and finetune is not None:  # a loaded model: taught here
        from napari_samrefine.models.finetune_file import apply_finetune

        model = apply_finetune(model, finetune)
    rows: list[dict | None] = [
        result_row(i, lab, out, SKIPPED) if skip else None
        for (i, lab), out, skip in zip(pairs, outputs, done, strict=True)
    ]
    todo = [k for k, skip in enumerate(done) if not skip]
    if workers is None:  # a loaded model stays in this process
        workers = 1 if spec is None else default_workers(len(todo), spec.device)
    if spec is not None and client is None:
        _check_model_here(spec)
    report(progress, 0, len(todo), "")
    if todo and client is None and workers <= 1:
        _in_process(rows, todo, pairs, outputs, spec, model, iou_adaptor, options, table, progress)
    elif todo:
        _on_cluster(rows, todo, pairs, outputs, spec, client, workers, options, table, progress)
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def _line(row: dict) -> str:
    name = Path(row["image"]).name
    if row["status"] == DONE:
        return f"{name}: {row['summary']} -> {row['output']}"
    return f"{name}: {row['status']}"


def _in_process(rows, todo, pairs, outputs, spec, model, iou_adaptor, options, table, progress):
    if spec is not None:
        loaded = spec.load(progressbar=True)
    else:  # a loaded model, and an adaptor file or object
        from napari_samrefine.models.loading import resolve_sam

        adaptor = iou_adaptor
        if isinstance(adaptor, (str, os.PathLike)):
            from napari_samrefine.adaption.adaptor import load_iou_adaptor

            adaptor = load_iou_adaptor(adaptor)
        loaded = (resolve_sam(model), adaptor)
    for n, k in enumerate(todo, 1):
        (image, labels), out = pairs[k], outputs[k]
        rows[k] = refine_task(str(image), str(labels), str(out), loaded, options, table)
        report(progress, n, len(todo), _line(rows[k]))


def _on_cluster(rows, todo, pairs, outputs, spec, client, workers, options, table, progress):
    if client is None:
        prefetch(spec)
    client, cluster, ours = connect(client, workers, spec)
    futures = {}
    try:
        client.run(warm_up, spec)  # one load per worker, before any file; errors raise here
        token = uuid.uuid4().hex[:8]
        for k in todo:
            (image, labels), out = pairs[k], outputs[k]
            future = client.submit(
                refine_task, str(image), str(labels), str(out), spec, options, table,
                key=f"napari-samrefine-refine-{token}-{k}", pure=False,
            )
            futures[future] = k
        from distributed import as_completed

        for n, future in enumerate(as_completed(futures), 1):
            k = futures[future]
            try:
                rows[k] = future.result()
            except Exception as err:  # the worker died (KilledWorker), or the task was lost
                (image, labels), out = pairs[k], outputs[k]
                rows[k] = result_row(image, labels, out, f"{FAILED}: {error_line(err)}")
            report(progress, n, len(todo), _line(rows[k]))
    except BaseException:  # Cancelled, KeyboardInterrupt, a lost scheduler: stop the rest
        if futures:
            client.cancel(list(futures))
        raise
    finally:
        if cluster is None:
            try:
                client.run(release_model, spec)  # a shared cluster gets its memory back
            except Exception:  # pragma: no cover - the cluster went away
                pass
        if ours:
            client.close()
        if cluster is not None:
            cluster.close()


def batch_summary(table: pd.DataFrame) -> str:
    """:func:`refine_many`'s result in one line: "198 files refined, 1 skipped (already done), 1 failed".

    Parameters
    ----------
    table : pandas.DataFrame
        The result of :func:`refine_many`.

    Returns
    -------
    str
    """
    from napari_samrefine.samrefiner.summary import count_text

    status = table["status"].astype(str)
    n_done = int((status == DONE).sum())
    n_skipped = int((status == SKIPPED).sum())
    n_failed = int(status.str.startswith(FAILED).sum())
    parts = [f"{count_text(n_done, 'file')} refined"]
    if n_skipped:
        parts.append(f"{n_skipped} skipped (already done)")
    if n_failed:
        parts.append(f"{n_failed} failed")
    return ", ".join(parts)
