"""The judge widget's words on time: what is known before a run, the time left during it.

Nothing here models the judge. Before a run the status line says what the
inputs tell (objects, supports per object) and, when a pass of the chosen
model was timed earlier in this session, how long one took. During a run the
time left is measured: the time the judge took per (object, support)
evaluation so far, times the evaluations it has left (the judge counts them in
its progress reports, ``progress(done, total, message)``).
"""

from __future__ import annotations

import statistics
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager

from napari_samrefine._napari.judge_layers import on_plane

__all__ = [
    "format_duration", "plan_text", "TimeLeft", "pass_key", "pass_seconds", "timing_passes",
    "PlanTrigger", "default_k", "DefaultK",
]  # fmt: skip


def format_duration(seconds: float) -> str:
    """A duration in words, rounded: "under 10 s", "40 s", "3 min", "1.5 h"."""
    s = float(seconds)
    if s < 10:
        return "under 10 s"
    if s < 90:
        return f"{int(round(s / 10) * 10)} s"
    if s < 90 * 60:
        return f"{max(2, int(round(s / 60)))} min"
    return f"{s / 3600:.1f} h"


def _about(seconds: float) -> str:
    text = format_duration(seconds)
    return text if text.startswith("under") else f"about {text}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def plan_text(
    objects: int, k: int, candidates: int, pairs: int, pass_time: float | None, backend: str = "sam"
) -> str:
    """The status line before a run: what the run will do, and a timed pass if there is one.

    E.g. "Judging 27 objects, each against 1 support object (of 27 in 1 support
    pair). An encoder pass of this model took about 20 s in this session. The
    time left shows once the first object is judged."

    Parameters
    ----------
    objects : int
        Objects to judge.
    k : int
        The k asked for (fewer are used when the supports hold fewer objects).
    candidates, pairs : int
        Objects in the support labels, and support pairs.
    pass_time : float or None
        Seconds of one pass of the run's model timed in this session (None: none was).
    backend : {"sam", "seggpt"}
    """
    if objects == 0:
        return "Nothing to judge: the coarse labels hold no object here."
    used = min(int(k), int(candidates))
    text = (
        f"Judging {_plural(objects, 'object')}, each against {_plural(used, 'support object')} "
        f"(of {candidates} in {_plural(pairs, 'support pair')})."
    )
    if pass_time is not None:
        each = f"{pass_time:.2g} s" if pass_time < 10 else format_duration(pass_time)
        kind = "A SegGPT" if backend == "seggpt" else "An encoder"
        text += f" {kind} pass of this model took about {each} in this session."
    return text + " The time left shows once the first object is judged."


class TimeLeft:
    """The time left of a running judge, measured from its own pace.

    :meth:`step` takes the judge's progress reports: the first starts the
    clock; after each evaluation the time left is the elapsed time per
    evaluation done, times the evaluations left. :meth:`text` appends it to
    any progress message (the judge's, the encoder's, the model download's).

    Parameters
    ----------
    now : callable
        The clock (seconds); :func:`time.monotonic`.

    Attributes
    ----------
    seconds_left : float or None
        The last time left measured (None before the first evaluation ended; 0 at the end).
    """

    def __init__(self, now: Callable[[], float] = time.monotonic):
        self._now = now
        self._start: float | None = None
        self.seconds_left: float | None = None

    def step(self, done: int, total: int) -> None:
        """Take one of the judge's reports: ``done`` of ``total`` evaluations."""
        now = self._now()
        if self._start is None:
            self._start = now
        if total > 0 and done >= total:
            self.seconds_left = 0.0
        elif done > 0:
            self.seconds_left = (now - self._start) / done * (total - done)

    def text(self, message: str) -> str:
        """``message`` with the time left, once measured."""
        if not self.seconds_left:  # None: not measured yet; 0: done
            return message
        return f"{message} ({_about(self.seconds_left)} left)"

    def elapsed(self) -> float | None:
        """Seconds since the judge's first report (None before)."""
        return None if self._start is None else self._now() - self._start


_lock = threading.Lock()
_passes: dict[tuple, list[float]] = {}


def pass_key(model: object = None, choice: Hashable = None) -> tuple:
    """The key the passes of a run's model are timed under.

    ``model``: a model object given to the widget (held weakly, so a new
    model never inherits another's times); else ``choice``: the model field's
    choice (name or file, device), which the widget loads once per session.
    """
    return ("model", weakref.ref(model)) if model is not None else ("choice", choice)


def pass_seconds(key: tuple) -> float | None:
    """The median seconds of the passes timed under ``key`` in this session (None: none)."""
    with _lock:
        times = list(_passes.get(key, ()))
    return statistics.median(times) if times else None


@contextmanager
def timing_passes(module, key: tuple) -> Iterator[None]:
    """Time every forward pass of ``module`` in this thread under ``key`` (the last 20 kept).

    Parameters
    ----------
    module : torch.nn.Module
        The SAM image encoder, or the whole SegGPT model.
    key : tuple
        From :func:`pass_key`.
    """
    owner = threading.get_ident()
    start: list[float] = []

    def before(_module, _args) -> None:
        if threading.get_ident() == owner:
            start[:] = [time.perf_counter()]

    def after(_module, _args, _output) -> None:
        if threading.get_ident() == owner and start:
            seconds = time.perf_counter() - start.pop()
            with _lock:
                times = _passes.setdefault(key, [])
                times.append(seconds)
                del times[:-20]

    handles = [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class PlanTrigger:
    """Calls ``show()`` once after a burst of changes to what the before-run text says.

    The widget's fields call :meth:`changed`; the refined layer's selected
    label and the displayed plane are followed here. ``show`` runs 250 ms
    after the last change (on the main thread), never while ``busy()``.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    refined : callable
        Returns the refined labels layer chosen (or None).
    show, busy : callable
        Shows the text; tells whether a run is going on (or the widget closed).
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
        """Something the text depends on changed: show it again soon."""
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
        if plane != self._plane:  # only a new plane of the judged stack changes the text
            self._plane = plane
            self.changed()


def default_k(device: str) -> int:
    """The widget's default ``k`` on ``device``: 3 (JFS's k) on a GPU, 1 on a CPU.

    Each support adds about one encoder pass per object on a CPU, where a pass
    of ViT-B takes seconds: k=1 keeps a first run short there.
    """
    return 1 if str(device).split(":")[0] == "cpu" else 3


class DefaultK:
    """Keeps a k field at :func:`default_k` of the device until the user sets k.

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
