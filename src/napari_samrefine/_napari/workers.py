"""Running one long core call from a dock widget: worker thread, progress bar, Cancel.

The core reports progress through one callback, ``progress(done, total,
message)``, and stops when that callback raises :class:`Cancelled`. This module
maps that mechanism onto napari: the call runs in a ``napari.qt.threading``
worker, the callback moves the widget's progress bar on the main thread, and the
Cancel button makes the next callback raise. Layers are only changed on the main
thread after the call returned, so a cancelled or failed run changes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from magicgui.widgets import Container, Label, ProgressBar, PushButton
from napari.utils.notifications import show_error, show_info
from superqt.utils import ensure_main_thread

from .._progress import Cancelled

__all__ = ["TaskWidget", "CANCELLED"]

CANCELLED = object()  # what launch() turns a Cancelled into


class TaskWidget(Container):
    """Base of the dock widgets: a Run button, Cancel, a progress bar and a status line.

    Subclasses add their fields, then call :meth:`add_footer`, and start work with
    :meth:`launch`. ``self.worker`` is the running (or last) worker. Layer choices
    follow the viewer's layers (added, removed, renamed).
    """

    failed_text = "Failed"  # status prefix when the work raised
    cancelled_text = "Cancelled: no layer was changed."

    def __init__(self, napari_viewer, run_text: str):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self.worker = None
        self._busy = False  # from launch() until the worker finished
        self._cancel = threading.Event()
        self._run_button = PushButton(text=run_text)
        self._stop_button = PushButton(text="Cancel", enabled=False)
        self._bar = ProgressBar(label="progress", min=0, max=1, value=0)
        self._status = Label(label="", value="")
        self._run_button.changed.connect(self.run)
        self._stop_button.changed.connect(self.cancel)
        events = napari_viewer.layers.events
        for event in (events.inserted, events.removed, events.renamed):
            event.connect(self.reset_choices)

    def add_footer(self) -> None:
        """Append the Run/Cancel buttons, the progress bar and the status line."""
        self.extend([self._run_button, self._stop_button, self._bar, self._status])

    def run(self, *_):  # pragma: no cover - overridden
        """Start the widget's work (the Run button)."""
        raise NotImplementedError

    @property
    def status(self) -> str:
        """The widget's status line (last message, error or result summary)."""
        return self._status.value

    def progress_callback(self) -> Callable[[int, int, str], None]:
        """A core progress callback bound to this widget's bar and Cancel button."""

        def progress(done: int, total: int, message: str = "") -> None:
            if self._cancel.is_set():
                raise Cancelled
            self._show_progress(done, total, message)

        return progress

    def launch(self, work: Callable, *args, on_done: Callable) -> None:
        """Run ``work(*args)`` in a worker thread; ``on_done(result)`` on the main thread.

        When ``work`` raises :class:`Cancelled` (or returns :data:`CANCELLED`) the run
        ends as cancelled and ``on_done`` is not called. Errors are shown in the status
        line and as a napari notification.
        """
        from napari.qt.threading import create_worker

        if self._busy:
            self.say("Still running: wait, or press Cancel.")
            return
        self._busy = True
        self._cancel.clear()
        self._run_button.enabled, self._stop_button.enabled = False, True
        self._bar.max, self._bar.value = 1, 0

        def guarded(*args):
            try:
                return work(*args)
            except Cancelled:
                return CANCELLED

        def returned(result):
            # Cancel pressed after the work returned but before this ran: still cancelled
            if result is CANCELLED or self._cancel.is_set():
                self.say(self.cancelled_text)
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

    def cancel(self, *_):
        """Stop the running work at its next progress report (the Cancel button)."""
        if self._busy:
            self._cancel.set()
            self.say("Cancelling ...")

    @ensure_main_thread
    def _show_progress(self, done: int, total: int, message: str) -> None:
        self._bar.max = max(int(total), 1)
        self._bar.value = min(int(done), self._bar.max)
        self._status.value = message

    def _failed(self, err: Exception) -> None:
        self.say(f"{self.failed_text}: {type(err).__name__}: {err}", error=True)

    @property
    def busy(self) -> bool:
        """True from the start of a run until its worker finished."""
        return self._busy

    def _finished(self) -> None:
        self._busy = False
        self._run_button.enabled, self._stop_button.enabled = True, False

    def say(self, text: str, error: bool = False, notify: bool = False) -> None:
        """Show a message in the status line (and as a notification for errors)."""
        self._status.value = text
        if error:
            show_error(text)
        elif notify:
            show_info(text)
