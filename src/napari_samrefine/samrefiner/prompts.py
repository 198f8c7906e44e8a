"""Prompt excavation (SAMRefiner, SPEC section 2): boxes, points and the Gaussian mask prompt.

From one object's coarse mask M (all in the original image frame):

- the tight box of M, or the context-aware elastic box (:mod:`.cebox`);
- a positive point where the distance to the background, D+, is largest (the
  first such pixel in row-major order), and a negative point where the distance of
  the background inside the tight box to M, D-, is largest (none when the box
  holds no background; :mod:`.distance`);
- a Gaussian map G = exp(-(D+ - max D+)^2 / max(|M| / gamma, 1)) on M, 0 off M,
  which is 1 on the medial ridge and decays toward the boundary;
- SAM's mask input in the low-res frame: +w where the resized mask is positive,
  -w elsewhere (background and SAM's padding), times G resized the same way (with
  its zeros replaced by 1). The amplitude w is ``strength``, or 1 for an object
  whose box CEBox expanded.

Every computation runs on the object's crop; memory and time scale with the
object's box, not with the image.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from napari_samrefine.engine.embedding import ImageEmbedding
from napari_samrefine.engine.frame import SamFrame
from napari_samrefine.labels.binary import BinaryMode
from napari_samrefine.labels.objects import ObjectMask
from napari_samrefine.labels.plane import plane_objects
from napari_samrefine.samrefiner.cebox import FeatureGrid, elastic_box
from napari_samrefine.samrefiner.defaults import (
    CEBOX_LAMBDA,
    GAMMA,
    NEGATIVE_POINT,
    STRENGTH,
    prompt_option_problems,
)
from napari_samrefine.samrefiner.distance import (
    first_argmax,
    inside_distance,
    object_crop,
    outside_distance_squared,
)

__all__ = [
    "ObjectPrompts",
    "excavate_object",
    "excavate_prompts",
    "gaussian_map",
    "mask_prompt",
]

@dataclass(frozen=True)
class ObjectPrompts:
    """The prompts mined from one object's mask, in the original image frame.

    Attributes
    ----------
    label_id : int
        Object (or STM group's class) id.
    tight_box : numpy.ndarray
        int64 [x1, y1, x2, y2], inclusive, of the mask's pixels.
    box : numpy.ndarray
        int64 [x1, y1, x2, y2] given to SAM: the CEBox when it expanded, else the tight box.
    points : numpy.ndarray
        float64 (P, 2) of (x, y) = (column, row); first the positive point, then the
        negative point when there is one (P is 1 or 2).
    point_labels : numpy.ndarray
        int64 (P,): 1 for the positive point, 0 for the negative point.
    gaussian : numpy.ndarray
        float32 Gaussian map G over the crop at ``offset`` (1 on the medial ridge,
        decaying to the boundary, 0 off the mask).
    offset : (int, int)
        (row, column) of ``gaussian``'s top-left pixel in the image.
    mask_input : numpy.ndarray or None
        float32 (L, L) mask prompt in SAM's low-res frame (L = 256 for the published
        models); None when no frame was given.
    expanded : bool
        True when CEBox moved at least one side of the box.
    strength : float
        Amplitude w of the mask prompt used for this object (1 when CEBox expanded).
    """

    label_id: int
    tight_box: np.ndarray
    box: np.ndarray
    points: np.ndarray
    point_labels: np.ndarray
    gaussian: np.ndarray
    offset: tuple[int, int]
    mask_input: np.ndarray | None
    expanded: bool
    strength: float

    @property
    def positive_point(self) -> np.ndarray:
        """(x, y) of the positive point."""
        return self.points[0]

    @property
    def negative_point(self) -> np.ndarray | None:
        """(x, y) of the negative point, or None when the box holds no background."""
        return self.points[1] if len(self.points) > 1 else None

    def gaussian_full(self, shape: tuple[int, int]) -> np.ndarray:
        """The Gaussian map pasted into a zero image of ``shape`` (for display)."""
        out = np.zeros(shape, dtype=np.float32)
        y0, x0 = self.offset
        h, w = self.gaussian.shape
        out[y0 : y0 + h, x0 : x0 + w] = self.gaussian
        return out


def gaussian_map(distance: np.ndarray, mask: np.ndarray, gamma: float = GAMMA) -> np.ndarray:
    """SAMRefiner's Gaussian map G of one object (the reference code's form).

    Parameters
    ----------
    distance : numpy.ndarray
        D+ on the object's crop (:func:`~napari_samrefine.samrefiner.distance.inside_distance`).
    mask : numpy.ndarray
        bool mask M on the same crop.
    gamma : float
        Span: larger values give a narrower Gaussian (SPEC's gamma, :data:`~napari_samrefine.samrefiner.defaults.GAMMA` by default).

    Returns
    -------
    numpy.ndarray
        float32 ``exp(-(D+ - max D+)^2 / max(|M| / gamma, 1))`` on M, 0 off M;
        values in [0, 1], exactly 1 where D+ is largest.
    """
    mask = np.asarray(mask, dtype=bool)
    area = int(np.count_nonzero(mask))
    peak = distance[mask].max()
    g = np.exp(-((distance - peak) ** 2) / max(area / gamma, 1.0))
    return np.where(mask, g, 0.0).astype(np.float32)


def mask_prompt(
    frame: SamFrame,
    mask: np.ndarray,
    gaussian: np.ndarray,
    offset: tuple[int, int],
    strength: float = STRENGTH,
) -> np.ndarray:
    """SAM's mask input for one object, in the low-res frame.

    S (+1 on M, -1 off M and in SAM's padding) and G are each resized bilinearly to
    the resized-image size, padded to SAM's square frame and resized to the low-res
    frame; then ``A = +strength`` where S > 0 else ``-strength``, ``G'`` = G with
    values <= 0 replaced by 1, and the prompt is ``A * G'``. Since every resize is
    linear with rows summing to 1, the resized S equals ``2 m - 1`` with ``m`` the
    resized mask (0 in the padding), so only the crops are ever resized
    (:meth:`SamFrame.original_crop_to_lowres`, which computes the low-res rows and
    columns the crop reaches; everywhere else the prompt is ``-strength``).

    Parameters
    ----------
    frame : SamFrame
        The image's geometry.
    mask, gaussian : numpy.ndarray
        M (bool) and G (float) on the same crop of the original frame.
    offset : (int, int)
        (row, column) of the crop's top-left pixel in the image.
    strength : float
        Amplitude w.

    Returns
    -------
    numpy.ndarray
        float32 (L, L) with L = ``frame.lowres_size``.
    """
    L = frame.lowres_size
    out = np.full((L, L), -strength, dtype=np.float32)
    m = frame.original_crop_to_lowres(mask, offset)
    if m is None:
        return out
    m, (r0, c0) = m
    g, _ = frame.original_crop_to_lowres(np.asarray(gaussian, dtype=np.float32), offset)
    amplitude = np.where(m > 0.5, np.float32(strength), np.float32(-strength))
    out[r0 : r0 + m.shape[0], c0 : c0 + m.shape[1]] = amplitude * np.where(g > 0, g, np.float32(1))
    return out


def _check_options(cebox, strength, gamma) -> None:
    problems = prompt_option_problems(cebox, strength, gamma)
    if problems:
        raise ValueError("; ".join(problems) + ".")


def _resolve(frame, embedding, image_shape):
    grid = FeatureGrid.from_embedding(embedding) if isinstance(embedding, ImageEmbedding) else embedding
    if grid is not None and not isinstance(grid, FeatureGrid):
        raise TypeError(
            f"embedding must be an ImageEmbedding (from embed_image) or a FeatureGrid, "
            f"got {type(embedding).__name__}"
        )
    if frame is None and grid is not None:
        frame = grid.frame
    for f in (frame, None if grid is None else grid.frame):
        if f is not None and tuple(f.original_size) != tuple(image_shape):
            raise ValueError(
                f"the labels are {tuple(image_shape)} but the SAM frame / embedding is of a "
                f"{tuple(f.original_size)} image: embed the image the labels belong to"
            )
    return frame, grid


def _excavate(obj, frame, grid, cebox, strength, gamma, use_negative_point) -> ObjectPrompts:
    crop, (cy, cx) = object_crop(obj)
    tight_box = obj.tight_box
    x1, y1, x2, y2 = (int(v) for v in tight_box)
    # the tight crop inside the margin crop
    tight = (slice(y1 - cy, y2 + 1 - cy), slice(x1 - cx, x2 + 1 - cx))

    d_in = inside_distance(crop)
    r, c = first_argmax(d_in)
    points = [(cx + c, cy + r)]
    labels = [1]
    if use_negative_point:
        background = ~crop[tight]
        if background.any():
            # D- squared has the arg-maxima of D- (the square root is increasing)
            r, c = first_argmax(outside_distance_squared(crop)[tight], where=background)
            points.append((x1 + c, y1 + r))
            labels.append(0)

    gaussian = gaussian_map(d_in[tight], crop[tight], gamma)

    box, expanded = tight_box.copy(), False
    if grid is not None and cebox:
        box, expanded = elastic_box(obj, grid, cebox, tight_box=tight_box)
    w = 1.0 if expanded else float(strength)
    mask_input = None
    if frame is not None:
        mask_input = mask_prompt(frame, crop[tight], gaussian, (y1, x1), w)
    return ObjectPrompts(
        label_id=int(obj.label_id),
        tight_box=tight_box,
        box=np.asarray(box, dtype=np.int64),
        points=np.asarray(points, dtype=np.float64),
        point_labels=np.asarray(labels, dtype=np.int64),
        gaussian=gaussian,
        offset=(y1, x1),
        mask_input=mask_input,
        expanded=expanded,
        strength=w,
    )


def excavate_object(
    obj: ObjectMask,
    *,
    frame: SamFrame | None = None,
    embedding: ImageEmbedding | FeatureGrid | None = None,
    cebox: float | None = CEBOX_LAMBDA,
    strength: float = STRENGTH,
    gamma: float = GAMMA,
    use_negative_point: bool = NEGATIVE_POINT,
) -> ObjectPrompts:
    """Mine SAMRefiner's prompts from one object's mask (SPEC section 2).

    Parameters
    ----------
    obj : ObjectMask
        A non-empty object.
    frame : SamFrame, optional
        The image's SAM geometry; needed for ``mask_input``. Defaults to the
        embedding's frame.
    embedding : ImageEmbedding or FeatureGrid, optional
        The image's embedding; needed for CEBox (without one the box is the tight
        box). When prompting many objects of one image, pass
        ``FeatureGrid.from_embedding(embedding)`` to copy the grid to the CPU once.
    cebox : float or None
        CEBox's lambda: a side moves out when more than this fraction of its strip
        is similar to the object. None or 0 keeps the tight box.
    strength : float
        Amplitude w of the mask prompt; an object whose box CEBox expanded gets 1.
    gamma : float
        Span of the Gaussian map.
    use_negative_point : bool
        False drops the negative point.

    Returns
    -------
    ObjectPrompts
        In the original frame: ``points`` are (x, y) = (column, row) pixel indices.

    Raises
    ------
    ValueError
        For an empty object, an embedding or frame of another image size, or an
        option out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_samrefine.labels.objects import ObjectMask
    >>> mask = np.zeros((8, 10), bool); mask[2:7, 1:8] = True; mask[4, 4] = False
    >>> p = excavate_object(ObjectMask.from_full(mask))
    >>> p.tight_box.tolist(), p.points.tolist(), p.point_labels.tolist()
    ([1, 2, 7, 6], [[2.0, 3.0], [4.0, 4.0]], [1, 0])
    """
    _check_options(cebox, strength, gamma)
    frame, grid = _resolve(frame, embedding, obj.image_shape)
    return _excavate(obj, frame, grid, cebox, strength, gamma, use_negative_point)


def excavate_prompts(
    labels: np.ndarray,
    embedding: ImageEmbedding | None = None,
    *,
    label_ids: Iterable[int] | None = None,
    cebox: float | None = CEBOX_LAMBDA,
    strength: float = STRENGTH,
    gamma: float = GAMMA,
    use_negative_point: bool = NEGATIVE_POINT,
    image_size: int = 1024,
    lowres_size: int = 256,
    binary: BinaryMode = "components",
) -> list[ObjectPrompts]:
    """Mine prompts for every object of a 2D label image.

    Parameters
    ----------
    labels : numpy.ndarray or lazy array
        2D label image of non-negative integers (0 = background), one object per id.
        A bool image, or one with exactly two values one of which is 0 (0/1,
        0/255 ...), is a binary mask: see ``binary``. A lazy array (dask, zarr,
        memmap) is read block by block to find the objects, then one object's
        box at a time (:func:`~napari_samrefine.labels.plane.plane_objects`).
    embedding : ImageEmbedding, optional
        The image's SAM embedding (:func:`~napari_samrefine.engine.embedding.embed_image`);
        its frame gives SAM's sizes and it enables CEBox. Without it the frame is
        ``SamFrame(labels.shape, image_size, lowres_size, image_size // 16)`` and
        boxes are tight.
    label_ids : iterable of int, optional
        Only these objects (ids absent from ``labels`` are left out).
    cebox, strength, gamma, use_negative_point
        As in :func:`excavate_object`.
    image_size, lowres_size : int
        SAM's input and low-res sizes, used only without an embedding.
    binary : {"components", "one"}
        For a binary mask, as in :func:`~napari_samrefine.refine`: with
        "components" (default), a mask of several 8-connected components gives
        one object per component, ids 1..n in raster order, with a UserWarning;
        with "one", or for a connected mask, the whole mask is one object whose
        id is the foreground value (1 for bool).

    Returns
    -------
    list of ObjectPrompts
        In increasing label order.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((64, 64), np.uint16); labels[5:15, 5:20] = 1; labels[30:50, 30:40] = 2
    >>> prompts = excavate_prompts(labels, image_size=64, lowres_size=16)
    >>> [p.label_id for p in prompts], prompts[1].mask_input.shape
    ([1, 2], (16, 16))
    """
    _check_options(cebox, strength, gamma)
    objects, shape = plane_objects(labels, binary, label_ids, stacklevel=2)
    if embedding is None:
        frame = SamFrame(tuple(shape), image_size, lowres_size, image_size // 16)
    else:
        frame = embedding.frame
    frame, grid = _resolve(frame, embedding, shape)
    return [
        _excavate(obj, frame, grid, cebox, strength, gamma, use_negative_point)
        for obj in objects
    ]
