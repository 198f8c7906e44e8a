"""The images with ground truth of shared/data (beside the repository), for benchmarks.

Benchmarks read them; tests never do (tests/data holds the few files tests need).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""shared/data beside the repository's folder."""


def real_images(data: Path = DATA, n_dsb: int | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image, true labels) of the first ``n_dsb`` DSB2018 images (all: None) and StarDist's 2D ones."""
    root = data / "dsb2018"
    index = json.loads((root / "index.json").read_text())
    for entry in index[:n_dsb]:
        image = np.asarray(Image.open(root / "images" / f"{entry['file']}.png"))
        if image.ndim == 3:
            image = image[..., :3]
        yield entry["file"], image, tifffile.imread(root / "labels" / f"{entry['file']}.tif")
    for name in ("tests_img2d", "img2d"):
        mask = name.replace("img", "mask")
        yield name, tifffile.imread(data / "stardist" / f"{name}.tif"), tifffile.imread(
            data / "stardist" / f"{mask}.tif"
        )
