"""The script face of the widgets: each widget's work on a viewer's layers, from Python.

One function per widget, thin over the core function that widget calls and
over the layer code it uses, so a script (napari's console, a macro) gets the
widget's layers without clicking:

=====================  =========================  ======================================
widget                 function                   core
=====================  =========================  ======================================
SAM refine             :func:`refine_layers`      :func:`~napari_samrefine.refine`
Prompt excavation      :func:`excavate_layers`    :func:`~napari_samrefine.excavate_prompts`
JFS judge              :func:`judge_layers`       :func:`~napari_samrefine.judge_refinement`
IoU adaption           :func:`adapt_layers`       :func:`~napari_samrefine.adapt_iou_head`
Review refinement      :func:`decide_objects`,    :mod:`napari_samrefine.quality.review`
                       :func:`rerefine_object`
=====================  =========================  ======================================

Layers are given as layers or by name. The call runs on the calling thread (it
returns when done) and shows its progress in napari's activity dock
(:mod:`.activity`).

Example
-------
>>> import napari_samrefine as nsr                                   # doctest: +SKIP
>>> layer = nsr.refine_layers(viewer, image="nuclei", labels="nuclei coarse")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from napari_samrefine._napari.activity import activity_progress
from napari_samrefine._napari.adaption_widget import adaptor_note
from napari_samrefine._napari.judge_layers import show_judge_result
from napari_samrefine._napari.layers import current_plane, displayed_plane, in_memory, layer_data
from napari_samrefine._napari.lazy_layers import refine_inputs
from napari_samrefine._napari.prompt_widget import show_prompts
from napari_samrefine._napari.refine_output import (
    apply_result,
    check_pair,
    find_layer,
    missing_label_text,
    scope_arguments,
)
from napari_samrefine._napari.review_layers import decide_objects, rerefine_object
from napari_samrefine.engine.embedding import default_cache
from napari_samrefine.engine.encoder_progress import reporting_encoder
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.models.loading import resolve_sam
from napari_samrefine.models.profile import model_profile
from napari_samrefine.pipeline.options import OPTION_NAMES, RefineOptions
from napari_samrefine.pipeline.plane import plane_indices
from napari_samrefine.pipeline.refiner import refine
from napari_samrefine.samrefiner.defaults import NEGATIVE_POINT
from napari_samrefine.samrefiner.prompts import excavate_prompts

__all__ = [
    "refine_layers",
    "excavate_layers",
    "judge_layers",
    "adapt_layers",
    "decide_objects",
    "rerefine_object",
]


def refine_layers(
    viewer,
    image,
    labels,
    sam="vit_b_lm",
    *,
    output: Literal["new", "inplace"] = "new",
    objects: str = "all objects",
    planes="all planes",
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
    objects : {"all objects", "selected label"}
        Every object, or only the labels layer's selected label.
    planes : str, int, (t, z), list of them, or None
        The widget's choices: "all planes" (default), "current plane" (the
        plane the viewer shows) or "current time point" (4D: every plane of
        the time point shown); or plane indices exactly as
        :func:`napari_samrefine.refine` takes them (None: all; an index or a
        list of them for a 3D stack; (t, z) pairs and time points t for 4D),
        checked as ``refine`` checks them, before the model is loaded.
    **refine_kwargs
        Passed to :func:`napari_samrefine.refine` (mode, iterations, prompt switches, ...).

    Returns
    -------
    napari.layers.Labels
        The layer holding the refined labels; per-object results are in its
        ``metadata["samrefine_table"]`` and, for a new layer, its ``features``
        (in place, the layer's own ``features`` are left as they are).

    Notes
    -----
    Progress (the model loading, each encoder pass, each object) is shown in
    napari's activity dock while the call runs.
    """
    image_layer = find_layer(viewer, image, "image")
    labels_layer = find_layer(viewer, labels, "labels")
    check_pair(image_layer, labels_layer)
    if isinstance(planes, str):
        scope = scope_arguments(objects, planes, viewer, labels_layer)
    else:  # refine's own planes
        scope = {**scope_arguments(objects, "all planes", viewer, labels_layer), "planes": planes}
    kwargs = {**scope, **refine_kwargs}
    # refine's checks of its options and planes, before a model is loaded (maybe downloaded)
    RefineOptions(**{k: v for k, v in kwargs.items() if k in OPTION_NAMES})
    plane_indices(tuple(layer_data(labels_layer).shape), kwargs.get("planes"))
    inputs = refine_inputs(image_layer, labels_layer, output)
    if inputs.out is not None:
        kwargs.setdefault("out", inputs.out)
    with activity_progress(f"refining {labels_layer.name!r}") as progress:
        progress(0, 1, "loading the model")
        model = resolve_sam(sam, kwargs.get("device", "auto"))
        with reporting_encoder(model, progress):
            result = refine(inputs.image, inputs.labels, model, progress=progress, **kwargs)
    return apply_result(viewer, labels_layer, result, output, inputs.snapshot, image_layer)


def _plane_of(viewer, layer, plane):
    """The plane of ``layer`` a 2D face works on: ``plane``, or the one the viewer shows."""
    if layer.ndim == 2:
        if plane is not None:
            raise ValueError(f"{layer.name!r} is 2D: leave plane=None.")
        return None
    if plane is None:
        return current_plane(viewer, layer)
    lead = (plane,) if np.isscalar(plane) else tuple(plane)
    shape = layer_data(layer).shape[: layer.ndim - 2]
    if len(lead) != len(shape) or not all(0 <= int(p) < n for p, n in zip(lead, shape, strict=True)):
        raise ValueError(f"plane {plane!r} is not a plane of {layer.name!r} (its planes: {shape}).")
    return int(lead[0]) if len(lead) == 1 else tuple(int(p) for p in lead)


def excavate_layers(
    viewer,
    labels,
    image=None,
    sam=None,
    *,
    label_ids: Iterable[int] | None = None,
    plane=None,
    use_negative_point: bool = NEGATIVE_POINT,
    cebox: float | None = None,
) -> dict:
    """Show the prompts mined from a Labels layer as layers, as the "Prompt excavation" widget does.

    Parameters
    ----------
    viewer : napari.Viewer
    labels : str or napari.layers.Labels
    image : str or napari.layers.Image, optional
        Needed with ``cebox`` only (CEBox reads SAM's image embedding).
    sam : Sam, str or path, optional
        Needed with ``cebox`` only.
    label_ids : iterable of int, optional
        Only these objects (default all).
    plane : int, (t, z) or None
        The plane of a stack (default the one the viewer shows); None for 2D.
    use_negative_point : bool
    cebox : float, optional
        Grow the boxes into their context with this lambda (CEBox); default
        tight boxes.

    Returns
    -------
    dict
        The layers by role: "points" (Points: ``features`` ``label_id`` and
        ``kind`` positive/negative), "boxes" (Shapes: ``label_id`` and ``kind``
        tight/cebox), "gaussian" (Image: the Gaussian mask prompts) and "mask
        region" (Labels: each object's mask its Gaussian map is mined from).
        Run again, it updates them (a region layer painted since is kept and a
        new one added). Edited (points moved, added, deleted; boxes moved or
        resized; a region painted or erased), they are what
        :func:`rerefine_object` reads.
    """
    labels_layer = find_layer(viewer, labels, "labels")
    plane = _plane_of(viewer, labels_layer, plane)
    lead = () if plane is None else ((plane,) if np.isscalar(plane) else plane)
    coarse = np.array(layer_data(labels_layer)[lead], copy=True)
    ids = None if label_ids is None else [int(i) for i in label_ids]
    for label_id in ids or ():
        problem = missing_label_text(coarse, label_id, labels_layer.name, "to excavate", plane)
        if problem:
            raise ValueError(problem)
    embedding = None
    if cebox is not None:
        if image is None or sam is None:
            raise ValueError("CEBox needs the image and a model: pass image=... and sam=..., or cebox=None.")
        image_layer = find_layer(viewer, image, "image")
        check_pair(image_layer, labels_layer)
        picture = in_memory(layer_data(image_layer, like=layer_data(labels_layer).shape)[lead])
        with activity_progress(f"prompts of {labels_layer.name!r}") as progress:
            progress(0, 1, "loading the model")
            model = resolve_sam(sam)
            with reporting_encoder(model, progress):
                embedding = default_cache.get(model, to_sam_rgb(picture))
            progress(1, 1, "done")
    prompts = excavate_prompts(coarse, embedding, label_ids=ids, cebox=cebox,
                               use_negative_point=use_negative_point)
    return show_prompts(viewer, labels_layer, prompts, plane)


def _pairs(viewer, pairs) -> list:
    """(Image, Labels) layer pairs from pairs of layers or names (one pair alone too)."""
    if isinstance(pairs, tuple) and len(pairs) == 2 and not isinstance(pairs[0], (tuple, list)):
        pairs = [pairs]
    out = []
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"each pair is (image, labels), got {pair!r}")
        image, labels = find_layer(viewer, pair[0], "image"), find_layer(viewer, pair[1], "labels")
        check_pair(image, labels)
        out.append((image, labels))
    if not out:
        raise ValueError("Give at least one (image, labels) pair of layers.")
    return out


def judge_layers(viewer, image, coarse, refined, support: Sequence, sam="vit_b_lm", **judge_kwargs) -> dict:
    """Judge a refinement object by object (JFS) and show the verdicts, as the "JFS judge" widget does.

    The plane each layer shows in the viewer is judged (2D layers whole), and
    the results are drawn on that plane.

    Parameters
    ----------
    viewer : napari.Viewer
    image : str or napari.layers.Image
        The query image.
    coarse, refined : str or napari.layers.Labels
        Its coarse labels and their refinement (same ids).
    support : (image, labels) pair or list of pairs
        Support pairs: Image and Labels layers (or names) with trusted labels
        of the same kind of objects.
    sam : Sam, str or path
        The model of the "sam" backend.
    **judge_kwargs
        Passed to :func:`napari_samrefine.judge_refinement` (``k``, ``tau``,
        ``masking``, ``label_ids``, ``backend``, ``return_predictions`` ...).

    Returns
    -------
    dict
        The layers by name: "verdicts" (improved, degraded, uncertain by
        colour), "accepted" (refined where improved, coarse elsewhere; its
        ``features`` is the per-object table) and, with
        ``return_predictions=True``, "SMP1 n" and "SMP2 n" over support image n.
    """
    from napari_samrefine.judge.jfs import judge_refinement

    image_layer = find_layer(viewer, image, "image")
    coarse_layer, refined_layer = find_layer(viewer, coarse, "labels"), find_layer(viewer, refined, "labels")
    if coarse_layer is refined_layer:
        raise ValueError("Coarse and refined labels are the same layer: give two layers.")
    check_pair(image_layer, coarse_layer)
    check_pair(image_layer, refined_layer)
    pairs = _pairs(viewer, support)

    def plane(layer):  # what the widget judges: the plane shown
        return np.array(displayed_plane(viewer, layer), copy=True)

    with activity_progress(f"judging {refined_layer.name!r}") as progress:
        model = None
        if judge_kwargs.get("backend", "sam") == "sam":
            progress(0, 1, "loading the model")
            model = resolve_sam(sam)
        with reporting_encoder(model, progress):
            result = judge_refinement(
                plane(image_layer), plane(coarse_layer), plane(refined_layer),
                [plane(i) for i, _ in pairs], [plane(j) for _, j in pairs],
                sam=model, progress=progress, **judge_kwargs,
            )  # fmt: skip
    return show_judge_result(viewer, result, refined_layer, pairs, result.table())


def adapt_layers(viewer, pairs, sam="vit_b_lm", *, output=None, epochs: int = 1, **adapt_kwargs):
    """Train an IoU adaptor (SAMRefiner++) on layer pairs, as the "IoU adaption" widget does.

    Parameters
    ----------
    viewer : napari.Viewer
    pairs : (image, labels) pair or list of pairs
        Image and Labels layers (or names); the labels are coarse masks (no
        annotation needed).
    sam : Sam, str or path
    output : str or path, optional
        Save the adaptor there (the refine widget's "IoU adaptor" field and
        ``refine(..., iou_adaptor=load_iou_adaptor(path))`` read it).
    epochs : int
    **adapt_kwargs
        Passed to :func:`napari_samrefine.adapt_iou_head`.

    Returns
    -------
    IoUAdaptor
        Its ``metadata`` holds the training's numbers (``train_top1_before``,
        ``train_top1_after`` ...).
    """
    import warnings

    from napari_samrefine.adaption.training import adapt_iou_head

    chosen = _pairs(viewer, pairs)
    images = [in_memory(layer_data(img, like=layer_data(lab).shape)) for img, lab in chosen]
    labels = [np.array(layer_data(lab), copy=True) for _, lab in chosen]
    with activity_progress("training an IoU adaptor") as progress:
        progress(0, 1, "loading the model")
        model = resolve_sam(sam)
        with reporting_encoder(model, progress):
            adaptor = adapt_iou_head(model, images, labels, epochs=epochs, progress=progress, **adapt_kwargs)
    note = adaptor_note(model_profile(model))
    if note:  # measured for this model: the widget says it too
        warnings.warn(note, UserWarning, stacklevel=2)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        adaptor.save(output)
    return adaptor
