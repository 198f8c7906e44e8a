"""Choosing layers in the widgets, turning core results into napari layers, and keeping
result layers linked to their source.

Result layers carry ``metadata["samrefine"] = {"role": ..., "source": <unique id of
the source layer>}``; running a widget again updates the linked layer instead of
stacking a new copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import xxhash
from magicgui.widgets import ComboBox

from ..samrefiner.prompts import ObjectPrompts

__all__ = [
    "layer_choices",
    "layer_field",
    "layer_data",
    "displayed_plane",
    "find_linked",
    "upsert_layer",
    "points_data",
    "boxes_data",
    "gaussian_data",
    "features_table",
    "current_plane",
    "geometry",
]

POSITIVE_COLOR = (0.1, 0.9, 0.2, 1.0)
NEGATIVE_COLOR = (1.0, 0.1, 0.8, 1.0)
TIGHT_COLOR = (1.0, 0.85, 0.0, 1.0)
CEBOX_COLOR = (0.0, 0.85, 1.0, 1.0)


def layer_choices(viewer, kind):
    """A magicgui ``choices`` callable: the viewer's layers of type ``kind`` by name."""

    def choices(_widget=None):
        return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, kind)]

    return choices


def layer_field(viewer, kind, label: str) -> ComboBox:
    """A field choosing one of the viewer's ``kind`` layers (or none)."""
    return ComboBox(label=label, choices=layer_choices(viewer, kind), nullable=True)


def layer_data(layer) -> np.ndarray:
    """The full-resolution data of a layer (level 0 of a multiscale layer) as an array."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return np.asarray(data)


def displayed_plane(viewer, layer) -> np.ndarray:
    """The layer's data, or for a stack the 2D plane the viewer shows (RGB kept as channels)."""
    data = layer_data(layer)
    lead = layer.ndim - 2
    if lead <= 0:
        return data
    position = np.round(layer.world_to_data(viewer.dims.point)[:lead]).astype(int)
    return data[tuple(np.clip(position, 0, np.array(data.shape[:lead]) - 1))]


def geometry(layer, ndim: int | None = None) -> dict:
    """The keyword arguments that place a new layer exactly over ``layer``.

    With ``ndim``, only the last ``ndim`` axes (a 2D result over a plane of a stack).
    """
    axes = slice(-ndim if ndim else None, None)
    return {"scale": tuple(layer.scale[axes]), "translate": tuple(layer.translate[axes])}


def current_plane(viewer, layer) -> int | None:
    """Index of the plane of a 3D ``layer`` shown in the viewer (None for 2D layers)."""
    if layer.ndim == 2:
        return None
    position = layer.world_to_data(viewer.dims.point)
    z = int(np.round(position[0]))
    return int(np.clip(z, 0, layer.data.shape[0] - 1))


def find_linked(viewer, source, role: str):
    """The layer that holds ``role`` results for ``source``, or None."""
    for layer in viewer.layers:
        link = layer.metadata.get("samrefine")
        if link and link.get("role") == role and link.get("source") == source.unique_id:
            return layer
    return None


def upsert_layer(viewer, source, role: str, kind: str, data, name: str, **kwargs):
    """Update the ``role`` layer linked to ``source``, or add it.

    Parameters
    ----------
    viewer : napari.Viewer
    source : napari layer
        The layer the results were computed from.
    role : str
        What the layer shows ("points", "boxes", "gaussian", "refined", ...).
    kind : {"points", "shapes", "image", "labels"}
    data
        Layer data.
    name : str
        Name for a new layer.
    **kwargs
        Layer properties (features, colours, geometry...), set on update too.

    Notes
    -----
    A Labels layer is updated only while it holds what was last written to it:
    if the user painted on it since, it is left as it is (and no longer
    updated) and a new layer is added, so no edit is lost.
    """
    layer = find_linked(viewer, source, role)
    if layer is not None and kind == "labels" and _digest(layer.data) != _link(layer).get("written"):
        _link(layer)["role"] = f"{role} (edited by the user)"  # keep it, never update it again
        layer = None
    if layer is None:
        add = getattr(viewer, f"add_{kind}")
        layer = add(data, name=name, metadata={"samrefine": {"role": role, "source": source.unique_id}}, **kwargs)
        if kind == "labels":
            _link(layer)["written"] = _digest(layer.data)
        return layer
    if kind == "shapes":
        layer.data = []
        shape_type = kwargs.pop("shape_type", "rectangle")
        features = kwargs.pop("features", None)
        if len(data):
            layer.add(data, shape_type=shape_type, edge_color=kwargs.pop("edge_color", "yellow"))
        if features is not None:
            layer.features = features
    elif kind == "points":
        features = kwargs.pop("features", None)
        layer.data = data
        if features is not None:
            layer.features = features
    else:
        layer.data = data
        if kind == "labels":
            _link(layer)["written"] = _digest(layer.data)
    for key, value in kwargs.items():
        setattr(layer, key, value)
    return layer


def _link(layer) -> dict:
    """The plugin's bookkeeping in a layer's metadata (role, source, ...)."""
    return layer.metadata.setdefault("samrefine", {})


def _digest(data) -> str:
    """Content hash of a layer's array (to tell whether the user edited it)."""
    array = np.ascontiguousarray(np.asarray(data))
    return f"{xxhash.xxh3_128(array.tobytes()).hexdigest()}-{array.shape}-{array.dtype}"


def _lift(coords: np.ndarray, plane: int | None) -> np.ndarray:
    """Prepend the plane index to (row, col) coordinates of a 3D layer."""
    if plane is None:
        return coords
    return np.column_stack([np.full(len(coords), plane, dtype=float), coords])


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

    For a 3D layer the image is one plane deep, ``(1, H, W)``; place it with
    ``translate`` at the plane.
    """
    out = np.zeros(shape, dtype=np.float32)
    for p in prompts:
        y0, x0 = p.offset
        h, w = p.gaussian.shape
        np.maximum(out[y0 : y0 + h, x0 : x0 + w], p.gaussian, out=out[y0 : y0 + h, x0 : x0 + w])
    return out if plane is None else out[None]


def features_table(table: pd.DataFrame) -> pd.DataFrame | None:
    """A napari Labels ``features`` table (one row per label, ``index`` = label value).

    None when a label has several rows (stacks, STM groups): napari needs one row per label.
    """
    if table.empty or table["label_id"].duplicated().any():
        return None
    features = table.copy()
    features.insert(0, "index", features["label_id"].astype(np.int64))
    return features.reset_index(drop=True)
