"""What a refinement run puts into a viewer, shared by the refine widget and the script face.

Choosing layers by name (:func:`find_layer`), checking an image/labels pair,
turning the widget's objects and planes choices into ``refine`` arguments,
writing a result as a new layer or in place (one undo step), and the status
line in words. :mod:`.scripting` (the script face) and the widgets import
from here; nothing here imports a widget.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from napari_samrefine._napari.inplace import InPlaceEdit, plan_in_place
from napari_samrefine._napari.layers import (
    current_plane,
    features_table,
    geometry,
    layer_data,
    upsert_layer,
)
from napari_samrefine._napari.lazy_layers import result_layer_data
from napari_samrefine.pipeline.refiner import RefineResult
from napari_samrefine.samrefiner.summary import count_text, refine_summary, size_warnings

__all__ = [
    "find_layer",
    "apply_result",
    "write_result",
    "write_in_place",
    "result_summary",
    "missing_label_text",
    "check_pair",
    "scope_arguments",
    "OBJECTS",
    "PLANES",
]

OBJECTS = ("all objects", "selected label")
"""Which objects a run refines: every label, or the labels layer's selected label."""
PLANES = ("current plane", "current time point", "all planes")
"""Which planes of a stack a run refines: the one shown, every plane of the time point shown
(4D stacks), or all (2D layers have one plane)."""


def find_layer(viewer, layer, kind: str):
    """``layer`` itself, or the layer of that name in ``viewer``, checked to be a ``kind`` layer.

    Raises a ValueError naming the layers of that kind when there is none of that name, or
    when the layer is of another kind.
    """
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
    lab_shape = layer_data(labels_layer).shape
    img_shape = layer_data(image_layer, like=lab_shape).shape
    spatial = img_shape[:-1] if getattr(image_layer, "rgb", False) else img_shape
    if tuple(spatial) != tuple(lab_shape):
        raise ValueError(
            f"Image {image_layer.name!r} has shape {img_shape} but labels {labels_layer.name!r} "
            f"have shape {lab_shape}: choose layers of the same size (same crop, same scale)."
        )


def scope_arguments(objects: str, planes: str, viewer, labels_layer) -> dict:
    """``refine`` keyword arguments (label_ids, planes) for a widget's objects and planes choices.

    Parameters
    ----------
    objects : {"all objects", "selected label"}
    planes : {"current plane", "current time point", "all planes"}
        Ignored for 2D layers; "current time point" is for 4D (T, Z, Y, X) layers.
    viewer : napari.Viewer
    labels_layer : napari.layers.Labels
    """
    if objects not in OBJECTS:
        raise ValueError(f"objects must be one of {OBJECTS}, got {objects!r}")
    if planes not in PLANES:
        raise ValueError(f"planes must be one of {PLANES}, got {planes!r}")
    kwargs = {}
    if objects == "selected label":
        kwargs["label_ids"] = [int(labels_layer.selected_label)]
    plane = current_plane(viewer, labels_layer)
    if planes == "current time point" and not isinstance(plane, tuple):
        raise ValueError(
            f"'current time point' is for 4D (T, Z, Y, X) layers; {labels_layer.name!r} has "
            f"{labels_layer.ndim} dimensions: choose 'current plane' or 'all planes'."
        )
    if planes == "current plane" and plane is not None:
        kwargs["planes"] = [plane]
    elif planes == "current time point":
        kwargs["planes"] = [plane[0]]  # an int t: every z of that time point
    return kwargs


def write_in_place(labels_layer, result: RefineResult, snapshot=None) -> InPlaceEdit:
    """Write a refinement into ``labels_layer`` itself, as one undo step, keeping user edits.

    Only pixels of objects the refinement changed are written (see
    :mod:`napari_samrefine._napari.inplace`): an object the user edited since
    ``snapshot`` was taken is left as the user painted it. The pixels go through
    ``Labels.data_setitem``, one step of the layer's undo history (Ctrl+Z restores
    the labels as they were). The layer's ``features`` are not touched.

    Parameters
    ----------
    labels_layer : napari.layers.Labels
    result : RefineResult
        Computed from ``snapshot``.
    snapshot : numpy.ndarray, optional
        The labels the run started from; default the layer's labels now (a run
        that nobody could edit meanwhile, as in :func:`refine_layers`).

    Returns
    -------
    InPlaceEdit
        What was written (``changed`` objects) and what was left (``kept`` objects).
    """
    current = labels_layer.data
    snapshot = current if snapshot is None else snapshot
    edit = plan_in_place(snapshot, result.labels, current)
    if edit.size:
        labels_layer.data_setitem(edit.indices, edit.values)
    return edit


def write_result(
    viewer, labels_layer, result: RefineResult, output: Literal["new", "inplace"] = "new",
    snapshot=None, image_layer=None,
):  # fmt: skip
    """Put a refinement result into the viewer; returns the layer and the in-place edit.

    Like :func:`apply_result`, and also returns the :class:`InPlaceEdit` of an
    in-place write (None for a new layer).
    """
    if output not in ("new", "inplace"):
        raise ValueError(f"output must be 'new' or 'inplace', got {output!r}")
    table = result.table()
    edit = None
    if output == "inplace":
        edit = write_in_place(labels_layer, result, snapshot)
        layer = labels_layer  # its features stay the user's: the table goes to metadata only
    else:
        layer = upsert_layer(
            viewer, labels_layer, "refined", "labels", result_layer_data(result.labels, labels_layer),
            name=f"{labels_layer.name} refined", **geometry(labels_layer),
        )
        layer.features = features_table(table)  # every run's, stacks included
        if image_layer is not None:  # the image it ran on: the judge's query image (judge_roles)
            layer.metadata.setdefault("samrefine", {})["image"] = image_layer.unique_id
    layer.metadata["samrefine_table"] = table
    return layer, edit


def apply_result(
    viewer, labels_layer, result: RefineResult, output: Literal["new", "inplace"] = "new",
    snapshot=None, image_layer=None,
):  # fmt: skip
    """Put a refinement result into the viewer; returns the layer that holds it.

    ``"new"`` adds (or updates) the layer "<labels> refined" linked to
    ``labels_layer``, with the per-object table in its ``features``. ``"inplace"``
    writes the refined objects into ``labels_layer`` through ``Labels.data_setitem``,
    which is one step of the layer's undo history (Ctrl+Z restores the coarse
    labels); objects edited since ``snapshot`` are left as they are, and the
    layer's ``features`` are not touched. Either way the table is in the layer's
    ``metadata["samrefine_table"]``; a new layer's ``metadata["samrefine"]``
    links it to ``labels_layer`` (``source``) and to ``image_layer`` (``image``).

    Parameters
    ----------
    viewer : napari.Viewer
    labels_layer : napari.layers.Labels
        The coarse labels the result was computed from.
    result : RefineResult
    output : {"new", "inplace"}
    snapshot : numpy.ndarray, optional
        The labels the result was computed from (in-place output); default the
        layer's labels now.
    image_layer : napari.layers.Image, optional
        The image the result was computed from (recorded in a new layer).

    Returns
    -------
    napari.layers.Labels
    """
    return write_result(viewer, labels_layer, result, output, snapshot, image_layer)[0]


def result_summary(
    result: RefineResult, output: str, layer, edit: InPlaceEdit | None, labels_name: str | None = None,
) -> str:  # fmt: skip
    """The widget's status line after a refinement, in words.

    Parameters
    ----------
    result : RefineResult
    output : {"new", "inplace"}
    layer : napari.layers.Labels
        The layer the result went to.
    edit : InPlaceEdit or None
        What an in-place write changed (None for a new layer).
    labels_name : str, optional
        The coarse labels' name (in place, default ``layer``'s name).

    Examples
    --------
    "27 objects refined into 'nuclei coarse refined'.";
    "27 objects refined into 'nuclei coarse refined'; 1 label id not found (999).";
    "No object was refined: label 999 is not in 'nuclei coarse'."; followed by
    warnings such as "2 objects grew more than 4x (ids 5, 9): check them.". In
    place: "25 objects changed in place (Ctrl+Z undoes it); 2 objects you edited
    during the run were left as you painted them. 27 objects refined."
    """
    table = result.table()
    name = labels_name or (layer.name if output == "inplace" else None)
    headline, notes = refine_summary(table, result.mode, name)
    if output == "inplace":
        if edit is not None and edit.changed:
            text = f"{count_text(len(edit.changed), 'object')} changed in place (Ctrl+Z undoes it)"
        else:
            text = "Nothing changed in place"
        if edit is not None and edit.kept:
            one = len(edit.kept) == 1
            text += (
                f"; {count_text(len(edit.kept), 'object')} you edited during the run "
                f"{'was' if one else 'were'} left as you painted {'it' if one else 'them'}"
            )
        text = f"{text}. " + "; ".join([headline, *notes]) + "."
    else:
        if not headline.startswith("No "):
            headline += f" into {layer.name!r}"
        text = "; ".join([headline, *notes]) + "."
    return " ".join([text, *size_warnings(table)])


def missing_label_text(
    labels: np.ndarray, label_id: int, name: str, what: str = "to refine", plane: int | None = None,
) -> str | None:  # fmt: skip
    """Why ``label_id`` cannot be used with ``labels`` (None when it is there).

    A selected label that is not in the layer (napari's label field goes up to
    any number) is said in words before any work starts. ``plane``: the plane
    of a stack that ``labels`` is.
    """
    label_id = int(label_id)
    where = f"{name!r}" if plane is None else f"plane {plane} of {name!r}"
    if label_id == 0:
        return (f"Nothing {what}: label 0 is the background of {where}. Select an object's "
                "label (the label field of the layer controls, or the colour picker on an object).")
    if not np.any(labels == label_id):
        return (f"Nothing {what}: label {label_id} is not in {where}. Select a label that is "
                "there (the label field of the layer controls, or the colour picker on an object).")
    return None
