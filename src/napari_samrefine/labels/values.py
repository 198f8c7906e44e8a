"""Label images and masks: the one label validator of the package (the IoU: :mod:`.iou`).

Every entry point (refine, the judge, the metrics, the widgets) checks labels with
:func:`check_label_values`, so a user meets the same message, with the same fix,
wherever a float or negative label image goes in.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_label_values", "label_plane"]


def _float_fix(labels: np.ndarray) -> str:
    """The conversion that fits float labels: a cast for whole numbers, else a threshold."""
    finite = bool(np.isfinite(labels).all())
    if finite and labels.size and bool(np.all(labels == np.round(labels))):
        target = "np.int32" if float(labels.max()) <= np.iinfo(np.int32).max else "np.int64"
        return f"they are whole numbers, so convert them: labels.astype({target})"
    return "they are not whole numbers (a probability map?), so threshold them: labels > 0.5"


def check_label_values(labels, what: str = "Labels") -> np.ndarray:
    """Refuse non-integer or negative labels with a one-line message that names the fix.

    Every dtype napari's Labels layer takes (signed and unsigned integers of any
    width, bool) passes. Float labels are refused with the fix that fits them:
    ``labels.astype(np.int32)`` for whole numbers, ``labels > 0.5`` for a
    probability map. Negative labels are refused with ``labels.clip(min=0)``
    (negative values mark background) or a view as the unsigned type of the
    same width (ids that overflowed a signed type).

    Parameters
    ----------
    labels : array_like
        A label image of any dimension; 0 is background.
    what : str
        How the message names the labels ("Labels", "coarse_labels", ...).

    Returns
    -------
    numpy.ndarray
        The labels as an array; booleans become uint8 (a new array), any other
        valid input is returned as it is, never modified.

    Raises
    ------
    ValueError
        For float, other non-integer or negative labels; the message names the fix.
    """
    labels = np.asarray(labels)
    if labels.dtype != np.bool_ and not np.issubdtype(labels.dtype, np.integer):
        fix = (
            _float_fix(labels)
            if np.issubdtype(labels.dtype, np.floating)
            else "convert them to integers: labels.astype(np.int32)"
        )
        raise ValueError(
            f"{what} must hold integers (object or class ids), got dtype {labels.dtype}: {fix}."
        )
    if labels.size and labels.dtype != np.bool_ and labels.min() < 0:
        unsigned = f"np.uint{labels.dtype.itemsize * 8}"
        raise ValueError(
            f"{what} must be non-negative (0 is background), but the minimum is {labels.min()}: "
            "if negative values mark background, use labels.clip(min=0); if they are ids that "
            f"overflowed a signed type, use labels.view({unsigned})."
        )
    return labels.astype(np.uint8) if labels.dtype == np.bool_ else labels


def label_plane(labels: np.ndarray, what: str = "Labels") -> np.ndarray:
    """A validated 2D label plane (booleans become uint8); the input is not modified."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(
            f"{what} must be a 2D image, got shape {labels.shape}: pass one plane of a stack."
        )
    return check_label_values(labels, what)
