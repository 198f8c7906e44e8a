"""The "Teach the model" dock widget: fine-tune SAM to refine, on corrected image/labels pairs.

A thin face over :func:`~napari_samrefine.teach.finetune.finetune`: pick the
image/labels layer pairs whose labels you corrected, the model, a few options
and the file to write; teaching runs in a worker thread with a progress bar
(the epoch, the loss and the time left) and a Cancel button (no file is
written then), and each epoch's validation line is added to the widget's log.
The taught file is then offered in every model field as "<base> + <file name>"
(:func:`~napari_samrefine._napari.model_choice.offer_taught`). The layers are
read, never changed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, FileEdit, FloatSpinBox, SpinBox, TextEdit
from napari.utils.notifications import show_info
from superqt.utils import ensure_main_thread

from napari_samrefine._napari.field_help import TEACH_HELP
from napari_samrefine._napari.layers import in_memory, layer_data
from napari_samrefine._napari.model_choice import ModelPicker, offer_taught
from napari_samrefine._napari.pairs import LayerPairs
from napari_samrefine._napari.workers import TaskWidget
from napari_samrefine.engine.encoder_progress import reporting_encoder
from napari_samrefine.models.finetune_file import taught_weights, write_finetune_file
from napari_samrefine.models.profile import model_profile
from napari_samrefine.models.registry import list_models
from napari_samrefine.models.source import model_source
from napari_samrefine.teach.examples import DIHEDRAL
from napari_samrefine.teach.finetune import TeachOptions, check_teaching_data

__all__ = ["TeachWidget", "teach_summary"]


def teach_summary(path: Path, metadata: dict, offered: str | None) -> str:
    """The widget's status line after teaching, in words."""
    v = metadata["validation"]
    on = "its training images" if v["on_training_images"] else "held-out images"
    where = (f" It is offered in the model fields as {offered!r}." if offered else
             " Load it with load_sam(base, finetune=...): a model given in code is not offered "
             "in the model fields.")
    return (f"Saved {path.name}: validation IoU {v['best_iou']:.3f} on {on} at epoch "
            f"{v['best_epoch']} (the coarse masks: {v['coarse_iou']:.3f}).{where}")


class TeachWidget(TaskWidget):
    """Teach SAM to refine from image/labels layer pairs, and offer the result in the model fields.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer whose Image and Labels layers can be paired.
    sam : segment_anything.modeling.Sam, optional
        A loaded model to teach instead of the model field (scripts, tests); also
        settable later as ``widget.model.sam``.

    Attributes
    ----------
    taught : Taught or None
        What the last finished run returned.
    """

    failed_text = "Teaching failed"
    cancelled_text = "Cancelled: no file was written."

    def __init__(self, napari_viewer, sam=None):
        super().__init__(napari_viewer, run_text="Teach")
        self.taught = None
        self.pairs = LayerPairs(napari_viewer, self.say, labels_label="corrected labels")
        self.model = ModelPicker(sam)
        defaults = TeachOptions()
        self.epochs = SpinBox(label="epochs", value=defaults.epochs, min=1, max=1000)
        self.augment = CheckBox(text="turns and flips", value=len(defaults.augment) > 1)
        # 0 stands for no limit
        self.max_minutes = FloatSpinBox(label="max minutes", value=defaults.max_minutes or 0,
                                        min=0, max=24 * 60, step=5)
        self.lora_rank = SpinBox(label="encoder adaptors (rank)", value=defaults.lora_rank, min=0, max=64)
        self.output = FileEdit(label="save taught model to", mode="w", filter="*.pt", value="")
        self.log = TextEdit(label="epochs", value="")
        self.log.native.setReadOnly(True)
        for field, key in (
            (self.pairs.image_layer, "image"), (self.pairs.labels_layer, "corrected labels"),
            (self.pairs.pair_list, "pairs"), (self.epochs, "epochs"),
            (self.augment, "turns and flips"), (self.max_minutes, "max minutes"),
            (self.lora_rank, "encoder adaptors (rank)"),
            (self.output, "save taught model to"), (self.log, "log"),
        ):  # fmt: skip
            field.tooltip = TEACH_HELP[key]
        self.extend([self.pairs, self.model, self.epochs, self.augment, self.max_minutes,
                     self.lora_rank, self.output])
        self.add_footer()
        self.append(self.log)

    def add_pair(self, image, labels) -> None:
        """Add an (image, labels) layer pair to teach on (scripting and tests)."""
        self.pairs.add(image, labels)

    def options(self) -> TeachOptions:
        """The teaching options the fields give (the others are :class:`TeachOptions`' defaults)."""
        minutes = float(self.max_minutes.value)
        return replace(TeachOptions(), epochs=int(self.epochs.value),
                       augment=DIHEDRAL if self.augment.value else (0,),
                       max_minutes=minutes if minutes > 0 else None, lora_rank=int(self.lora_rank.value))

    def _data(self) -> tuple[list, list]:
        pairs = self.pairs.chosen()
        if not pairs:
            raise ValueError("Nothing to teach on: choose an image and its corrected labels "
                             "(Add pair for more than one).")
        images = [in_memory(layer_data(img, like=layer_data(lab).shape)) for img, lab in pairs]
        # copies: the user may go on painting while the model learns
        labels = [np.array(layer_data(lab), copy=True) for _, lab in pairs]
        for (img, lab), image, label in zip(pairs, images, labels, strict=True):
            try:
                check_teaching_data([image], [label])
            except ValueError as err:
                text = str(err).replace("labels[0]", repr(lab.name)).replace("images[0]", repr(img.name))
                raise ValueError(text) from None
        return images, labels

    def _output_path(self) -> Path:
        value = str(self.output.value)
        if value in ("", "."):
            raise ValueError("Choose where to save the taught model (e.g. my_cells.pt).")
        path = Path(value)
        if path.is_dir():
            raise ValueError(f"{path} is a folder: choose a file name such as my_cells.pt.")
        return path if path.suffix else path.with_suffix(".pt")

    def _base(self) -> str | None:
        """The registry name or checkpoint path the taught file is offered over (None: none)."""
        if self.model.sam is None:
            return self.model.spec
        source = model_source(self.model.sam)
        if source is None or source.checkpoint is None or source.base_name is not None:
            return None  # built in code, or a taught model itself
        return source.name if source.name in list_models() else source.checkpoint

    def run(self, *_):
        """Teach in a worker thread (the Teach button)."""
        try:
            images, labels = self._data()
            output = self._output_path()
            options = self.options()
            base = self._base()
        except (ValueError, FileNotFoundError) as err:
            self.say(str(err), error=True)
            return
        self.log.value = ""
        self.say(f"Teaching on {len(images)} image(s) ...")
        self.launch(self._work, images, labels, options,
                    on_done=lambda taught: self._done(taught, output, base))

    @ensure_main_thread
    def _log_line(self, line: str) -> None:
        if self.closed:
            return
        self.log.value = f"{self.log.value}\n{line}" if self.log.value else line

    def _work(self, images, labels, options: TeachOptions):
        from napari_samrefine.teach.finetune import finetune

        progress = self.progress_callback()
        self._show_progress(0, 1, "loading the model")
        sam = self.model.load(progress)  # a download moves the bar; Cancel stops it
        with reporting_encoder(sam, progress):
            # the file is written once the run is known not to be cancelled (_done)
            return finetune(images, labels, sam, options=options, progress=progress,
                            log=self._log_line)

    def _done(self, taught, output: Path, base: str | None) -> None:
        try:  # atomic: a file at ``output`` is always whole
            path = write_finetune_file(taught_weights(taught.model), taught.metadata, output)
        except OSError as err:
            self.say(f"Could not write the taught model to {output}: {err}", error=True)
            return
        self.taught = replace(taught, path=path)
        offered = None
        if base is not None:
            v = taught.metadata["validation"]
            offered = offer_taught(base, path, model_profile(taught.model),
                                   note=f"Validation IoU {v['best_iou']:.3f} (coarse masks "
                                   f"{v['coarse_iou']:.3f}).")
        self.say(teach_summary(path, taught.metadata, offered))
        show_info(f"Taught model saved to {path}")
