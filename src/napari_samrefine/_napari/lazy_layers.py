"""Layers backed by lazy data (dask, zarr, multiscale): what a run reads and where it writes.

A layer held in memory is refined from a copy taken when Run is pressed, so the
user may paint meanwhile. A lazy labels layer (a whole slide in zarr, a dask
stack) is not copied: :func:`~napari_samrefine.refine` reads it tile by tile and
writes the result into a new zarr store, shown as a new layer that stays lazy
(for a multiscale source, with the source's levels as views of the result).

The stores live in the system's temporary folder, one folder each, named
``samrefine-*`` and holding a marker file (:data:`MARKER`: this process's id
and start time, the store's name). They are removed (:func:`watch_stores`):

* when their layer is removed from the viewer, or the viewer closes (which
  removes every layer), once no layer of a watched viewer shows them;
* when the run that made one is cancelled or fails (:func:`claim_new_stores`,
  :func:`settle_stores`);
* when the process ends, whatever is left of its own;
* stores of an earlier session that ended without cleaning up (a crash) when
  the next store is made: only folders with a valid marker, made on this
  machine by a process that no longer runs, by this user.

Only the store and the marker are deleted; a folder holding anything else
(something the user put there) keeps it. To keep a result, save its layer
elsewhere (File > Save Selected Layers) before removing it or closing napari.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_samrefine._napari.layers import layer_data
from napari_samrefine.io import atomic_path
from napari_samrefine.labels.arrays import is_lazy

__all__ = [
    "RefineInputs", "refine_inputs", "result_layer_data", "is_lazy_layer", "new_store",
    "watch_stores", "claim_new_stores", "settle_stores", "session_stores", "STORE_PREFIX",
    "MARKER",
]  # fmt: skip

STORE_PREFIX = "samrefine-"
"""Name prefix of the temporary folders holding lazy results."""

MARKER = ".samrefine-store.json"
"""The file that marks a folder as a lazy-result folder of this plugin (who made it, what it holds)."""


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
        out = new_store(f"{_safe(labels_layer.name)} refined.zarr")
        return RefineInputs(layer_data(image_layer, like=labels.shape), labels, None, out)
    snapshot = np.array(labels_layer.data, copy=True)  # the user may paint during the run
    return RefineInputs(layer_data(image_layer, like=snapshot.shape), snapshot, snapshot, None)


def result_layer_data(labels, source_layer):
    """Data for the layer showing refined ``labels``: a multiscale source gets matching levels.

    The finest level is the result itself; the coarser levels are strided views
    of it (read on demand, as napari shows them), with the source's level shapes.
    """
    if not getattr(source_layer, "multiscale", False) or not is_lazy(labels):
        return labels
    import dask.array as da

    full = da.from_array(labels, chunks=getattr(labels, "chunks", "auto"))
    levels = [labels]
    for level in list(source_layer.data)[1:]:
        steps = [max(1, round(a / b)) for a, b in zip(full.shape, level.shape, strict=True)]
        levels.append(full[tuple(slice(None, None, s) for s in steps)])
    return levels


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in " ._-" else "_" for c in name).strip() or "labels"


# -- the temporary stores of lazy results ----------------------------------------------------

_lock = threading.Lock()
_stores: dict[Path, str] = {}  # folders this process made -> "new", "running", "ended", "shown"
_viewers: weakref.WeakSet = weakref.WeakSet()
_swept = False


def _started() -> float:
    """When this process started (seconds since the epoch), as the marker records it."""
    import psutil

    return psutil.Process().create_time()


def new_store(name: str) -> str:
    """A path for a new zarr store ``name`` in a new marked folder of the temporary folder.

    The first call of a process also removes what crashed sessions left
    (see the module notes).
    """
    global _swept
    if not _swept:
        _swept = True
        sweep_crashed_sessions()
    folder = Path(tempfile.mkdtemp(prefix=STORE_PREFIX)).resolve()
    marker = {"pid": os.getpid(), "started": _started(), "host": socket.gethostname(), "store": name}
    with atomic_path(folder / MARKER) as tmp:
        tmp.write_text(json.dumps(marker), encoding="utf-8")
    with _lock:
        _stores[folder] = "new"
    return str(folder / name)


def session_stores() -> dict[Path, str]:
    """The folders of lazy results made by this process that still exist, and their state."""
    with _lock:
        return {folder: state for folder, state in _stores.items() if folder.exists()}


def _remove(folder: Path) -> bool:
    """Delete the store named in ``folder``'s marker and the marker; the folder if then empty.

    Anything else in the folder is kept (and so is the folder). Returns whether
    the folder is gone.
    """
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        store = folder / str(marker["store"])
    except (OSError, ValueError, KeyError, TypeError):
        return False  # not (or no longer) one of ours: leave it
    if store.parent != folder:  # a marker naming something outside its folder is not ours
        return False
    if store.is_dir() and not store.is_symlink():
        shutil.rmtree(store, ignore_errors=True)
    (folder / MARKER).unlink(missing_ok=True)
    try:
        folder.rmdir()  # only when nothing else is in it
    except OSError:
        return False
    return True


def _store_folder(array) -> Path | None:
    """The folder of a zarr array's store when it is one of this process's, else None."""
    store = getattr(array, "store", None)
    root = getattr(store, "root", None) or getattr(store, "path", None)
    if not root:
        return None
    folder = Path(root).resolve().parent
    return folder if folder in _stores else None


def _in_use() -> set[Path]:
    """This process's store folders that a layer of a watched viewer shows."""
    used = set()
    for viewer in list(_viewers):
        for layer in viewer.layers:
            data = layer.data
            levels = list(data) if getattr(layer, "multiscale", False) else [data]
            used.update(f for f in map(_store_folder, levels) if f is not None)
    return used


def _sync(*_) -> None:
    """Mark the stores a layer shows; remove those of ended runs that no layer shows."""
    used = _in_use()
    with _lock:
        gone = []
        for folder, state in _stores.items():
            if folder in used:
                _stores[folder] = "shown"
            elif state in ("shown", "ended"):
                gone.append(folder)
        for folder in gone:
            if _remove(folder):
                del _stores[folder]


def watch_stores(viewer) -> None:
    """Remove a lazy result's store once no layer of ``viewer`` (or another watched one) shows it.

    Called by every widget for its viewer (once per viewer is enough; more is harmless).
    """
    if viewer in _viewers:
        return
    _viewers.add(viewer)
    viewer.layers.events.inserted.connect(_sync)
    viewer.layers.events.removed.connect(_sync)


def claim_new_stores() -> list[Path]:
    """The stores made since the last claim, now "running" (a run about to start claims them)."""
    with _lock:
        new = [folder for folder, state in _stores.items() if state == "new"]
        for folder in new:
            _stores[folder] = "running"
    return new


def settle_stores(folders: list[Path]) -> None:
    """After a run: its stores (``folders``) that no layer shows are removed (cancelled, failed)."""
    with _lock:
        for folder in folders:
            if _stores.get(folder) == "running":
                _stores[folder] = "ended"  # shown by now, or removed below
    _sync()


def _pid_runs(pid: int, started: float) -> bool:
    """Whether the process that wrote a marker (``pid`` started at ``started``) still runs."""
    import psutil

    try:
        return abs(psutil.Process(pid).create_time() - float(started)) < 1.0
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, ValueError, TypeError):
        return True  # cannot tell: in use


def sweep_crashed_sessions(temp: str | os.PathLike | None = None) -> list[Path]:
    """Remove lazy-result folders that ended sessions left in ``temp`` (default: the system's).

    Only folders named ``samrefine-*`` holding a valid :data:`MARKER` written
    on this machine by this user, whose process no longer runs. Returns the
    folders removed.
    """
    base = Path(temp if temp is not None else tempfile.gettempdir())
    removed = []
    try:
        entries = [p for p in base.iterdir() if p.name.startswith(STORE_PREFIX)]
    except OSError:
        return removed
    uid = os.getuid() if hasattr(os, "getuid") else None
    for folder in entries:
        try:
            if folder.is_symlink() or not folder.is_dir():
                continue
            if uid is not None and folder.stat().st_uid != uid:
                continue
            marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
            pid, started, host = int(marker["pid"]), float(marker["started"]), marker["host"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # no marker, or not ours to judge
        if host != socket.gethostname() or _pid_runs(pid, started):
            continue
        if _remove(folder.resolve()):
            removed.append(folder)
    return removed


@atexit.register
def _remove_session_stores() -> None:
    """At exit, this process's stores go (no layer can show them any more)."""
    with _lock:
        for folder in list(_stores):
            _remove(folder)
        _stores.clear()
