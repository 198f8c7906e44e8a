"""Running one long core call from a dock widget: worker thread, progress bar, Cancel.

The core reports progress through one callback, ``progress(done, total,
message)``, and stops when that callback raises :class:`Cancelled`. This module
maps that mechanism onto napari: the call runs in a ``napari.qt.threading``
worker, the callback moves the widget's progress bar on the main thread, and the
Cancel button makes the next callback raise. Layers are only changed on the main
thread after the call returned, so a cancelled or failed run changes nothing.

A run is also cancelled, and its result thrown away, when the widget is closed
(its dock widget closed, the widget destroyed) or when a layer the result would
go to is removed (closing the viewer removes every layer first): an orphaned run
never adds or changes a layer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from magicgui.widgets import Container, ProgressBar, PushButton
from napari.utils.notifications import show_error, show_info
from psygnal import Signal
from qtpy.QtCore import QEvent, QObject
from superqt.utils import ensure_main_thread

from napari_samrefine._napari.dock_layout import fit_new_dock, scroll_body, shrinkable_choices
from napari_samrefine._napari.lazy_layers import claim_new_stores, settle_stores, watch_stores
from napari_samrefine._napari.status import StatusLine
from napari_samrefine._progress import Cancelled

__all__ = ["TaskWidget", "CANCELLED", "CLOSED_TEXT", "removed_text"]

CANCELLED = object()  # what launch() turns a Cancelled into

CLOSED_TEXT = "The widget was closed during the run: it was cancelled and no layer was changed."


def removed_text(name: str) -> str:
    """The status line of a run cancelled because the layer ``name`` was removed."""
    return f"The layer {name!r} was removed during the run: it was cancelled and no layer was changed."


class _CloseWatch(QObject):
    """Calls ``on_close()`` when the watched widget is closed or taken out of its dock.

    napari's dock close button takes the widget out of its dock
    (``setParent(None)``) without deleting it; a widget shown on its own gets a
    Close event.
    """

    def __init__(self, on_close: Callable[[], None], on_dock: Callable[[], None]):
        super().__init__()
        self._on_close, self._on_dock = on_close, on_dock

    def eventFilter(self, obj, event):
        kind = event.type()
        if kind == QEvent.Type.ParentChange:
            (self._on_dock if obj.parent() is not None else self._on_close)()
        elif kind == QEvent.Type.Close:
            self._on_close()
        return False


class TaskWidget(Container):
    """Base of the dock widgets: a Run button, Cancel, a progress bar and a status line.

    Subclasses add their fields, then call :meth:`add_footer`, and start work with
    :meth:`launch`. ``self.worker`` is the running (or last) worker. Layer choices
    follow the viewer's layers (added, removed, renamed). Closing the widget, or
    removing a layer the run writes to, cancels the run.

    The fields scroll inside the widget instead of growing the dock (and the
    window) beyond the screen, and the status line wraps and shows long messages
    shortened (see :class:`~napari_samrefine._napari.status.StatusLine`).
    """

    failed_text = "Failed"  # status prefix when the work raised
    cancelled_text = "Cancelled: no layer was changed."
    progressed = Signal(int, int, str)
    """Emitted on the main thread with every progress report shown: (done, total, message)."""

    def __init__(self, napari_viewer, run_text: str):
        super().__init__(labels=True)
        self._scroll = scroll_body(self)
        self._viewer = napari_viewer
        self.worker = None
        self._busy = False  # from launch() until the worker finished
        self._cancel = threading.Event()
        self._targets: tuple = ()  # layers the running work writes to
        self._stop_reason: str | None = None  # why the run was stopped, when not by Cancel
        self._closed = False  # taken out of its dock or closed; reset when docked again
        self._deleted = False  # its Qt widget no longer exists
        self._run_button = PushButton(text=run_text)
        self._stop_button = PushButton(text="Cancel", enabled=False)
        self._bar = ProgressBar(label="progress", min=0, max=1, value=0)
        self._status = StatusLine()
        self._run_button.changed.connect(self.run)
        self._stop_button.changed.connect(self.cancel)
        events = napari_viewer.layers.events
        for event in (events.inserted, events.removed, events.renamed):
            event.connect(self.reset_choices)
        events.removed.connect(self._layer_removed)
        self._close_watch = _CloseWatch(self._widget_closed, self._widget_docked)
        self.native.installEventFilter(self._close_watch)
        self.native.destroyed.connect(self._widget_destroyed)
        self._stores: list = []  # temporary stores of lazy results the running work writes
        watch_stores(napari_viewer)  # they go when their layer goes

    def add_footer(self) -> None:
        """Append the Run/Cancel buttons, the progress bar and the status line."""
        self.extend([self._run_button, self._stop_button, self._bar, self._status])
        shrinkable_choices(self.native)


    def run(self, *_):  # pragma: no cover - overridden
        """Start the widget's work (the Run button)."""
        raise NotImplementedError

    @property
    def status(self) -> str:
        """The widget's status line, whole (last message, error or result summary)."""
        return self._status.value

    def progress_callback(self) -> Callable[[int, int, str], None]:
        """A core progress callback bound to this widget's bar and Cancel button."""

        def progress(done: int, total: int, message: str = "") -> None:
            # napari aborts the workers it knows of when its window closes
            if self._cancel.is_set() or getattr(self.worker, "abort_requested", False):
                raise Cancelled
            self._show_progress(done, total, message)

        return progress

    def launch(self, work: Callable, *args, on_done: Callable, targets: Sequence = ()) -> None:
        """Run ``work(*args)`` in a worker thread; ``on_done(result)`` on the main thread.

        When ``work`` raises :class:`Cancelled` (or returns :data:`CANCELLED`) the run
        ends as cancelled and ``on_done`` is not called. Errors are shown in the status
        line and as a napari notification.

        Parameters
        ----------
        work : callable
            Runs in the worker thread; reports progress through :meth:`progress_callback`.
        *args
            Arguments of ``work``.
        on_done : callable
            ``on_done(result)``, on the main thread; the only place layers are changed.
        targets : sequence of layers
            The layers ``on_done`` writes to or links its results to. Removing one of
            them cancels the run; ``on_done`` is only called while all are in the viewer
            and the widget is open.
        """
        from napari.qt.threading import create_worker

        if self._busy:
            self.say("Still running: wait, or press Cancel.")
            return
        self._busy = True
        self._cancel.clear()
        self._targets, self._stop_reason = tuple(targets), None
        self._stores = claim_new_stores()  # made for this run: removed if it shows no result
        self._run_button.enabled, self._stop_button.enabled = False, True
        self._bar.max, self._bar.value = 1, 0

        def guarded(*args):
            try:
                return work(*args)
            except Cancelled:
                return CANCELLED

        def returned(result):
            # Cancel pressed (or widget closed, target removed) after the work returned
            # but before this ran: still cancelled
            if result is CANCELLED or not self._may_apply():
                self.say(self._stop_reason or self.cancelled_text)
                return
            try:
                on_done(result)
            except (ValueError, TypeError) as err:
                self.say(str(err), error=True)

        self.worker = create_worker(
            guarded, *args,
            _start_thread=False,
            # errors are reported in the widget, not re-raised in the event loop
            _connect={"returned": returned, "errored": self._failed, "finished": self._finished},
        )
        self.worker.start()

    def _may_apply(self) -> bool:
        """True when a finished run may change layers: not cancelled, widget open, targets there."""
        if self._cancel.is_set() or self._closed or self._deleted:
            return False
        layers = self._viewer.layers
        missing = [t for t in self._targets if t not in layers]
        if missing:
            self._stop_reason = removed_text(missing[0].name)
            return False
        return True

    def cancel(self, *_):
        """Stop the running work at its next progress report (the Cancel button)."""
        if self._busy:
            self._cancel.set()
            self.say("Cancelling ...")

    def _stop(self, reason: str) -> None:
        """Cancel the running work for ``reason`` (shown when the worker has stopped)."""
        if self._busy and not self._cancel.is_set():
            self._stop_reason = reason
            self._cancel.set()

    def _layer_removed(self, event) -> None:
        layer = event.value
        if self._busy and any(layer == t for t in self._targets):
            self._stop(removed_text(layer.name))

    def _widget_docked(self) -> None:
        self._closed = False
        if self._scroll is not None:
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, self._fit_dock)  # once the dock is in the window

    def _fit_dock(self) -> None:
        """Give a newly docked widget a usable share of its dock column.

        Qt gives a dock added later the width of those already in its column
        (often too narrow: the fields scroll sideways) and a few lines of height.
        This widens the column to what the fields need, up to ``MAX_HINT`` and
        never narrower than it was, and shares the column's height evenly
        between its docks. The window does not grow: the canvas gives the room,
        down to its own minimum.
        """
        if self._deleted or self._closed:
            return
        try:
            fit_new_dock(self.native, self._scroll)
        except RuntimeError:  # the Qt widget went away meanwhile
            pass

    def _widget_closed(self) -> None:
        self._closed = True
        self._stop(CLOSED_TEXT)

    def _widget_destroyed(self, *_) -> None:
        self._deleted = self._closed = True
        self._stop(CLOSED_TEXT)

    @ensure_main_thread
    def _show_progress(self, done: int, total: int, message: str) -> None:
        if self._deleted:
            return
        self._bar.max = max(int(total), 1)
        self._bar.value = min(int(done), self._bar.max)
        self._status.value = message
        self.progressed.emit(int(done), int(total), message)

    def _failed(self, err: Exception) -> None:
        # an orphaned run (widget closed) pops no notification
        self.say(f"{self.failed_text}: {type(err).__name__}: {err}", error=not self.closed)

    @property
    def busy(self) -> bool:
        """True from the start of a run until its worker finished."""
        return self._busy

    @property
    def closed(self) -> bool:
        """True once the widget was closed (taken out of its dock) or destroyed."""
        return self._closed or self._deleted

    def _finished(self) -> None:
        self._busy = False
        settle_stores(self._stores)
        self._stores = []
        if not self._deleted:
            self._run_button.enabled, self._stop_button.enabled = True, False

    def say(self, text: str, error: bool = False, notify: bool = False) -> None:
        """Show a message in the status line (and as a notification for errors)."""
        if self._deleted:
            return
        self._status.value = text
        if error:
            show_error(text)
        elif notify:
            show_info(text)
