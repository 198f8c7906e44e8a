"""The "JFS judge" dock widget: was the refinement an improvement, object by object?

A thin face over :func:`napari_samrefine.judge_refinement`: choose the query
image, its coarse and refined Labels layers and one or more support
Image + Labels pairs; the judging runs in a worker thread with a progress bar
and a cancel button. Results: the per-object table in the refined layer's
``features`` (and a CSV on request), a verdict overlay (improved green,
degraded red, uncertain yellow), an "accepted" Labels layer (refined where
improved, coarse elsewhere) and, when asked, the support mask predictions
SMP1 / SMP2 over each support image.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error
from superqt.utils import ensure_main_thread

from .._progress import Cancelled

if TYPE_CHECKING:
    import napari

__all__ = ["JudgeWidget"]

VERDICT_COLORS = {None: "transparent", 0: "transparent", 1: "limegreen", 2: "red", 3: "yellow"}


def _plane(layer, viewer) -> np.ndarray:
    """The layer's data, or its currently displayed 2D plane for stacks."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    spatial = data.ndim - (1 if getattr(layer, "rgb", False) else 0)
    if spatial > 2:
        step = viewer.dims.current_step[-spatial:][: spatial - 2]
        data = data[tuple(int(s) for s in step)]
    return np.asarray(data)


class JudgeWidget(Container):
    """Judge a refinement with few-shot segmentation (JFS) on the viewer's layers.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer holding the image, label and support layers.
    sam : segment_anything.modeling.Sam, optional
        The model of the "sam" backend; when None, the model named in the
        "model" field (registry name or checkpoint path) is loaded on first use.

    Attributes
    ----------
    result : JudgeResult or None
        The last result.
    worker : napari worker or None
        The running (or last) worker.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, sam=None):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self.sam = sam
        self.result = None
        self.worker = None
        self._models: dict[str, object] = {}
        self._pairs: list[tuple[Image, Labels]] = []
        self._cancel = threading.Event()

        images, labels = self._layers_of(Image), self._layers_of(Labels)
        self._image = ComboBox(label="query image", choices=images, nullable=True)
        self._coarse = ComboBox(label="coarse labels", choices=labels, nullable=True)
        self._refined = ComboBox(label="refined labels", choices=labels, nullable=True)
        self._s_image = ComboBox(label="support image", choices=images, nullable=True)
        self._s_labels = ComboBox(label="support labels", choices=labels, nullable=True)
        self._add = PushButton(text="Add support pair")
        self._pair_list = Select(label="support pairs", choices=self._pair_choices)
        self._remove = PushButton(text="Remove selected pairs")
        self._backend = ComboBox(label="backend", choices=["sam", "seggpt"], value="sam")
        self._model = LineEdit(label="SAM model", value="vit_b_lm")
        self._model.tooltip = "registry name (e.g. vit_b_lm) or path of a SAM checkpoint file"
        self._seggpt = LineEdit(label="SegGPT model", value="BAAI/seggpt-vit-large")
        self._seggpt.tooltip = "folder written by save_pretrained, or a Hugging Face hub id"
        self._masking = ComboBox(label="masking", choices=["hm", "fm", "im"], value="hm")
        self._masking.tooltip = "hybrid (HM), feature (FM) or input (IM) masking of the query"
        self._tau = FloatSpinBox(label="tau", value=0.02, min=0.0, max=1.0, step=0.01)
        self._k = SpinBox(label="k (supports per object)", value=3, min=1, max=50)
        self._show_smp = CheckBox(text="show support mask predictions (SMP1, SMP2)", value=False)
        self._run = PushButton(text="Judge")
        self._stop = PushButton(text="Cancel", enabled=False)
        self._bar = ProgressBar(label="progress", min=0, max=1, value=0)
        self._status = Label(label="", value="")
        self._csv = FileEdit(label="table CSV", mode="w", filter="*.csv", value="")
        self._save = PushButton(text="Save table")
        self.extend([
            self._image, self._coarse, self._refined, self._s_image, self._s_labels, self._add,
            self._pair_list, self._remove, self._backend, self._model, self._seggpt,
            self._masking, self._tau, self._k, self._show_smp, self._run, self._stop, self._bar,
            self._status, self._csv, self._save,
        ])  # fmt: skip
        if sam is not None:
            self._model.value = "(model given by the caller)"
            self._model.enabled = False
        self._backend_changed()

        self._add.changed.connect(self._add_pair)
        self._remove.changed.connect(self._remove_pairs)
        self._backend.changed.connect(self._backend_changed)
        self._run.changed.connect(self.start)
        self._stop.changed.connect(self.cancel)
        self._save.changed.connect(self.save_table)
        events = napari_viewer.layers.events
        for event in (events.inserted, events.removed, events.renamed):
            event.connect(self.reset_choices)

    # -- choices ----------------------------------------------------------------------

    def _layers_of(self, kind):
        def choices(_widget=None):
            return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, kind)]

        return choices

    def _pair_choices(self, _widget=None):
        return [(f"{i.name}  <->  {lab.name}", n) for n, (i, lab) in enumerate(self._pairs)]

    def _add_pair(self, *_):
        img, lab = self._s_image.value, self._s_labels.value
        if img is None or lab is None:
            self._say("Choose a support image and its labels first.", error=True)
            return
        if not any(i is img and j is lab for i, j in self._pairs):
            self._pairs.append((img, lab))
            self._pair_list.reset_choices()

    def _remove_pairs(self, *_):
        drop = set(self._pair_list.value)
        self._pairs = [p for n, p in enumerate(self._pairs) if n not in drop]
        self._pair_list.reset_choices()

    def add_support_pair(self, image: Image, labels: Labels) -> None:
        """Add a support (image, labels) layer pair (scripting and tests)."""
        self._s_image.value, self._s_labels.value = image, labels
        self._add_pair()

    def _backend_changed(self, *_):
        sam = self._backend.value == "sam"
        self._masking.enabled = sam
        self._model.visible, self._seggpt.visible = sam, not sam

    # -- judging ----------------------------------------------------------------------

    def _support_pairs(self) -> list[tuple[Image, Labels]]:
        layers = set(map(id, self._viewer.layers))
        pairs = [(i, j) for i, j in self._pairs if id(i) in layers and id(j) in layers]
        if not pairs and self._s_image.value is not None and self._s_labels.value is not None:
            pairs = [(self._s_image.value, self._s_labels.value)]
        if not pairs:
            raise ValueError("Choose a support image and its labels (or add support pairs).")
        return pairs

    def _inputs(self) -> tuple[dict, tuple[Labels, list[tuple[Image, Labels]]]]:
        image, coarse, refined = self._image.value, self._coarse.value, self._refined.value
        if image is None or coarse is None or refined is None:
            raise ValueError("Choose the query image, its coarse labels and its refined labels.")
        if coarse is refined:
            raise ValueError("Coarse and refined labels are the same layer: choose two layers.")
        pairs = self._support_pairs()
        v = self._viewer
        return {
            "image": _plane(image, v),
            "coarse_labels": _plane(coarse, v),
            "refined_labels": _plane(refined, v),
            "support_image": [_plane(i, v) for i, _ in pairs],
            "support_labels": [_plane(j, v) for _, j in pairs],
            "backend": self._backend.value,
            "masking": self._masking.value,
            "tau": float(self._tau.value),
            "k": int(self._k.value),
            "seggpt_model": self._seggpt.value,
            "return_predictions": bool(self._show_smp.value),
        }, (refined, pairs)

    def start(self, *_):
        """Judge in a worker thread (the "Judge" button)."""
        from napari.qt.threading import create_worker

        if self.worker is not None and self.worker.is_running:
            return
        try:
            kwargs, layers = self._inputs()
        except ValueError as err:
            self._say(str(err), error=True)
            return
        self._cancel.clear()
        self._run.enabled, self._stop.enabled = False, True
        self._bar.max, self._bar.value = 1, 0
        self._say("Judging ...")
        self.worker = create_worker(
            self._work, kwargs, self._model.value, _start_thread=False,
            _connect={
                "returned": lambda r: self._done(r, *layers),
                "errored": self._failed,
                "finished": self._finished,
            },
        )  # fmt: skip
        self.worker.start()

    def cancel(self, *_):
        """Stop at the next step (the "Cancel" button); no layer is changed."""
        self._cancel.set()
        self._say("Cancelling ...")

    def _work(self, kwargs: dict, model: str):
        from ..judge import judge_refinement

        def progress(done: int, total: int, message: str) -> None:
            if self._cancel.is_set():
                raise Cancelled
            self._progress(done, total, message)

        self._progress(0, 1, "loading the model")
        if kwargs["backend"] == "sam":
            kwargs["sam"] = self._model_for(model)
        else:
            kwargs["backend"] = self._seggpt_for(kwargs.pop("seggpt_model"))
        try:
            return judge_refinement(**kwargs, progress=progress)
        except Cancelled:
            return None

    def _model_for(self, spec: str):
        if self.sam is not None:
            return self.sam
        if spec not in self._models:
            from ..sam.loading import load_sam

            self._models = {spec: load_sam(spec)}  # keep one model in memory
        return self._models[spec]

    def _seggpt_for(self, spec: str):
        if spec not in self._models:
            from ..judge.fss_seggpt import SegGptFSS

            self._models = {spec: SegGptFSS(spec)}  # keep one model in memory
        return self._models[spec]

    @ensure_main_thread
    def _progress(self, done: int, total: int, message: str) -> None:
        self._bar.max = max(int(total), 1)
        self._bar.value = min(int(done), self._bar.max)
        self._status.value = message

    def _done(self, result, refined: Labels, pairs) -> None:
        if result is None:
            self._say("Cancelled: no layer was changed.")
            return
        self.result = result
        table = result.table()
        refined.features = table
        geometry = {"scale": refined.scale[-2:], "translate": refined.translate[-2:]}
        self._put_labels(f"{refined.name} JFS verdicts", result.verdict_image(), geometry,
                         colormap=DirectLabelColormap(color_dict=VERDICT_COLORS), opacity=0.5)  # fmt: skip
        self._put_labels(f"{refined.name} accepted", result.accepted, geometry)
        if result.predictions:
            for n, (img, _) in enumerate(pairs):
                smp1, smp2 = result.support_mask_predictions(n)
                for name, data, cmap in (("SMP1", smp1, "magenta"), ("SMP2", smp2, "green")):
                    self._put_image(f"{name} on {img.name}", data, img, cmap)
        counts = table["verdict"].value_counts()
        self._say(
            f"{len(table)} objects: {counts.get('improved', 0)} improved, "
            f"{counts.get('degraded', 0)} degraded, {counts.get('uncertain', 0)} uncertain."
        )

    def _put_labels(self, name: str, data: np.ndarray, geometry: dict, **kwargs) -> None:
        if name in self._viewer.layers and isinstance(self._viewer.layers[name], Labels):
            layer = self._viewer.layers[name]
            layer.data = data
            for key, value in kwargs.items():
                setattr(layer, key, value)
        else:
            self._viewer.add_labels(data, name=name, **geometry, **kwargs)

    def _put_image(self, name: str, data: np.ndarray, over: Image, colormap: str) -> None:
        if name in self._viewer.layers and isinstance(self._viewer.layers[name], Image):
            self._viewer.layers[name].data = data
        else:
            self._viewer.add_image(
                data, name=name, colormap=colormap, blending="additive", contrast_limits=(0, 1),
                scale=over.scale[-2:], translate=over.translate[-2:],
            )  # fmt: skip

    def save_table(self, *_) -> Path | None:
        """Write the last table to the chosen CSV file (the "Save table" button)."""
        value = str(self._csv.value)
        if self.result is None:
            self._say("Nothing to save yet: run the judge first.", error=True)
            return None
        if value in ("", "."):
            self._say("Choose a CSV file name first.", error=True)
            return None
        path = Path(value)
        path = path if path.suffix else path.with_suffix(".csv")
        self.result.table().to_csv(path, index=False)
        self._say(f"Table saved to {path}")
        return path

    def _failed(self, err: Exception) -> None:
        self._say(f"Judging failed: {err}", error=True)

    def _finished(self) -> None:
        self._run.enabled, self._stop.enabled = True, False

    def _say(self, text: str, error: bool = False) -> None:
        self._status.value = text
        if error:
            show_error(text)
