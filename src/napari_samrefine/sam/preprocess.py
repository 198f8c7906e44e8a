"""Microscopy images to the 8-bit RGB that SAM expects (SPEC section 6)."""

from __future__ import annotations

import numpy as np

__all__ = ["to_sam_rgb", "percentile_stretch"]


def percentile_stretch(
    image: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.8)
) -> np.ndarray:
    """Contrast-stretch an image to uint8 between two percentiles.

    NaN and infinite values are ignored when the percentiles are computed and
    become 0 in the output.

    Parameters
    ----------
    image : numpy.ndarray
        Any real-valued image (2D, or 2D with a trailing channel axis, which is
        stretched as a whole).
    percentiles : (float, float)
        Lower and upper percentiles mapped to 0 and 255.

    Returns
    -------
    numpy.ndarray
        uint8 array of the same shape.

    Raises
    ------
    ValueError
        If the image holds no finite value, or its finite values are all equal.
    """
    data = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        raise ValueError(
            "The image holds no finite value (all NaN or infinite): check that the "
            "right layer or channel is selected."
        )
    lo, hi = np.percentile(data[finite], percentiles)
    if hi <= lo:
        lo, hi = data[finite].min(), data[finite].max()
    if hi <= lo:
        raise ValueError(
            f"The image is constant (every pixel is {lo:g}): SAM has nothing to see. "
            "Check that the right layer, plane or channel is selected."
        )
    out = np.clip((data - lo) / (hi - lo), 0.0, 1.0) * 255.0
    out[~finite] = 0.0
    return np.round(out).astype(np.uint8)


def to_sam_rgb(
    image: np.ndarray,
    *,
    channel: int | str | None = None,
    percentiles: tuple[float, float] = (1.0, 99.8),
) -> np.ndarray:
    """Convert one 2D plane (grey, RGB or multichannel) to SAM's H x W x 3 uint8 input.

    uint8 grey and RGB images pass unchanged (grey replicated to 3 channels),
    as SAM and the reference code see them; other dtypes get a percentile
    contrast stretch to uint8.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W) or (H, W, C) with the channel axis last.
    channel : int, "mean" or None
        For C not in (1, 3, 4): the channel to use, or "mean" for the mean of
        the per-channel stretched images. For RGB(A) inputs None uses RGB.
    percentiles : (float, float)
        Percentiles of the contrast stretch for non-uint8 data.

    Returns
    -------
    numpy.ndarray
        uint8 array (H, W, 3). The input is never modified.
    """
    img = np.asarray(image)
    if img.ndim == 3:
        c = img.shape[-1]
        if isinstance(channel, int):
            if not -c <= channel < c:
                raise ValueError(f"channel={channel} does not exist: the image has {c} channels.")
            img = img[..., channel]
        elif channel == "mean":
            planes = [percentile_stretch(img[..., i], percentiles) for i in range(c)]
            img = np.mean(planes, axis=0).round().astype(np.uint8)
        elif c in (3, 4):
            img = img[..., :3]
        elif c == 1:
            img = img[..., 0]
        else:
            raise ValueError(
                f"The image has {c} channels: pass channel=<index> to pick one, or "
                "channel='mean' for a composite."
            )
    if img.ndim not in (2, 3):
        raise ValueError(f"Expected a 2D plane with an optional channel axis, got shape {img.shape}.")
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8:
        img = percentile_stretch(img, percentiles)
    else:
        finite_range = int(img.max()) - int(img.min())
        if finite_range == 0:
            raise ValueError(
                f"The image is constant (every pixel is {int(img.flat[0])}): SAM has nothing "
                "to see. Check that the right layer, plane or channel is selected."
            )
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img)
