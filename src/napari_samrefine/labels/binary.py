"""Binary masks: a bool image, or one with exactly two values of which one is 0.

A binary mask (0/1, 0/255, 0/65535 ...) is a mask rather than an instance label
image. Its 8-connected components become the objects (``binary="components"``,
the default) or the whole mask is one object (``binary="one"``); the result is
written back as the mask's foreground value.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

from napari_samrefine.labels.objects import label_components

__all__ = [
    "BinaryMode",
    "BINARY_CHOICES",
    "binary_foreground",
    "announce_components",
    "binary_objects",
    "restore_binary",
]

BinaryMode = Literal["components", "one"]
BINARY_CHOICES = ("components", "one")


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


def announce_components(fg, counts: list[int], stacklevel: int) -> None:
    """Warn that a binary mask's connected components are refined as separate objects.

    ``fg`` is the mask's foreground value (True for bool); ``counts`` the number
    of components of each plane; ``stacklevel`` as in :func:`warnings.warn`, from
    the function that calls this one.
    """
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
            announce_components(fg, counts, stacklevel + 1)
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
