"""Reading and writing images and label images (TIFF, PNG) for the CLI and batch scripts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["read_image", "write_labels", "find_pairs", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def read_image(path: str | Path) -> np.ndarray:
    """Read a TIFF (tifffile) or PNG/JPEG (Pillow) file into a numpy array."""
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


def write_labels(path: str | Path, labels: np.ndarray) -> Path:
    """Write labels to TIFF (any integer dtype) or PNG (uint8/uint16 only).

    The folder is created if needed; an existing file is replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, labels, compression="zlib")
    elif suffix == ".png":
        if labels.dtype not in (np.uint8, np.uint16, np.bool_) or labels.ndim != 2:
            raise ValueError(
                f"PNG holds 2D uint8/uint16 labels only (got {labels.dtype}, shape "
                f"{labels.shape}): write a .tif instead."
            )
        from PIL import Image

        Image.fromarray(labels).save(path)
    else:
        raise ValueError(f"Unsupported output type {suffix!r}: use .tif or .png.")
    return path


def find_pairs(image_dir: str | Path, labels_dir: str | Path) -> list[tuple[Path, Path]]:
    """Pair the images of one folder with the label files of another by file stem.

    Raises
    ------
    ValueError
        When no pair is found, naming the stems on each side.
    """
    image_dir, labels_dir = Path(image_dir), Path(labels_dir)

    def by_stem(folder: Path) -> dict[str, Path]:
        return {
            p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES
        }

    images, labels = by_stem(image_dir), by_stem(labels_dir)
    pairs = [(images[s], labels[s]) for s in sorted(images) if s in labels]
    if not pairs:
        raise ValueError(
            f"No image in {image_dir} has a label file of the same name in {labels_dir} "
            f"(images: {sorted(images)[:5]}, labels: {sorted(labels)[:5]})."
        )
    return pairs
