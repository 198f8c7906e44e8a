"""Checking and arranging the user's image and labels (2D, channels, stacks)."""

from __future__ import annotations

import numpy as np

__all__ = ["check_labels", "check_label_values", "label_plane", "arrange_image"]


def check_label_values(labels: np.ndarray, what: str = "Labels") -> None:
    """Refuse non-integer or negative labels with a message that names the fix."""
    if labels.dtype != np.bool_ and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{what} must hold integers (object or class ids), got dtype {labels.dtype}. "
            "If the values are whole numbers, convert them with labels.astype(np.int32); a "
            "probability map must be thresholded first (e.g. labels = prob > 0.5)."
        )
    if labels.size and labels.dtype != np.bool_ and labels.min() < 0:
        raise ValueError(
            f"{what} contain negative values (minimum {labels.min()}): they must be "
            "non-negative, 0 is background. Relabel, e.g. with "
            "skimage.segmentation.relabel_sequential."
        )


def label_plane(labels: np.ndarray, what: str = "Labels") -> np.ndarray:
    """A validated 2D label plane (booleans become uint8); the input is not modified."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(
            f"{what} must be a 2D image, got shape {labels.shape}: pass one plane of a stack."
        )
    check_label_values(labels, what)
    return labels.astype(np.uint8) if labels.dtype == np.bool_ else labels


def check_labels(labels: np.ndarray) -> np.ndarray:
    """Validate a label image (2D, or a 3D stack refined plane by plane).

    Parameters
    ----------
    labels : numpy.ndarray
        Non-negative integer (or boolean) labels; 0 is background.

    Returns
    -------
    numpy.ndarray
        The same array (never a modified copy).

    Raises
    ------
    ValueError
        For float, negative, empty or wrongly shaped labels, with the fix.
    """
    labels = np.asarray(labels)
    check_label_values(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(
            f"Labels must be 2D (Y, X) or a 3D stack (Z/T, Y, X), got shape {labels.shape}."
        )
    if min(labels.shape[-2:]) < 2:
        raise ValueError(f"Labels of shape {labels.shape} are too small to refine.")
    if not labels.any():
        raise ValueError(
            "The label image is empty (every pixel is 0): there is no coarse mask to refine. "
            "Check that the right Labels layer or file is selected."
        )
    return labels


def arrange_image(
    image: np.ndarray, labels_shape: tuple[int, ...], channel_axis: int | None = None
) -> np.ndarray:
    """Return a view of ``image`` with spatial axes matching the labels and channels last.

    Parameters
    ----------
    image : numpy.ndarray
        (..., Y, X) grey or (..., Y, X, C) with channels last, or any layout with
        ``channel_axis`` naming the channel axis.
    labels_shape : tuple of int
        Shape of the labels ((Y, X) or (Z, Y, X)).
    channel_axis : int, optional
        Axis of the channels in ``image`` when it is not the last one.

    Raises
    ------
    ValueError
        When the image's spatial shape differs from the labels'.
    """
    img = np.asarray(image)
    if channel_axis is not None:
        img = np.moveaxis(img, channel_axis, -1)
    if img.shape == tuple(labels_shape):
        return img
    if img.ndim == len(labels_shape) + 1 and img.shape[:-1] == tuple(labels_shape):
        return img
    raise ValueError(
        f"Image shape {np.asarray(image).shape} does not match labels shape {tuple(labels_shape)}: "
        "the image must have the labels' shape, optionally with a channel axis (last, or "
        "named with channel_axis=...). Check that image and labels belong together "
        "(same crop, same scale)."
    )
