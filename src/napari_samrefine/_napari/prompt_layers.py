"""The data of the prompt layers: points, boxes and Gaussian mask prompts as napari draws them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from napari_samrefine._napari.layers import plane_index
from napari_samrefine.samrefiner.prompts import ObjectPrompts

__all__ = ["points_data", "point_sizes", "boxes_data", "gaussian_data"]

POSITIVE_COLOR = (0.1, 0.9, 0.2, 1.0)
NEGATIVE_COLOR = (1.0, 0.1, 0.8, 1.0)
TIGHT_COLOR = (1.0, 0.85, 0.0, 1.0)
CEBOX_COLOR = (0.0, 0.85, 1.0, 1.0)


def _lift(coords: np.ndarray, plane) -> np.ndarray:
    """Prepend the plane's index (z, or t and z) to (row, col) coordinates."""
    lead = plane_index(plane)
    if not lead:
        return coords
    return np.column_stack([np.tile(np.asarray(lead, float), (len(coords), 1)), coords])


def points_data(prompts: Sequence[ObjectPrompts], plane: int | None = None):
    """Positive and negative points as napari (row, col) coordinates, with features and colours.

    Returns
    -------
    coords : (P, 2) or (P, 3) array
    features : pandas.DataFrame with ``label_id`` and ``kind`` ("positive"/"negative")
    colors : (P, 4) array, green for positive, magenta for negative points
    """
    rows, ids, kinds = [], [], []
    for p in prompts:
        for (x, y), lab in zip(p.points, p.point_labels, strict=True):
            rows.append((y, x))
            ids.append(p.label_id)
            kinds.append("positive" if lab == 1 else "negative")
    coords = _lift(np.asarray(rows, dtype=float).reshape(-1, 2), plane)
    features = pd.DataFrame({"label_id": np.asarray(ids, dtype=np.int64), "kind": kinds})
    colors = np.array([POSITIVE_COLOR if k == "positive" else NEGATIVE_COLOR for k in kinds]).reshape(-1, 4)
    return coords, features, colors


def point_sizes(prompts: Sequence[ObjectPrompts]) -> np.ndarray:
    """A size for each point of :func:`points_data`, in data pixels, scaled to its object.

    A quarter of the shorter side of the object's tight box, between 1.5 and 12
    pixels: a point marks its spot without covering a small object.
    """
    sizes = []
    for p in prompts:
        x1, y1, x2, y2 = (float(v) for v in p.tight_box)
        side = min(x2 - x1, y2 - y1) + 1.0
        sizes.extend([float(np.clip(side / 4.0, 1.5, 12.0))] * len(p.points))
    return np.asarray(sizes, dtype=float)


def _rectangle(box: np.ndarray, plane: int | None) -> np.ndarray:
    """Corners of an inclusive [x1, y1, x2, y2] pixel box, on pixel edges."""
    x1, y1, x2, y2 = (float(v) for v in box)
    corners = np.array(
        [[y1 - 0.5, x1 - 0.5], [y1 - 0.5, x2 + 0.5], [y2 + 0.5, x2 + 0.5], [y2 + 0.5, x1 - 0.5]]
    )
    return _lift(corners, plane)


def boxes_data(prompts: Sequence[ObjectPrompts], plane: int | None = None):
    """Tight boxes and the CEBoxes that differ from them, as napari rectangles.

    Returns
    -------
    rectangles : list of (4, 2) or (4, 3) arrays
    features : pandas.DataFrame with ``label_id`` and ``kind`` ("tight"/"cebox")
    colors : (R, 4) array, yellow for tight boxes, cyan for CEBoxes
    """
    rects, ids, kinds = [], [], []
    for p in prompts:
        rects.append(_rectangle(p.tight_box, plane))
        ids.append(p.label_id)
        kinds.append("tight")
        if p.expanded:
            rects.append(_rectangle(p.box, plane))
            ids.append(p.label_id)
            kinds.append("cebox")
    features = pd.DataFrame({"label_id": np.asarray(ids, dtype=np.int64), "kind": kinds})
    colors = np.array([TIGHT_COLOR if k == "tight" else CEBOX_COLOR for k in kinds]).reshape(-1, 4)
    return rects, features, colors


def gaussian_data(prompts: Sequence[ObjectPrompts], shape: tuple[int, int], plane: int | None = None):
    """All objects' Gaussian mask prompts in one image (maximum where objects overlap).

    For a stack the image is one plane deep, ``(1, H, W)`` (4D: ``(1, 1, H, W)``);
    place it with ``translate`` at the plane.
    """
    out = np.zeros(shape, dtype=np.float32)
    for p in prompts:
        y0, x0 = p.offset
        h, w = p.gaussian.shape
        np.maximum(out[y0 : y0 + h, x0 : x0 + w], p.gaussian, out=out[y0 : y0 + h, x0 : x0 + w])
    return out.reshape((1,) * len(plane_index(plane)) + out.shape)


