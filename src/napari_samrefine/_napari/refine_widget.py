"""The "SAM refine" dock widget: a thin form over :func:`napari_samrefine.refine`."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox
from napari.layers import Image, Labels
from napari.utils.notifications import show_warning

from napari_samrefine._napari.field_help import HELP, set_help
from napari_samrefine._napari.layers import in_memory, layer_field
from napari_samrefine._napari.lazy_layers import refine_inputs
from napari_samrefine._napari.model_choice import ModelPicker
from napari_samrefine._napari.refine_output import (
    OBJECTS,
    PLANES,
    check_pair,
    missing_label_text,
    result_summary,
    scope_arguments,
    write_result,
)
from napari_samrefine._napari.workers import TaskWidget
from napari_samrefine._progress import report
from napari_samrefine.engine.encoder_progress import reporting_encoder
from napari_samrefine.models.profile import SAM_PROFILE, RefineDefaults, untrained_prompts
from napari_samrefine.pipeline.options import DEFAULTS, RefineOptions
from napari_samrefine.pipeline.refiner import refine

__all__ = ["RefineWidget"]


MODEL_DEFAULT = "model default"
"""What the iterations and keep fields show for refine's None: the chosen model's default."""

MAX_ITERATIONS = 20
"""The most iterations the form offers (refine takes any number)."""

SCALES = [("auto", "auto"), ("none", "none"), *((f"{s:g}x", f"{s:g}") for s in (1, 1.5, 2, 3, 4))]
"""The object scale field's choices: refine's scale="auto", None or a zoom."""


def _cebox(mode: str) -> float:
    """The box growth field's value for ``mode``: refine's cebox="auto" (0 = off)."""
    return RefineOptions(mode=mode).cebox_lambda or 0.0


def _scale(choice: str):
    """refine's ``scale`` for a choice of :data:`SCALES`."""
    if choice in ("auto", "none"):
        return None if choice == "none" else choice
    return float(choice)


def model_default_notes(defaults: RefineDefaults) -> dict[str, str]:
    """The sentence each field's tooltip adds about the chosen model's default, by help key."""
    n = defaults.iterations
    size = defaults.object_size
    zoom = (
        f"'auto' zooms each object to {size[0]:g}-{size[1]:g} px of its input (at most "
        f"{defaults.max_scale:g}x)." if size else "'auto' shows it the image as 'none' does "
        "(its best object size is not measured)."
    )
    return {
        "iterations": f"This model's default: {n} iteration{'s' if n != 1 else ''}.",
        "keep": f"This model's default: {defaults.keep}.",
        "object scale": f"This model's default: {zoom}",
    }


class RefineWidget(TaskWidget):
    """Refine the objects of a Labels layer with SAM, in a worker thread.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
    sam : segment_anything.modeling.Sam, optional
        A model to use instead of the model field (scripts, tests); also settable
        later as ``widget.model.sam``.

    Attributes
    ----------
    last_table : pandas.DataFrame or None
        Per-object results of the last refinement that was written (status,
        predicted IoU, iterations, areas, label-free estimates).

    Notes
    -----
    A run refines a copy of the labels taken when Refine is pressed. In-place
    output then writes only the objects the run changed, and leaves every
    object the user edited during the run as the user painted it.
    """

    def __init__(self, napari_viewer, sam=None):
        super().__init__(napari_viewer, run_text="Refine")
        self.last_table = None
        self.image_layer = layer_field(napari_viewer, Image, "image")
        self.labels_layer = layer_field(napari_viewer, Labels, "coarse labels")
        self.model = ModelPicker(sam)
        self.mode = ComboBox(
            label="masks are", value=DEFAULTS.mode,
            choices=[("instances", "instance"), ("semantic classes", "semantic")],
        )
        self.use_points = CheckBox(text="points", value=True)
        self.use_negative_point = CheckBox(text="negative point", value=True)
        self.use_box = CheckBox(text="box", value=True)
        self.use_mask = CheckBox(text="Gaussian mask prompt", value=True)
        self.cebox = FloatSpinBox(
            label="box growth (CEBox)", value=_cebox(DEFAULTS.mode), min=0.0, max=1.0, step=0.05
        )
        # 0 stands for refine's None (the model's default), shown as "model default"
        self.iterations = ComboBox(
            label="iterations", value=DEFAULTS.iterations or 0,
            choices=[(MODEL_DEFAULT, 0), *((str(n), n) for n in range(1, MAX_ITERATIONS + 1))],
        )
        self.keep = ComboBox(
            label="keep", value=DEFAULTS.keep or MODEL_DEFAULT,
            choices=[MODEL_DEFAULT, "refined", "better"],
        )
        self.scale = ComboBox(label="object scale", value="auto", choices=SCALES)
        self.objects = ComboBox(label="objects", choices=list(OBJECTS), value="all objects")
        self.planes = ComboBox(label="planes", choices=self._plane_choices, value="current plane")
        self.output = ComboBox(
            label="output", choices=[("new layer", "new"), ("in place (undoable)", "inplace")],
            value="new",
        )
        self.adaptor = FileEdit(label="IoU adaptor", mode="r", filter="*.pt", value="")
        for field, key in (
            (self.image_layer, "image"), (self.labels_layer, "coarse labels"), (self.mode, "mode"),
            (self.use_points, "points"), (self.use_negative_point, "negative point"),
            (self.use_box, "box"), (self.use_mask, "mask prompt"), (self.cebox, "box growth"),
            (self.iterations, "iterations"), (self.keep, "keep"), (self.scale, "object scale"),
            (self.objects, "objects"), (self.planes, "planes"),
            (self.output, "output"), (self.adaptor, "IoU adaptor"),
        ):  # fmt: skip
            set_help(field, key)
        self.extend([
            self.image_layer, self.labels_layer, self.model, self.mode, self.use_points,
            self.use_negative_point, self.use_box, self.use_mask, self.cebox, self.iterations,
            self.keep, self.scale, self.objects, self.planes, self.output, self.adaptor,
        ])
        self.add_footer()
        self.mode.changed.connect(self._mode_changed)
        self.model.on_choice(self._profile_changed)
        self.labels_layer.changed.connect(self._labels_changed)
        self._labels_changed(self.labels_layer.value)

    def _labels_changed(self, layer) -> None:
        # the planes choice only means something for a stack; time points for 4D ones
        self.planes.visible = layer is not None and layer.ndim > 2
        self.planes.reset_choices()

    def _plane_choices(self, _widget=None) -> list[str]:
        layer = getattr(self, "labels_layer", None)
        ndim = 0 if layer is None or layer.value is None else layer.value.ndim
        return [p for p in PLANES if ndim == 4 or p != "current time point"]

    def _mode_changed(self, mode: str) -> None:
        # CEBox is an instance-mode prompt (SPEC section 2): refine's cebox="auto"
        self.cebox.value = _cebox(mode)

    def _profile_changed(self, profile) -> None:
        # each model starts with the prompts it was trained with; the user may still change them
        # the fields that say "model default" name this model's (nothing for a file not loaded)
        notes = {} if profile is None else model_default_notes(profile.defaults)
        profile = profile or SAM_PROFILE
        for box, kind in ((self.use_points, "points"), (self.use_negative_point, "points"),
                          (self.use_box, "box"), (self.use_mask, "mask")):
            box.value = profile.trained_with(kind)
            key = "mask prompt" if box is self.use_mask else box.text
            untrained = "" if box.value else " This model was not trained with this prompt."
            box.tooltip = HELP[key] + untrained
        for field, key in ((self.iterations, "iterations"), (self.keep, "keep"),
                           (self.scale, "object scale")):
            field.tooltip = HELP[key] + (" " + notes[key] if key in notes else "")

    def refine_kwargs(self) -> dict:
        """The :func:`refine` options the form describes (without model and data), checked.

        Raises
        ------
        ValueError
            For a choice that does not fit the layers (e.g. 'current time point' on 3D),
            or an option :class:`RefineOptions` refuses.
        """
        kwargs = dict(
            mode=self.mode.value,
            iterations=int(self.iterations.value) or None,
            keep=None if self.keep.value == MODEL_DEFAULT else self.keep.value,
            scale=_scale(self.scale.value),
            use_points=self.use_points.value,
            use_negative_point=self.use_negative_point.value,
            use_box=self.use_box.value,
            use_mask=self.use_mask.value,
            cebox=float(self.cebox.value) or None,
        )
        kwargs.update(scope_arguments(
            self.objects.value, self.planes.value, self._viewer, self.labels_layer.value
        ))
        RefineOptions(**kwargs)  # checked here, before the worker starts
        path = str(self.adaptor.value)
        if path not in ("", "."):
            from napari_samrefine.adaption.adaptor import load_iou_adaptor

            kwargs["iou_adaptor"] = load_iou_adaptor(Path(path))
        return kwargs

    def run(self, *_):
        """Start refining (the Refine button); returns immediately, the work runs in a thread."""
        image_layer, labels_layer = self.image_layer.value, self.labels_layer.value
        try:
            check_pair(image_layer, labels_layer)
            kwargs = self.refine_kwargs()
        except (ValueError, FileNotFoundError) as err:
            self.say(str(err), error=True)
            return
        output = self.output.value
        try:
            inputs = refine_inputs(image_layer, labels_layer, output)
        except ValueError as err:
            self.say(str(err), error=True)
            return
        planes = kwargs.get("planes")
        plane = planes[0] if planes else None
        for label_id in kwargs.get("label_ids", ()):  # "selected label": one that is there
            if inputs.lazy and plane is None:
                break  # a whole slide is not read here: refine reports an id it does not find
            problem = missing_label_text(
                in_memory(inputs.labels[plane] if plane is not None else inputs.labels),
                label_id, labels_layer.name, plane=plane,
            )  # fmt: skip
            if problem:
                self.say(problem, error=True)
                return
        if inputs.out is not None:
            kwargs["out"] = inputs.out
        untrained = untrained_prompts(self.model.profile, kwargs)
        note = f" (the model was not trained with {' and '.join(untrained)} prompts)" if untrained else ""
        profile = self.model.profile
        # measured for this model: an IoU adaptor made its masks worse (the profile says so)
        warn = profile.defaults.adaptor_note if profile is not None and "iou_adaptor" in kwargs else ""
        self.say(f"Refining {labels_layer.name!r}{note} ...")
        if warn:
            show_warning(warn)
        self.launch(
            self._work, inputs.image, inputs.labels, kwargs,
            on_done=lambda result: self._done(result, labels_layer, inputs.snapshot, output, warn, image_layer),
            targets=(labels_layer,),
        )

    def _work(self, image, labels, kwargs):
        progress = self.progress_callback()
        report(progress, 0, 1, "loading the model")
        sam = self.model.load(progress)
        if "iou_adaptor" in kwargs:
            kwargs["iou_adaptor"].check_model(sam)
        with reporting_encoder(sam, progress):  # the bar moves, Cancel acts, inside a pass
            return refine(image, labels, sam, progress=progress, **kwargs)

    def _done(self, result, labels_layer, snapshot, output: str, warn: str = "", image_layer=None) -> None:
        layer, edit = write_result(self._viewer, labels_layer, result, output, snapshot, image_layer)
        self.last_table = result.table()
        summary = result_summary(result, output, layer, edit, labels_name=labels_layer.name)
        self.say(f"{summary} Warning: {warn}" if warn else summary)
