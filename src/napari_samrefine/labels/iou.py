"""The one IoU of the package: masks, object crops, SAM's candidates, label images, soft masks.

Every IoU the package computes comes from here: the cascade's convergence test
and the candidates' scores (:func:`crop_iou`, :func:`candidate_ious`), the
metrics and the synthetic coarse masks (:func:`iou`), the matching of two
label images (:func:`iou_matrix`) and the judge's scores (:func:`iou`,
:func:`soft_iou`).

Conventions
-----------
* Two empty masks agree perfectly: their IoU is 1.0; one empty and one
  non-empty mask give 0.0.
* Label ids keep their dtype. Ids are never cast (to int64 or float), so every
  integer dtype works, uint64 ids above 2**63 - 1 included: ids are compared
  within one image's dtype only (:func:`numpy.unique` with ``return_inverse``).
* Nothing here modifies its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_samrefine.labels.objects import ObjectMask

__all__ = ["same_shape", "iou", "soft_iou", "crop_iou", "candidate_ious", "iou_matrix"]


def same_shape(a, b) -> tuple[np.ndarray, np.ndarray]:
    """The two masks (or label images) as arrays; an error names the fix if their shapes differ.

    Parameters
    ----------
    a, b : array_like
        Masks or label images meant to cover the same pixels.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``a`` and ``b`` as arrays (not copied).

    Raises
    ------
    ValueError
        When the shapes differ.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(
            f"The two masks have different shapes {a.shape} and {b.shape}: compare "
            "masks of the same image (crop or resize one of them first)."
        )
    return a, b


def _ratio(inter: int, union: int) -> float:
    return 1.0 if union == 0 else inter / union


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks (non-zero = foreground).

    Parameters
    ----------
    a, b : numpy.ndarray
        Masks of the same shape (any dimension, any dtype); non-zero pixels are
        foreground.

    Returns
    -------
    float
        |a & b| / |a | b|; 1.0 when both masks are empty.

    Examples
    --------
    >>> iou(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))
    0.3333333333333333
    """
    a, b = same_shape(a, b)
    a = a.astype(bool, copy=False)
    b = b.astype(bool, copy=False)
    return _ratio(int(np.count_nonzero(a & b)), int(np.count_nonzero(a | b)))


def soft_iou(prob: np.ndarray, mask: np.ndarray) -> float:
    """Threshold-free IoU of a probability map with a binary mask (the judge's soft score).

    ``sum(p * m) / sum(p + m - p * m)`` (fuzzy Jaccard: min over max); equals
    :func:`iou` of ``prob > 0.5`` and ``mask`` when ``prob`` is binary; 1.0 when
    both are empty.

    Parameters
    ----------
    prob : numpy.ndarray
        Probabilities in [0, 1].
    mask : numpy.ndarray
        A mask of the same shape (non-zero = foreground).

    Returns
    -------
    float

    Examples
    --------
    >>> soft_iou(np.array([1.0, 0.5, 0.5, 0.0]), np.array([1, 1, 0, 0]))
    0.6
    """
    p = np.asarray(prob, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if p.shape != m.shape:
        raise ValueError(f"The probability map {p.shape} and the mask {m.shape} differ in shape.")
    inter = float(p[m].sum())
    union = float(p.sum() + m.sum() - inter)
    return 1.0 if union <= 0 else inter / union


def crop_iou(a: ObjectMask, b: ObjectMask) -> float:
    """IoU of two objects of the same image, computed on the overlap of their crops only.

    Equals :func:`iou` of the two objects' full-image masks, at the cost of
    their boxes. Two empty objects have IoU 1.

    Parameters
    ----------
    a, b : ObjectMask
        Objects of one image (their ids do not matter).

    Returns
    -------
    float

    Examples
    --------
    >>> a = ObjectMask(1, np.ones((2, 2), bool), (0, 0), (4, 4))
    >>> b = ObjectMask(2, np.ones((2, 2), bool), (1, 1), (4, 4))
    >>> crop_iou(a, b)
    0.14285714285714285
    """
    area_a, area_b = a.area, b.area
    if area_a == 0 and area_b == 0:
        return 1.0
    ay0, ax0, ay1, ax1 = a.bbox
    by0, bx0, by1, bx1 = b.bbox
    y0, x0, y1, x1 = max(ay0, by0), max(ax0, bx0), min(ay1, by1), min(ax1, bx1)
    inter = 0
    if y1 > y0 and x1 > x0:
        pa = a.mask[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0]
        pb = b.mask[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
        inter = int(np.count_nonzero(pa & pb))
    return inter / (area_a + area_b - inter)


def candidate_ious(reference: ObjectMask, candidates: Sequence[ObjectMask | None]) -> np.ndarray:
    """IoU of each of several candidate masks (SAM's multimask outputs) with one object.

    Parameters
    ----------
    reference : ObjectMask
        The object the candidates are scored against (a coarse or true object).
    candidates : sequence of ObjectMask or None
        The candidates in the reference's image; None or an empty candidate
        (SAM found nothing) scores 0.

    Returns
    -------
    numpy.ndarray
        float64 (len(candidates),) :func:`crop_iou` of each candidate.
    """
    out = np.zeros(len(candidates))
    for k, cand in enumerate(candidates):
        if cand is not None and cand.area:
            out[k] = crop_iou(reference, cand)
    return out


def iou_matrix(
    rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every object of one label image with every object of another.

    The contingency table of the two images (pixels per pair of ids) gives
    every intersection; the areas are its sums. Ids keep their dtype (any
    integer dtype, uint64 ids above 2**63 - 1 included); 0 is background and has
    no row or column.

    Parameters
    ----------
    rows, cols : numpy.ndarray
        Label images of the same shape (any integer or bool dtype; the two
        dtypes may differ).

    Returns
    -------
    matrix : numpy.ndarray
        float64 (R, C): IoU of object ``row_ids[i]`` of ``rows`` with object
        ``col_ids[j]`` of ``cols``.
    row_ids, col_ids : numpy.ndarray
        The non-zero ids of each image, increasing, in its own dtype.

    Examples
    --------
    >>> a = np.array([[1, 1, 0], [0, 2, 2]], np.uint64)
    >>> b = np.array([[7, 0, 0], [0, 7, 7]], np.int8)
    >>> m, a_ids, b_ids = iou_matrix(a, b)
    >>> m.round(3).tolist(), a_ids.tolist(), b_ids.tolist()
    ([[0.25], [0.667]], [1, 2], [7])
    """
    rows, cols = same_shape(rows, cols)
    r_ids, r_inv = np.unique(rows.ravel(), return_inverse=True)
    c_ids, c_inv = np.unique(cols.ravel(), return_inverse=True)
    n_r, n_c = len(r_ids), len(c_ids)
    # pixels of each (row id, column id) pair: a bincount on one combined index
    table = np.bincount(r_inv * n_c + c_inv, minlength=n_r * n_c).reshape(n_r, n_c)
    table = table.astype(np.float64)
    union = table.sum(axis=1)[:, None] + table.sum(axis=0)[None, :] - table
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.where(union > 0, table / union, 0.0)
    keep_r, keep_c = r_ids != 0, c_ids != 0
    return matrix[np.ix_(keep_r, keep_c)], r_ids[keep_r], c_ids[keep_c]
