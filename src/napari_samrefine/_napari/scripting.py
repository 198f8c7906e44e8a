"""Refining napari layers from a script or the napari console (no clicking).

Example
-------
>>> import napari_samrefine as nsr                                   # doctest: +SKIP
>>> layer = nsr.refine_layers(viewer, image="nuclei", labels="nuclei coarse")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..samrefiner.refiner import RefineResult, refine
from .layers import current_plane, features_table, geometry, layer_data, upsert_layer

__all__ = ["refine_layers", "apply_result", "check_pair", "scope_arguments", "SCOPES"]

SCOPES = ("all objects", "selected label", "current plane", "all planes")


def _layer(viewer, layer, kind: str):
    from napari.layers import Image, Labels

    cls = {"image": Image, "labels": Labels}[kind]
    if isinstance(layer, str):
        if layer not in viewer.layers:
            names = [lay.name for lay in viewer.layers if isinstance(lay, cls)]
            raise ValueError(f"There is no layer named {layer!r}; {kind} layers: {names}")
        layer = viewer.layers[layer]
    if not isinstance(layer, cls):
        raise ValueError(f"Layer {getattr(layer, 'name', layer)!r} is not a {cls.__name__} layer.")
    return layer


def check_pair(image_layer, labels_layer) -> None:
    """Raise a clear error when an image layer and a labels layer do not belong together."""
    if image_layer is None:
        raise ValueError("Choose an image layer: SAM needs the image, not only the labels.")
    if labels_layer is None:
        raise ValueError("Choose a Labels layer with the coarse masks to refine.")
    lab_shape = labels_layer.data.shape
    img_shape = layer_data(image_layer).shape
    spatial = img_shape[:-1] if getattr(image_layer, "rgb", False) else img_shape
    if tuple(spatial) != tuple(lab_shape):
        raise ValueError(
            f"Image {image_layer.name!r} has shape {img_shape} but labels {labels_layer.name!r} "
            f"have shape {lab_shape}: choose layers of the same size (same crop, same scale)."
        )


def scope_arguments(scope: str, viewer, labels_layer) -> dict:
    """``refine`` keyword arguments (label_ids, planes) for a widget scope."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if scope == "selected label":
        return {"label_ids": [int(labels_layer.selected_label)]}
    if scope == "current plane":
        plane = current_plane(viewer, labels_layer)
        return {} if plane is None else {"planes": [plane]}
    return {}


def apply_result(
    viewer, labels_layer, result: RefineResult, output: Literal["new", "inplace"] = "new"
):
    """Put a refinement result into the viewer; returns the layer that holds it.

    ``"new"`` adds (or updates) the layer "<labels> refined" linked to
    ``labels_layer``. ``"inplace"`` writes only the changed pixels through
    ``Labels.data_setitem``, which is one step of the layer's undo history
    (Ctrl+Z restores the coarse labels).
    """
    table = result.table()
    features = features_table(table)
    if output == "inplace":
        data = labels_layer.data
        changed = np.nonzero(np.asarray(data) != result.labels)
        if changed[0].size:
            labels_layer.data_setitem(changed, result.labels[changed])
        layer = labels_layer
    elif output == "new":
        layer = upsert_layer(
            viewer, labels_layer, "refined", "labels", result.labels,
            name=f"{labels_layer.name} refined", **geometry(labels_layer),
        )
    else:
        raise ValueError(f"output must be 'new' or 'inplace', got {output!r}")
    if features is not None:
        layer.features = features
    layer.metadata["samrefine_table"] = table
    return layer


def refine_layers(
    viewer,
    image,
    labels,
    sam="vit_b_lm",
    *,
    output: Literal["new", "inplace"] = "new",
    scope: str = "all objects",
    **refine_kwargs,
):
    """Refine a Labels layer of a viewer with SAM, as the "SAM refine" widget does.

    Parameters
    ----------
    viewer : napari.Viewer
    image : str or napari.layers.Image
        The image layer (or its name).
    labels : str or napari.layers.Labels
        The coarse Labels layer (or its name).
    sam : Sam, str or path
        A loaded model, a registry name or a checkpoint path.
    output : {"new", "inplace"}
        A new layer "<labels> refined" (default), or the labels layer itself
        through napari's undoable path.
    scope : str
        "all objects", "selected label", "current plane" or "all planes".
    **refine_kwargs
        Passed to :func:`napari_samrefine.refine` (mode, iterations, prompt switches, ...).

    Returns
    -------
    napari.layers.Labels
        The layer holding the refined labels; per-object results are in its
        ``features`` (and ``metadata["samrefine_table"]``).
    """
    image_layer = _layer(viewer, image, "image")
    labels_layer = _layer(viewer, labels, "labels")
    check_pair(image_layer, labels_layer)
    kwargs = {**scope_arguments(scope, viewer, labels_layer), **refine_kwargs}
    result = refine(layer_data(image_layer), np.asarray(labels_layer.data), sam, **kwargs)
    return apply_result(viewer, labels_layer, result, output)
