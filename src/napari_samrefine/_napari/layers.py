"""Choosing layers in the widgets, turning core results into napari layers, and keeping
result layers linked to their source.

Result layers carry ``metadata["samrefine"] = {"role": ..., "source": <unique id of
the source layer>}``; running a widget again updates the linked layer instead of
stacking a new copy.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import xxhash
from magicgui.widgets import ComboBox

from napari_samrefine.labels.arrays import is_lazy
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
    "role_style",
    "REFINED_CONTOUR",
    "features_table",
    "label_rows",
    "MAX_FEATURE_ROWS",
    "current_plane",
    "plane_index",
    "geometry",
]

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
        Layer properties (features, colours, geometry...), set on update too. A
        new layer also gets :func:`role_style` (unless ``kwargs`` say otherwise);
        an updated one keeps the style the user gave it.

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
        for key, value in role_style(role, kind, source).items():
            if key not in kwargs:
                setattr(layer, key, value)
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


REFINED_CONTOUR = 2
"""Width (pixels) of the outlines a refined labels layer is drawn with."""


def role_style(role: str, kind: str, source) -> dict:
    """How a new result layer of ``role`` is drawn, so it reads apart from its source.

    A refined labels layer is drawn as outlines (``contour`` =
    :data:`REFINED_CONTOUR`, opaque) in the colours of its coarse layer: laid
    over the filled coarse labels, each object's refined outline has the colour
    of its coarse fill. Other roles: no style.
    """
    if role != "refined" or kind != "labels":
        return {}
    style = {"contour": REFINED_CONTOUR, "opacity": 1.0}
    colormap = getattr(source, "colormap", None)
    if colormap is not None and hasattr(source, "selected_label"):  # a Labels layer
        style["colormap"] = copy.deepcopy(colormap)
    return style


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


def _joined_statuses(statuses: pd.Series) -> str:
    counts = statuses.value_counts(sort=False)
    if len(counts) == 1:
        return str(counts.index[0])
    return ", ".join(f"{status} ({n})" for status, n in counts.items())


MAX_FEATURE_ROWS = 65_536
"""The most rows a Labels ``features`` table gets one row per label value for (see
:func:`label_rows`); above, it has one row per object."""


def label_rows(features: pd.DataFrame, id_column: str = "label_id", background: str = "background") -> pd.DataFrame:
    """``features`` with row ``i`` describing label value ``i`` (napari's convention).

    napari's Features table widget selects label ``i`` for row ``i`` (and the
    row of the selected label), so a Labels ``features`` table needs a row for
    every value from 0 (background) to the largest id. Label values without a
    row in ``features`` get 0 in integer columns, NaN in float ones and "" in
    the others (``background`` in the ``status`` column of row 0); the
    ``index`` column is the label value (napari's status bar reads it).
    When the largest id is :data:`MAX_FEATURE_ROWS` or more, the rows are the
    objects only (the widget cannot map them; the status bar still does).

    Parameters
    ----------
    features : pandas.DataFrame
        One row per label, its value in ``id_column`` (unique, >= 0).
    id_column : str
        The column holding the label value.
    background : str
        The ``status`` of row 0 when it has no row in ``features``.

    Returns
    -------
    pandas.DataFrame
        ``index`` first, then ``features``' columns; a new frame.
    """
    ids = features[id_column].astype(np.int64).to_numpy() if len(features) else np.zeros(0, np.int64)
    out = features.drop(columns=["index"], errors="ignore").reset_index(drop=True)
    top = int(ids.max()) if len(ids) else 0
    if len(ids) and (ids.min() < 0 or top >= MAX_FEATURE_ROWS or len(np.unique(ids)) != len(ids)):
        out.insert(0, "index", ids)
        return out
    dense = out.set_axis(ids).reindex(np.arange(top + 1))
    absent = ~np.isin(np.arange(top + 1), ids)
    for column in out.columns:
        kind = out[column].dtype.kind
        if kind in "iub":
            dense[column] = dense[column].fillna(0).astype(out[column].dtype)
        elif kind not in "fc":  # strings and objects: "" (their dtype kept)
            values = dense[column]
            if isinstance(values.dtype, pd.CategoricalDtype) and "" not in values.cat.categories:
                values = values.cat.add_categories([""])
            dense[column] = values.where(~absent, "")
    dense[id_column] = np.arange(top + 1, dtype=np.int64)
    if "status" in dense and absent[0]:
        dense.loc[0, "status"] = background
    dense.insert(0, "index", np.arange(top + 1, dtype=np.int64))
    return dense.reset_index(drop=True)


def features_table(table: pd.DataFrame) -> pd.DataFrame:
    """A napari Labels ``features`` table: row ``i`` (and ``index``) is label value ``i``.

    A label with several rows (the planes of a stack, the pieces of a semantic
    class) gets one row: its planes listed, its statuses counted ("refined (2),
    kept (1)"), the mean predicted IoU and label-free estimates (``iou_coarse``,
    ``stability``, ``edge_contrast``), the most iterations and the summed areas.
    Values with no object (background 0, unused ids) get empty rows
    (:func:`label_rows`), so napari's Features table widget selects the label
    of the row. The per-plane rows stay in the layer's ``metadata["samrefine_table"]``.
    """
    if table.empty or not table["label_id"].duplicated().any():
        features = table.copy()
    else:
        grouped = table.groupby("label_id", sort=True)
        how = {
            "plane": lambda p: ", ".join(str(v) for v in sorted(set(p.dropna()))),
            "status": _joined_statuses, "predicted_iou": "mean", "iterations": "max",
            "coarse_area": "sum", "refined_area": "sum", **dict.fromkeys(SIGNAL_COLUMNS, "mean"),
        }  # the columns a table has (a saved review table has fewer)
        features = pd.DataFrame({
            "label_id": list(grouped.groups),
            **{c: grouped[c].agg(f).to_numpy() for c, f in how.items() if c in table},
        })  # fmt: skip
    if table.empty:
        features.insert(0, "index", features["label_id"].astype(np.int64))
        return features.reset_index(drop=True)
    return label_rows(features)
