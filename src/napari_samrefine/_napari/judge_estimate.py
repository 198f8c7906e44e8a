"""The judge widget's time estimate: in words before a run, the time left during it, kept current.

The numbers come from :mod:`napari_samrefine.judge.estimate` (passes counted
from the inputs, times one pass: timed in this session, or guessed from the
model's size); this module only words them and follows a running judge.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from napari_samrefine._napari.judge_layers import on_plane
from napari_samrefine.judge.estimate import LONG_SECONDS, JudgeEstimate, default_k, encoder_name
from napari_samrefine.models.registry import get_model as registry_entry
from napari_samrefine.models.registry import list_models

__all__ = [
    "format_duration", "estimate_text", "TimeLeft", "remember_encoder", "run_encoder",
    "EstimateTrigger", "DefaultK",
]  # fmt: skip


def format_duration(seconds: float) -> str:
    """A duration in words, rounded as an estimate: "under 10 s", "40 s", "3 min", "1.5 h"."""
    s = float(seconds)
    if s < 10:
        return "under 10 s"
    if s < 90:
        return f"{int(round(s / 10) * 10)} s"
    if s < 90 * 60:
        return f"{max(2, int(round(s / 60)))} min"
    return f"{s / 3600:.1f} h"


def _about(seconds: float) -> str:
    """The rounded duration after "about" ("under 10 s" stays as it is)."""
    text = format_duration(seconds)
    return text if text.startswith("under") else f"about {text}"


def _device_words(device: str) -> str:
    kind = str(device).split(":")[0]
    return {"cpu": "this CPU", "cuda": "the GPU", "mps": "the Apple GPU"}.get(kind, str(device))


def estimate_text(estimate: JudgeEstimate) -> str:
    """The status line before a run: objects, k, time and what it is based on; how to shorten it.

    E.g. (the nuclei sample judged against itself, ViT-B, the 2-core development
    CPU): "Judging 27 objects with k=1: about 31 min on this CPU (80 encoder
    passes of about 20 s, guessed from the model's size). That is long: objects
    'selected label', masking FM or a GPU make it shorter."
    """
    w = estimate.work
    if w.objects == 0:
        return "Nothing to judge: the coarse labels hold no object here."
    objects = "1 object" if w.objects == 1 else f"{w.objects} objects"
    basis = "timed in this session" if estimate.measured else "guessed from the model's size"
    each = f"{estimate.pass_seconds:.2g} s" if estimate.pass_seconds < 10 else (
        format_duration(estimate.pass_seconds))  # fmt: skip
    kind = "model" if w.backend == "seggpt" else "encoder"
    text = (
        f"Judging {objects} with k={w.k}: {_about(estimate.seconds)} on "
        f"{_device_words(estimate.device)} ({w.passes} {kind} passes of about {each}, {basis})."
    )
    if estimate.seconds > LONG_SECONDS:
        fixes = [
            fix for fix, useful in (
                ("lower k", w.k > 1),
                ("objects 'selected label'", w.objects > 1),
                ("masking FM", w.backend == "sam" and w.query_passes > w.objects),  # HM, IM: 3
                ("a GPU", str(estimate.device).startswith("cpu")),
            ) if useful
        ]  # fmt: skip
        if fixes:
            ways = f"{', '.join(fixes[:-1])} or {fixes[-1]}" if len(fixes) > 1 else fixes[0]
            text += f" That is long: {ways} make{'s' if len(fixes) == 1 else ''} it shorter."
        else:
            text += " That is long."
    return text


class TimeLeft:
    """Appends the time left to a running judge's progress messages.

    Before the judge's first evaluation the estimate's total is shown; then
    the time left from the measured pace (elapsed time per (object, support)
    evaluation so far, times those left).

    Parameters
    ----------
    estimate : JudgeEstimate or None
        The estimate made when the run started (None: nothing until measured).
    """

    def __init__(self, estimate: JudgeEstimate | None):
        self.suffix = f"{_about(estimate.seconds)} in all" if estimate else ""
        self._start: float | None = None

    def __call__(self, done: int, total: int, message: str) -> str:
        """``message`` with the time left; ``done`` / ``total`` count the judge's evaluations."""
        if message.startswith("JFS"):  # the judge's own reports (others: encoder layers, loading)
            now = time.monotonic()
            if self._start is None:
                self._start = now
            elif 0 < done < total:
                left = (now - self._start) / done * (total - done)
                self.suffix = f"{_about(left)} left"
            elif done >= total:
                self.suffix = ""
        return f"{message} ({self.suffix})" if self.suffix else message

    def elapsed(self) -> float | None:
        """Seconds since the judge's first evaluation started (None before)."""
        return None if self._start is None else time.monotonic() - self._start


_loaded: dict[tuple[str, str], str] = {}  # (model choice, device) -> encoder name, once loaded


def remember_encoder(spec: str, device: str, model) -> None:
    """Note which encoder the model chosen as ``spec`` on ``device`` has (after a run loaded it)."""
    _loaded[(str(spec), str(device))] = encoder_name(model)


def run_encoder(picker, backend: str, device: str) -> tuple[str, str]:
    """The :func:`~napari_samrefine.judge.estimate.encoder_name` and device of a run, loading nothing.

    Parameters
    ----------
    picker : ModelPicker
        The widget's model field (its given model, its choice).
    backend : {"sam", "seggpt"}
    device : str
        The run's device.
    """
    if backend == "seggpt":
        return "seggpt", device
    if picker.sam is not None:
        return encoder_name(picker.sam), device
    try:
        spec = picker.spec
    except (ValueError, OSError):
        return "custom", device  # no file chosen yet: a ViT-B's size is guessed
    if (spec, device) in _loaded:
        return _loaded[(spec, device)], device
    return (registry_entry(spec).arch if spec in list_models() else "custom"), device


class EstimateTrigger:
    """Calls ``show()`` once after a burst of changes to what the estimate depends on.

    The widget's fields call :meth:`changed`; the refined layer's selected
    label and the displayed plane are followed here. ``show`` runs 250 ms
    after the last change (on the main thread), never while ``busy()``.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    refined : callable
        Returns the refined labels layer chosen (or None).
    show, busy : callable
        Shows the estimate; tells whether a run is going on (or the widget closed).
    """

    def __init__(
        self, viewer, refined: Callable, show: Callable[[], None], busy: Callable[[], bool]
    ):
        from qtpy.QtCore import QTimer

        self._viewer, self._refined, self._busy = viewer, refined, busy
        self._watched = self._plane = None
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.setInterval(250)
        self.timer.timeout.connect(show)
        viewer.dims.events.current_step.connect(self._dims_changed)

    def changed(self, *_) -> None:
        """Something the estimate depends on changed: show it again soon."""
        if self._busy():
            return
        layer = self._refined()
        if layer is not self._watched:
            if self._watched is not None:
                self._watched.events.selected_label.disconnect(self.changed)
            if layer is not None:
                layer.events.selected_label.connect(self.changed)
            self._watched = layer
        self.timer.start()

    def _dims_changed(self, *_) -> None:
        if self._busy():
            return
        layer = self._refined()
        plane = on_plane(self._viewer, layer)[0] if layer is not None else None
        if plane != self._plane:  # only a new plane of the judged stack changes the estimate
            self._plane = plane
            self.changed()


class DefaultK:
    """Keeps a k field at :func:`~napari_samrefine.judge.estimate.default_k` of the device.

    3 (JFS's k) on a GPU, 1 on a CPU, updated when the device changes, until
    the user sets k: then the user's k is kept.

    Parameters
    ----------
    field : magicgui SpinBox
        The k field.
    device : callable
        Returns the run's device.
    """

    def __init__(self, field, device: Callable[[], str]):
        self._field, self._device = field, device
        self._auto, self._setting = True, False
        field.changed.connect(self._set_by_user)

    def _set_by_user(self, *_) -> None:
        if not self._setting:
            self._auto = False

    def update(self, *_) -> None:
        """Set k to the device's default, unless the user set it."""
        if self._auto:
            self._setting = True
            try:
                self._field.value = default_k(self._device())
            finally:
                self._setting = False
