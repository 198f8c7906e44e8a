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

from napari_samrefine.labels.arrays import is_lazy
from napari_samrefine.samrefiner.prompts import ObjectPrompts
from napari_samrefine.samrefiner.result import SIGNAL_COLUMNS

__all__ = [
    "layer_choices",
    "layer_field",
    "LayerField",
    "is_result_layer",
    "is_refined_layer",
    "layer_data",
    "in_memory",
    "displayed_plane",
    "find_linked",
    "upsert_layer",
    "points_data",
    "point_sizes",
    "boxes_data",
    "gaussian_data",
    "features_table",
    "current_plane",
    "plane_index",
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


def is_result_layer(layer) -> bool:
    """Whether the plugin made ``layer`` (refined labels, prompts, verdicts ...)."""
    return "samrefine" in layer.metadata


def is_refined_layer(layer) -> bool:
    """Whether ``layer`` holds refined labels written by the plugin."""
    return str(layer.metadata.get("samrefine", {}).get("role", "")).startswith("refined")


class LayerField(ComboBox):
    """A drop-down of the viewer's layers of one kind that preselects the obvious one.

    While nothing is chosen, the field takes the active layer when it fits, or
    the only fitting layer; ambiguous cases stay empty. Fitting layers are the
    ones ``prefer`` accepts (by default the user's own layers, not the plugin's
    results), or any layer of the kind when ``prefer`` accepts none. The choice
    is re-checked whenever the viewer's layers change (napari calls
    ``reset_choices`` on docked widgets); a user's choice is never replaced.
    """

    def __init__(self, viewer, kind, label: str, prefer=None, **kwargs):
        self._viewer, self._kind = viewer, kind
        self._prefer = prefer or (lambda layer: not is_result_layer(layer))
        super().__init__(label=label, choices=layer_choices(viewer, kind), nullable=True, **kwargs)
        self.preselect()

    def preselect(self) -> None:
        """Choose the obvious layer when the field is empty (see the class notes)."""
        if self.value is not None:
            return
        layers = [layer for layer in self._viewer.layers if isinstance(layer, self._kind)]
        fitting = [layer for layer in layers if self._prefer(layer)] or layers
        active = self._viewer.layers.selection.active
        # compared with ==: napari hands plugins proxies of the same layer
        if active is not None and any(active == layer for layer in fitting):
            self.value = active
        elif len(fitting) == 1:
            self.value = fitting[0]

    def reset_choices(self, *_):
        """Refresh the layer list, then preselect if the field is empty."""
        super().reset_choices()
        self.preselect()


def layer_field(viewer, kind, label: str, prefer=None) -> LayerField:
    """A field choosing one of the viewer's ``kind`` layers (or none), preselecting the obvious one.

    Parameters
    ----------
    viewer : napari.Viewer
    kind : type
        The napari layer class (``Image``, ``Labels``).
    label : str
        The field's label.
    prefer : callable, optional
        ``prefer(layer) -> bool``: the layers that fit best (default: layers the
        plugin did not make).
    """
    return LayerField(viewer, kind, label, prefer)


def layer_data(layer, like: tuple[int, ...] | None = None):
    """A layer's data as it is stored: numpy stays numpy, dask and zarr stay lazy.

    Parameters
    ----------
    layer : napari layer
    like : tuple of int, optional
        Shape of the labels the data goes with: of a multiscale layer, the level
        whose pixels match it (its leading shape, channels aside) is taken, else
        the finest level (0).
    """
    if not getattr(layer, "multiscale", False):
        return layer.data
    levels = list(layer.data)
    if like is not None:
        n = len(like)
        for level in levels:
            if tuple(level.shape[:n]) == tuple(like):
                return level
    return levels[0]


def in_memory(data) -> np.ndarray:
    """``data`` as a numpy array (reads a lazy array whole: only for data known to be small)."""
    return np.asarray(data)


def displayed_plane(viewer, layer) -> np.ndarray:
    """The layer's data, or for a stack the 2D plane the viewer shows (RGB kept as channels).

    Only that plane is read from a lazy (dask, zarr) layer.
    """
    data = layer_data(layer)
    lead = layer.ndim - 2
    if lead <= 0:
        return in_memory(data)
    position = np.round(layer.world_to_data(viewer.dims.point)[:lead]).astype(int)
    return in_memory(data[tuple(np.clip(position, 0, np.array(data.shape[:lead]) - 1))])


def geometry(layer, ndim: int | None = None) -> dict:
    """The keyword arguments that place a new layer exactly over ``layer``.

    With ``ndim``, only the last ``ndim`` axes (a 2D result over a plane of a stack).
    """
    axes = slice(-ndim if ndim else None, None)
    return {"scale": tuple(layer.scale[axes]), "translate": tuple(layer.translate[axes])}


def current_plane(viewer, layer) -> int | tuple[int, int] | None:
    """The plane of a stack ``layer`` shown in the viewer, as ``refine``'s ``planes`` takes it.

    None for 2D layers, the index z for 3D (Z, Y, X) and the pair (t, z) for 4D
    (T, Z, Y, X) layers.
    """
    lead = layer.ndim - 2
    if lead <= 0:
        return None
    position = np.round(np.asarray(layer.world_to_data(viewer.dims.point))[:lead]).astype(int)
    shape = np.asarray(layer_data(layer).shape[:lead])
    index = tuple(int(v) for v in np.clip(position, 0, shape - 1))
    return index[0] if lead == 1 else index


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
    updated) and a new layer is added, so no edit is lost. A lazy (zarr, dask)
    Labels layer cannot be checked without reading it whole, so it is never
    updated: each run adds a new one.
    """
    layer = find_linked(viewer, source, role)
    written = None if layer is None else _link(layer).get("written")
    if layer is not None and kind == "labels" and (written is None or _digest(layer.data) != written):
        why = "on disk" if written is None else "edited by the user"
        _link(layer)["role"] = f"{role} ({why})"  # keep it, never update it again
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


def _digest(data) -> str | None:
    """Content hash of a layer's array (to tell whether the user edited it); None when lazy."""
    if is_lazy(data):  # dask, zarr, napari's multiscale levels
        return None
    array = np.ascontiguousarray(np.asarray(data))
    return f"{xxhash.xxh3_128(array.tobytes()).hexdigest()}-{array.shape}-{array.dtype}"


def plane_index(plane) -> tuple[int, ...]:
    """A plane as its index in the leading axes: () for 2D, (z,) for 3D, (t, z) for 4D."""
    if plane is None:
        return ()
    return (int(plane),) if np.isscalar(plane) else tuple(int(v) for v in plane)


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


def _joined_statuses(statuses: pd.Series) -> str:
    counts = statuses.value_counts(sort=False)
    if len(counts) == 1:
        return str(counts.index[0])
    return ", ".join(f"{status} ({n})" for status, n in counts.items())


def features_table(table: pd.DataFrame) -> pd.DataFrame:
    """A napari Labels ``features`` table (one row per label, ``index`` = label value).

    A label with several rows (the planes of a stack, the pieces of a semantic
    class) gets one row: its planes listed, its statuses counted ("refined (2),
    kept (1)"), the mean predicted IoU and label-free estimates (``iou_coarse``,
    ``stability``, ``edge_contrast``), the most iterations and the summed areas.
    The per-plane rows stay in the layer's ``metadata["samrefine_table"]``.
    """
    if table.empty or not table["label_id"].duplicated().any():
        features = table.copy()
    else:
        grouped = table.groupby("label_id", sort=True)
        features = pd.DataFrame({
            "label_id": list(grouped.groups),
            "plane": grouped["plane"].agg(
                lambda p: ", ".join(str(v) for v in sorted(set(p.dropna())))
            ).to_numpy(),
            "status": grouped["status"].agg(_joined_statuses).to_numpy(),
            "predicted_iou": grouped["predicted_iou"].mean().to_numpy(),
            "iterations": grouped["iterations"].max().to_numpy(),
            "coarse_area": grouped["coarse_area"].sum().to_numpy(),
            "refined_area": grouped["refined_area"].sum().to_numpy(),
            **{c: grouped[c].mean().to_numpy() for c in SIGNAL_COLUMNS if c in table},
        })  # fmt: skip
    features.insert(0, "index", features["label_id"].astype(np.int64))
    return features.reset_index(drop=True)
