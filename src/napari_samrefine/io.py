"""Reading and writing images and label images (TIFF, PNG) for the CLI and batch scripts.

Every file this package writes goes through :func:`atomic_path` (labels, tables,
IoU adaptors, the embeddings of the disk cache, the judge widget's table): the
data is written to a temporary file in the target's folder, flushed to disk and
moved over the target in one step, so a crash, a full disk or a second writer
never leaves a half-written or mixed file behind. :func:`check_outputs` refuses, before any
work, outputs that would overwrite an input or (without ``--overwrite``) an
existing file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = [
    "read_image",
    "write_labels",
    "write_table",
    "atomic_path",
    "temporary_target",
    "check_outputs",
    "check_png_labels",
    "find_pairs",
    "load_weights_only",
    "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def read_image(path: str | Path) -> np.ndarray:
    """Read a TIFF (tifffile) or PNG/JPEG (Pillow) file into a numpy array.

    A 1-bit PNG (Pillow mode "1") is read as a bool array.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    if suffix in (".png", ".jpg", ".jpeg"):
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im)
    raise ValueError(f"Unsupported file type {suffix!r} for {path}: use one of {IMAGE_SUFFIXES}.")


# -- atomic writes ----------------------------------------------------------------------------


_PART = ".part"


def _new_temp_file(path: Path) -> Path:
    """Create an empty, uniquely named file next to ``path`` and return its path.

    ``os.open`` with ``O_EXCL`` and mode 0o666 (rather than ``tempfile.mkstemp``,
    which makes 0o600 files) lets the user's umask set the permissions, so the
    final file gets the same permissions as any other new file.
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}{_PART}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"Could not create a temporary file next to {path}.")  # pragma: no cover


def temporary_target(name: str) -> str | None:
    """The target's file name of a temporary file of :func:`atomic_path`, or None for another name.

    A process killed between writing and renaming leaves its temporary file
    (``.<name>.<16 hex digits>.part``) next to the target; a folder's owner (the
    disk cache of embeddings) finds and removes such files with this.

    Examples
    --------
    >>> temporary_target(".labels.tif.0123456789abcdef.part")
    'labels.tif'
    >>> temporary_target("labels.tif") is None
    True
    """
    if not (name.startswith(".") and name.endswith(_PART)):
        return None
    target, dot, token = name[1 : -len(_PART)].rpartition(".")
    if not (dot and target and len(token) == 16 and all(c in "0123456789abcdef" for c in token)):
        return None
    return target


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk, where the OS allows it (not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows cannot open a folder as a file
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Write a file atomically: yield a temporary path that replaces ``path`` on success.

    The temporary file lies in the target's folder (so the final ``os.replace``
    is one atomic rename on the same file system) under a unique name (so two
    writers at once never share it). On success the file is flushed to disk
    (``fsync``) before the rename, and the folder after it where the OS allows,
    so that a power cut leaves the old file or the new one, never an empty one.
    If the ``with`` block raises, the temporary file is removed and ``path`` is
    left as it was. The folder is created if needed.

    Parameters
    ----------
    path : str or path-like
        The file to write.

    Yields
    ------
    pathlib.Path
        Where to write the data (an existing, empty file).

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "notes.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("all or nothing")
    >>> target.read_text()
    'all or nothing'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_file(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def _write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` and move ``tmp`` over ``path`` (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_labels(path: str | Path, labels: np.ndarray) -> Path:
    """Write labels to TIFF (any integer or bool dtype) or PNG (2D uint8, uint16 or bool).

    The file is written atomically (:func:`atomic_path`): an existing file is
    replaced only once the new one is complete. The folder is created if needed.

    Parameters
    ----------
    path : str or pathlib.Path
        ``.tif``/``.tiff`` or ``.png`` file.
    labels : numpy.ndarray
        The label image; written with its dtype and values (bool PNGs are 1-bit).

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ValueError
        For another suffix, or a PNG of a dtype or shape PNG cannot hold.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        # labels are never colour: a stack of 3 or 4 planes must not be stored as RGB(A)
        return _write_atomically(
            path,
            lambda tmp: tifffile.imwrite(tmp, labels, compression="zlib", photometric="minisblack"),
        )
    if suffix == ".png":
        check_png_labels(labels.dtype, labels.ndim, labels.shape)
        from PIL import Image

        return _write_atomically(path, lambda tmp: Image.fromarray(labels).save(tmp, format="PNG"))
    raise ValueError(f"Unsupported output type {suffix!r}: use .tif or .png.")


def check_png_labels(dtype, ndim: int, shape=None) -> None:
    """Refuse labels a PNG cannot hold (PNG: 2D uint8, uint16 or bool only)."""
    if np.dtype(dtype) not in (np.uint8, np.uint16, np.bool_) or ndim != 2:
        raise ValueError(
            f"PNG holds 2D uint8/uint16/bool labels only (got {np.dtype(dtype)}, "
            f"{'shape ' + str(shape) if shape is not None else f'{ndim}D'}): write a .tif instead."
        )


def write_table(path: str | Path, table) -> Path:
    """Write a pandas DataFrame to CSV atomically (no index column).

    Parameters
    ----------
    path : str or pathlib.Path
        The CSV file; its folder is created if needed.
    table : pandas.DataFrame

    Returns
    -------
    pathlib.Path
    """
    return _write_atomically(path, lambda tmp: table.to_csv(tmp, index=False))


# -- guarding the user's files ----------------------------------------------------------------


def _same(a: Path, b: Path) -> bool:
    """Whether two paths name the same file or folder (links and case folding included)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_outputs(
    outputs: Iterable[str | os.PathLike],
    inputs: Iterable[str | os.PathLike] = (),
    *,
    output_dir: str | os.PathLike | None = None,
    input_dirs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
    option: str = "-o",
) -> None:
    """Refuse, before any work, outputs that would destroy the user's files.

    Parameters
    ----------
    outputs : iterable of path-like
        Every file the command will write.
    inputs : iterable of path-like
        Every file the command reads: an output naming one of them is refused,
        with or without ``overwrite``.
    output_dir : path-like, optional
        The output folder (for folder input); refused when it is one of ``input_dirs``.
    input_dirs : iterable of path-like
        The folders the inputs come from.
    overwrite : bool
        Whether existing outputs (that are not inputs) may be replaced.
    option : str
        The command-line option that names the output, for the messages.

    Raises
    ------
    ValueError
        Naming the file or folder and the way out.
    """
    outputs, inputs = [Path(p) for p in outputs], [Path(p) for p in inputs]
    if output_dir is not None:
        for folder in map(Path, input_dirs):
            if _same(Path(output_dir), folder):
                raise ValueError(
                    f"Refusing to write the results into {folder}: it is an input folder, and "
                    f"your input files there would be overwritten. Give another folder with {option}."
                )
    for out in outputs:
        for source in inputs:
            if _same(out, source):
                raise ValueError(
                    f"Refusing to write {out}: it is the input file {source}, which would be "
                    f"overwritten. Give another file name with {option}."
                )
    existing = [str(out) for out in outputs if out.exists()]
    if existing and not overwrite:
        if len(existing) == 1:
            what, it = f"{existing[0]} already exists", "it"
        else:
            more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
            what, it = f"{len(existing)} outputs already exist ({', '.join(existing[:3])}{more})", "them"
        raise ValueError(
            f"{what}: pass --overwrite to replace {it}, or choose another output "
            "(nothing was written)."
        )


def _by_stem(folder: Path) -> dict[str, Path]:
    """The image files of a folder by stem; two files with one stem are an error."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
            continue
        if p.stem in found:
            raise ValueError(
                f"{folder} holds two files named {p.stem!r}: {found[p.stem].name} and {p.name}. "
                "Files are paired by name, so one of them would be left out: rename or move one."
            )
        found[p.stem] = p
    return found


def find_pairs(image_dir: str | Path, labels_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair the images of one folder with the label files of another by file stem.

    Raises
    ------
    ValueError
        When no pair is found, naming the stems on each side, or when a folder
        holds two files with the same stem (e.g. ``a.tif`` and ``a.png``), naming both.
    """
    image_dir, labels_dir = Path(image_dir), Path(labels_dir)
    images, labels = _by_stem(image_dir), _by_stem(labels_dir)
    pairs = [(images[s], labels[s]) for s in sorted(images) if s in labels]
    if not pairs:
        raise ValueError(
            f"No image in {image_dir} has a label file of the same name in {labels_dir} "
            f"(images: {sorted(images)[:5]}, labels: {sorted(labels)[:5]})."
        )
    return pairs


def load_weights_only(path: Path, max_bytes: int, refuse: Callable[[str], Exception], size_note: str):
    """A small torch file's content, read safely (``torch.load(weights_only=True)``, CPU).

    Parameters
    ----------
    path : pathlib.Path
        An existing file.
    max_bytes : int
        A larger file is refused without being read.
    refuse : callable
        Makes the exception to raise from a problem's description.
    size_note : str
        Why a file of more than ``max_bytes`` is wrong (follows its size in the message).
    """
    import torch

    size = path.stat().st_size
    if size > max_bytes:
        raise refuse(f"{size} bytes, {size_note}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # whatever the safe loader refuses is refused
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise refuse(f"it cannot be read safely: {first}") from None
