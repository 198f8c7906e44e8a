"""The "IoU adaption" dock widget: train a SAMRefiner++ adaptor on image/labels pairs.

A thin face over :func:`napari_samrefine.adapt_iou_head`: pick image/labels layer
pairs (or two folders paired by file name), train in a worker thread with a
progress bar and a cancel button, and save the adaptor file. The refine widget
and ``napari-samrefine refine --adaptor`` load that file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import FileEdit, Label, SpinBox
from napari.utils.notifications import show_info, show_warning

from napari_samrefine._napari.field_help import set_help
from napari_samrefine._napari.layers import in_memory, layer_data
from napari_samrefine._napari.model_choice import ModelPicker
from napari_samrefine._napari.pairs import LayerPairs
from napari_samrefine._napari.workers import TaskWidget
from napari_samrefine.engine.encoder_progress import reporting_encoder
from napari_samrefine.models.profile import ModelProfile, model_profile

__all__ = ["AdaptionWidget", "adaption_summary", "adaptor_note"]


def adaptor_note(profile: ModelProfile | None) -> str:
    """The measured warning about IoU adaptors for a model's profile ("" when none)."""
    return "" if profile is None else profile.defaults.adaptor_note


def adaption_summary(path: Path, m: dict) -> str:
    """The adaption widget's status line after training, in words."""
    objects = "1 object" if m["n_objects"] == 1 else f"{m['n_objects']} objects"
    epochs = "1 epoch" if m.get("epochs", 1) == 1 else f"{m['epochs']} epochs"
    before, after = m["train_top1_before"], m["train_top1_after"]
    change = "up from" if after > before else "down from" if after < before else "as before:"
    return (
        f"Saved {path.name}: trained on {objects} ({epochs}, {m['n_steps']} steps). SAM now "
        f"picks the candidate mask closest to the coarse labels for {after:.0%} of them "
        f"({change} {before:.0%}); ranking loss {m['loss_before']:.3f} -> {m['loss_after']:.3f}."
    )


class AdaptionWidget(TaskWidget):
    """Train an IoU adaptor (SAMRefiner++) on the viewer's layers or on folders.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose Image and Labels layers can be paired.
    sam : segment_anything.modeling.Sam, optional
        A loaded model to adapt instead of the model field (scripts, tests); also
        settable later as ``widget.model.sam``.

    Attributes
    ----------
    adaptor : IoUAdaptor or None
        The last adaptor trained.
    """

    failed_text = "Training failed"
    cancelled_text = "Cancelled: no adaptor was saved."

    def __init__(self, napari_viewer, sam=None):
        super().__init__(napari_viewer, run_text="Train adaptor")
        self.adaptor = None
        self.pairs = LayerPairs(napari_viewer, self.say, labels_label="coarse labels")
        self._image_dir = FileEdit(label="or image folder", mode="d", value="")
        self._labels_dir = FileEdit(label="label folder", mode="d", value="")
        self.model = ModelPicker(sam)
        # what was measured for the chosen model, when its adaptor made its masks worse
        self._note = Label(label="", value="")
        self._epochs = SpinBox(label="epochs", value=1, min=1, max=100)
        self._output = FileEdit(label="save adaptor to", mode="w", filter="*.pt", value="")
        for field, key in (
            (self.pairs.image_layer, "training image"), (self.pairs.labels_layer, "training labels"),
            (self.pairs.pair_list, "pairs"), (self._image_dir, "image folder"),
            (self._labels_dir, "label folder"), (self._epochs, "epochs"),
            (self._output, "save adaptor to"),
        ):  # fmt: skip
            set_help(field, key)
        self.extend([
            self.pairs, self._image_dir, self._labels_dir, self.model, self._note, self._epochs,
            self._output,
        ])  # fmt: skip
        self.add_footer()
        self.model.on_choice(self._profile_changed)

    def _profile_changed(self, profile: ModelProfile | None) -> None:
        note = adaptor_note(profile)
        self._note.value = f"\u26a0 {note}" if note else ""
        self._note.tooltip = note or None
        self._note.native.setWordWrap(True)
        self._note.visible = bool(note)

    def add_pair(self, image, labels) -> None:
        """Add an (image, labels) layer pair to the training set (scripting and tests)."""
        self.pairs.add(image, labels)

    def _training_data(self) -> tuple[list, list, str]:
        from napari_samrefine.io import find_pairs, read_image

        folders = self._folders()
        pairs = self.pairs.chosen(fallback=folders is None)
        images = [in_memory(layer_data(img, like=layer_data(lab).shape)) for img, lab in pairs]
        # copies: the user may paint on the labels while the training runs
        labels = [np.array(layer_data(lab), copy=True) for _, lab in pairs]
        names = [lab.name for _, lab in pairs]
        for image_path, labels_path in find_pairs(*folders) if folders else []:
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

    def run(self, *_):
        """Train in a worker thread (the "Train adaptor" button)."""
        try:
            images, labels, names = self._training_data()
            output = self._output_path()
        except (ValueError, FileNotFoundError) as err:
            self.say(str(err), error=True)
            return
        self.say(f"Training on {len(images)} image(s): {names}")
        self.launch(self._work, images, labels, output, int(self._epochs.value), on_done=self._done)

    def _work(self, images, labels, output: Path, epochs: int):
        from napari_samrefine.adaption.training import adapt_iou_head

        self._show_progress(0, 1, "loading the model")
        progress = self.progress_callback()
        sam = self.model.load(progress)  # a download moves the bar; Cancel stops it
        with reporting_encoder(sam, progress):
            adaptor = adapt_iou_head(sam, images, labels, epochs=epochs, progress=progress)
        output.parent.mkdir(parents=True, exist_ok=True)
        adaptor.save(output)
        return adaptor, output, adaptor_note(model_profile(sam))

    def _done(self, result) -> None:
        self.adaptor, path, note = result
        summary = adaption_summary(path, self.adaptor.metadata)
        if note:  # measured for this model (a local file's profile is known only now)
            self.say(f"{summary} Warning: {note}")
            show_warning(f"IoU adaptor saved to {path}. {note}")
        else:
            self.say(summary)
            show_info(f"IoU adaptor saved to {path}")
