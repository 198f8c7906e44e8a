"""The data of the prompt layers: points, boxes and Gaussian mask prompts as napari draws them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from napari_samrefine._napari.layers import plane_index
from napari_samrefine.samrefiner.prompts import ObjectPrompts

__all__ = [
    "object_colors",
    "point_style",
    "box_style",
    "points_data",
    "point_sizes",
    "boxes_data",
    "gaussian_data",
    "region_data",
]

FALLBACK_COLOR = (1.0, 0.85, 0.0, 1.0)
"""The colour of a prompt whose object has no colour given (yellow)."""
BORDERS = {"positive": "white", "negative": "black"}
"""Border colour of a point by kind (its face is its object's colour)."""
SYMBOLS = {"positive": "disc", "negative": "cross"}
"""Marker of a point by kind."""
BOX_WIDTHS = {"tight": 1.0, "cebox": 2.5}
"""Edge width (screen pixels) of a box by kind: the grown box is the thick one."""


def object_colors(labels_layer, ids) -> dict[int, np.ndarray]:
    """The colour (RGBA) each object id has in ``labels_layer`` (its colormap's, as napari draws it).

    Parameters
    ----------
    labels_layer : napari.layers.Labels
    ids : iterable of int

    Returns
    -------
    dict
        Label id to a (4,) float array.
    """
    ids = np.unique(np.fromiter((int(i) for i in ids), dtype=np.int64))
    if not len(ids):
        return {}
    colors = np.asarray(labels_layer.colormap.map(ids.astype(labels_layer.data.dtype)), float)
    colors = colors.reshape(len(ids), 4).copy()
    colors[:, 3] = 1.0  # a prompt is opaque even over a translucent labels layer
    return dict(zip(ids.tolist(), colors, strict=True))


def _colors(ids, colors: Mapping[int, np.ndarray] | None) -> np.ndarray:
    colors = colors or {}
    return np.array([colors.get(int(i), FALLBACK_COLOR) for i in ids], dtype=float).reshape(-1, 4)


def _lift(coords: np.ndarray, plane) -> np.ndarray:
    """Prepend the plane's index (z, or t and z) to (row, col) coordinates."""
    lead = plane_index(plane)
    if not lead:
        return coords
    return np.column_stack([np.tile(np.asarray(lead, float), (len(coords), 1)), coords])


def points_data(
    prompts: Sequence[ObjectPrompts], plane: int | None = None, colors: Mapping[int, np.ndarray] | None = None
):  # fmt: skip
    """Positive and negative points as napari (row, col) coordinates, with features and colours.

    Parameters
    ----------
    prompts : sequence of ObjectPrompts
    plane : int, (t, z) or None
        The plane of a stack the points lie on.
    colors : mapping, optional
        Label id to RGBA (:func:`object_colors`); objects missing from it are yellow.

    Returns
    -------
    coords : (P, 2) or (P, 3) array
    features : pandas.DataFrame with ``label_id`` and ``kind`` ("positive"/"negative")
    colors : (P, 4) array, each point in its object's colour
    """
    rows, ids, kinds = [], [], []
    for p in prompts:
        for (x, y), lab in zip(p.points, p.point_labels, strict=True):
            rows.append((y, x))
            ids.append(p.label_id)
            kinds.append("positive" if lab == 1 else "negative")
    coords = _lift(np.asarray(rows, dtype=float).reshape(-1, 2), plane)
    features = pd.DataFrame({"label_id": np.asarray(ids, dtype=np.int64), "kind": kinds})
    return coords, features, _colors(ids, colors)


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


def boxes_data(
    prompts: Sequence[ObjectPrompts], plane: int | None = None, colors: Mapping[int, np.ndarray] | None = None
):  # fmt: skip
    """Tight boxes and the CEBoxes that differ from them, as napari rectangles.

    Parameters
    ----------
    prompts : sequence of ObjectPrompts
    plane : int, (t, z) or None
        The plane of a stack the boxes lie on.
    colors : mapping, optional
        Label id to RGBA (:func:`object_colors`); objects missing from it are yellow.

    Returns
    -------
    rectangles : list of (4, 2) or (4, 3) arrays
    features : pandas.DataFrame with ``label_id`` and ``kind`` ("tight"/"cebox")
    colors : (R, 4) array, each box in its object's colour
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
    return rects, features, _colors(ids, colors)


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


def region_data(prompts: Sequence[ObjectPrompts], shape: tuple[int, int], plane: int | None = None,
                dtype=np.int32) -> np.ndarray:
    """Each object's mask prompt region, the mask its Gaussian map was mined from, as labels.

    The region of an object is the support of its Gaussian map (its coarse mask as
    the mining saw it), painted with its id: the labels a user paints or erases to
    change the object's mask prompt. Shaped like :func:`gaussian_data` (one plane
    deep for a stack).
    """
    out = np.zeros(shape, dtype=dtype)
    for p in prompts:
        y0, x0 = p.offset
        h, w = p.gaussian.shape
        out[y0 : y0 + h, x0 : x0 + w][np.asarray(p.gaussian) > 0] = p.label_id
    return out.reshape((1,) * len(plane_index(plane)) + out.shape)


def point_style(features: pd.DataFrame) -> dict:
    """Layer properties marking each point by kind and labelling it with its object's id.

    Positive points are discs with a white border, negative ones crosses with a
    black border; each has its object's id written beside it (napari ``text``
    from the ``label_id`` feature).
    """
    if not len(features):
        return {}
    kinds = features["kind"].to_numpy()
    return {
        "symbol": np.array([SYMBOLS.get(k, "disc") for k in kinds]),
        "border_color": np.array([BORDERS.get(k, "white") for k in kinds]),
        "text": {"string": "{label_id}", "color": "white", "size": 8, "anchor": "upper_left"},
    }


def box_style(features: pd.DataFrame) -> dict:
    """Layer properties: grown boxes thicker than tight ones, each box labelled with its object's id."""
    if not len(features):
        return {}
    return {
        "edge_width": [BOX_WIDTHS.get(k, 1.0) for k in features["kind"]],
        "text": {"string": "{label_id}", "color": "white", "size": 8, "anchor": "upper_left"},
    }
