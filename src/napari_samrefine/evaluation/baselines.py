"""Weight-free refiners a user would try instead of SAM: the baselines of the benchmarks.

* ``"identity"``: the coarse labels themselves (what "no refinement" scores).
* ``"random_walker"``: per object on a crop, scikit-image's random walker seeded
  with the coarse mask eroded by ``radius`` (object) and the complement of the
  coarse mask dilated by ``radius`` (background); the band between them is
  decided by the image (direct sparse solver: exact probabilities).
* ``"chan_vese"``: per object on a crop, scikit-image's morphological Chan-Vese
  (active contours without edges) started from the coarse mask.

Writing objects back (instance labels): a pixel goes to the object with the
highest score there (random-walker probability, or 1 for Chan-Vese, plus a
small bonus where the pixel was already the object's), among objects whose
score exceeds one half. Objects not selected by ``label_ids`` stay unchanged
and are never overwritten.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage as ndi
from skimage.color import rgb2gray
from skimage.segmentation import morphological_chan_vese, random_walker

from napari_samrefine._progress import ProgressCallback, report
from napari_samrefine.engine.preprocess import percentile_stretch
from napari_samrefine.labels.values import label_plane

__all__ = ["CLASSICAL_METHODS", "refine_classical"]

CLASSICAL_METHODS = ("identity", "random_walker", "chan_vese")


def _float_image(image: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, int | None]:
    """Image in [0, 1]: 2D for grey, (H, W, 3) for colour; and its channel axis."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        img = img[..., :3]
        axis = -1
    elif img.ndim == 2:
        axis = None
    else:
        raise ValueError(
            f"Expected a 2D grey image or an (H, W, 3) RGB image, got shape {img.shape}: "
            "pick one channel first."
        )
    if img.shape[:2] != shape:
        raise ValueError(f"The image {img.shape[:2]} and the labels {shape} differ in size.")
    img = img if img.dtype == np.uint8 else percentile_stretch(img)
    return img.astype(np.float64) / 255.0, axis


def _object_score(
    crop: np.ndarray,
    axis: int | None,
    coarse: np.ndarray,
    method: str,
    radius: int,
    beta: float,
    num_iter: int,
) -> np.ndarray:
    """Foreground score in [0, 1] of one object on its crop (> 0.5 = object)."""
    if method == "chan_vese":
        grey = rgb2gray(crop) if axis is not None else crop
        level = morphological_chan_vese(grey, num_iter, init_level_set=coarse.astype(np.int8))
        # ACWE labels the two phases arbitrarily: the object is the phase covering
        # most of the coarse mask
        if np.count_nonzero(level[coarse]) < np.count_nonzero(coarse) / 2:
            level = 1 - level
        return level.astype(np.float64)
    inside = ndi.distance_transform_edt(coarse)
    fg = inside > radius
    if not fg.any():
        fg = inside == inside.max()
    bg = ndi.distance_transform_edt(~coarse) > radius
    markers = np.where(fg, 1, np.where(bg, 2, 0)).astype(np.int32)
    if not (markers == 0).any() or not bg.any():
        return fg.astype(np.float64)
    prob = random_walker(crop, markers, beta=beta, mode="bf", return_full_prob=True, channel_axis=axis)
    return prob[0]


def refine_classical(
    image: np.ndarray,
    labels: np.ndarray,
    method: str = "random_walker",
    *,
    label_ids: Iterable[int] | None = None,
    radius: int | None = None,
    beta: float = 130.0,
    num_iter: int = 20,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Refine coarse labels without a model, object by object on crops.

    Parameters
    ----------
    image : numpy.ndarray
        2D grey or (H, W, 3) RGB image (any dtype; non-uint8 data is
        percentile-stretched to [0, 1]).
    labels : numpy.ndarray
        2D integer label image of coarse objects (0 = background).
    method : {"identity", "random_walker", "chan_vese"}
        The refiner (see the module docs).
    label_ids : iterable of int, optional
        Refine only these objects; the others are kept as they are.
    radius : int, optional
        Erosion / dilation radius of the random walker's seeds; by default
        max(1, round(0.15 * sqrt(object area))) per object.
    beta : float
        Random walker's edge penalty.
    num_iter : int
        Chan-Vese iterations.
    progress : callable, optional
        ``progress(done, total, message)``; raise :class:`~napari_samrefine.Cancelled`
        in it to stop.

    Returns
    -------
    numpy.ndarray
        Refined labels, same shape and dtype; the input is not modified.
    """
    if method not in CLASSICAL_METHODS:
        raise ValueError(f"Unknown method {method!r}: choose one of {', '.join(CLASSICAL_METHODS)}.")
    labels = label_plane(labels, "labels")
    img, axis = _float_image(image, labels.shape)
    if method == "identity":
        return labels.copy()
    boxes = ndi.find_objects(labels)
    ids = [i + 1 for i, b in enumerate(boxes) if b is not None]
    if label_ids is not None:
        wanted = {int(i) for i in label_ids}
        ids = [i for i in ids if i in wanted]
    selected = np.isin(labels, ids)
    out = np.where(selected, 0, labels).astype(labels.dtype)
    frozen = (labels != 0) & ~selected
    best = np.full(labels.shape, 0.5)
    h, w = labels.shape
    for done, lid in enumerate(ids):
        report(progress, done, len(ids), f"object {lid}")
        ys, xs = boxes[lid - 1]
        area = int(np.count_nonzero(labels[ys, xs] == lid))
        r = radius if radius is not None else max(1, round(0.15 * np.sqrt(area)))
        m = 2 * r + 4
        sl = (slice(max(ys.start - m, 0), min(ys.stop + m, h)), slice(max(xs.start - m, 0), min(xs.stop + m, w)))
        coarse = labels[sl] == lid
        score = _object_score(img[sl], axis, coarse, method, r, beta, num_iter)
        score = score + 1e-6 * coarse  # the coarse owner wins ties
        claim = (score > best[sl]) & ~frozen[sl]
        best[sl][claim] = score[claim]
        out[sl][claim] = lid
    report(progress, len(ids), len(ids), "done")
    return out
