"""Sample data contributed to napari's File > Open Sample menu."""

from __future__ import annotations

from importlib.resources import files

import numpy as np

__all__ = ["nuclei_sample", "load_nuclei"]


def load_nuclei() -> tuple[np.ndarray, np.ndarray]:
    """The bundled DSB2018 nuclei image (uint8) and its coarse labels (uint16).

    See ``napari_samrefine/data/README.md`` for the source (CC0) and how the
    coarse labels were made.
    """
    import tifffile
    from PIL import Image

    root = files("napari_samrefine") / "data"
    with (root / "nuclei.png").open("rb") as f:
        image = np.asarray(Image.open(f))
    with (root / "nuclei_coarse.tif").open("rb") as f:
        coarse = tifffile.imread(f)
    return image, coarse


def nuclei_sample() -> list[tuple]:
    """napari layer data: the nuclei image and its coarse labels."""
    image, coarse = load_nuclei()
    return [
        (image, {"name": "nuclei"}, "image"),
        (coarse, {"name": "nuclei coarse"}, "labels"),
    ]
