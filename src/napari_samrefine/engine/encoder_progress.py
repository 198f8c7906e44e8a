"""Progress and Cancel inside an image-encoder pass.

One ViT-B pass takes 15-30 s on a two-core CPU; a progress callback called only
between passes leaves the bar at 0 % and Cancel waiting that long. Within
:func:`reporting_encoder`, forward pre-hooks on the encoder's linear and
convolution layers (about 50 per ViT-B pass, each a fraction of a second apart)
report the pass to ``progress`` and let it raise
:class:`~napari_samrefine._progress.Cancelled` there, so a cancel acts between
two layers. The weights and the computation are untouched, and the hooks are
removed on leaving the block.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from napari_samrefine._progress import ProgressCallback

__all__ = ["reporting_encoder", "REPORT_INTERVAL"]

REPORT_INTERVAL = 0.2
"""Seconds between two progress reports of one pass (a cancel is checked at each)."""


@contextmanager
def reporting_encoder(
    sam, progress: ProgressCallback | None, message: str = "encoding the image"
) -> Iterator[None]:
    """Report every image-encoder pass of ``sam`` in this thread to ``progress``.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam or None
        The model whose ``image_encoder`` passes are reported (None: a run
        without SAM, nothing to report).
    progress : callable or None
        ``progress(done, total, message)``, called at most every
        :data:`REPORT_INTERVAL` seconds during a pass with the layers done so
        far; raising :class:`~napari_samrefine._progress.Cancelled` in it stops
        the pass there. None: nothing is reported (the block does nothing).
    message : str
        What the reports say.

    Notes
    -----
    Only passes run by the thread that entered the block report; other
    threads using the same model at the same time are not affected.

    Examples
    --------
    >>> with reporting_encoder(sam, progress):  # doctest: +SKIP
    ...     result = refine(image, labels, sam, progress=progress)
    """
    if progress is None or sam is None:
        yield
        return
    layers = [
        m for m in sam.image_encoder.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
    ]
    owner = threading.get_ident()
    last = [0.0]

    def make_hook(index: int):
        def hook(module, args) -> None:
            if threading.get_ident() != owner:
                return
            now = time.monotonic()
            if index == 0 or now - last[0] >= REPORT_INTERVAL:
                last[0] = now
                progress(index, len(layers), message)

        return hook

    handles = [m.register_forward_pre_hook(make_hook(i)) for i, m in enumerate(layers)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
