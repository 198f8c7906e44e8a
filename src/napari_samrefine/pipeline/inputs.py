"""The checks of refine's image and labels, gathered for the pipeline.

The checks of the image and labels themselves, and binary masks, live in
:mod:`napari_samrefine.labels` (:mod:`~napari_samrefine.labels.values`,
:mod:`~napari_samrefine.labels.binary`, :mod:`~napari_samrefine.labels.arrays`);
their names are re-exported here.
"""

from __future__ import annotations

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
    "label_plane",
    "arrange_image",
    "binary_foreground",
    "binary_objects",
    "restore_binary",
    "BINARY_CHOICES",
    "BinaryMode",
    "EMPTY_LABELS",
]
