"""The registry of SAM checkpoints: name -> URL, xxh128 hash, architecture; cache and download.

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
:func:`~napari_samrefine.sam.loading.load_sam`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pooch

__all__ = [
    "CACHE_ENV",
    "ModelDownloadError",
    "ModelEntry",
    "cached_checkpoint_path",
    "fetch_checkpoint",
    "find_model_by_hash",
    "get_model",
    "list_models",
    "model_cache_dir",
    "register_model",
    "unregister_model",
]

CACHE_ENV = "NAPARI_SAMREFINE_CACHE"
"""Environment variable that moves the checkpoint cache folder."""

ARCHITECTURES = ("vit_b", "vit_l", "vit_h", "custom")


class ModelDownloadError(OSError):
    """A checkpoint could not be downloaded, or the download did not match its hash."""


@dataclass(frozen=True)
class ModelEntry:
    """One registered SAM checkpoint.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"vit_b_lm"``.
    url : str
        Where the checkpoint is downloaded from (``http``, ``https`` or ``ftp``).
    xxh128 : str
        xxh128 hex digest of the file (32 hexadecimal characters).
    arch : str
        Encoder architecture the file must hold: ``"vit_b"``, ``"vit_l"``,
        ``"vit_h"`` or ``"custom"`` (see :func:`~napari_samrefine.sam.loading.infer_sam_config`).
    description : str
        One line for humans (shown in the GUI and ``docs/models.md``).
    filename : str
        File name in the cache folder; unique across the registry.
    """

    name: str
    url: str
    xxh128: str
    arch: str
    description: str
    filename: str

    @property
    def known_hash(self) -> str:
        """The hash in pooch's ``"algorithm:digest"`` form."""
        return f"xxh128:{self.xxh128}"


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    url: str,
    xxh128: str,
    arch: str,
    description: str = "",
    filename: str | None = None,
    *,
    overwrite: bool = False,
) -> ModelEntry:
    """Add a checkpoint to the registry so that ``load_sam(name)`` downloads and loads it.

    Parameters
    ----------
    name : str
        Registry name (no path separators).
    url : str
        Download URL.
    xxh128 : str
        xxh128 hex digest of the file, e.g. from ``pooch.file_hash(path, alg="xxh128")``.
    arch : {"vit_b", "vit_l", "vit_h", "custom"}
        Architecture the file must hold; loading refuses a file of another one.
    description : str
        One line for humans.
    filename : str, optional
        File name in the cache folder; default ``name`` plus the URL's suffix.
    overwrite : bool
        Replace an entry of the same name instead of raising.

    Returns
    -------
    ModelEntry

    Raises
    ------
    ValueError
        For a name already registered (without ``overwrite``), a malformed hash,
        an unknown architecture or a file name another entry uses.

    Examples
    --------
    >>> entry = register_model("my_sam", "https://example.org/my_sam.pth",
    ...                        "0123456789abcdef0123456789abcdef", "vit_b")
    >>> entry.filename
    'my_sam.pth'
    >>> unregister_model("my_sam")
    """
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"Model name {name!r} must be non-empty and hold no path separator.")
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"A model named {name!r} is already registered; pass overwrite=True to replace it."
        )
    digest = xxh128.lower()
    if len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(
            f"xxh128 of {name!r} must be 32 hexadecimal characters, got {xxh128!r} "
            '(compute it with pooch.file_hash(path, alg="xxh128")).'
        )
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch of {name!r} must be one of {ARCHITECTURES}, got {arch!r}.")
    if filename is None:
        filename = name + Path(url.split("?")[0]).suffix
    clash = [e.name for e in _REGISTRY.values() if e.filename == filename and e.name != name]
    if clash:
        raise ValueError(
            f"File name {filename!r} of {name!r} is already used by {clash[0]!r}; pass another filename."
        )
    entry = ModelEntry(name, url, digest, arch, description, filename)
    _REGISTRY[name] = entry
    return entry


def unregister_model(name: str) -> None:
    """Remove a registered model (nothing happens if it is not registered)."""
    _REGISTRY.pop(name, None)


def list_models() -> list[str]:
    """Names of the registered SAM checkpoints.

    Returns
    -------
    list of str
        In registration order, the micro-sam light-microscopy model first.

    Examples
    --------
    >>> "vit_b_lm" in list_models()
    True
    """
    return list(_REGISTRY)


def get_model(name: str) -> ModelEntry:
    """The registry entry of ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not registered; the message lists the valid names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"Unknown model {name!r}. Registered models: {', '.join(_REGISTRY)}. "
            "A local checkpoint file also works: load_sam('/path/to/sam_vit_b_01ec64.pth')."
        ) from None


def find_model_by_hash(xxh128: str) -> ModelEntry | None:
    """The registry entry whose file has this xxh128 digest, or None."""
    digest = xxh128.lower()
    return next((e for e in _REGISTRY.values() if e.xxh128 == digest), None)


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
    """Where the checkpoint of registry model ``name`` lives once downloaded (or copied by hand)."""
    return model_cache_dir(cache_dir) / get_model(name).filename


def fetch_checkpoint(
    name: str, *, cache_dir: str | os.PathLike | None = None, progressbar: bool = True
) -> Path:
    """Download a registry model's checkpoint into the cache (if not there yet) and check its hash.

    A file already in the cache is used when its hash matches and fetched again
    when it does not (e.g. a truncated copy).

    Parameters
    ----------
    name : str
        Registry name, see :func:`list_models`.
    cache_dir : path-like, optional
        Cache folder, see :func:`model_cache_dir`.
    progressbar : bool
        Show a tqdm progress bar on stderr while downloading.

    Returns
    -------
    pathlib.Path
        The verified checkpoint file.

    Raises
    ------
    ValueError
        For an unknown name.
    ModelDownloadError
        When the download fails (no network, server error) or the downloaded
        file's hash differs from the registry's; nothing is left in the cache then.
    """
    import requests  # pooch's own dependency

    entry = get_model(name)
    folder = model_cache_dir(cache_dir)
    target = folder / entry.filename
    try:
        path = pooch.retrieve(
            entry.url,
            known_hash=entry.known_hash,
            fname=entry.filename,
            path=folder,
            progressbar=progressbar,
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


# The built-in registry: /work/shared/MODELS.md. vit_b_lm comes first (the default).
for _entry in (
    (
        "vit_b_lm",
        "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io/diplomatic-bug/1.2/files/vit_b.pt",
        "fe9252a29f3f4ea53c15a06de471e186",
        "vit_b",
        "ViT-B fine-tuned for light microscopy (micro-sam)",
    ),
    (
        "vit_l_lm",
        "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io/idealistic-rat/1.2/files/vit_l.pt",
        "017f20677997d628426dec80a8018f9d",
        "vit_l",
        "ViT-L fine-tuned for light microscopy (micro-sam)",
    ),
    (
        "vit_b_em_organelles",
        "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io/noisy-ox/1.2/files/vit_b.pt",
        "f3bf2ed83d691456bae2c3f9a05fb438",
        "vit_b",
        "ViT-B fine-tuned for electron microscopy (micro-sam)",
    ),
    (
        "vit_l_em_organelles",
        "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io/humorous-crab/1.2/files/vit_l.pt",
        "810b084b6e51acdbf760a993d8619f2d",
        "vit_l",
        "ViT-L fine-tuned for electron microscopy (micro-sam)",
    ),
    (
        "vit_b",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "6923c33df3637b6a922d7682bfc9a86b",
        "vit_b",
        "SAM ViT-B (Meta, 375 MB)",
        "sam_vit_b_01ec64.pth",
    ),
    (
        "vit_l",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "a82beb3c660661e3dd38d999cc860e9a",
        "vit_l",
        "SAM ViT-L (Meta, 1.2 GB)",
        "sam_vit_l_0b3195.pth",
    ),
    (
        "vit_h",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "97698fac30bd929c2e6d8d8cc15933c2",
        "vit_h",
        "SAM ViT-H (Meta, 2.5 GB)",
        "sam_vit_h_4b8939.pth",
    ),
):
    register_model(*_entry)
del _entry
