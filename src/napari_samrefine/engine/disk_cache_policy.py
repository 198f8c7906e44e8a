"""The disk cache's policy: its size limit, and which files go first (least recently used).

The disk tier of the embedding cache (:mod:`~napari_samrefine.engine.disk_cache`)
holds at most a limit of bytes: ``limit_gb``, else ``$NAPARI_SAMREFINE_EMBEDDING_CACHE_GB``,
else 2 GB; 0 turns it off. After each write the least recently used files (by
their modification time, which a read refreshes) are dropped until the folder is
under the limit. Temporary files of writers that died over an hour ago go too.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from napari_samrefine.io import temporary_target
from napari_samrefine.models.download import CACHE_ENV, format_size

__all__ = [
    "DEFAULT_LIMIT_GB",
    "LIMIT_ENV",
    "STALE_TEMPORARY_S",
    "DiskCacheInfo",
    "embedding_cache_limit",
    "evict_oldest",
    "remove_file",
    "stored_files",
]

LIMIT_ENV = "NAPARI_SAMREFINE_EMBEDDING_CACHE_GB"
"""Environment variable with the disk tier's size limit in GB (10^9 bytes); 0 turns it off."""

DEFAULT_LIMIT_GB = 2.0
"""Size limit of the disk tier without argument or environment variable: 500 ViT-B embeddings."""

STALE_TEMPORARY_S = 3600.0
"""Age in seconds of a temporary file that belongs to a writer that died."""


def embedding_cache_limit(limit_gb: float | None = None) -> int:
    """The disk tier's size limit in bytes: ``limit_gb``, else ``$NAPARI_SAMREFINE_EMBEDDING_CACHE_GB``, else 2 GB.

    Parameters
    ----------
    limit_gb : float, optional
        Limit in GB (10^9 bytes); 0 turns the disk tier off.

    Returns
    -------
    int
        Bytes; 0 when off.

    Raises
    ------
    ValueError
        For a negative or non-numeric limit (argument or environment variable),
        naming where it came from and what to set instead.

    Examples
    --------
    >>> embedding_cache_limit(0.5)
    500000000
    """
    given, source = limit_gb, "limit_gb"
    if limit_gb is None:
        given = os.environ.get(LIMIT_ENV, "").strip()
        if not given:
            return int(DEFAULT_LIMIT_GB * 1e9)
        source = f"the environment variable {LIMIT_ENV}"
    try:
        value = float(given)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{source} must be a size in GB >= 0 (e.g. 2, or 0 to turn the disk cache of "
            f"embeddings off), got {given!r}."
        )
    return int(value * 1e9)


@dataclass(frozen=True)
class DiskCacheInfo:
    """What the disk tier holds.

    Attributes
    ----------
    folder : pathlib.Path
        Its folder.
    entries : int
        Embeddings stored.
    bytes : int
        Their total size.
    limit : int
        The size limit in bytes (0: the disk tier is off).
    """

    folder: Path
    entries: int
    bytes: int
    limit: int

    def summary(self) -> str:
        """A few lines for humans: folder, entries and size, limit."""
        limit = format_size(self.limit) if self.limit else "0 (off)"
        return (
            f"embedding cache: {self.folder}\n"
            f"entries: {self.entries} ({format_size(self.bytes)})\n"
            f"limit: {limit} ({LIMIT_ENV} sets it; {CACHE_ENV} moves the folder)"
        )


def remove_file(path: Path) -> bool:
    """Remove a file; False when it is gone already (another process) or in use (Windows)."""
    try:
        path.unlink()
        return True
    except OSError:
        return False


def stored_files(folder: Path, suffix: str) -> list[tuple[float, int, Path]]:
    """(modification time, bytes, path) of the folder's files ending in ``suffix``, oldest first.

    Hidden files are temporary files of writes in progress (entries never
    start with a dot): they are not listed, and those whose writer died (older
    than :data:`STALE_TEMPORARY_S`) are removed.

    Parameters
    ----------
    folder : pathlib.Path
        The cache folder (a missing folder holds nothing).
    suffix : str
        How the entries' names end.

    Returns
    -------
    list of (float, int, pathlib.Path)
    """
    out = []
    now = time.time()
    try:
        scan = list(os.scandir(folder))
    except OSError:
        return []
    for entry in scan:
        try:
            if not entry.is_file():
                continue
            stat = entry.stat()
        except OSError:
            continue  # removed meanwhile
        if entry.name.startswith("."):
            target = temporary_target(entry.name) or entry.name
            if target.endswith(suffix) and now - stat.st_mtime > STALE_TEMPORARY_S:
                remove_file(Path(entry.path))
        elif entry.name.endswith(suffix):
            out.append((stat.st_mtime, stat.st_size, Path(entry.path)))
    return sorted(out)


def evict_oldest(entries: list[tuple[float, int, Path]], limit: int) -> tuple[int, int]:
    """Remove the oldest of ``entries`` (from :func:`stored_files`) until they hold at most ``limit`` bytes.

    Returns
    -------
    (int, int)
        Files and bytes removed.
    """
    total = sum(size for _, size, _ in entries)
    removed, freed = 0, 0
    for _, size, path in entries:
        if total <= limit:
            break
        remove_file(path)
        total -= size
        removed, freed = removed + 1, freed + size
    return removed, freed
