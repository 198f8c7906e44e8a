"""One object refined again from its edited prompt layers ("Refine this object").

The Prompt excavation widget draws an object's prompts as a Points layer (its
positive and negative points, ``features`` ``label_id`` and ``kind``) and a
Shapes layer (its tight box and, where CEBox grew it, the grown box). After a
user moved, added or deleted points or moved or resized a box,
:func:`prompts_from_layers` reads that object's prompts back as
:class:`~napari_samrefine.ObjectPrompts`, and :func:`refine_object` decodes the
object from them with ``refine(..., label_ids=[id], prompts=...)`` at one
iteration (the cached embedding: no encoder pass once the image is encoded).
The mask prompt is the one mined from the coarse mask (painting it is not
read back).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from napari_samrefine._napari.layers import find_linked, layer_data, plane_index
from napari_samrefine.pipeline.refiner import refine
from napari_samrefine.samrefiner.prompts import ObjectPrompts, excavate_prompts

__all__ = [
    "prompt_layers", "select_object_prompts", "prompts_from_layers", "refine_object", "refine_from_layers",
]


def prompt_layers(viewer, coarse_layer):
    """The Points and Shapes layers the Prompt excavation widget drew for ``coarse_layer``
    (either may be None)."""
    return find_linked(viewer, coarse_layer, "points"), find_linked(viewer, coarse_layer, "boxes")


def select_object_prompts(viewer, coarse_layer, label_id: int) -> None:
    """Select object ``label_id``'s points and boxes in ``coarse_layer``'s prompt layers (to
    show them, and so that a drag moves them)."""
    for layer in prompt_layers(viewer, coarse_layer):
        if layer is not None:
            layer.selected_data = set(np.flatnonzero(_object_rows(layer, label_id)).tolist())


def _in_plane(coords: np.ndarray, lead: tuple[int, ...]) -> np.ndarray:
    """Which rows of (N, len(lead) + 2) data coordinates lie in the plane ``lead``."""
    if not lead:
        return np.ones(len(coords), bool)
    return np.all(np.round(coords[:, : len(lead)]) == np.asarray(lead), axis=1)


def _object_rows(layer, label_id: int) -> np.ndarray:
    features = layer.features
    if "label_id" not in features or len(features) == 0:
        return np.zeros(0, bool)
    return features["label_id"].to_numpy().astype(np.int64) == int(label_id)


def prompts_from_layers(points_layer, boxes_layer, coarse_plane: np.ndarray, label_id: int,
                        plane=None) -> ObjectPrompts:
    """Object ``label_id``'s prompts as its (edited) prompt layers show them.

    Parameters
    ----------
    points_layer : napari.layers.Points or None
        Points with ``features`` ``label_id`` and ``kind`` ("positive" or
        "negative"); the object's points in ``plane`` are its point prompts
        (none: no point).
    boxes_layer : napari.layers.Shapes or None
        Rectangles with ``features`` ``label_id`` and ``kind`` ("tight" or
        "cebox"); the object's grown box if it has one, else its tight box, is
        its box prompt, to the pixels its edges enclose (none: the coarse
        mask's tight box).
    coarse_plane : numpy.ndarray
        The coarse labels of the plane (the Gaussian mask prompt is mined from
        the object's coarse mask).
    label_id : int
    plane : int, (t, z) or None
        The plane of a stack the layers' prompts are taken from.

    Returns
    -------
    ObjectPrompts
        In the plane's frame, as ``refine(..., prompts=...)`` takes them.
    """
    label_id = int(label_id)
    (base,) = excavate_prompts(coarse_plane, label_ids=[label_id], cebox=None)
    lead = plane_index(plane)
    h, w = coarse_plane.shape
    points, labels = base.points[:0], base.point_labels[:0]
    if points_layer is not None and len(points_layer.data):
        coords = np.asarray(points_layer.data, float)
        keep = _object_rows(points_layer, label_id) & _in_plane(coords, lead)
        yx = coords[keep][:, -2:]
        points = np.clip(yx[:, ::-1], -0.5, [w - 0.5, h - 0.5])
        kinds = points_layer.features["kind"].to_numpy()[keep]
        labels = np.where(kinds == "negative", 0, 1).astype(np.int64)
    box, expanded = base.box, False
    if boxes_layer is not None and len(boxes_layer.data):
        rows = _object_rows(boxes_layer, label_id)
        kinds = boxes_layer.features["kind"].to_numpy()
        mine = [(k, np.asarray(d, float)) for d, k, r in zip(boxes_layer.data, kinds, rows, strict=True)
                if r and _in_plane(np.asarray(d, float), lead).all()]
        if mine:
            kind, corners = next(((k, c) for k, c in mine if k == "cebox"), mine[0])
            (y1, x1), (y2, x2) = corners[:, -2:].min(0) + 0.5, corners[:, -2:].max(0) - 0.5
            box = np.array([np.clip(round(v), 0, m - 1) for v, m in
                            ((x1, w), (y1, h), (max(x1, x2), w), (max(y1, y2), h))], np.int64)
            expanded = kind == "cebox"
    return replace(base, points=np.asarray(points, float).reshape(-1, 2), point_labels=labels, box=box,
                   expanded=expanded, strength=1.0 if expanded else base.strength)


def refine_object(image_plane, coarse_plane: np.ndarray, sam, prompts: ObjectPrompts,
                  **options) -> np.ndarray:
    """Object ``prompts.label_id`` decoded from ``prompts`` alone: its new mask (bool, the plane).

    ``refine(image_plane, coarse_plane, sam, label_ids=[id], prompts={id: prompts},
    iterations=1, keep="refined", **options)``: the other objects are not
    refined, so the new mask never takes their coarse pixels.
    """
    label_id = int(prompts.label_id)
    options = {"iterations": 1, "keep": "refined", **options}
    result = refine(image_plane, coarse_plane, sam, label_ids=[label_id],
                    prompts={label_id: prompts}, **options)
    return np.asarray(result.labels) == label_id


def refine_from_layers(viewer, image_layer, coarse_layer, load_sam, label_id: int, plane=None,
                       **options) -> tuple[np.ndarray, ObjectPrompts]:
    """Object ``label_id`` of ``coarse_layer`` refined again from its prompt layers in ``viewer``:
    its new mask (bool, the plane) and the prompts it was decoded from.

    ``load_sam()`` gives the model (called only when there is something to
    refine). Raises a ValueError saying what is missing (the prompt layers, the
    image).
    """
    points, boxes = prompt_layers(viewer, coarse_layer)
    if points is None and boxes is None:
        raise ValueError(f"No prompt layers of {coarse_layer.name!r}: excavate its prompts (Prompt "
                         "excavation widget), move, add or delete points or resize the box, then refine.")
    if image_layer is None:
        raise ValueError("Choose the image layer the refinement was made from.")
    lead = plane_index(plane)
    coarse_plane = np.asarray(coarse_layer.data[lead])
    image_plane = np.asarray(layer_data(image_layer, like=coarse_layer.data.shape)[lead])
    prompts = prompts_from_layers(points, boxes, coarse_plane, label_id, plane)
    return refine_object(image_plane, coarse_plane, load_sam(), prompts, **options), prompts
