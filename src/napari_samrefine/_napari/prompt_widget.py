"""The "Prompt excavation" dock widget: show the prompts SAMRefiner mines from each object."""

from __future__ import annotations

import copy

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox
from napari.layers import Image, Labels

from napari_samrefine._napari.field_help import set_help
from napari_samrefine._napari.layers import (
    current_plane,
    geometry,
    in_memory,
    layer_data,
    layer_field,
    plane_index,
    upsert_layer,
)
from napari_samrefine._napari.model_choice import ModelPicker
from napari_samrefine._napari.prompt_layers import (
    box_style,
    boxes_data,
    gaussian_data,
    object_colors,
    point_sizes,
    point_style,
    points_data,
    region_data,
)
from napari_samrefine._napari.refine_output import OBJECTS, missing_label_text
from napari_samrefine._napari.workers import TaskWidget
from napari_samrefine._progress import report
from napari_samrefine.engine.embedding import default_cache
from napari_samrefine.engine.encoder_progress import reporting_encoder
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.samrefiner.defaults import CEBOX_LAMBDA, NEGATIVE_POINT
from napari_samrefine.samrefiner.prompts import excavate_prompts

__all__ = ["PromptWidget", "show_prompts", "prompt_summary", "GAUSSIAN_OPACITY", "REGION_OPACITY"]

GAUSSIAN_OPACITY = 0.4
"""Opacity of the Gaussian mask prompt layer (added over the image, which stays visible)."""
REGION_OPACITY = 0.5
"""Opacity of the mask prompt region layer (the labels a user paints the mask prompt with)."""


def show_prompts(viewer, labels_layer, prompts, plane: int | None = None) -> dict:
    """Add or update the Labels, Points, Shapes and Image layers of ``prompts`` over ``labels_layer``.

    Returns the four layers by role ("mask region", "points", "boxes",
    "gaussian"). Each point and box has its object's colour in ``labels_layer``
    and is labelled with its id; the mask prompt region (a Labels layer with
    ``labels_layer``'s colours) holds each object's mask its Gaussian map was
    mined from, for the user to paint or erase.
    """
    name = labels_layer.name
    geo = geometry(labels_layer)
    colors = object_colors(labels_layer, [p.label_id for p in prompts])
    coords, point_features, point_colors = points_data(prompts, plane, colors)
    rects, box_features, box_colors = boxes_data(prompts, plane, colors)
    shape = layer_data(labels_layer).shape[-2:]
    gauss = gaussian_data(prompts, shape, plane)
    dtype = labels_layer.data.dtype
    region = region_data(prompts, shape, plane, dtype if np.issubdtype(dtype, np.integer) else np.int32)
    gauss_geo = dict(geo)
    lead = plane_index(plane)
    if lead:  # a one-plane image placed at its plane
        translate = list(geo["translate"])
        for axis, index in enumerate(lead):
            translate[axis] += index * geo["scale"][axis]
        gauss_geo["translate"] = tuple(translate)
    # napari fails on an empty colour array (no prompts): colours only when there are some;
    # each prompt in its object's colour in the labels layer, labelled with its id
    point_colors = {"face_color": point_colors, **point_style(point_features)} if len(coords) else {}
    box_colors = {"edge_color": box_colors, **box_style(box_features)} if len(rects) else {}
    # the mask prompt as a translucent glow over image and labels, points no bigger than
    # a quarter of their object
    sizes = {"size": point_sizes(prompts)} if len(coords) else {}
    layers = {
        # a Labels layer painted by a user is kept as it is (and a new one added)
        "mask region": upsert_layer(
            viewer, labels_layer, "mask region", "labels", region, name=f"{name} mask prompt region",
            colormap=copy.deepcopy(labels_layer.colormap), opacity=REGION_OPACITY, **gauss_geo,
        ),
        "gaussian": upsert_layer(
            viewer, labels_layer, "gaussian", "image", gauss, name=f"{name} Gaussian prompts",
            colormap="inferno", blending="additive", opacity=GAUSSIAN_OPACITY,
            contrast_limits=(0.0, 1.0), **gauss_geo,
        ),
        "boxes": upsert_layer(
            viewer, labels_layer, "boxes", "shapes", rects, name=f"{name} boxes",
            shape_type="rectangle", face_color="transparent", **box_colors,
            features=box_features, **geo,
        ),
        "points": upsert_layer(
            viewer, labels_layer, "points", "points", coords, name=f"{name} points",
            features=point_features, **sizes, **point_colors, **geo,
        ),
    }
    shown = [int(p.label_id) for p in prompts]
    for role in ("mask region", "gaussian"):  # whose mask prompts they hold (the others' are not shown)
        layers[role].metadata.setdefault("samrefine", {})["label_ids"] = shown
    return layers


def prompt_summary(prompts, labels_name: str, cebox: bool) -> str:
    """The prompt widget's status line after a run, in words."""
    if not prompts:
        return f"No object in {labels_name!r}: no prompts to show."
    n = len(prompts)
    which = f"label {prompts[0].label_id}" if n == 1 else f"{n} objects"
    text = f"Prompts of {which} shown"
    if not cebox:
        return f"{text} (tight boxes: tick 'grow boxes' to let them grow into the context)."
    expanded = sum(p.expanded for p in prompts)
    return f"{text}; boxes expanded by CEBox: {expanded} of {n}, the others kept tight."


class PromptWidget(TaskWidget):
    """Excavate prompts from a Labels layer and show them as Points, Shapes and Image layers.

    Without an image and a model, boxes stay tight (CEBox needs SAM's image
    embedding). On a 3D stack the current plane is used.
    """

    def __init__(self, napari_viewer, sam=None):
        super().__init__(napari_viewer, run_text="Excavate prompts")
        self.labels_layer = layer_field(napari_viewer, Labels, "labels")
        self.objects = ComboBox(label="objects", choices=list(OBJECTS), value="all objects")
        self.use_negative_point = CheckBox(text="negative point", value=NEGATIVE_POINT)
        self.use_cebox = CheckBox(text="grow boxes (CEBox: needs image + model)", value=False)
        self.image_layer = layer_field(napari_viewer, Image, "image")
        self.model = ModelPicker(sam)
        self.cebox = FloatSpinBox(
            label="box growth (CEBox)", value=CEBOX_LAMBDA, min=0.01, max=1.0, step=0.05
        )
        for field, key in (
            (self.labels_layer, "prompt labels"), (self.objects, "objects"),
            (self.use_negative_point, "negative point"), (self.use_cebox, "grow boxes"),
            (self.image_layer, "box image"), (self.cebox, "box growth"),
        ):  # fmt: skip
            set_help(field, key)
        self.extend([self.labels_layer, self.objects, self.use_negative_point, self.use_cebox,
                     self.image_layer, self.model, self.cebox])
        self.add_footer()
        self.use_cebox.changed.connect(self._cebox_toggled)
        self._cebox_toggled(False)

    def _cebox_toggled(self, on: bool) -> None:
        for w in (self.image_layer, self.model, self.cebox):
            w.visible = bool(on)

    def run(self, *_):
        """Excavate the prompts (in a worker thread) and show them."""
        labels_layer = self.labels_layer.value
        if labels_layer is None:
            self.say("Choose a Labels layer.", error=True)
            return
        plane = current_plane(self._viewer, labels_layer)
        # a copy: the user may paint while the prompts are excavated
        data = layer_data(labels_layer)
        labels = np.array(data if plane is None else data[plane], copy=True)
        ids = [int(labels_layer.selected_label)] if self.objects.value == "selected label" else None
        problem = ids and missing_label_text(labels, ids[0], labels_layer.name, "to excavate", plane)
        if problem:
            self.say(problem, error=True)
            return
        image = None
        if self.use_cebox.value:
            if self.image_layer.value is None:
                self.say("CEBox needs an image layer (and a model): choose one.", error=True)
                return
            data = layer_data(self.image_layer.value, like=layer_data(labels_layer).shape)
            image = in_memory(data if plane is None else data[plane])
            if image.shape[:2] != labels.shape:
                self.say(
                    f"Image {self.image_layer.value.name!r} {data.shape} and labels "
                    f"{labels_layer.name!r} {labels_layer.data.shape} differ in size.", error=True,
                )
                return
        self.launch(
            self._work, labels, image, ids,
            on_done=lambda prompts: self._done(prompts, labels_layer, plane), targets=(labels_layer,),
        )

    def _work(self, labels, image, ids):
        progress = self.progress_callback()
        embedding = None
        if image is not None:
            report(progress, 0, 2, "loading the model")
            sam = self.model.load(progress)
            report(progress, 1, 2, "encoding the image")
            with reporting_encoder(sam, progress):
                embedding = default_cache.get(sam, to_sam_rgb(image))
        report(progress, 1, 2, "excavating prompts")
        prompts = excavate_prompts(
            labels, embedding, label_ids=ids,
            cebox=float(self.cebox.value) if embedding is not None else None,
            use_negative_point=self.use_negative_point.value,
        )
        report(progress, 2, 2, "done")
        return prompts

    def _done(self, prompts, labels_layer, plane) -> None:
        show_prompts(self._viewer, labels_layer, prompts, plane)
        self.say(prompt_summary(prompts, labels_layer.name, cebox=self.use_cebox.value))
