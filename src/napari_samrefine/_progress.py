"""Progress and cancellation: one callback that the GUI, the CLI and scripts plug into.

Long functions take ``progress(done, total, message)``. The callback reports
progress; to cancel, it raises :class:`Cancelled`, which the long function lets
propagate after releasing what it holds. Nothing the caller passed in is
modified, so a cancelled call leaves no trace.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Cancelled", "ProgressCallback", "report", "tqdm_progress"]

ProgressCallback = Callable[[int, int, str], None]


class Cancelled(Exception):
    """Raised by a progress callback to stop a long computation."""


def report(progress: ProgressCallback | None, done: int, total: int, message: str = "") -> None:
    """Call ``progress`` if there is one."""
    if progress is not None:
        progress(done, total, message)


def tqdm_progress(desc: str = "", **kwargs) -> ProgressCallback:
    """A progress callback drawing a tqdm bar (for the CLI and scripts)."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, **kwargs)

    def callback(done: int, total: int, message: str = "") -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()
        if done >= total:
            bar.close()

    return callback
