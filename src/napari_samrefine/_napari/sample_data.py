"""Sample data contributed to napari's File > Open Sample menu."""

from __future__ import annotations

from importlib.resources import files

import numpy as np

from napari_samrefine.engine.preprocess import PERCENTILES

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
    """napari layer data: the nuclei image, contrast set, and its coarse labels (half opaque).

    The image is dark (mean 6 of 255): its contrast limits are the percentiles
    of the stretch the refinement itself applies to non-uint8 images
    (:data:`~napari_samrefine.engine.preprocess.PERCENTILES`), so nuclei are
    visible when the sample opens.
    """
    image, coarse = load_nuclei()
    low, high = (float(v) for v in np.percentile(image, PERCENTILES))
    return [
        (image, {"name": "nuclei", "contrast_limits": (low, max(high, low + 1))}, "image"),
        (coarse, {"name": "nuclei coarse", "opacity": 0.5}, "labels"),
    ]
