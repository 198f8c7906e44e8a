"""The "JFS judge" dock widget: was the refinement an improvement, object by object?

A thin face over :func:`napari_samrefine.judge_refinement`: choose the query
image, its coarse and refined Labels layers and one or more support
Image + Labels pairs; the judging runs in a worker thread with a progress bar
and a cancel button. Before a run the status line says what the run will do
(and how long a pass of the model took, when one was timed in this session);
during it, the time left, measured from the run's pace (:mod:`.judge_estimate`). Results
(:mod:`.judge_layers`): a verdict layer (improved green, degraded red,
uncertain yellow, could not judge grey, as the legend under the form says; hovering shows the
verdict's name), an "accepted" Labels layer (refined where improved, coarse
elsewhere) whose ``features`` hold the per-object table (also
``widget.last_table``, and a CSV on request) and, when asked, the support mask
predictions SMP1 / SMP2 over each support image. On stacks the displayed
plane is judged and the results are drawn on that plane only. The chosen
layers themselves are never changed (their ``features`` included); the judge
works on copies of the planes taken when Judge is pressed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)  # fmt: skip
from napari.layers import Image, Labels
from qtpy.QtCore import Qt

from napari_samrefine._napari.field_help import JUDGE_HELP
from napari_samrefine._napari.judge_estimate import (
    DefaultK,
    PlanTrigger,
    TimeLeft,
    format_duration,
    pass_key,
    pass_seconds,
    plan_text,
    timing_passes,
)
from napari_samrefine._napari.judge_layers import (
    VERDICT_COLORS,
    legend_html,
    on_plane,
    show_judge_result,
)
from napari_samrefine._napari.judge_roles import LayerRoles
from napari_samrefine._napari.layers import displayed_plane, is_refined_layer, layer_field
from napari_samrefine._napari.model_choice import ModelPicker
from napari_samrefine._napari.pairs import LayerPairs
from napari_samrefine._napari.refine_output import OBJECTS
from napari_samrefine._napari.workers import TaskWidget
from napari_samrefine._progress import report
from napari_samrefine.engine.encoder_progress import reporting_encoder
from napari_samrefine.judge.crops import support_candidates
from napari_samrefine.judge.fss_seggpt import DEFAULT_MODEL
from napari_samrefine.judge.verdicts import UNJUDGED
from napari_samrefine.labels.objects import object_slices

__all__ = ["JudgeWidget", "VERDICT_COLORS"]



class JudgeWidget(TaskWidget):
    """Judge a refinement with few-shot segmentation (JFS) on the viewer's layers.

    On stacks, the plane the viewer shows is judged, and the results are
    drawn on that plane.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer holding the image, label and support layers.
    sam : segment_anything.modeling.Sam, optional
        The model of the "sam" backend instead of the model field (scripts,
        tests); also settable later as ``widget.model.sam``.

    Attributes
    ----------
    result : JudgeResult or None
        The last result.
    last_table : pandas.DataFrame or None
        Its per-object table (also the ``features`` of the "accepted" layer).
    clock : TimeLeft or None
        The time left of the running (or last) run.
    """

    failed_text = "Judging failed"

    def __init__(self, napari_viewer, sam=None):
        super().__init__(napari_viewer, run_text="Judge")
        self.result = self.last_table = self.clock = None
        roles = LayerRoles(napari_viewer, self)
        self._image = layer_field(napari_viewer, Image, "query image", prefer=roles.query_image)
        self._coarse = layer_field(napari_viewer, Labels, "coarse labels", prefer=roles.coarse)
        self._refined = layer_field(napari_viewer, Labels, "refined labels", prefer=is_refined_layer)
        self._scope = ComboBox(label="objects", choices=list(OBJECTS), value=OBJECTS[0])
        self.supports = LayerPairs(
            napari_viewer, self.say, image_label="support image", labels_label="support labels",
            list_label="support pairs", add_text="Add support pair",
            prefer_image=roles.support_image, prefer_labels=roles.support_labels,
        )  # fmt: skip
        for field in (self._image, self._coarse, self.supports.image_layer, self.supports.labels_layer):
            field.preselect()  # again, now that every field is there to tell the roles apart
        self._backend = ComboBox(label="backend", choices=["sam", "seggpt"], value="sam")
        self.model = ModelPicker(sam)
        self._seggpt = LineEdit(label="SegGPT model", value=DEFAULT_MODEL)
        self._masking = ComboBox(label="masking", choices=["hm", "fm", "im"], value="hm")
        self._tau = FloatSpinBox(label="tau", value=0.02, min=0.0, max=1.0, step=0.01)
        self._k = SpinBox(label="k (supports per object)", value=3, min=1, max=50)
        self._show_smp = CheckBox(text="show support mask predictions (SMP1, SMP2)", value=False)
        self._legend = Label(label="verdicts", value=legend_html())
        self._legend.native.setTextFormat(Qt.TextFormat.RichText)
        self._legend.native.setWordWrap(True)  # the legend wraps rather than widen the dock
        self._csv = FileEdit(label="table CSV", mode="w", filter="*.csv", value="")
        self._save = PushButton(text="Save table")
        self.extend([
            self._image, self._coarse, self._refined, self._scope, self.supports, self._backend,
            self.model, self._seggpt, self._masking, self._tau, self._k, self._show_smp,
        ])  # fmt: skip
        self.add_footer()
        self.extend([self._legend, self._csv, self._save])
        _set_tooltips(self)
        self._k_default = DefaultK(self._k, self._device)  # k follows the device until set
        self._backend_changed()
        self._backend.changed.connect(self._backend_changed)
        self._save.changed.connect(self.save_table)
        self._trigger = PlanTrigger(
            napari_viewer, lambda: self._refined.value, self.show_plan,
            busy=lambda: self.busy or self.closed,
        )  # fmt: skip
        for w in (self._image, self._coarse, self._refined, self._scope, self._backend,
                  self._masking, self._k, self.model, self._seggpt, self.supports):  # fmt: skip
            w.changed.connect(self._trigger.changed)
        self.model.changed.connect(self._k_default.update)

    def add_support_pair(self, image: Image, labels: Labels) -> None:
        """Add a support (image, labels) layer pair (scripting and tests)."""
        self.supports.add(image, labels)

    def _backend_changed(self, *_):
        sam = self._backend.value == "sam"
        self._masking.enabled = sam
        self.model.visible, self._seggpt.visible = sam, not sam
        self._k_default.update()

    def _device(self) -> str:
        """The device of the run: the given model's, the device field's; SegGPT runs on the CPU."""
        if self._backend.value == "seggpt":
            return "cpu"
        if self.model.sam is not None:
            return str(next(self.model.sam.parameters()).device)
        return self.model.device

    def show_plan(self) -> None:
        """Show in the status line what judging the current choices will do (no model is run)."""
        if self.busy or self.closed:
            return
        try:
            kwargs, *_ = self._inputs()
        except ValueError as err:  # nothing to say until the choices are complete
            if "Nothing to judge" in str(err):
                self.say(str(err))
            return
        self.say(self._plan(kwargs))

    def _plan(self, kwargs: dict) -> str:
        """The before-run text: objects and supports counted, a pass timed in this session."""
        ids = object_slices(kwargs["coarse_labels"])
        if kwargs["label_ids"] is not None:
            ids = [i for i in kwargs["label_ids"] if i in ids]
        candidates = len(support_candidates(kwargs["support_labels"]))
        return plan_text(
            len(ids), kwargs["k"], candidates, len(kwargs["support_labels"]),
            pass_seconds(self._pass_key()), self._backend.value,
        )  # fmt: skip

    def _pass_key(self) -> tuple:
        """What this run's model passes are timed under (see :func:`.judge_estimate.pass_key`)."""
        if self._backend.value == "seggpt":
            return pass_key(choice=("seggpt", self._seggpt.value))
        if self.model.sam is not None:
            return pass_key(self.model.sam)
        try:
            return pass_key(choice=(self.model.spec, self._device()))
        except (ValueError, OSError):  # no checkpoint chosen yet: nothing was timed for it
            return pass_key(choice=None)

    def _inputs(self) -> tuple[dict, Labels, list[tuple[Image, Labels]]]:
        image, coarse, refined = self._image.value, self._coarse.value, self._refined.value
        if image is None or coarse is None or refined is None:
            raise ValueError("Choose the query image, its coarse labels and its refined labels.")
        if coarse is refined:
            raise ValueError("Coarse and refined labels are the same layer: choose two layers.")
        pairs = self.supports.chosen()
        if not pairs:
            raise ValueError("Choose a support image and its labels (or add support pairs).")
        v = self._viewer

        def plane(layer):  # a copy: the user may paint while the judge runs
            return np.array(displayed_plane(v, layer), copy=True)

        kwargs = {
            "image": plane(image),
            "coarse_labels": plane(coarse),
            "refined_labels": plane(refined),
            "support_image": [plane(i) for i, _ in pairs],
            "support_labels": [plane(j) for _, j in pairs],
            "backend": self._backend.value,
            "masking": self._masking.value,
            "tau": float(self._tau.value),
            "k": int(self._k.value),
            "seggpt_model": self._seggpt.value,
            "return_predictions": bool(self._show_smp.value),
            "label_ids": None,
        }
        if self._scope.value == "selected label":
            kwargs["label_ids"] = [self._selected(kwargs, coarse, refined)]
        return kwargs, refined, pairs

    def _selected(self, kwargs: dict, coarse: Labels, refined: Labels) -> int:
        """The refined layer's selected label, checked against the displayed planes."""
        lid = int(refined.selected_label)
        plane = on_plane(self._viewer, refined)[0]
        where = "" if plane is None else f" on plane {', '.join(map(str, plane))}"
        fix = ("Select an object's label (the label field of the layer controls, or the colour "
               "picker on an object), or choose objects 'all objects'.")  # fmt: skip
        if lid == 0:
            raise ValueError(f"Nothing to judge: the selected label of {refined.name!r} is 0, "
                             f"the background. {fix}")  # fmt: skip
        if not np.any(kwargs["coarse_labels"] == lid):
            where_else = "only in the refined labels" if np.any(kwargs["refined_labels"] == lid) else (
                f"in neither {coarse.name!r} nor {refined.name!r}")  # fmt: skip
            raise ValueError(f"Nothing to judge: label {lid} (selected in {refined.name!r}) is "
                             f"{where_else}{where}. {fix}")  # fmt: skip
        return lid

    def run(self, *_):
        """Judge in a worker thread (the "Judge" button)."""
        self._trigger.timer.stop()
        try:
            kwargs, refined, pairs = self._inputs()
        except ValueError as err:
            self.say(str(err), error=True)
            return
        self.say(self._plan(kwargs))
        # the result layers are linked to the refined layer (and the SMPs to the support images)
        targets = [refined, *(img for img, _ in pairs)] if kwargs["return_predictions"] else [refined]
        self.clock = clock = TimeLeft()
        self.launch(
            self._work, kwargs, clock, self._pass_key(),
            on_done=lambda result: self._done(result, refined, pairs, clock), targets=targets,
        )  # fmt: skip

    def _work(self, kwargs: dict, clock: TimeLeft, key: tuple):
        from napari_samrefine.judge import judge_refinement

        bar = self.progress_callback()

        def progress(done: int, total: int, message: str = "") -> None:
            bar(done, total, clock.text(message))

        def judged(done: int, total: int, message: str = "") -> None:  # the judge's own reports
            clock.step(done, total)
            progress(done, total, message)

        report(progress, 0, 1, "loading the model")
        if kwargs["backend"] == "sam":
            kwargs["sam"] = self.model.load(progress)
            timed = kwargs["sam"].image_encoder
        else:
            kwargs["backend"] = fss = _seggpt(kwargs.pop("seggpt_model"))
            timed = fss.model
        with (
            reporting_encoder(kwargs.get("sam"), progress),  # SegGPT: no SAM, nothing to hook
            timing_passes(timed, key),  # for the text before the next runs
        ):
            return judge_refinement(**kwargs, progress=judged)

    def _done(self, result, refined: Labels, pairs, clock: TimeLeft) -> None:
        self.result = result
        self.last_table = table = result.table()
        show_judge_result(self._viewer, result, refined, pairs, table)
        if table.empty:
            self.say("No object was judged: the coarse and refined labels hold no object here.")
            return
        counts = table["verdict"].value_counts()
        took = clock.elapsed()
        unjudged = counts.get(UNJUDGED, 0)  # both predictions missed: no verdict
        self.say(
            f"{len(table)} objects: {counts.get('improved', 0)} improved, "
            f"{counts.get('degraded', 0)} degraded, {counts.get('uncertain', 0)} uncertain"
            + (f", {unjudged} could not judge (both predictions missed)" if unjudged else "")
            + (f" (judged in {format_duration(took)})." if took is not None else ".")
        )

    def save_table(self, *_) -> Path | None:
        """Write the last table to the chosen CSV file (the "Save table" button)."""
        value = str(self._csv.value)
        if self.result is None:
            self.say("Nothing to save yet: run the judge first.", error=True)
            return None
        if value in ("", "."):
            self.say("Choose a CSV file name first.", error=True)
            return None
        path = Path(value)
        path = path if path.suffix else path.with_suffix(".csv")
        from napari_samrefine.io import write_table  # atomic, like every file written

        write_table(path, self.result.table())
        self.say(f"Table saved to {path}")
        return path


def _seggpt(spec: str):
    """The SegGPT few-shot segmenter for a folder or hub id (kept like the SAM models)."""
    from napari_samrefine.judge.fss_seggpt import SegGptFSS
    from napari_samrefine.models.cache import cached_model

    return cached_model(("seggpt", spec), lambda: SegGptFSS(spec))


def _set_tooltips(widget) -> None:
    """Give every field of the judge widget its tooltip (the model picker has its own)."""
    pairs = widget.supports
    fields = {
        "query image": widget._image, "coarse labels": widget._coarse,
        "refined labels": widget._refined, "objects": widget._scope,
        "support image": pairs.image_layer, "support labels": pairs.labels_layer,
        "add support pair": pairs.add_button, "support pairs": pairs.pair_list,
        "remove support pairs": pairs.remove_button, "backend": widget._backend,
        "SegGPT model": widget._seggpt, "masking": widget._masking, "tau": widget._tau,
        "k (supports per object)": widget._k, "show SMP": widget._show_smp,
        "table CSV": widget._csv, "save table": widget._save, "verdicts": widget._legend,
        "judge": widget._run_button, "cancel": widget._stop_button,
    }  # fmt: skip
    for key, field in fields.items():
        field.tooltip = JUDGE_HELP[key]
