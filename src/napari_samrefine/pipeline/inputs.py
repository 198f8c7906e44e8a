"""The up-front checks of :func:`~napari_samrefine.refine`'s parameters.

The checks of the image and labels themselves, and binary masks, live in
:mod:`napari_samrefine.labels` (:mod:`~napari_samrefine.labels.values`,
:mod:`~napari_samrefine.labels.binary`, :mod:`~napari_samrefine.labels.arrays`);
their names are re-exported here.
"""

from __future__ import annotations

import math
import numbers

from napari_samrefine.labels.arrays import arrange_image
from napari_samrefine.labels.binary import (
    BINARY_CHOICES,
    BinaryMode,
    binary_foreground,
    binary_objects,
    restore_binary,
)
from napari_samrefine.labels.values import (
    EMPTY_LABELS,
    check_label_values,
    check_labels,
    label_plane,
)

__all__ = [
    "check_labels",
    "check_label_values",
    "check_refine_options",
    "label_plane",
    "arrange_image",
    "binary_foreground",
    "binary_objects",
    "restore_binary",
    "BINARY_CHOICES",
    "BinaryMode",
    "EMPTY_LABELS",
]


def _whole(value, low: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value) -> bool:
    return _finite(value) and value > 0


def check_refine_options(
    *,
    iterations=5,
    batch_size=32,
    convergence=0.99,
    tile="auto",
    halo=None,
    cebox="auto",
    strength=15.0,
    gamma=4.0,
    binary="components",
) -> None:
    """Check :func:`~napari_samrefine.refine`'s numeric options before any work.

    Raises
    ------
    ValueError
        Naming the parameter, its valid range and the value given.
    """
    problems = []
    if not _whole(iterations, 1):
        problems.append(f"iterations must be a whole number >= 1 (5 by default), got {iterations!r}")
    if not _whole(batch_size, 1):
        problems.append(
            f"batch_size must be a whole number >= 1 (objects per decoder call, 32 by default), "
            f"got {batch_size!r}"
        )
    if convergence is not None and not (_finite(convergence) and 0 <= convergence <= 1):
        problems.append(
            f"convergence must be in [0, 1] or None (0.99 by default), got {convergence!r}"
        )
    if not (tile is None or tile == "auto" or _whole(tile, 32)):
        problems.append(
            f"tile must be None, 'auto' or a whole number of pixels >= 32, got {tile!r}"
        )
    if halo is not None and not (_whole(halo, 0) and (not _whole(tile, 32) or 2 * halo < tile)):
        problems.append(
            f"halo must be None or a whole number of pixels >= 0 and less than half the tile, "
            f"got {halo!r}"
        )
    if not (cebox is None or cebox == "auto" or (_finite(cebox) and 0 <= cebox <= 1)):
        problems.append(
            f"cebox must be 'auto', None or a fraction in [0, 1] (0.1 by default), got {cebox!r}"
        )
    if not _positive(strength):
        problems.append(f"strength must be a positive number (15 by default), got {strength!r}")
    if not _positive(gamma):
        problems.append(f"gamma must be a positive number (4 by default), got {gamma!r}")
    if binary not in BINARY_CHOICES:
        problems.append(f"binary must be 'components' or 'one', got {binary!r}")
    if problems:
        raise ValueError("; ".join(problems) + ".")


