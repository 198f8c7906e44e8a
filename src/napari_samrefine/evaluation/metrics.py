"""Segmentation quality: IoU, boundary IoU (Cheng et al. 2021), mIoU and object matching.

Conventions
-----------
* Masks are compared as booleans; label images are non-negative integer arrays
  with 0 as background.
* Two empty masks agree perfectly: their IoU (and boundary IoU) is 1.0. One empty
  and one non-empty mask give 0.0. This keeps "refining nothing into nothing"
  from counting as a failure and makes every score defined.
* Nothing here modifies its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from napari_samrefine.labels.iou import iou, iou_matrix, same_shape
from napari_samrefine.labels.objects import object_slices
from napari_samrefine.labels.values import check_label_values

__all__ = [
    "iou",
    "boundary_iou",
    "boundary_width",
    "mask_boundary",
    "class_ious",
    "mean_iou",
    "match_objects",
    "MatchResult",
    "object_ious",
    "ObjectScores",
]


def _checked_pair(pred_labels, true_labels) -> tuple[np.ndarray, np.ndarray]:
    """Both label images validated (named in the messages) and of one shape."""
    return same_shape(
        check_label_values(pred_labels, "pred_labels"), check_label_values(true_labels, "true_labels")
    )


def boundary_width(shape: tuple[int, ...], dilation_ratio: float = 0.02) -> int:
    """Width d of the boundary band: max(1, round(ratio * image diagonal))."""
    if dilation_ratio <= 0:
        raise ValueError(f"dilation_ratio must be positive, got {dilation_ratio}.")
    return max(1, int(round(dilation_ratio * float(np.hypot(*shape[:2])))))


def mask_boundary(mask: np.ndarray, width: int) -> np.ndarray:
    """Inner boundary band of a 2D mask: pixels of the mask within ``width`` of its outside.

    The band is the mask minus its erosion by a (2 * width + 1) square, pixels
    outside the array counting as background (as in the reference code of Cheng
    et al., which erodes a zero-padded mask ``width`` times with a 3 x 3 kernel).

    Parameters
    ----------
    mask : numpy.ndarray
        2D mask, non-zero = foreground.
    width : int
        Band width d in pixels (>= 1).

    Returns
    -------
    numpy.ndarray
        bool array of the mask's shape.
    """
    mask = np.asarray(mask).astype(bool, copy=False)
    if mask.ndim != 2:
        raise ValueError(f"mask_boundary expects a 2D mask, got shape {mask.shape}.")
    padded = np.pad(mask, 1)
    # chessboard distance to the nearest background pixel > d  <=>  survives d erosions
    dist = ndi.distance_transform_cdt(padded, metric="chessboard")[1:-1, 1:-1]
    return mask & (dist <= width)


def boundary_iou(a: np.ndarray, b: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU (Cheng et al., CVPR 2021) of two 2D masks.

    Each mask's boundary band is its pixels within d = max(1, round(ratio *
    image diagonal)) of its outside (see :func:`mask_boundary`); the score is the
    IoU of the two bands. It is computed on a crop around both masks with a
    margin of d + 1 pixels, which gives exactly the whole-image result.

    Parameters
    ----------
    a, b : numpy.ndarray
        2D masks of the same shape, non-zero = foreground.
    dilation_ratio : float
        Band width as a fraction of the image diagonal (0.02 in the paper).

    Returns
    -------
    float
        In [0, 1]; 1.0 when both masks are empty.
    """
    a, b = same_shape(a, b)
    if a.ndim != 2:
        raise ValueError(f"boundary_iou expects 2D masks, got shape {a.shape}.")
    d = boundary_width(a.shape, dilation_ratio)
    a = a.astype(bool, copy=False)
    b = b.astype(bool, copy=False)
    box = ndi.find_objects((a | b).astype(np.uint8))
    if not box or box[0] is None:
        return 1.0
    ys, xs = box[0]
    m = d + 1
    sl = (
        slice(max(ys.start - m, 0), min(ys.stop + m, a.shape[0])),
        slice(max(xs.start - m, 0), min(xs.stop + m, a.shape[1])),
    )
    ba = mask_boundary(a[sl], d)
    bb = mask_boundary(b[sl], d)
    return iou(ba, bb)


def class_ious(
    pred_labels: np.ndarray, true_labels: np.ndarray, *, include_background: bool = False
) -> dict[int, float]:
    """IoU of every class of two semantic label images.

    Parameters
    ----------
    pred_labels, true_labels : numpy.ndarray
        Integer label images of the same shape (value = class id, 0 = background).
    include_background : bool
        Also score class 0.

    Returns
    -------
    dict of int to float
        Class id -> IoU, for every class present in either image.
    """
    pred, true = _checked_pair(pred_labels, true_labels)
    # class ids as Python ints: two images of different dtypes (int64 and uint64 above
    # 2**63 - 1) share no numpy type that holds both
    classes = sorted(set(np.unique(pred).tolist()) | set(np.unique(true).tolist()))
    if not include_background:
        classes = [c for c in classes if c != 0]
    p = pred.ravel()
    t = true.ravel()
    out = {}
    for c in classes:
        pc = p == c
        tc = t == c
        out[int(c)] = iou(pc, tc)
    return out


def mean_iou(
    pred_labels: np.ndarray, true_labels: np.ndarray, *, include_background: bool = False
) -> float:
    """Semantic mIoU: the mean over classes of the per-class IoU.

    Classes absent from both images are not counted. Two images without any
    foreground class score 1.0 (nothing to find, nothing found).

    Parameters
    ----------
    pred_labels, true_labels : numpy.ndarray
        Integer label images of the same shape (value = class id, 0 = background).
    include_background : bool
        Count class 0 as a class too.

    Returns
    -------
    float
    """
    scores = class_ious(pred_labels, true_labels, include_background=include_background)
    return float(np.mean(list(scores.values()))) if scores else 1.0


@dataclass(frozen=True)
class MatchResult:
    """One-to-one matching of predicted to true objects.

    Attributes
    ----------
    true_ids, pred_ids : numpy.ndarray
        (K,) matched label ids, pair k = (true_ids[k], pred_ids[k]), each in its
        label image's dtype (uint64 ids above 2**63 - 1 stay as they are).
    ious : numpy.ndarray
        float64 (K,) IoU of each pair (all >= the threshold).
    unmatched_true, unmatched_pred : numpy.ndarray
        Ids left without a partner (misses and false positives), in the images' dtypes.
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    ious: np.ndarray
    unmatched_true: np.ndarray
    unmatched_pred: np.ndarray


def match_objects(
    pred_labels: np.ndarray, true_labels: np.ndarray, threshold: float = 0.5
) -> MatchResult:
    """Match predicted to true objects one to one by IoU (Hungarian assignment).

    The IoU of every (true, predicted) object pair comes from the contingency
    table of the two label images; the assignment maximising the summed IoU
    (``scipy.optimize.linear_sum_assignment``) is kept where a pair's IoU is at
    least ``threshold``. For ``threshold >= 0.5`` the matching is unique.

    Parameters
    ----------
    pred_labels, true_labels : numpy.ndarray
        Instance label images of the same shape (0 = background).
    threshold : float
        Smallest IoU of a match, in (0, 1].

    Returns
    -------
    MatchResult
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}.")
    pred, true = _checked_pair(pred_labels, true_labels)
    mat, t_ids, p_ids = iou_matrix(true, pred)
    rows, cols = linear_sum_assignment(mat, maximize=True) if mat.size else ([], [])
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    good = mat[rows, cols] >= threshold if len(rows) else np.zeros(0, bool)
    rows, cols = rows[good], cols[good]
    return MatchResult(
        true_ids=t_ids[rows],
        pred_ids=p_ids[cols],
        ious=mat[rows, cols].astype(np.float64),
        unmatched_true=np.setdiff1d(t_ids, t_ids[rows]),
        unmatched_pred=np.setdiff1d(p_ids, p_ids[cols]),
    )


@dataclass(frozen=True)
class ObjectScores:
    """Per-object scores of a prediction against the truth.

    Attributes
    ----------
    label_ids : numpy.ndarray
        (N,) ids of the true objects, increasing, in the true labels' dtype.
    iou : numpy.ndarray
        float64 (N,) IoU of each true object with its predicted partner (0 without one).
    boundary_iou : numpy.ndarray
        float64 (N,) boundary IoU of each pair (0 without a partner).
    """

    label_ids: np.ndarray
    iou: np.ndarray
    boundary_iou: np.ndarray


def object_ious(
    pred_labels: np.ndarray,
    true_labels: np.ndarray,
    *,
    by: str = "id",
    threshold: float = 0.5,
    dilation_ratio: float = 0.02,
) -> ObjectScores:
    """IoU and boundary IoU of every true object with its predicted counterpart.

    Parameters
    ----------
    pred_labels, true_labels : numpy.ndarray
        2D instance label images of the same shape (0 = background).
    by : {"id", "match"}
        How objects pair up. "id": the predicted object with the same label id
        (refinement keeps ids, so coarse, refined and true object k are the same
        object). "match": Hungarian matching by IoU (:func:`match_objects`) with
        ``threshold``; unmatched true objects score 0.
    threshold : float
        Smallest IoU of a match for ``by="match"``.
    dilation_ratio : float
        Boundary band width for the boundary IoU, as a fraction of the image diagonal.

    Returns
    -------
    ObjectScores
        One entry per true object; a true object whose partner is missing scores 0.
    """
    pred, true = _checked_pair(pred_labels, true_labels)
    if true.ndim != 2:
        raise ValueError(f"object_ious expects 2D label images, got shape {true.shape}.")
    t_ids = np.unique(true)
    t_ids = t_ids[t_ids != 0]
    if by == "id":
        partner = dict(zip(t_ids.tolist(), t_ids.tolist(), strict=True))
    elif by == "match":
        m = match_objects(pred, true, threshold)
        partner = dict(zip(m.true_ids.tolist(), m.pred_ids.tolist(), strict=True))
    else:
        raise ValueError(f"by must be 'id' or 'match', got {by!r}.")
    d = boundary_width(true.shape, dilation_ratio)
    ious = np.zeros(len(t_ids))
    bious = np.zeros(len(t_ids))
    t_boxes = object_slices(true)  # by id: no list as long as the largest id
    p_boxes = object_slices(pred)
    h, w = true.shape
    for k, tid in enumerate(t_ids.tolist()):
        pid = partner.get(tid)
        pbox = p_boxes.get(pid) if pid is not None else None
        if pbox is None:
            continue
        tbox = t_boxes[tid]
        m = d + 1
        sl = (
            slice(max(min(tbox[0].start, pbox[0].start) - m, 0), min(max(tbox[0].stop, pbox[0].stop) + m, h)),
            slice(max(min(tbox[1].start, pbox[1].start) - m, 0), min(max(tbox[1].stop, pbox[1].stop) + m, w)),
        )
        tm = true[sl] == tid
        pm = pred[sl] == pid
        ious[k] = iou(pm, tm)
        ba = mask_boundary(pm, d)
        bb = mask_boundary(tm, d)
        bious[k] = iou(ba, bb)
    return ObjectScores(t_ids, ious, bious)
