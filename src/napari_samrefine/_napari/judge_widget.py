"""The "JFS judge" dock widget: was the refinement an improvement, object by object?

A thin face over :func:`napari_samrefine.judge_refinement`: choose the query
image, its coarse and refined Labels layers and one or more support
Image + Labels pairs; the judging runs in a worker thread with a progress bar
and a cancel button. Results: a verdict overlay (improved green, degraded red,
uncertain yellow), an "accepted" Labels layer (refined where improved, coarse
elsewhere) whose ``features`` hold the per-object table (also
``widget.last_table``, and a CSV on request) and, when asked, the support mask
predictions SMP1 / SMP2 over each support image. The chosen layers themselves
are never changed (their ``features`` included); the judge works on copies of
the planes taken when Judge is pressed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    FloatSpinBox,
    LineEdit,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap

from .._progress import report
from ..sam.encoder_progress import reporting_encoder
from .layers import displayed_plane, geometry, layer_field, upsert_layer
from .model_choice import ModelPicker, cached_model
from .pairs import LayerPairs
from .workers import TaskWidget

__all__ = ["JudgeWidget"]

VERDICT_COLORS = {None: "transparent", 0: "transparent", 1: "limegreen", 2: "red", 3: "yellow"}


class JudgeWidget(TaskWidget):
    """Judge a refinement with few-shot segmentation (JFS) on the viewer's layers.

    On stacks, the plane the viewer shows is judged.

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
    """

    failed_text = "Judging failed"

    def __init__(self, napari_viewer, sam=None):
        super().__init__(napari_viewer, run_text="Judge")
        self.result = None
        self.last_table = None
        self._image = layer_field(napari_viewer, Image, "query image")
        self._coarse = layer_field(napari_viewer, Labels, "coarse labels")
        self._refined = layer_field(napari_viewer, Labels, "refined labels")
        self.supports = LayerPairs(
            napari_viewer, self.say, image_label="support image", labels_label="support labels",
            list_label="support pairs", add_text="Add support pair",
        )  # fmt: skip
        self._backend = ComboBox(label="backend", choices=["sam", "seggpt"], value="sam")
        self.model = ModelPicker(sam)
        self._seggpt = LineEdit(label="SegGPT model", value="BAAI/seggpt-vit-large")
        self._seggpt.tooltip = "folder written by save_pretrained, or a Hugging Face hub id"
        self._masking = ComboBox(label="masking", choices=["hm", "fm", "im"], value="hm")
        self._masking.tooltip = "hybrid (HM), feature (FM) or input (IM) masking of the query"
        self._tau = FloatSpinBox(label="tau", value=0.02, min=0.0, max=1.0, step=0.01)
        self._k = SpinBox(label="k (supports per object)", value=3, min=1, max=50)
        self._show_smp = CheckBox(text="show support mask predictions (SMP1, SMP2)", value=False)
        self._csv = FileEdit(label="table CSV", mode="w", filter="*.csv", value="")
        self._save = PushButton(text="Save table")
        self.extend([
            self._image, self._coarse, self._refined, self.supports, self._backend, self.model,
            self._seggpt, self._masking, self._tau, self._k, self._show_smp,
        ])  # fmt: skip
        self.add_footer()
        self.extend([self._csv, self._save])
        self._backend_changed()
        self._backend.changed.connect(self._backend_changed)
        self._save.changed.connect(self.save_table)

    def add_support_pair(self, image: Image, labels: Labels) -> None:
        """Add a support (image, labels) layer pair (scripting and tests)."""
        self.supports.add(image, labels)

    def _backend_changed(self, *_):
        sam = self._backend.value == "sam"
        self._masking.enabled = sam
        self.model.visible, self._seggpt.visible = sam, not sam

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
        }
        return kwargs, refined, pairs

    def run(self, *_):
        """Judge in a worker thread (the "Judge" button)."""
        try:
            kwargs, refined, pairs = self._inputs()
        except ValueError as err:
            self.say(str(err), error=True)
            return
        self.say("Judging ...")
        # the result layers are linked to the refined layer (and the SMPs to the support images)
        targets = [refined, *(img for img, _ in pairs)] if kwargs["return_predictions"] else [refined]
        self.launch(
            self._work, kwargs,
            on_done=lambda result: self._done(result, refined, pairs), targets=targets,
        )

    def _work(self, kwargs: dict):
        from ..judge import judge_refinement

        progress = self.progress_callback()
        report(progress, 0, 1, "loading the model")
        if kwargs["backend"] == "sam":
            kwargs["sam"] = self.model.load(progress)
        else:
            kwargs["backend"] = _seggpt(kwargs.pop("seggpt_model"))
        with reporting_encoder(kwargs.get("sam"), progress):  # SegGPT: no SAM, nothing to hook
            return judge_refinement(**kwargs, progress=progress)

    def _done(self, result, refined: Labels, pairs) -> None:
        self.result = result
        self.last_table = table = result.table()
        v, geo = self._viewer, geometry(refined, ndim=2)
        upsert_layer(
            v, refined, "jfs verdicts", "labels", result.verdict_image(),
            name=f"{refined.name} JFS verdicts", opacity=0.5,
            colormap=DirectLabelColormap(color_dict=VERDICT_COLORS), **geo,
        )  # fmt: skip
        accepted = f"{refined.name} accepted"
        upsert_layer(
            v, refined, "jfs accepted", "labels", result.accepted, name=accepted,
            features=table, **geo,  # the table's "index" column is the label id
        )  # fmt: skip
        for n, (img, _) in enumerate(pairs if result.predictions else []):
            smp = result.support_mask_predictions(n)
            for name, data, cmap in zip(("SMP1", "SMP2"), smp, ("magenta", "green"), strict=True):
                upsert_layer(
                    v, img, f"jfs {name}", "image", data, name=f"{name} on {img.name}",
                    colormap=cmap, blending="additive", contrast_limits=(0, 1),
                    **geometry(img, ndim=2),
                )  # fmt: skip
        if table.empty:
            self.say("No object was judged: the coarse and refined labels hold no object here.")
            return
        counts = table["verdict"].value_counts()
        self.say(
            f"{len(table)} objects: {counts.get('improved', 0)} improved, "
            f"{counts.get('degraded', 0)} degraded, {counts.get('uncertain', 0)} uncertain."
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
        self.result.table().to_csv(path, index=False)
        self.say(f"Table saved to {path}")
        return path


def _seggpt(spec: str):
    """The SegGPT few-shot segmenter for a folder or hub id (kept like the SAM models)."""
    from ..judge.fss_seggpt import SegGptFSS

    return cached_model(("seggpt", spec), lambda: SegGptFSS(spec))
