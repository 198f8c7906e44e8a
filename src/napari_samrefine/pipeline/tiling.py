"""Tiles with a halo for images much larger than SAM's input (SPEC section 6).

SAM resizes every image so that its long side is the encoder's input size (1024
px for the published models): a 4096 x 4096 image is seen at a quarter of its
resolution and small objects shrink to a few pixels. Tiling keeps them at full
resolution: the image is covered by square windows of side ``tile`` that
overlap by ``2 * halo``, each window is encoded once, and every object is refined
in the window that contains its box, grown by some context, whole (the one whose
centre is nearest to the object's). An object that fits no window is refined
with the embedding of the whole (downscaled) image, as without tiling.

Refining an object in a window is refining it in the image cropped to that
window: the prompts, the decoder and the write-back are the untiled ones,
translated by the window's offset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from napari_samrefine.engine.embedding import EmbeddingCache, embed_image
from napari_samrefine.labels.objects import ObjectMask
from napari_samrefine.quality.keep import choose_view
from napari_samrefine.samrefiner.cascade import ObjectState, PromptSettings, run_cascade
from napari_samrefine.samrefiner.defaults import BATCH_SIZE, CONVERGENCE, ITERATIONS
from napari_samrefine.samrefiner.given import given_for_objects, shift_prompts
from napari_samrefine.samrefiner.prompts import ObjectPrompts

__all__ = [
    "TileSpec",
    "resolve_tiling",
    "tile_windows",
    "context_box",
    "assign_to_tiles",
    "to_window",
    "from_window",
    "group_objects",
    "group_step",
    "group_label",
    "refine_plane",
    "view_zoom",
]

Window = tuple[int, int, int, int]


@dataclass(frozen=True)
class TileSpec:
    """Square tiles of side ``tile`` overlapping by ``2 * halo`` pixels."""

    tile: int
    halo: int

    def __post_init__(self):
        if self.tile < 32:
            raise ValueError(f"tile must be at least 32 pixels, got {self.tile}.")
        if self.halo < 0 or 2 * self.halo >= self.tile:
            raise ValueError(
                f"halo must be >= 0 and less than half the tile ({self.tile} px), got {self.halo}: "
                f"use e.g. halo={self.tile // 8}."
            )


def resolve_tiling(
    tile: int | Literal["auto"] | None, halo: int | None, sam, shape: tuple[int, int]
) -> TileSpec | None:
    """The tiling to use for an image of ``shape``, or None for the untiled path.

    Parameters
    ----------
    tile : int, "auto" or None
        None: never tile. "auto": tiles of SAM's input size (1024 px for the
        published models), used only when the image's long side exceeds twice that.
        An int: tiles of that side, used when the image does not fit in one tile.
    halo : int or None
        Overlap margin; None is ``tile // 8``.
    sam : segment_anything.modeling.Sam
        The model (its input size sets "auto").
    shape : (int, int)
        (H, W) of the image.
    """
    if tile is None:
        return None
    if isinstance(tile, str):
        if tile != "auto":
            raise ValueError(f"tile must be None, 'auto' or a number of pixels, got {tile!r}")
        size = int(sam.image_encoder.img_size)
        if max(shape) <= 2 * size:
            return None
        tile = size
    elif isinstance(tile, bool) or not isinstance(tile, (int, np.integer)):
        raise TypeError(f"tile must be None, 'auto' or an int, got {type(tile).__name__}")
    spec = TileSpec(int(tile), int(tile) // 8 if halo is None else int(halo))
    if max(shape) <= spec.tile:
        return None
    return spec


def _starts(n: int, tile: int, stride: int) -> list[int]:
    if n <= tile:
        return [0]
    starts = list(range(0, n - tile, stride))
    starts.append(n - tile)  # the last window ends at the border
    return starts


def tile_windows(shape: tuple[int, int], spec: TileSpec) -> list[Window]:
    """Half-open (y0, x0, y1, x1) windows covering an image, in row-major order.

    Windows are ``spec.tile`` square (or the image's side where it is smaller),
    consecutive ones overlap by at least ``2 * spec.halo``, and the last one of
    each row or column ends at the image border.
    """
    h, w = shape
    stride = spec.tile - 2 * spec.halo
    ys = _starts(h, spec.tile, stride)
    xs = _starts(w, spec.tile, stride)
    return [(y, x, min(y + spec.tile, h), min(x + spec.tile, w)) for y in ys for x in xs]


def context_box(obj: ObjectMask) -> Window:
    """The object's box grown by max(16 px, a quarter of its longer side), clipped to the image."""
    y0, x0, y1, x1 = obj.bbox
    grow = max(16, math.ceil(0.25 * max(y1 - y0, x1 - x0)))
    h, w = obj.image_shape
    return max(0, y0 - grow), max(0, x0 - grow), min(h, y1 + grow), min(w, x1 + grow)


def assign_to_tiles(objects: Sequence[ObjectMask], windows: Sequence[Window]) -> list[int | None]:
    """Index of the window each object is refined in, or None when none holds it whole.

    Among the windows that contain the object's :func:`context_box`, the one
    whose centre is nearest to the box's centre wins (ties: the first).
    """
    if not windows:
        return [None] * len(objects)
    win = np.asarray(windows, dtype=np.int64)
    centres = (win[:, :2] + win[:, 2:]) / 2.0
    out: list[int | None] = []
    for obj in objects:
        y0, x0, y1, x1 = context_box(obj)
        inside = (win[:, 0] <= y0) & (win[:, 1] <= x0) & (win[:, 2] >= y1) & (win[:, 3] >= x1)
        if not inside.any():
            out.append(None)
            continue
        d = np.abs(centres - [(y0 + y1) / 2.0, (x0 + x1) / 2.0]).max(axis=1)
        d[~inside] = np.inf
        out.append(int(np.argmin(d)))
    return out


def to_window(obj: ObjectMask, window: Window) -> ObjectMask:
    """The object in the frame of ``window`` (its crop is shared, not copied)."""
    y0, x0, y1, x1 = window
    return ObjectMask(obj.label_id, obj.mask, (obj.offset[0] - y0, obj.offset[1] - x0), (y1 - y0, x1 - x0))


def from_window(state: ObjectState, coarse: ObjectMask, window: Window) -> ObjectState:
    """A cascade state of the window's frame, translated to the image frame."""
    wy, wx = window[:2]
    shape = coarse.image_shape
    m = state.mask
    mask = ObjectMask(m.label_id, m.mask, (m.offset[0] + wy, m.offset[1] + wx), shape)
    region = None
    if state.region is not None:
        y0, x0, y1, x1 = state.region
        region = (y0 + wy, x0 + wx, y1 + wy, x1 + wx)
    # mask_input is dropped: it lives in the window's low-res frame
    prompts = None if state.prompts is None else shift_prompts(state.prompts, wy, wx)
    return replace(state, coarse=coarse, mask=mask, region=region, prompts=prompts)


def group_objects(objects: Sequence, shape: tuple[int, int], tiling: TileSpec | None):
    """Which objects are refined together, and where: the one tile/window grouping.

    Parameters
    ----------
    objects : sequence
        Anything with ``bbox`` and ``image_shape`` (ObjectMask, or an object table's
        :meth:`~napari_samrefine.labels.scan.ObjectTable.box`).
    shape : (int, int)
        (H, W) of the plane.
    tiling : TileSpec, ScaleSpec or None
        None: all objects in one group on the whole plane. A
        :class:`~napari_samrefine.pipeline.scale.ScaleSpec` groups them by its own
        windows (its ``groups`` method).

    Returns
    -------
    list of (window or None, list of int)
        Groups with members (indices into ``objects``): first the objects that fit
        no tile (window None: the whole, downscaled plane), then each tile with
        objects, in row-major order. Untiled, the one group's window is None.
    """
    if tiling is None:
        return [(None, list(range(len(objects))))] if len(objects) else []
    if not isinstance(tiling, TileSpec):  # object windows of a ScaleSpec
        return tiling.groups(objects, shape) if len(objects) else []
    windows = tile_windows(shape, tiling)
    where = assign_to_tiles(objects, windows)
    groups = [(None, [i for i, k in enumerate(where) if k is None])]
    groups += [(w, [i for i, k in enumerate(where) if k == j]) for j, w in enumerate(windows)]
    return [g for g in groups if g[1]]


def group_step(step: Callable[[int, str], None] | None, g: int, n: int, units: int, label: str):
    """``step`` of group ``g`` of ``n``: the plane's ``units`` spread over the groups, never going back.

    The returned ``step(u, message)`` takes ``u`` from 0 to ``units`` for the group.
    """

    def inner(u: int, message: str) -> None:
        if step is not None:
            step((g * units + u) // n, f"{label}: {message}" if label else message)

    return inner


def group_label(window: Window | None, g: int, n: int) -> str:
    """How progress names a group: "image" or "tile g/n" ("" for the only group)."""
    if n == 1 and window is None:
        return ""
    return "image" if window is None else f"tile {g + 1}/{n}"


def view_zoom(window: Window | None, shape: tuple[int, int], input_size: int) -> float:
    """The zoom of a view: the model's input side over the longer side of the window (or of
    the whole plane of ``shape`` for None)."""
    y0, x0, y1, x1 = (0, 0, *shape) if window is None else window
    return input_size / max(y1 - y0, x1 - x0)


def refine_plane(
    sam,
    rgb: np.ndarray,
    objects: Sequence[ObjectMask],
    settings: PromptSettings | None = None,
    *,
    tiling: TileSpec | None = None,
    embedding_cache: EmbeddingCache | None = None,
    iterations: int = ITERATIONS,
    convergence: float | None = CONVERGENCE,
    batch_size: int = BATCH_SIZE,
    iou_adaptor=None,
    step: Callable[[int, str], None] | None = None,
    prompts: Mapping[int, ObjectPrompts] | None = None,
) -> list[ObjectState]:
    """Encode one image (whole or per tile) and run the cascade for its objects.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
    rgb : numpy.ndarray
        uint8 (H, W, 3) image as SAM sees it (contrast-stretched once for the
        whole image, so that tiles share one intensity scale).
    objects : sequence of ObjectMask
        Coarse objects of this image.
    settings : PromptSettings, optional
        Prompt excavation settings (default: the paper's).
    tiling : TileSpec, ScaleSpec or None
        None encodes the whole image once (the untiled path); otherwise each
        window of :func:`group_objects` is encoded once.
    embedding_cache : EmbeddingCache or None
        Reuses embeddings of images (and tiles) seen before.
    iterations, convergence, batch_size, iou_adaptor
        As in :func:`~napari_samrefine.samrefiner.cascade.run_cascade`.
    step : callable, optional
        ``step(units, message)`` with ``units`` rising from 0 to
        ``iterations + 1`` over the call (encoding is one unit, each cascade
        iteration one); it may raise to cancel.
    prompts : mapping of int to ObjectPrompts, optional
        Given prompts by label id, in the image's frame: those objects are
        decoded from them at the first iteration
        (:func:`~napari_samrefine.samrefiner.cascade.run_cascade`), in whichever
        window they are refined in.

    Returns
    -------
    list of ObjectState
        In the order of ``objects``, in the image's frame.
    """
    settings = PromptSettings() if settings is None else settings
    groups = group_objects(objects, rgb.shape[:2], tiling)
    units = iterations + 1
    candidates: list[list[ObjectState]] = [[] for _ in objects]
    size = int(sam.image_encoder.img_size)
    for g, (window, members) in enumerate(groups):
        label = group_label(window, g, len(groups))
        tick = group_step(step, g, len(groups), units, label)
        tick(0, "encoding")
        if window is None:
            image = rgb
            local = [objects[i] for i in members]
        else:
            y0, x0, y1, x1 = window
            image = np.ascontiguousarray(rgb[y0:y1, x0:x1])
            local = [to_window(objects[i], window) for i in members]
        if embedding_cache is not None:
            emb = embedding_cache.get(sam, image)
        else:
            emb = embed_image(sam, image)
        tick(1, "encoded")
        result = run_cascade(
            sam, emb, local, settings,
            iterations=iterations, convergence=convergence, batch_size=batch_size,
            iou_adaptor=iou_adaptor,
            step=lambda t, message, _s=tick: _s(1 + t, message),
            prompts=given_for_objects(prompts, [o.label_id for o in local], window),
        )
        zoom = view_zoom(window, rgb.shape[:2], size)
        for i, s in zip(members, result, strict=True):
            s = replace(s, zoom=zoom)
            candidates[i].append(s if window is None else from_window(s, objects[i], window))
        tick(units, "done")
    return [choose_view(c) for c in candidates]
