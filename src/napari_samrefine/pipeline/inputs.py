"""Checking and arranging the user's image and labels (2D, channels, stacks).

Also binary masks: a bool image, or one with exactly two values of which one is 0
(0/1, 0/255, 0/65535 ...), is a mask rather than an instance label image. Its
8-connected components become the objects (``binary="components"``, the
default) or the whole mask is one object (``binary="one"``).
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

from napari_samrefine.labels.objects import label_components
from napari_samrefine.labels.values import check_label_values, label_plane
from napari_samrefine.pipeline.lazy_arrays import ChannelLast, is_lazy

__all__ = [
    "check_labels",
    "check_lazy_labels",
    "check_label_values",
    "label_plane",
    "arrange_image",
    "binary_foreground",
    "binary_objects",
    "restore_binary",
    "BINARY_CHOICES",
]

BinaryMode = Literal["components", "one"]
BINARY_CHOICES = ("components", "one")


# -- binary masks -----------------------------------------------------------------------------


def binary_foreground(labels: np.ndarray):
    """The foreground value of a binary mask, or None for other label images.

    A binary mask is a bool image, or an integer image with exactly two values,
    one of them 0 (0/1, 0/255, 0/65535 ...).

    Examples
    --------
    >>> binary_foreground(np.array([[0, 255], [255, 0]], np.uint8))
    255
    >>> binary_foreground(np.array([[0, 1], [2, 0]], np.uint8)) is None
    True
    """
    labels = np.asarray(labels)
    if labels.dtype == np.bool_:
        return True
    if labels.size == 0:
        return None
    high = labels.max()
    if high == 0 or labels.min() != 0:
        return None
    if np.count_nonzero(labels) != np.count_nonzero(labels == high):
        return None
    return high.item()


def _announce_components(fg, counts: list[int], stacklevel: int) -> None:
    n = sum(counts)
    what = "a boolean mask" if fg is True else f"a binary mask (values 0 and {fg})"
    per_plane = " (counted per plane)" if len(counts) > 1 else ""
    warnings.warn(
        f"The labels are {what}: its {n} connected components{per_plane} are refined as "
        f"separate objects (numbered from 1 in the result table) and written back as {fg}. "
        "Pass binary='one' (command line: --binary one) to refine the whole mask as one object.",
        UserWarning,
        stacklevel=stacklevel + 1,
    )


def binary_objects(
    labels: np.ndarray,
    binary: BinaryMode = "components",
    mode: str = "instance",
    stacklevel: int = 2,
) -> tuple[np.ndarray, object]:
    """The label image whose ids are the objects to refine, and the mask's foreground value.

    Parameters
    ----------
    labels : numpy.ndarray
        Checked labels, 2D or a stack; not modified.
    binary : {"components", "one"}
        For a binary mask in instance mode: "components" makes its 8-connected
        components the objects, numbered from 1 in raster order in each plane,
        with a UserWarning, when a plane holds more than one (a mask that is one
        connected object per plane stays as it is: its id is the foreground
        value); "one" keeps the whole mask as one object. In semantic mode a
        binary mask is one class (split-then-merge splits it).
    mode : str
        "instance" or "semantic".
    stacklevel : int
        Where the warning points: 1 is the function that calls this one, 2
        (default) the code that called that function.

    Returns
    -------
    objects : numpy.ndarray
        ``labels`` itself (bool viewed as uint8) or the numbered components.
    foreground : int, bool or None
        The mask's foreground value (True for bool), None for non-binary labels.
    """
    if binary not in BINARY_CHOICES:
        raise ValueError(f"binary must be 'components' or 'one', got {binary!r}.")
    fg = binary_foreground(labels)
    if fg is None:
        return labels, None
    if mode == "instance" and binary == "components":
        mask = labels != 0
        flat = mask.reshape(-1, *mask.shape[-2:]) if mask.ndim > 3 else mask
        components, counts = label_components(flat)
        if max(counts) > 1:
            _announce_components(fg, counts, stacklevel + 1)
            return components.reshape(mask.shape), fg
    return (labels.view(np.uint8) if labels.dtype == np.bool_ else labels), fg


def restore_binary(refined: np.ndarray, labels: np.ndarray, foreground) -> np.ndarray:
    """Refined objects back in the input's form: a mask of ``foreground`` with its dtype.

    Returns ``refined`` unchanged when ``foreground`` is None (non-binary input).
    """
    if foreground is None:
        return refined
    value = labels.dtype.type(foreground)
    return np.where(refined != 0, value, labels.dtype.type(0)).astype(labels.dtype, copy=False)


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


def check_labels(labels: np.ndarray, max_ndim: int = 3) -> np.ndarray:
    """Validate a label image (2D, or a stack refined plane by plane).

    Parameters
    ----------
    labels : numpy.ndarray
        Non-negative integer (or boolean) labels; 0 is background.
    max_ndim : int
        3 (default) accepts (Y, X) and (Z, Y, X); 4 also (T, Z, Y, X).

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
    problem = _shape_problem(labels.shape, max_ndim)
    if problem:
        raise ValueError(problem)
    if not labels.any():
        raise ValueError(EMPTY_LABELS)
    return labels


def check_lazy_labels(labels, max_ndim: int = 4):
    """Check what can be checked of lazy labels without reading them: dtype and shape.

    Negative and empty labels are found by the block-by-block object pass
    (:func:`~napari_samrefine.labels.scan.scan_objects`).

    Raises
    ------
    ValueError
        For non-integer or wrongly shaped labels, with the fix.
    """
    dtype = np.dtype(labels.dtype)
    if dtype != np.bool_ and not np.issubdtype(dtype, np.integer):
        fix = (
            "convert whole numbers with labels.astype(np.int32), or threshold a probability "
            "map with labels > 0.5"
            if np.issubdtype(dtype, np.floating)
            else "convert them to integers: labels.astype(np.int32)"
        )
        raise ValueError(
            f"Labels must hold integers (object or class ids), got dtype {dtype}: {fix}."
        )
    problem = _shape_problem(tuple(labels.shape), max_ndim)
    if problem:
        raise ValueError(problem)
    return labels


def arrange_image(
    image: np.ndarray, labels_shape: tuple[int, ...], channel_axis: int | None = None
) -> np.ndarray:
    """Return a view of ``image`` with spatial axes matching the labels and channels last.

    Parameters
    ----------
    image : numpy.ndarray or lazy array
        (..., Y, X) grey or (..., Y, X, C) with channels last, or any layout with
        ``channel_axis`` naming the channel axis. A lazy array (dask, zarr,
        memmap) stays lazy: nothing is read.
    labels_shape : tuple of int
        Shape of the labels ((Y, X), (Z, Y, X) or (T, Z, Y, X)).
    channel_axis : int, optional
        Axis of the channels in ``image`` when it is not the last one.

    Raises
    ------
    ValueError
        When the image's spatial shape differs from the labels'.
    """
    lazy = is_lazy(image)
    img = image if lazy else np.asarray(image)
    if channel_axis is not None:
        if not -img.ndim <= channel_axis < img.ndim:
            raise ValueError(
                f"channel_axis={channel_axis} does not exist: the image has {img.ndim} axes."
            )
        if lazy:
            if channel_axis % img.ndim != img.ndim - 1:
                img = ChannelLast(img, channel_axis)
        else:
            img = np.moveaxis(img, channel_axis, -1)
    shape = tuple(img.shape)
    if shape == tuple(labels_shape):
        return img
    if len(shape) == len(labels_shape) + 1 and shape[:-1] == tuple(labels_shape):
        return img
    dims = ""
    if len(shape) not in (len(labels_shape), len(labels_shape) + 1):
        dims = f" (a {len(image.shape)}D image for {len(labels_shape)}D labels)"
    raise ValueError(
        f"Image shape {tuple(image.shape)} does not match labels shape {tuple(labels_shape)}"
        f"{dims}: "
        "the image must have the labels' shape, optionally with a channel axis (last, or "
        "named with channel_axis=...). Check that image and labels belong together "
        "(same crop, same scale)."
    )
