"""Contrast limits of a lazy image plane, exact, without loading the plane.

:func:`~napari_samrefine.engine.preprocess.to_sam_rgb` stretches a non-uint8 plane
between two percentiles of its finite values (``np.percentile``, linear
interpolation, in float64). Here the same two numbers are computed from reads
of one block at a time, exactly:

- 8- and 16-bit integers (and bool): one pass, a histogram of every value
  (``np.bincount`` per block, summed; 65536 bins at most);
- wider integers and floats: radix selection on the values' bit patterns
  (mapped to order-preserving uint64 keys): a first pass counts the values and
  histograms the top 16 bits, each further pass narrows the wanted order
  statistics by 16 more bits among the values that share their prefix, and once
  at most :data:`COLLECT` values share it they are read and sorted. 2 to 5 passes,
  memory bounded by the histograms and ``COLLECT`` values.

From the order statistics the percentiles are interpolated with numpy's own
arithmetic (:func:`percentiles_from_order`), so they equal ``np.percentile`` of
the whole plane bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from napari_samrefine.engine.preprocess import (
    PERCENTILES,
    Limits,
    channel_plan,
    finalize_limits,
    to_sam_rgb,
)
from napari_samrefine.labels.arrays import block_side, blocks, read

__all__ = ["COLLECT", "plane_limits", "order_statistics", "percentiles_from_order", "PlaneRGB"]

COLLECT = 1 << 20
"""Values read and sorted once radix selection has narrowed a statistic to so few."""

_SIGN = np.uint64(1 << 63)
_ALL = np.uint64(0xFFFF)

Source = Callable[[], Iterator[np.ndarray]]


def percentiles_from_order(
    n: int, percentiles, value_at: Callable[[list[int]], dict[int, float]]
) -> list[float]:
    """``np.percentile`` (method "linear") of ``n`` values given their order statistics.

    Parameters
    ----------
    n : int
        Number of values (at least 1).
    percentiles : sequence of float
        In [0, 100].
    value_at : callable
        ``value_at(ranks)`` returns {rank: float64 value} for 0-based ranks of the
        sorted values.

    Returns
    -------
    list of float
        Equal to ``np.percentile(values, percentiles)``: numpy's virtual index
        ``(n - 1) * q`` and its interpolation (``a + (b - a) * t``, or
        ``b - (b - a) * (1 - t)`` for ``t >= 0.5``).
    """
    np.percentile(np.zeros(1), percentiles)  # numpy's own checks and messages
    q = np.true_divide(percentiles, 100)
    virtual = (n - 1) * np.atleast_1d(q)
    plan = []
    for v in virtual:
        if v >= n - 1 or v < 0:
            r = n - 1 if v >= n - 1 else 0
            plan.append((r, r, np.float64(0)))
        else:
            i = int(np.floor(v))
            plan.append((i, i + 1, v - np.float64(i)))
    values = value_at(sorted({r for a, b, _ in plan for r in (a, b)}))
    out = []
    for a, b, t in plan:
        lo, hi = np.float64(values[a]), np.float64(values[b])
        d = hi - lo
        out.append(hi - d * (1 - t) if t >= 0.5 else lo + d * t)
    return out


# -- order statistics ---------------------------------------------------------------------------


def _small(dtype: np.dtype) -> bool:
    return dtype == np.bool_ or (dtype.kind in "ui" and dtype.itemsize <= 2)


def _histogram_statistics(source: Source, dtype: np.dtype):
    """Exact counts of every value of an 8/16-bit integer (or bool) array, in one pass."""
    offset = 0 if dtype == np.bool_ or dtype.kind == "u" else -int(np.iinfo(dtype).min)
    size = 2 if dtype == np.bool_ else 1 << (8 * dtype.itemsize)
    counts = np.zeros(size, np.int64)
    for values in source():
        v = values.view(np.uint8) if values.dtype == np.bool_ else values
        counts += np.bincount((v.astype(np.int64) + offset).ravel(), minlength=size)
    cum = np.cumsum(counts)
    n = int(cum[-1])
    present = np.flatnonzero(counts)

    def value_at(ranks):
        return {r: float(np.searchsorted(cum, r, side="right") - offset) for r in ranks}

    if n == 0:
        return 0, None, None, value_at
    return n, float(present[0] - offset), float(present[-1] - offset), value_at


def _keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint64 keys of the finite values (floats) or all values (integers)."""
    v = np.asarray(values).ravel()
    if v.dtype.kind == "f":
        v = v.astype(np.float64, copy=False)
        u = v[np.isfinite(v)].view(np.uint64)
        return np.where((u & _SIGN) != 0, ~u, u | _SIGN)
    if v.dtype.kind == "u":
        return v.astype(np.uint64, copy=False)
    return v.astype(np.int64, copy=False).view(np.uint64) ^ _SIGN


def _from_key(key: int, kind: str) -> float:
    k = np.uint64(key)
    if kind == "f":
        u = k ^ _SIGN if k & _SIGN else ~k
        return float(np.array(u).view(np.float64))
    if kind == "u":
        return float(k)
    return float(np.array(k ^ _SIGN).view(np.int64))


def _radix_statistics(source: Source, kind: str):
    """Order statistics of wide integers or floats by radix selection over several passes."""
    top = np.zeros(1 << 16, np.int64)
    n, low, high = 0, None, None
    for values in source():
        k = _keys(values)
        if k.size:
            n += k.size
            top += np.bincount((k >> np.uint64(48)).astype(np.intp), minlength=1 << 16)
            low = k.min() if low is None else min(low, k.min())
            high = k.max() if high is None else max(high, k.max())

    def value_at(ranks: Iterable[int]) -> dict[int, float]:
        # per rank: [prefix, bits known, values below the prefix, values with the prefix]
        states = {r: _narrow(top, r, 0, 0, 0) for r in ranks}
        while True:
            open_ = {r: s for r, s in states.items() if s[1] < 64 and s[3] > COLLECT}
            small = {r: s for r, s in states.items() if s[1] < 64 and s[3] <= COLLECT}
            if not open_ and not small:
                return {r: _from_key(s[0], kind) for r, s in states.items()}
            groups = {(s[0], s[1]) for s in open_.values()}
            hist = {g: np.zeros(1 << 16, np.int64) for g in groups}
            kept = {(s[0], s[1]): [] for s in small.values()}
            for values in source():
                k = _keys(values)
                for prefix, bits in hist:
                    sel = k[(k >> np.uint64(64 - bits)) == np.uint64(prefix)]
                    digits = (sel >> np.uint64(48 - bits)) & _ALL
                    hist[prefix, bits] += np.bincount(digits.astype(np.intp), minlength=1 << 16)
                for prefix, bits in kept:
                    kept[prefix, bits].append(k[(k >> np.uint64(64 - bits)) == np.uint64(prefix)])
            for r, (prefix, bits, below, _) in small.items():
                pool = np.sort(np.concatenate(kept[prefix, bits]))
                states[r] = (int(pool[r - below]), 64, r, 1)
            for r, (prefix, bits, below, _) in open_.items():
                states[r] = _narrow(hist[prefix, bits], r, prefix, bits, below)

    if n == 0:
        return 0, None, None, value_at
    return n, _from_key(int(low), kind), _from_key(int(high), kind), value_at


def _narrow(hist: np.ndarray, rank: int, prefix: int, bits: int, below: int):
    """The next 16 bits of the key of the value of ``rank``, from the histogram of its prefix."""
    cum = np.cumsum(hist)
    digit = int(np.searchsorted(cum, rank - below, side="right"))
    before = int(cum[digit - 1]) if digit else 0
    return (prefix << 16) | digit, bits + 16, below + before, int(hist[digit])


def order_statistics(source: Source, dtype) -> tuple[int, float | None, float | None, Callable]:
    """Count, minimum, maximum and an order-statistic lookup of the values ``source`` yields.

    Parameters
    ----------
    source : callable
        ``source()`` yields the values block by block (any shape); it is called
        once for 8/16-bit integers and bool, a few times for other dtypes.
    dtype : numpy dtype
        Their dtype. NaN and infinite values are left out.

    Returns
    -------
    n, minimum, maximum, value_at
        ``value_at(ranks)`` gives {rank: float64 value} of the sorted finite values.
    """
    dtype = np.dtype(dtype)
    if _small(dtype):
        return _histogram_statistics(source, dtype)
    if dtype.kind not in "uif":
        raise ValueError(f"Cannot contrast-stretch an image of dtype {dtype}: convert it to numbers.")
    return _radix_statistics(source, dtype.kind)


# -- one plane --------------------------------------------------------------------------------


def _stretch(source: Source, dtype, percentiles) -> Limits:
    n, low, high, value_at = order_statistics(source, dtype)
    if n == 0:
        raise ValueError(
            "The image holds no finite value (all NaN or infinite): check that the "
            "right layer or channel is selected."
        )
    lo, hi = percentiles_from_order(n, percentiles, value_at)
    return finalize_limits(lo, hi, low, high)


def plane_limits(image, lead: tuple = (), *, channel=None, percentiles=PERCENTILES):
    """What ``to_sam_rgb(window, limits=...)`` needs to convert windows of a lazy plane.

    Parameters
    ----------
    image : array
        (..., Y, X) or (..., Y, X, C) with channels last; the plane is ``image[lead]``.
    lead : tuple of int
        Index of the plane in the leading axes.
    channel, percentiles
        As in :func:`~napari_samrefine.engine.preprocess.to_sam_rgb`.

    Returns
    -------
    tuple
        (lo, hi) for a stretched plane, one pair per channel for ``channel="mean"``,
        or () for uint8 and bool data, which is not stretched (after checking that
        the plane is not constant, as ``to_sam_rgb`` does).

    Raises
    ------
    ValueError
        As ``to_sam_rgb`` on the whole plane: a missing channel choice, a constant
        plane, a plane without finite values.
    """
    spatial = len(lead) + 2
    how, c = channel_plan(tuple(image.shape[len(lead):]), channel)
    side = block_side(image, (len(lead), len(lead) + 1))
    shape = tuple(int(s) for s in image.shape[len(lead) : spatial])
    extra = (slice(None),) * (image.ndim - spatial)

    def source(pick) -> Source:
        def gen():
            for y0, x0, y1, x1 in blocks(shape, side):
                yield pick(read(image, (*lead, slice(y0, y1), slice(x0, x1), *extra)))

        return gen

    dtype = np.dtype(image.dtype)
    if how == "mean":
        return tuple(
            _stretch(source(lambda b, i=i: b[..., i]), dtype, percentiles) for i in range(c)
        )
    pick = {"grey": lambda b: b, "index": lambda b: b[..., c], "rgb": lambda b: b[..., :3]}[how]
    if dtype in (np.uint8, np.bool_):
        n, low, high, _ = order_statistics(source(pick), dtype)
        if low == high:
            value = int(low) * (255 if dtype == np.bool_ else 1)
            raise ValueError(
                f"The image is constant (every pixel is {value}): SAM has nothing "
                "to see. Check that the right layer, plane or channel is selected."
            )
        return ()
    return _stretch(source(pick), dtype, percentiles)


class PlaneRGB:
    """SAM's RGB of one plane, a window at a time, with the whole plane's contrast.

    The image is a source that is read window by window; how the contrast is
    found is a property of the source. An image held in memory (numpy) is
    converted whole once (:func:`~napari_samrefine.engine.preprocess.to_sam_rgb`)
    and a window is a crop of it; a lazy image gets its exact limits first
    (:func:`plane_limits`: the ones ``to_sam_rgb`` finds on the whole plane) and
    each window is read and converted with them. Both give the same pixels.

    Parameters
    ----------
    image : array
        (..., Y, X[, C]) with channels last; the plane is ``image[lead]``.
    lead : tuple of int
        Index of the plane in the leading axes.
    shape : (int, int)
        (H, W) of the plane.
    channel, percentiles
        As in :func:`~napari_samrefine.engine.preprocess.to_sam_rgb`.
    in_memory : bool
        True for a numpy image.
    """

    def __init__(self, image, lead: tuple, shape, *, channel=None, percentiles=PERCENTILES,
                 in_memory: bool = False):
        self.image, self.lead, self.shape = image, tuple(lead), tuple(shape)
        self.channel, self.percentiles = channel, percentiles
        self.extra = (slice(None),) * (image.ndim - len(self.lead) - 2)
        self.rgb = None
        self.limits = None
        if in_memory:
            self.rgb = to_sam_rgb(image[self.lead], channel=channel, percentiles=percentiles)
        else:
            self.limits = plane_limits(image, self.lead, channel=channel, percentiles=percentiles)

    def window(self, window) -> np.ndarray:
        """uint8 (h, w, 3) of the half-open window (y0, x0, y1, x1)."""
        y0, x0, y1, x1 = window
        if self.rgb is not None:
            if (y0, x0, y1, x1) == (0, 0, *self.shape):
                return self.rgb
            return np.ascontiguousarray(self.rgb[y0:y1, x0:x1])
        block = read(self.image, (*self.lead, slice(y0, y1), slice(x0, x1), *self.extra))
        return to_sam_rgb(block, channel=self.channel, percentiles=self.percentiles, limits=self.limits)

    def whole(self) -> np.ndarray:
        """uint8 (H, W, 3) of the whole plane (a lazy one converted block by block)."""
        if self.rgb is not None:
            return self.rgb
        rgb = np.empty((*self.shape, 3), np.uint8)
        side = block_side(self.image, (len(self.lead), len(self.lead) + 1))
        for y0, x0, y1, x1 in blocks(self.shape, side):
            rgb[y0:y1, x0:x1] = self.window((y0, x0, y1, x1))
        return rgb
