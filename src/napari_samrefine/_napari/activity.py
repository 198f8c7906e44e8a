"""Progress of a script's long call, shown in napari's activity dock.

The core reports progress through one callback, ``progress(done, total,
message)`` (:mod:`napari_samrefine._progress`). The widgets map it onto their
own progress bar in a worker thread (:mod:`.workers`); a script (napari's
console, a macro) runs the call on the main thread, so :func:`activity_progress`
maps it onto a :class:`napari.utils.progress` bar, which napari's activity dock
shows (bottom right of the window, *View > Activity*), and lets Qt repaint the
dock between reports (user input waits until the call returns).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from napari_samrefine._progress import ProgressCallback

__all__ = ["activity_progress", "REPAINT_INTERVAL"]

REPAINT_INTERVAL = 0.1
"""Seconds between two repaints of the activity dock during a call on the main thread."""


def _repaint() -> None:
    """Let Qt draw the activity dock now, when called on the main thread of a Qt application."""
    from qtpy.QtCore import QEventLoop, QThread
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    if app is not None and QThread.currentThread() is app.thread():
        app.processEvents(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents)


@contextmanager
def activity_progress(description: str) -> Iterator[ProgressCallback]:
    """A progress callback drawing a bar in napari's activity dock during the block.

    Parameters
    ----------
    description : str
        The bar's title ("refining 'nuclei coarse'"); each report's message is
        appended to it.

    Yields
    ------
    callable
        ``progress(done, total, message)``, for the ``progress=`` argument of
        :func:`~napari_samrefine.refine`, :func:`~napari_samrefine.judge_refinement`,
        :func:`~napari_samrefine.adapt_iou_head` and the image encoder's reports.

    Notes
    -----
    The bar is closed (it leaves the dock) when the block ends, also on an error.
    Without a viewer, napari's progress prints a text bar instead, as tqdm does.
    """
    from napari.utils import progress

    bar = progress(total=0, desc=description)  # no total yet: a busy bar
    shown = {"message": None, "at": 0.0}

    def report(done: int, total: int, message: str = "") -> None:
        total, done = max(int(total), 0), max(int(done), 0)
        if bar.total != total:
            bar.total = total
        if message != shown["message"]:
            shown["message"] = message
            bar.set_description(f"{description}: {message}" if message else description)
        bar.update(min(done, total) - bar.n if total else 0)
        now = time.monotonic()
        if now - shown["at"] >= REPAINT_INTERVAL or (total and done >= total):
            shown["at"] = now
            _repaint()

    try:
        yield report
    finally:
        bar.close()
