"""Object scale: each object refined at the size its model sees best (issue 20).

A SAM-family model resizes whatever it is given so that the long side is its
input size (1024 px for SAM, 256 px for LiteMedSAM): a nucleus of 12 px in a
360 px image spans 8.5 px of LiteMedSAM's input, too few for its decoder. At
scale ``s`` an object of ``d`` pixels spans ``d * s`` pixels of the model's input:
it is refined in a window of ``input_size / s`` pixels of the original image
around it, which the model's own resize brings to its input (bilinear, as for
any image), and the masks come back at the window's own pixels, exactly where
they belong. No image is resampled outside the model, and a window reads only
its pixels of a lazy image.

:class:`ScaleSpec` groups a plane's objects into such windows: with a fixed
scale every object gets that zoom; with ``scale="auto"`` each gets the zoom
that brings its box's longer side into the model's measured best range
(:class:`~napari_samrefine.models.profile.RefineDefaults` ``object_size``).
Zooms are rounded to levels 2 ** (k / 2), so objects of similar size share
windows: each window holds the object it was opened for and every other one of
the same zoom whose context box (:func:`~.tiling.context_box`) lies inside it. A
window must hold its object's context box, so an object too large for its zoom
gets the next lower level that fits; one whose window would cover the whole
plane is refined on the whole plane, as with ``scale=None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_samrefine.models.profile import model_profile
from napari_samrefine.pipeline.tiling import TileSpec, context_box, resolve_tiling

__all__ = ["ScaleSpec", "scale_level", "resolve_layout"]

Window = tuple[int, int, int, int]


def scale_level(s: float, up: bool = True) -> int:
    """The zoom level k (zoom 2 ** (k / 2)) nearest to ``s``: the one at or above it when
    ``up``, else the one at or below it."""
    k = 2 * math.log2(s)
    return math.ceil(k - 1e-9) if up else math.floor(k + 1e-9)


@dataclass(frozen=True)
class ScaleSpec:
    """How objects are zoomed for the model: a fixed ``scale``, or per object from ``object_size``.

    Parameters
    ----------
    input_size : int
        The model's input side in pixels (``sam.image_encoder.img_size``).
    scale : float or None
        A fixed zoom for every object; None zooms each object into ``object_size``.
    object_size : (float, float) or None
        The best object side in model-input pixels (needed when ``scale`` is None).
    max_scale : float
        The largest zoom chosen for ``object_size``.
    also : float or None
        A second zoom every object is refined at too (its own window), where it
        gives another view than the first: each object then has two candidates,
        and :func:`~napari_samrefine.quality.keep.choose_view` keeps one.
    """

    input_size: int
    scale: float | None = None
    object_size: tuple[float, float] | None = None
    max_scale: float = 4.0
    also: float | None = None

    def __post_init__(self):
        if self.scale is None and self.object_size is None:
            raise ValueError("a ScaleSpec needs a scale or an object_size.")
        if self.scale is not None and not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale!r}.")

    def level(self, side: int) -> int:
        """The zoom level (zoom 2 ** (level / 2)) ``object_size`` asks for an object whose
        box's longer side is ``side`` pixels."""
        low, high = self.object_size
        side = max(int(side), 1)
        if side < low:
            return min(scale_level(low / side), scale_level(self.max_scale, up=False))
        if side > high:
            return scale_level(high / side, up=False)
        return 0

    def window_side(self, side: int, need: int, zoom: float | None = None) -> int:
        """The side, in image pixels, of the window of an object whose box's longer side is
        ``side``, and whose context box's is ``need`` (a window holds it: objects too large
        for their zoom get the largest level 2 ** (k / 2) that fits). ``zoom`` overrides
        the spec's own."""
        if zoom is None:
            zoom = self.scale if self.scale is not None else 2 ** (self.level(side) / 2)
        window = math.ceil(self.input_size / zoom - 1e-9)
        if window < need:
            window = math.ceil(self.input_size / 2 ** (scale_level(self.input_size / need, up=False) / 2) - 1e-9)
        return window

    def groups(self, objects: Sequence, shape: tuple[int, int]) -> list[tuple[Window | None, list[int]]]:
        """Which objects are refined together, and in which window.

        Parameters
        ----------
        objects : sequence
            Anything with ``bbox`` and ``image_shape`` (as for
            :func:`~.tiling.group_objects`).
        shape : (int, int)
            (H, W) of the plane.

        Returns
        -------
        list of (window or None, list of int)
            First the objects refined on the whole plane (window None), then the
            windows sorted by their top row, then their left column. With ``also``,
            an object is in two groups where the two zooms give two views.
        """
        h, w = shape
        largest = max(h, w)
        contexts = np.array([context_box(o) for o in objects], dtype=np.int64).reshape(-1, 4)
        need = np.maximum(contexts[:, 2] - contexts[:, 0], contexts[:, 3] - contexts[:, 1])
        views: list[tuple[int, int]] = []  # (window side, object); a side >= the plane: whole
        for i, (obj, c) in enumerate(zip(objects, need, strict=True)):
            y0, x0, y1, x1 = obj.bbox
            zooms = (None,) if self.also is None else (None, self.also)
            sides = {min(self.window_side(max(y1 - y0, x1 - x0), int(c), z), largest) for z in zooms}
            views += [(side, i) for side in sorted(sides)]
        whole = [i for side, i in views if side >= largest]
        out: list[tuple[Window | None, list[int]]] = [(None, whole)] if whole else []
        windows = []
        for side in sorted({side for side, _ in views if side < largest}):
            members = [i for si, i in views if si == side]
            windows += _cover(contexts, members, side, shape)
        return out + sorted(windows, key=lambda g: g[0][:2])


def _start(c0: int, c1: int, side: int, n: int, want: int) -> int:
    """Where a window of ``side`` on an axis of ``n`` pixels that holds ``[c0, c1)`` starts:
    on the grid of ``side // 4`` nearest ``want`` (below it where ``want`` is ``c0``), so that
    windows repeat between runs, coarse masks and configurations and their embeddings are
    reused; at the plane's edge when it must; else at ``want`` clipped."""
    low, high = max(0, c1 - side), max(0, min(c0, n - side))
    if high == n - side and want >= high:
        return high
    step = max(1, side // 4)
    grid = (want // step if want == c0 else round(want / step)) * step
    if low <= grid <= high:
        return grid
    for g in (grid + step, grid - step):
        if low <= g <= high:
            return g
    return min(max(want, low), high)


def _cover(contexts: np.ndarray, members: list[int], side: int, shape) -> list[tuple[Window, list[int]]]:
    """Windows of ``side`` that hold every member's context box; each opened at the top of
    the first member not yet held (in raster order), centred on it across, both on a grid
    of ``side // 4`` (:func:`_start`)."""
    h, w = shape
    order = sorted(members, key=lambda i: (contexts[i, 0], contexts[i, 1]))
    tops = contexts[order, 0]
    held = np.zeros(len(order), bool)
    out = []
    for n, i in enumerate(order):
        if held[n]:
            continue
        cy0, cx0, cy1, cx1 = (int(v) for v in contexts[i])
        wy0 = _start(cy0, cy1, side, h, cy0)
        wx0 = _start(cx0, cx1, side, w, max(0, (cx0 + cx1 - side) // 2))
        window = (wy0, wx0, min(wy0 + side, h), min(wx0 + side, w))
        stop = int(np.searchsorted(tops, window[2], side="right"))
        near = np.arange(n, stop)
        c = contexts[[order[j] for j in near]].reshape(-1, 4)
        inside = (~held[near]) & (c[:, 0] >= window[0]) & (c[:, 1] >= window[1]) & (
            c[:, 2] <= window[2]) & (c[:, 3] <= window[3])
        chosen = near[inside]
        held[chosen] = True
        out.append((window, [order[j] for j in chosen]))
    return out


def resolve_layout(tile, halo, scale, sam, shape: tuple[int, int]) -> TileSpec | ScaleSpec | None:
    """What refines a plane of ``shape``: tiles (:class:`~.tiling.TileSpec`), object windows
    (:class:`ScaleSpec`), or the whole plane (None).

    Parameters
    ----------
    tile, halo : as in :func:`~napari_samrefine.refine`
    scale : "auto", float or None
        As in :func:`~napari_samrefine.refine`. "auto" with an explicit ``tile``
        (anything but "auto"), or for a model whose profile has no measured
        ``object_size``, is None.
    sam : segment_anything.modeling.Sam
    shape : (int, int)
        (H, W) of the plane.
    """
    chosen = model_profile(sam).defaults
    if scale == "auto":
        if tile != "auto" or chosen.object_size is None:
            scale = None
        else:
            return ScaleSpec(int(sam.image_encoder.img_size), None, chosen.object_size,
                             chosen.max_scale, 1.0 if chosen.native_too else None)
    if scale is None:
        return resolve_tiling(tile, halo, sam, shape)
    return ScaleSpec(int(sam.image_encoder.img_size), float(scale))


