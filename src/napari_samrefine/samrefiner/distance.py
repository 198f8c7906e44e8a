"""Distance maps of one object, computed on its crop (SAMRefiner's distance-guided points).

SPEC section 2: ``D+`` is, for every pixel of the mask M, the Euclidean distance to
the nearest background pixel inside the image (the image border is not
background), 0 off M; ``D-`` is, for every background pixel, the distance to the
nearest pixel of M. Both are exact Euclidean distance transforms
(:func:`scipy.ndimage.distance_transform_edt`; the reference code uses a chamfer
approximation).

Both maps are computed on the object's crop: its tight box plus a 1-pixel margin,
clipped to the image. This equals the whole-image computation: every pixel of M
lies in the tight box, and the nearest background pixel of a pixel of M can be
projected onto the crop rectangle (a convex set that contains the pixel) without
getting farther away and without landing on M (it lands on the margin, which
exists on every side where the image has pixels beyond the box).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_samrefine.labels.objects import ObjectMask

__all__ = [
    "object_crop",
    "inside_distance",
    "outside_distance_squared",
    "first_argmax",
]


def _squared_edt(mask: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance of each nonzero pixel to the nearest zero pixel (integers).

    From scipy's exact feature transform, like
    :func:`scipy.ndimage.distance_transform_edt`, whose float64 distances are
    the square roots of these integers (it squares and adds the same integer
    offsets in float64, exactly); kept in integers, the result takes a quarter
    of the memory traffic.
    """
    ft = ndi.distance_transform_edt(mask, return_distances=False, return_indices=True)
    h, w = mask.shape
    dtype = np.int32 if max(h, w) < 32768 else np.int64  # (h^2 + w^2 < 2^31)
    dy = ft[0].astype(dtype, copy=False)
    dx = ft[1].astype(dtype, copy=False)
    dy -= np.arange(h, dtype=dtype)[:, None]
    dx -= np.arange(w, dtype=dtype)[None, :]
    dy *= dy
    dx *= dx
    dy += dx
    return dy


def _edt(mask: np.ndarray) -> np.ndarray:
    """:func:`scipy.ndimage.distance_transform_edt` of ``mask``: the same float64 values."""
    return np.sqrt(_squared_edt(mask), dtype=np.float64)


def object_crop(obj: ObjectMask, margin: int = 1) -> tuple[np.ndarray, tuple[int, int]]:
    """The object's mask on its tight box grown by ``margin`` pixels, clipped to the image.

    Parameters
    ----------
    obj : ObjectMask
        A non-empty object (its crop need not be tight).
    margin : int
        Pixels added on every side of the tight box (fewer where the image ends).

    Returns
    -------
    crop : numpy.ndarray
        bool (h, w) mask of the object on the grown box.
    offset : (int, int)
        (row, column) of ``crop``'s top-left pixel in the image.

    Raises
    ------
    ValueError
        If the object has no pixel.
    """
    rows = np.flatnonzero(obj.mask.any(axis=1))
    cols = np.flatnonzero(obj.mask.any(axis=0))
    if rows.size == 0:
        raise ValueError(
            f"object {obj.label_id} is empty: prompts need at least one pixel "
            "(leave empty objects out, or report them as 'empty-input')"
        )
    H, W = obj.image_shape
    oy, ox = obj.offset
    ty0, ty1 = oy + rows[0], oy + rows[-1] + 1  # tight, half-open, image coordinates
    tx0, tx1 = ox + cols[0], ox + cols[-1] + 1
    y0, y1 = max(ty0 - margin, 0), min(ty1 + margin, H)
    x0, x1 = max(tx0 - margin, 0), min(tx1 + margin, W)
    crop = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    crop[ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0] = obj.mask[
        rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1
    ]
    return crop, (int(y0), int(x0))


def inside_distance(crop: np.ndarray) -> np.ndarray:
    """D+: distance of each mask pixel to the nearest background pixel, 0 off the mask.

    Parameters
    ----------
    crop : numpy.ndarray
        bool mask; the crop of :func:`object_crop` (margin included), or a whole image.

    Returns
    -------
    numpy.ndarray
        float64 distances, same shape as ``crop``.

    Notes
    -----
    The border of the array is not background. When the array holds no background
    pixel at all (an object covering the whole image; only then does its crop hold
    none), there is nothing to measure against; the distance to the image border
    is used instead (the distance to a ring of background just outside the image),
    so the positive point is the image centre and the Gaussian stays defined.
    """
    crop = np.asarray(crop, dtype=bool)
    if crop.all():
        return _edt(np.pad(crop, 1))[1:-1, 1:-1]
    return _edt(crop)


def outside_distance_squared(crop: np.ndarray) -> np.ndarray:
    """D- squared: for each background pixel, the squared distance to the nearest mask pixel.

    Exact integers (0 on the mask), so their order is D-'s and arg-maxima need no
    square root; ``crop`` is the crop of :func:`object_crop`.
    """
    return _squared_edt(~np.asarray(crop, dtype=bool))


def first_argmax(values: np.ndarray, where: np.ndarray | None = None) -> tuple[int, int]:
    """(row, column) of the largest value, the first in row-major order on ties.

    Row-major order inside a rectangular crop is row-major order in the image, so
    the crop's first maximum is the image's first maximum when every maximum lies
    in the crop.

    Parameters
    ----------
    values : numpy.ndarray
        2D array.
    where : numpy.ndarray, optional
        bool array of the same shape; only these pixels compete (at least one).

    Returns
    -------
    (int, int)
    """
    if where is not None:
        values = np.where(where, values, -np.inf)
    r, c = np.unravel_index(int(np.argmax(values)), values.shape)
    return int(r), int(c)
