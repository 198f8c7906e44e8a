"""Microscopy images to the 8-bit RGB that SAM expects (SPEC section 6).

The contrast stretch is split in two so that a large image can be converted
window by window: :func:`stretch_limits` finds the limits (lo, hi) of a whole
image, :func:`apply_stretch` maps any part of it to uint8 with those limits,
pixel by pixel, so a window converted with the whole image's limits equals the
same window of the whole converted image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "to_sam_rgb",
    "percentile_stretch",
    "stretch_limits",
    "apply_stretch",
    "finalize_limits",
    "channel_plan",
    "PERCENTILES",
]

Limits = tuple[float, float]

PERCENTILES = (1.0, 99.8)
"""Contrast-stretch percentiles for images that are not uint8 (SPEC section 6)."""


def finalize_limits(lo: float, hi: float, low: float, high: float) -> Limits:
    """The stretch limits from the two percentiles and the finite minimum and maximum.

    The percentiles ``lo`` and ``hi`` are used unless they are equal, then the
    minimum and maximum are.

    Raises
    ------
    ValueError
        When the finite values are all equal (a constant image).
    """
    if hi <= lo:
        lo, hi = low, high
    if hi <= lo:
        raise ValueError(
            f"The image is constant (every pixel is {lo:g}): SAM has nothing to see. "
            "Check that the right layer, plane or channel is selected."
        )
    return lo, hi


def _no_finite_value() -> ValueError:
    return ValueError(
        "The image holds no finite value (all NaN or infinite): check that the "
        "right layer or channel is selected."
    )


def stretch_limits(image: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> Limits:
    """The contrast-stretch limits (lo, hi) of a whole image.

    ``np.percentile`` (linear interpolation) of the image's finite values as
    float64; where the two percentiles are equal, the finite minimum and maximum.

    Parameters
    ----------
    image : numpy.ndarray
        Any real-valued image.
    percentiles : (float, float)
        Lower and upper percentiles.

    Returns
    -------
    (float, float)

    Raises
    ------
    ValueError
        If the image holds no finite value, or its finite values are all equal.
    """
    data = np.asarray(image, dtype=np.float64)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        raise _no_finite_value()
    lo, hi = np.percentile(finite, percentiles)
    return finalize_limits(lo, hi, finite.min(), finite.max())


def apply_stretch(image: np.ndarray, limits: Limits) -> np.ndarray:
    """Map an image (or any part of one) to uint8 with given limits, pixel by pixel.

    ``round(clip((x - lo) / (hi - lo), 0, 1) * 255)`` in float64; NaN and
    infinite values become 0.
    """
    lo, hi = limits
    data = np.asarray(image, dtype=np.float64)
    out = np.clip((data - lo) / (hi - lo), 0.0, 1.0) * 255.0
    out[~np.isfinite(data)] = 0.0
    return np.round(out).astype(np.uint8)


def percentile_stretch(
    image: np.ndarray, percentiles: tuple[float, float] = PERCENTILES
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
    return apply_stretch(image, stretch_limits(image, percentiles))


def channel_plan(shape: tuple[int, ...], channel: int | str | None) -> tuple[str, int | None]:
    """How :func:`to_sam_rgb` reads the channels of a plane of ``shape``.

    Returns
    -------
    (str, int or None)
        ("grey", None) for a 2D plane; ("index", c) for one channel; ("rgb", None)
        for the first three channels of an RGB(A) image; ("mean", n) for the mean
        of the ``n`` per-channel stretched images.

    Raises
    ------
    ValueError
        For a channel that does not exist, or several channels without a choice.
    """
    if len(shape) == 2:
        return "grey", None
    if len(shape) != 3:
        raise ValueError(f"Expected a 2D plane with an optional channel axis, got shape {shape}.")
    c = shape[-1]
    if isinstance(channel, int):
        if not -c <= channel < c:
            raise ValueError(f"channel={channel} does not exist: the image has {c} channels.")
        return "index", channel % c
    if channel == "mean":
        return "mean", c
    if c in (3, 4):
        return "rgb", None
    if c == 1:
        return "index", 0
    raise ValueError(
        f"The image has {c} channels: pass channel=<index> to pick one, or "
        "channel='mean' for a composite."
    )


def to_sam_rgb(
    image: np.ndarray,
    *,
    channel: int | str | None = None,
    percentiles: tuple[float, float] = PERCENTILES,
    limits: Limits | Sequence[Limits] | None = None,
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
    limits : (float, float), list of them, or None
        Stretch limits computed beforehand on the whole image this one is a
        window of (one (lo, hi) pair; one per channel for ``channel="mean"``;
        ignored for uint8 data), e.g. by
        :func:`~napari_samrefine.pipeline.contrast.plane_limits`: the
        window is then converted exactly as it is in the whole converted image,
        and the whole-image checks (a constant image) are not repeated on it.
        None (default) computes them from ``image``.

    Returns
    -------
    numpy.ndarray
        uint8 array (H, W, 3). The input is never modified.
    """
    img = np.asarray(image)
    how, c = channel_plan(img.shape, channel)
    if how == "mean":
        given = [None] * c if limits is None else list(limits)
        planes = [
            apply_stretch(img[..., i], stretch_limits(img[..., i], percentiles) if lim is None else lim)
            for i, lim in enumerate(given)
        ]
        img = np.mean(planes, axis=0).round().astype(np.uint8)
    elif how == "index":
        img = img[..., c]
    elif how == "rgb":
        img = img[..., :3]
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8:
        img = apply_stretch(img, stretch_limits(img, percentiles) if limits is None else limits)
    elif limits is None:
        finite_range = int(img.max()) - int(img.min())
        if finite_range == 0:
            raise ValueError(
                f"The image is constant (every pixel is {int(img.flat[0])}): SAM has nothing "
                "to see. Check that the right layer, plane or channel is selected."
            )
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img)
