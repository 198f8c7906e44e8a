"""Label images and masks: the one label validator of the package (the IoU: :mod:`.iou`).

Every entry point (refine, the judge, the metrics, the widgets) checks labels with
:func:`check_label_values`, so a user meets the same message, with the same fix,
wherever a float or negative label image goes in.
"""

from __future__ import annotations

import numpy as np

from napari_samrefine.labels.arrays import is_lazy

__all__ = [
    "check_label_values",
    "check_labels",
    "negative_labels",
    "label_plane",
    "EMPTY_LABELS",
]


def _float_fix(labels) -> str:
    """The conversion that fits float labels: a cast for whole numbers, else a threshold.

    Lazy labels are not read: both fixes are named.
    """
    if is_lazy(labels):
        return (
            "convert whole numbers with labels.astype(np.int32), or threshold a probability "
            "map with labels > 0.5"
        )
    finite = bool(np.isfinite(labels).all())
    if finite and labels.size and bool(np.all(labels == np.round(labels))):
        target = "np.int32" if float(labels.max()) <= np.iinfo(np.int32).max else "np.int64"
        return f"they are whole numbers, so convert them: labels.astype({target})"
    return "they are not whole numbers (a probability map?), so threshold them: labels > 0.5"


def negative_labels(low, dtype, what: str = "Labels") -> ValueError:
    """The error for labels whose minimum ``low`` is negative, naming the fix."""
    unsigned = f"np.uint{np.dtype(dtype).itemsize * 8}"
    return ValueError(
        f"{what} must be non-negative (0 is background), but the minimum is {low}: "
        "if negative values mark background, use labels.clip(min=0); if they are ids that "
        f"overflowed a signed type, use labels.view({unsigned})."
    )


def check_label_values(labels, what: str = "Labels"):
    """Refuse non-integer or negative labels with a one-line message that names the fix.

    Every dtype napari's Labels layer takes (signed and unsigned integers of any
    width, bool) passes. Float labels are refused with the fix that fits them:
    ``labels.astype(np.int32)`` for whole numbers, ``labels > 0.5`` for a
    probability map. Negative labels are refused with ``labels.clip(min=0)``
    (negative values mark background) or a view as the unsigned type of the
    same width (ids that overflowed a signed type).

    Parameters
    ----------
    labels : array_like or lazy array
        A label image of any dimension; 0 is background. A lazy array (dask,
        zarr, memmap: :func:`~napari_samrefine.labels.arrays.is_lazy`) is not
        read: only its dtype is checked (its values are checked by the object
        scan, :func:`~napari_samrefine.labels.scan.scan_objects`).
    what : str
        How the message names the labels ("Labels", "coarse_labels", ...).

    Returns
    -------
    numpy.ndarray or lazy array
        The labels as an array; booleans become uint8 (a new array), any other
        valid input (and any lazy array) is returned as it is, never modified.

    Raises
    ------
    ValueError
        For float, other non-integer or negative labels; the message names the fix.
    """
    lazy = is_lazy(labels)
    labels = labels if lazy else np.asarray(labels)
    dtype = np.dtype(labels.dtype)
    if dtype != np.bool_ and not np.issubdtype(dtype, np.integer):
        fix = (
            _float_fix(labels)
            if np.issubdtype(dtype, np.floating)
            else "convert them to integers: labels.astype(np.int32)"
        )
        raise ValueError(
            f"{what} must hold integers (object or class ids), got dtype {dtype}: {fix}."
        )
    if lazy:
        return labels
    if labels.size and dtype != np.bool_ and labels.min() < 0:
        raise negative_labels(labels.min(), dtype, what)
    return labels.astype(np.uint8) if dtype == np.bool_ else labels


def label_plane(labels: np.ndarray, what: str = "Labels") -> np.ndarray:
    """A validated 2D label plane (booleans become uint8); the input is not modified."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(
            f"{what} must be a 2D image, got shape {labels.shape}: pass one plane of a stack."
        )
    return check_label_values(labels, what)


def _shape_problem(shape: tuple[int, ...], max_ndim: int) -> str | None:
    if len(shape) not in range(2, max_ndim + 1):
        kinds = "2D (Y, X) or a 3D stack (Z/T, Y, X)"
        if max_ndim >= 4:
            kinds = "2D (Y, X), a 3D stack (Z/T, Y, X) or a 4D stack (T, Z, Y, X)"
        return f"Labels must be {kinds}, got shape {shape}."
    if min(shape[-2:]) < 2:
        return f"Labels of shape {shape} are too small to refine."
    return None


EMPTY_LABELS = (
    "The label image is empty (every pixel is 0): there is no coarse mask to refine. "
    "Check that the right Labels layer or file is selected."
)


def check_labels(labels, max_ndim: int = 3):
    """Validate a label image (2D, or a stack refined plane by plane).

    The one check of a label image that refine, the adaption and the widgets
    make: values (:func:`check_label_values`) and shape. A lazy array is not
    read: its dtype and shape are checked here, its values (negative, empty)
    by the object scan (:func:`~napari_samrefine.labels.scan.scan_objects`).

    Parameters
    ----------
    labels : numpy.ndarray or lazy array
        Non-negative integer (or boolean) labels; 0 is background.
    max_ndim : int
        3 (default) accepts (Y, X) and (Z, Y, X); 4 also (T, Z, Y, X).

    Returns
    -------
    numpy.ndarray or lazy array
        The same array (never a modified copy).

    Raises
    ------
    ValueError
        For float, negative, empty or wrongly shaped labels, with the fix.
    """
    lazy = is_lazy(labels)
    labels = labels if lazy else np.asarray(labels)
    check_label_values(labels)
    problem = _shape_problem(tuple(labels.shape), max_ndim)
    if problem:
        raise ValueError(problem)
    if not lazy and not labels.any():
        raise ValueError(EMPTY_LABELS)
    return labels
