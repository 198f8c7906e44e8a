"""The "IoU adaption" dock widget: train a SAMRefiner++ adaptor on image/labels pairs.

A thin face over :func:`napari_samrefine.adapt_iou_head`: pick image/labels layer
pairs (or two folders paired by file name), train in a worker thread with a
progress bar and a cancel button, and save the adaptor file. The refine widget
and ``napari-samrefine refine --adaptor`` load that file.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info
from superqt.utils import ensure_main_thread

from .._progress import Cancelled

if TYPE_CHECKING:
    import napari

__all__ = ["AdaptionWidget"]


def _layer_data(layer) -> np.ndarray:
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return np.asarray(data)


class AdaptionWidget(Container):
    """Train an IoU adaptor (SAMRefiner++) on the viewer's layers or on folders.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose Image and Labels layers can be paired.
    sam : segment_anything.modeling.Sam, optional
        A loaded model to adapt; when None, the model named in the "model" field
        (registry name or checkpoint path) is loaded on first use.

    Attributes
    ----------
    adaptor : IoUAdaptor or None
        The last adaptor trained.
    worker : napari worker or None
        The running (or last) training worker.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, sam=None):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self.sam = sam
        self.adaptor = None
        self.worker = None
        self._models: dict[str, object] = {}
        self._pairs: list[tuple[Image, Labels]] = []
        self._cancel = threading.Event()

        self._image = ComboBox(label="image", choices=self._layers_of(Image), nullable=True)
        self._labels = ComboBox(label="coarse labels", choices=self._layers_of(Labels), nullable=True)
        self._add = PushButton(text="Add pair")
        self._pair_list = Select(label="pairs", choices=self._pair_choices)
        self._remove = PushButton(text="Remove selected pairs")
        self._image_dir = FileEdit(label="or image folder", mode="d", value="")
        self._labels_dir = FileEdit(label="label folder", mode="d", value="")
        self._model = LineEdit(label="model", value="vit_b_lm")
        self._model.tooltip = "registry name (e.g. vit_b_lm) or path of a SAM checkpoint file"
        self._epochs = SpinBox(label="epochs", value=1, min=1, max=100)
        self._output = FileEdit(label="save adaptor to", mode="w", filter="*.pt", value="")
        self._train = PushButton(text="Train adaptor")
        self._stop = PushButton(text="Cancel", enabled=False)
        self._bar = ProgressBar(label="progress", min=0, max=1, value=0)
        self._status = Label(label="", value="")
        self.extend([
            self._image, self._labels, self._add, self._pair_list, self._remove,
            self._image_dir, self._labels_dir, self._model, self._epochs, self._output,
            self._train, self._stop, self._bar, self._status,
        ])
        if sam is not None:
            self._model.value = "(model given by the caller)"
            self._model.enabled = False

        self._add.changed.connect(self._add_pair)
        self._remove.changed.connect(self._remove_pairs)
        self._train.changed.connect(self.start)
        self._stop.changed.connect(self.cancel)
        events = napari_viewer.layers.events
        for event in (events.inserted, events.removed, events.renamed):
            event.connect(self.reset_choices)

    # -- choices ----------------------------------------------------------------------

    def _layers_of(self, kind):
        def choices(_widget=None):
            return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, kind)]

        return choices

    def _pair_choices(self, _widget=None):
        return [(f"{img.name}  <->  {lab.name}", i) for i, (img, lab) in enumerate(self._pairs)]

    def _add_pair(self, *_):
        img, lab = self._image.value, self._labels.value
        if img is None or lab is None:
            self._say("Choose an image layer and a labels layer first.", error=True)
            return
        # layers are compared with == (napari may hand out proxies of the same layer)
        if any(i == img and j == lab for i, j in self._pairs):
            return
        self._pairs.append((img, lab))
        self._pair_list.reset_choices()

    def _remove_pairs(self, *_):
        drop = set(self._pair_list.value)
        self._pairs = [p for i, p in enumerate(self._pairs) if i not in drop]
        self._pair_list.reset_choices()

    def add_pair(self, image: Image, labels: Labels) -> None:
        """Add an (image, labels) layer pair to the training set (scripting and tests)."""
        self._image.value, self._labels.value = image, labels
        self._add_pair()

    # -- training ---------------------------------------------------------------------

    def _training_data(self) -> tuple[list, list, str]:
        from ..io import find_pairs, read_image

        images, labels, names = [], [], []
        layers = list(self._viewer.layers)
        pairs = [(i, j) for i, j in self._pairs if i in layers and j in layers]
        if not pairs and not self._folders() and self._image.value is not None and self._labels.value is not None:
            pairs = [(self._image.value, self._labels.value)]
        for img, lab in pairs:
            images.append(_layer_data(img))
            labels.append(_layer_data(lab))
            names.append(lab.name)
        folders = self._folders()
        if folders:
            for image_path, labels_path in find_pairs(*folders):
                images.append(read_image(image_path))
                labels.append(read_image(labels_path))
                names.append(labels_path.name)
        if not images:
            raise ValueError(
                "Nothing to train on: add image/labels layer pairs, or choose an image folder "
                "and a label folder."
            )
        return images, labels, ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")

    def _folders(self) -> tuple[Path, Path] | None:
        a, b = str(self._image_dir.value), str(self._labels_dir.value)
        if a in ("", ".") and b in ("", "."):
            return None
        if a in ("", ".") or b in ("", "."):
            raise ValueError("Choose both an image folder and a label folder (or neither).")
        return Path(a), Path(b)

    def _output_path(self) -> Path:
        value = str(self._output.value)
        if value in ("", "."):
            raise ValueError("Choose where to save the adaptor (e.g. my_adaptor.pt).")
        path = Path(value)
        if path.is_dir():
            raise ValueError(f"{path} is a folder: choose a file name such as my_adaptor.pt.")
        return path if path.suffix else path.with_suffix(".pt")

    def _model_for(self, spec: str):
        if self.sam is not None:
            return self.sam
        if spec not in self._models:
            from ..sam.loading import load_sam

            self._models = {spec: load_sam(spec)}  # keep one model in memory
        return self._models[spec]

    def start(self, *_):
        """Train in a worker thread (the "Train adaptor" button)."""
        from napari.qt.threading import create_worker

        if self.worker is not None and self.worker.is_running:
            return
        try:
            images, labels, names = self._training_data()
            output = self._output_path()
        except (ValueError, FileNotFoundError) as err:
            self._say(str(err), error=True)
            return
        self._cancel.clear()
        self._train.enabled, self._stop.enabled = False, True
        self._bar.max, self._bar.value = 1, 0
        self._say(f"Training on {len(images)} image(s): {names}")
        self.worker = create_worker(
            self._work, images, labels, output, self._model.value, int(self._epochs.value),
            _start_thread=False,
            # errors are reported in the widget, not re-raised in the event loop
            _connect={"returned": self._done, "errored": self._failed, "finished": self._finished},
        )
        self.worker.start()

    def cancel(self, *_):
        """Stop the training at the next step (the "Cancel" button); nothing is saved."""
        self._cancel.set()
        self._say("Cancelling ...")

    def _work(self, images, labels, output: Path, model: str, epochs: int):
        from ..refine.adaption import adapt_iou_head

        def progress(done: int, total: int, message: str) -> None:
            if self._cancel.is_set():
                raise Cancelled
            self._progress(done, total, message)

        self._progress(0, 1, "loading the model")
        sam = self._model_for(model)
        try:
            adaptor = adapt_iou_head(sam, images, labels, epochs=epochs, progress=progress)
        except Cancelled:
            return None
        output.parent.mkdir(parents=True, exist_ok=True)
        adaptor.save(output)
        return adaptor, output

    @ensure_main_thread
    def _progress(self, done: int, total: int, message: str) -> None:
        self._bar.max = max(int(total), 1)
        self._bar.value = min(int(done), self._bar.max)
        self._status.value = message

    def _done(self, result) -> None:
        if result is None:
            self._say("Cancelled: no adaptor was saved.")
            return
        self.adaptor, path = result
        m = self.adaptor.metadata
        self._say(
            f"Saved {path.name}: {m['n_objects']} objects, {m['n_steps']} steps, ranking loss "
            f"{m['loss_before']:.3f} -> {m['loss_after']:.3f}, top-1 vs coarse "
            f"{m['train_top1_before']:.2f} -> {m['train_top1_after']:.2f}."
        )
        show_info(f"IoU adaptor saved to {path}")

    def _failed(self, err: Exception) -> None:
        self._say(f"Training failed: {err}", error=True)

    def _finished(self) -> None:
        self._train.enabled, self._stop.enabled = True, False

    def _say(self, text: str, error: bool = False) -> None:
        self._status.value = text
        if error:
            show_error(text)
