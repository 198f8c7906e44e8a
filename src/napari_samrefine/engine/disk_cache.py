"""The disk tier of the embedding cache: one zarr file per embedding, least recently used dropped.

Reopening an image (a slide, its tiles) costs no encoder pass when its
embeddings are on disk: :class:`~napari_samrefine.engine.embedding.EmbeddingCache`
looks here after its memory and before the encoder, and writes here what it
computed. :data:`~napari_samrefine.engine.embedding.default_cache` (the default of
``refine``, the widgets, the judge and the command line) does so.

Layout: ``<cache folder>/embeddings/<key>.zarr.zip``, where the cache folder is
the models' (:func:`~napari_samrefine.models.download.model_cache_dir`:
``$NAPARI_SAMREFINE_CACHE`` or the user's cache folder) and ``<key>`` is the
embedding's cache key (image content hash, size, model hash). Each file is a
zarr store holding the encoder output bit for bit, its frame and a checksum
(:mod:`~napari_samrefine.engine.embedding_file`).

- **Atomic.** A file is written under a temporary name in the same folder,
  flushed and renamed to its key (:func:`~napari_samrefine.io.atomic_path`): a
  killed process never leaves a half entry under a key; threads and processes
  writing the same key each write a whole file and the last rename wins.
- **Checked.** A file that cannot be read, does not hold what its key names
  or fails its checksum is a miss: it is removed and the embedding recomputed.
- **Bounded.** After each write the least recently used files (by their
  modification time, which a read refreshes) are dropped until the folder
  holds at most the limit: ``limit_gb``, else ``$NAPARI_SAMREFINE_EMBEDDING_CACHE_GB``,
  else 2 GB. A limit of 0 turns the disk tier off (nothing read or written).
  The limit and the order live in :mod:`~napari_samrefine.engine.disk_cache_policy`.

:func:`embedding_cache_info` and :func:`clear_embedding_cache` (``napari-samrefine
cache info`` / ``cache clear``) show and empty the folder.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from napari_samrefine.engine.disk_cache_policy import (
    LIMIT_ENV,
    DiskCacheInfo,
    embedding_cache_limit,
    evict_oldest,
    remove_file,
    stored_files,
)
from napari_samrefine.models.download import CACHE_ENV, format_size, model_cache_dir

if TYPE_CHECKING:  # torch and zarr are imported on the first read or write, not for info/clear
    import torch

    from napari_samrefine.engine.frame import SamFrame

__all__ = [
    "DiskEmbeddingCache",
    "SUBFOLDER",
    "SUFFIX",
    "clear_embedding_cache",
    "embedding_cache_dir",
    "embedding_cache_info",
]

SUBFOLDER = "embeddings"
"""The disk tier's folder inside the cache folder."""

SUFFIX = ".zarr.zip"
"""How the names of the disk tier's files end (``<key>.zarr.zip``)."""

_KEY = re.compile(r"[0-9A-Za-z][0-9A-Za-z_.+-]*")
_warned: set[str] = set()
_warned_lock = threading.Lock()


def embedding_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of the disk tier: ``embeddings`` in the model cache folder.

    Parameters
    ----------
    cache_dir : path-like, optional
        The cache folder; default ``$NAPARI_SAMREFINE_CACHE`` or the user's
        cache folder (:func:`~napari_samrefine.models.download.model_cache_dir`),
        read at each call.

    Returns
    -------
    pathlib.Path
        It may not exist yet.
    """
    return model_cache_dir(cache_dir) / SUBFOLDER


class DiskEmbeddingCache:
    """Image embeddings in zarr files in a folder, at most ``limit_gb`` of them.

    Parameters
    ----------
    folder : path-like, optional
        Where the files go; default :func:`embedding_cache_dir`, resolved at
        each use (so ``$NAPARI_SAMREFINE_CACHE`` set later is honoured).
    limit_gb : float, optional
        Size limit in GB; default :func:`embedding_cache_limit` (the
        environment variable or 2 GB), read at each use. 0 turns it off.

    Notes
    -----
    It stores tensors under keys; :class:`~napari_samrefine.engine.embedding.EmbeddingCache`
    makes the keys (:func:`~napari_samrefine.engine.embedding.image_key`) and the
    embeddings. Reads and writes raise only for a bad size limit (naming it): an
    unreadable file is a miss, and a failed write warns once per folder.
    """

    def __init__(self, folder: str | os.PathLike | None = None, limit_gb: float | None = None):
        self._folder = None if folder is None else Path(folder).expanduser()
        self._limit = None if limit_gb is None else embedding_cache_limit(limit_gb)

    @property
    def folder(self) -> Path:
        """The folder of the files (it may not exist yet)."""
        return self._folder if self._folder is not None else embedding_cache_dir()

    @property
    def limit(self) -> int:
        """The size limit in bytes; 0 when the disk tier is off."""
        return self._limit if self._limit is not None else embedding_cache_limit()

    def __repr__(self) -> str:
        return f"DiskEmbeddingCache(folder={str(self.folder)!r}, limit={format_size(self.limit)})"

    def path(self, key: str) -> Path:
        """The file of ``key``."""
        if not _KEY.fullmatch(key):
            raise ValueError(f"Not an embedding cache key: {key!r} (letters, digits, '_.+-' only).")
        return self.folder / f"{key}{SUFFIX}"

    def read(self, key: str, device: torch.device | str = "cpu") -> tuple[torch.Tensor, SamFrame] | None:
        """The features and frame stored under ``key``, or None (a miss).

        A file that cannot be read or does not hold ``key``'s embedding is
        removed and counts as a miss. A hit refreshes the file's modification
        time (its place in the least-recently-used order).

        Parameters
        ----------
        key : str
            Cache key.
        device : torch.device or str
            Where the features go.

        Returns
        -------
        (torch.Tensor, SamFrame) or None
        """
        if self.limit <= 0:
            return None
        path = self.path(key)
        if not path.is_file():
            return None
        from napari_samrefine.engine.embedding_file import read_embedding_file

        try:
            features, frame = read_embedding_file(path, key)
        except Exception:  # any unreadable entry is a miss, never a crash
            remove_file(path)
            return None
        try:
            os.utime(path)
        except OSError:
            pass  # evicted meanwhile or read-only: the hit stands
        return features.to(device), frame

    def write(self, key: str, features: torch.Tensor, frame: SamFrame) -> bool:
        """Store an embedding under ``key`` (atomically), then drop old files over the limit.

        Parameters
        ----------
        key : str
            Cache key.
        features : torch.Tensor
            The encoder output, stored bit for bit (any device and float dtype).
        frame : SamFrame
            The embedding's frame.

        Returns
        -------
        bool
            Whether the file was written; a failure (read-only folder, full
            disk) warns once per folder and is otherwise ignored.
        """
        if self.limit <= 0:
            return False
        from napari_samrefine.engine.embedding_file import write_embedding_file

        try:  # atomic: a failed or killed write leaves the old file, no temporary
            write_embedding_file(self.path(key), key, features, frame)
        except Exception as err:  # a cache that cannot write must not stop a run
            _warn_once(self.folder, err)
            return False
        self.evict()
        return True

    def entries(self) -> list[tuple[float, int, Path]]:
        """(modification time, bytes, path) of every stored file, oldest first.

        Temporary files of processes that died over an hour ago are removed here
        (:func:`~napari_samrefine.engine.disk_cache_policy.stored_files`).
        """
        return stored_files(self.folder, SUFFIX)

    def evict(self) -> tuple[int, int]:
        """Drop the least recently used files until the folder is under the limit.

        Returns
        -------
        (int, int)
            Files and bytes removed.
        """
        return evict_oldest(self.entries(), self.limit)

    def info(self) -> DiskCacheInfo:
        """Folder, number and size of the stored files, limit."""
        entries = self.entries()
        return DiskCacheInfo(self.folder, len(entries), sum(s for _, s, _ in entries), self.limit)

    def clear(self) -> tuple[int, int]:
        """Remove every stored file; other files, and those being written, stay.

        Returns
        -------
        (int, int)
            Embeddings and bytes removed.
        """
        removed = freed = 0
        for _, size, path in self.entries():
            if remove_file(path):
                removed, freed = removed + 1, freed + size
        return removed, freed


def embedding_cache_info(cache_dir: str | os.PathLike | None = None) -> DiskCacheInfo:
    """What the disk tier of the embedding cache holds (``napari-samrefine cache info``).

    Parameters
    ----------
    cache_dir : path-like, optional
        The cache folder (default ``$NAPARI_SAMREFINE_CACHE`` or the user's).

    Returns
    -------
    DiskCacheInfo
    """
    return DiskEmbeddingCache(embedding_cache_dir(cache_dir)).info()


def clear_embedding_cache(cache_dir: str | os.PathLike | None = None) -> tuple[int, int]:
    """Remove every embedding stored on disk; downloaded model checkpoints stay.

    Parameters
    ----------
    cache_dir : path-like, optional
        The cache folder (default ``$NAPARI_SAMREFINE_CACHE`` or the user's);
        its ``embeddings`` folder is emptied.

    Returns
    -------
    (int, int)
        Embeddings and bytes removed.

    Examples
    --------
    >>> from napari_samrefine.engine.disk_cache import clear_embedding_cache
    >>> clear_embedding_cache("/nonexistent")
    (0, 0)
    """
    return DiskEmbeddingCache(embedding_cache_dir(cache_dir)).clear()


def _warn_once(folder: Path, err: Exception) -> None:
    with _warned_lock:
        if str(folder) in _warned:
            return
        _warned.add(str(folder))
    warnings.warn(
        f"Image embeddings cannot be stored in {folder} ({type(err).__name__}: {err}); they are "
        f"computed again next time. Set {CACHE_ENV} to a writable folder, or {LIMIT_ENV}=0 to "
        "turn the disk cache off.",
        UserWarning,
        stacklevel=4,
    )
