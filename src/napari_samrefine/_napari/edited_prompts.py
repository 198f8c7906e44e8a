"""One object refined again from its edited prompt layers ("Refine this object").

The Prompt excavation widget draws an object's prompts as a Points layer (its
positive and negative points, ``features`` ``label_id`` and ``kind``) and a
Shapes layer (its tight box and, where CEBox grew it, the grown box), and all
objects' Gaussian mask prompts as one Image layer. After a user moved, added or
deleted points, moved or resized a box, or painted or erased the mask prompt
(below), :func:`prompts_from_layers` reads that object's
prompts back as :class:`~napari_samrefine.ObjectPrompts`, and
:func:`refine_object` decodes the object from them with ``refine(...,
label_ids=[id], prompts=...)`` at one iteration (the cached embedding: no
encoder pass once the image is encoded). :func:`object_inputs` reads what the
decode needs on the GUI thread, so that :func:`refine_object` can run in a
worker thread.

The mask prompt is painted in the Labels layer "<labels> mask prompt region":
each object's region, the mask its Gaussian map is mined from, painted with its
id. Where a user painted or erased an object's region, its map is mined from
the region as from a coarse mask (:func:`~napari_samrefine.excavate_prompts`);
an unedited region gives the mined map, bit for bit.

Without a region edit, the mask prompt image is read (a script may change its
data): it holds every object's map; an object's part of it is the
pixels nearer to its coarse mask than to any other object's (a painted pixel
counts for the object nearest to it). Where that part equals the map mined from
the coarse mask, the mined map is used unchanged.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from napari_samrefine._napari.layers import find_linked, layer_data, plane_index
from napari_samrefine.pipeline.refiner import refine
from napari_samrefine.samrefiner.prompts import ObjectPrompts, excavate_prompts

__all__ = [
    "prompt_layers", "select_object_prompts", "mask_prompt_plane", "mask_region_plane",
    "prompts_from_layers", "refine_object",
    "object_inputs", "refine_from_layers",
]


def prompt_layers(viewer, coarse_layer):
    """The Points and Shapes layers the Prompt excavation widget drew for ``coarse_layer``
    (either may be None)."""
    return find_linked(viewer, coarse_layer, "points"), find_linked(viewer, coarse_layer, "boxes")


def _shown_plane(layer, coarse_layer, plane, dtype, label_id=None) -> np.ndarray | None:
    """A copy of ``layer``'s data as one plane of ``coarse_layer``, or None when it shows
    another plane of the stack, is not the plane's shape, or does not show object ``label_id``'s
    prompts (``metadata["samrefine"]["label_ids"]``, written by ``show_prompts``)."""
    if layer is None:
        return None
    shown = layer.metadata.get("samrefine", {}).get("label_ids")
    if label_id is not None and shown is not None and int(label_id) not in shown:
        return None
    data = np.asarray(layer.data, dtype=dtype)
    shape = tuple(coarse_layer.data.shape[-2:])
    lead = plane_index(plane)
    if data.shape[-2:] != shape or data.size != int(np.prod(shape)):
        return None
    if lead:  # one plane deep, placed at its plane with translate
        k = len(lead)
        shown = np.round((np.asarray(layer.translate[:k]) - np.asarray(coarse_layer.translate[:k]))
                         / np.asarray(coarse_layer.scale[:k])).astype(int)
        if tuple(shown.tolist()) != lead:
            return None
    return np.array(data.reshape(shape), copy=True)


def mask_prompt_plane(viewer, coarse_layer, plane=None, label_id=None) -> np.ndarray | None:
    """The mask prompt image the Prompt excavation widget drew for ``coarse_layer``, in ``plane``.

    A copy, float32, the shape of one plane; None when there is no such layer,
    or it shows another plane of the stack (its prompts were excavated there),
    or it is not the plane's shape, or (with ``label_id``) it does not show that
    object's mask prompt (the prompts of other objects were excavated).
    """
    return _shown_plane(find_linked(viewer, coarse_layer, "gaussian"), coarse_layer, plane, np.float32,
                        label_id)


def mask_region_plane(viewer, coarse_layer, plane=None, label_id=None) -> np.ndarray | None:
    """The mask prompt region labels the Prompt excavation widget drew for ``coarse_layer``
    (maybe painted or erased since), in ``plane``.

    A copy, int64, the shape of one plane; None as for :func:`mask_prompt_plane`.
    """
    return _shown_plane(find_linked(viewer, coarse_layer, "mask region"), coarse_layer, plane, np.int64,
                        label_id)


def _region_mask_prompt(base: ObjectPrompts, region: np.ndarray):
    """``base`` with its Gaussian map mined from its painted region; None when its region is
    unedited (the support of the mined map) or of another shape."""
    label_id = int(base.label_id)
    mine = np.asarray(region) == label_id
    if np.array_equal(mine, base.gaussian_full(mine.shape) > 0):
        return None
    if not mine.any():  # all erased: no mask prompt (SAM gets -strength everywhere)
        return replace(base, gaussian=np.zeros_like(base.gaussian), mask_input=None)
    # the same mining as the coarse mask's (excavate_prompts), on the painted region as one object
    (mined,) = excavate_prompts(mine.astype(np.uint8), label_ids=[1], cebox=None, binary="one")
    return replace(base, gaussian=mined.gaussian, offset=mined.offset, mask_input=None)


def _own_mask_prompt(base: ObjectPrompts, image: np.ndarray, coarse_plane: np.ndarray):
    """``base`` with its Gaussian map read from the mask prompt ``image`` (see the module)."""
    label_id = int(base.label_id)
    if not (coarse_plane == label_id).any() or image.shape != coarse_plane.shape:
        return base
    mine = coarse_plane == label_id
    background = coarse_plane == 0
    if (image[background] > 0).any():  # painted beside the objects: each pixel to its nearest
        near = ndimage.distance_transform_edt(background, return_distances=False, return_indices=True)
        mine = coarse_plane[near[0], near[1]] == label_id
    values = np.where(mine, np.maximum(image, 0), 0).astype(np.float32)
    if np.array_equal(values, base.gaussian_full(coarse_plane.shape)):
        return base  # not edited: the mined map, bit for bit
    y0, x0 = (int(v) for v in base.offset)
    h, w = base.gaussian.shape
    rows, cols = np.nonzero(values > 0)
    if rows.size:  # the mined crop, grown to what was painted beyond it
        y0, x0 = min(y0, int(rows.min())), min(x0, int(cols.min()))
        h = max(base.offset[0] + h, int(rows.max()) + 1) - y0
        w = max(base.offset[1] + w, int(cols.max()) + 1) - x0
    return replace(base, gaussian=values[y0 : y0 + h, x0 : x0 + w], offset=(y0, x0), mask_input=None)


def select_object_prompts(viewer, coarse_layer, label_id: int) -> None:
    """Select object ``label_id``'s points and boxes in ``coarse_layer``'s prompt layers (to
    show them, and so that a drag moves them), and its label in the mask prompt region layer (the
    label the brush paints)."""
    for layer in prompt_layers(viewer, coarse_layer):
        if layer is not None:
            layer.selected_data = set(np.flatnonzero(_object_rows(layer, label_id)).tolist())
    region = find_linked(viewer, coarse_layer, "mask region")
    if region is not None:
        region.selected_label = int(label_id)


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
                        plane=None, mask_prompt: np.ndarray | None = None,
                        mask_region: np.ndarray | None = None) -> ObjectPrompts:
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
    mask_prompt : numpy.ndarray, optional
        The plane's mask prompt image (:func:`mask_prompt_plane`, maybe painted
        or erased): the object's Gaussian map is its part of it (see the
        module); None: the map mined from the coarse mask.
    mask_region : numpy.ndarray, optional
        The plane's mask prompt region labels (:func:`mask_region_plane`, maybe
        painted or erased): where the object's region (its id's pixels) differs
        from the mask its map was mined from, its Gaussian map is mined from the
        region instead (by :func:`~napari_samrefine.excavate_prompts`, as from a
        coarse mask), and ``mask_prompt`` is not read for it; an erased region
        gives no mask prompt.

    Returns
    -------
    ObjectPrompts
        In the plane's frame, as ``refine(..., prompts=...)`` takes them.
    """
    label_id = int(label_id)
    (base,) = excavate_prompts(coarse_plane, label_ids=[label_id], cebox=None)
    painted = None if mask_region is None else _region_mask_prompt(base, mask_region)
    if painted is not None:
        base = painted
    elif mask_prompt is not None:
        base = _own_mask_prompt(base, np.asarray(mask_prompt, np.float32), coarse_plane)
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


def object_inputs(viewer, image_layer, coarse_layer, label_id: int, plane=None):
    """What decoding object ``label_id`` of ``coarse_layer`` from its edited prompt layers needs,
    read now (on the GUI thread): ``(image_plane, coarse_plane, prompts)``, copies.

    Raises a ValueError saying what is missing (the prompt layers, the image).
    """
    points, boxes = prompt_layers(viewer, coarse_layer)
    if points is None and boxes is None:
        raise ValueError(f"No prompt layers of {coarse_layer.name!r}: excavate its prompts (Prompt "
                         "excavation widget), move, add or delete points or resize the box, then refine.")
    if image_layer is None:
        raise ValueError("Choose the image layer the refinement was made from.")
    lead = plane_index(plane)
    coarse_plane = np.array(coarse_layer.data[lead], copy=True)
    image_plane = np.array(layer_data(image_layer, like=coarse_layer.data.shape)[lead], copy=True)
    prompts = prompts_from_layers(points, boxes, coarse_plane, label_id, plane,
                                  mask_prompt_plane(viewer, coarse_layer, plane, label_id),
                                  mask_region_plane(viewer, coarse_layer, plane, label_id))
    return image_plane, coarse_plane, prompts


def refine_from_layers(viewer, image_layer, coarse_layer, load_sam, label_id: int, plane=None,
                       **options) -> tuple[np.ndarray, ObjectPrompts]:
    """Object ``label_id`` of ``coarse_layer`` refined again from its prompt layers in ``viewer``:
    its new mask (bool, the plane) and the prompts it was decoded from.

    :func:`object_inputs`, then :func:`refine_object`; ``load_sam()`` gives the
    model (called only when there is something to refine).
    """
    image_plane, coarse_plane, prompts = object_inputs(viewer, image_layer, coarse_layer, label_id, plane)
    return refine_object(image_plane, coarse_plane, load_sam(), prompts, **options), prompts
