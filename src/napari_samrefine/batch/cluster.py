"""Where a batch runs: whether dask.distributed is here, how many workers, which cluster."""

from __future__ import annotations

import os

from napari_samrefine.batch.one_file import ModelSpec

__all__ = ["DISTRIBUTED_HINT", "connect", "default_workers", "distributed_available", "prefetch"]

DISTRIBUTED_HINT = 'pip install "napari-samrefine[distributed]"'
"""How to get dask.distributed, for messages."""

def distributed_available() -> bool:
    """Whether dask.distributed can be imported (the ``distributed`` extra)."""
    import importlib.util

    return importlib.util.find_spec("distributed") is not None


def _cpu_count() -> int:
    if hasattr(os, "process_cpu_count"):  # Python 3.13
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _memory_bytes() -> int | None:
    try:
        import psutil  # a dependency of dask.distributed
    except ImportError:  # pragma: no cover
        return None
    return int(psutil.virtual_memory().total)


WORKER_MEMORY = 4 * 2**30
"""Memory :func:`default_workers` sets aside per worker process (model weights and activations)."""


def default_workers(n_files: int, device: str = "auto") -> int:
    """Processes of the local cluster that :func:`refine_many` starts by default.

    One process per CPU core, each running torch on one thread (many small
    images go faster as parallel single-threaded files than as one file at a
    time on every core, see docs/benchmarks.md), but at most one per 4 GiB of
    memory (:data:`WORKER_MEMORY`) and one per file. 1 (this process, no
    cluster) for a single file, on a GPU (one process feeds a GPU best) or
    without dask.distributed.

    Parameters
    ----------
    n_files : int
        Files to refine.
    device : str
        The model's device; ``"auto"`` is resolved here.

    Returns
    -------
    int
    """
    if n_files <= 1 or not distributed_available():
        return 1
    from napari_samrefine.models.loading import resolve_device

    if resolve_device(device).type != "cpu":
        return 1
    memory = _memory_bytes()
    by_memory = _cpu_count() if memory is None else max(1, memory // WORKER_MEMORY)
    return max(1, min(n_files, _cpu_count(), by_memory))


# -- many files -------------------------------------------------------------------------------


def connect(client, workers: int, spec: ModelSpec | None):
    """``(client, cluster, ours)``: the caller's client, one to an address, or a new local cluster.

    ``cluster`` is the ``LocalCluster`` started here (or None); ``ours`` says
    whether the client was made here (and is closed after the batch).
    """
    try:
        import distributed
    except ImportError:
        raise ModuleNotFoundError(
            f"Running on a dask cluster needs dask.distributed: {DISTRIBUTED_HINT} "
            "(or run in this process: workers=1, CLI --workers 1)."
        ) from None
    if spec is None:
        raise TypeError(
            "A loaded model cannot be sent to dask workers: pass the registry name or the "
            "checkpoint path, which each worker loads once."
        )
    if isinstance(client, distributed.Client):
        return client, None, False
    if client is not None:
        return distributed.Client(str(client), timeout="30s"), None, True
    import logging

    cluster = distributed.LocalCluster(  # no dashboard; its HTTP server on a free port
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=":0", scheduler_kwargs={"dashboard": False},
        silence_logs=logging.ERROR,
    )
    return distributed.Client(cluster), cluster, True


def prefetch(spec: ModelSpec) -> None:
    """Download a registry model once here, so that local workers find it in the cache."""
    from napari_samrefine.models.registry import list_models

    if spec.model in list_models():
        from napari_samrefine.models.download import fetch_checkpoint

        fetch_checkpoint(spec.model, progressbar=True)
