"""Coarse labels of several kinds made from true labels, for benchmarks and teaching.

* ``defects``: superpixel defects (:func:`~.defects.synthesize_coarse_labels`);
* ``eroded`` / ``dilated``: every true object eroded / grown by
  r = max(1, round(d / 20)) px, d its equivalent diameter (growth only into
  background, each pixel to its nearest object);
* ``merged``: neighbouring true objects (gap <= 2 px) joined in pairs (random
  order, each object in at most one pair; the gap closed with a disk of radius
  2); unpaired objects are left out;
* ``classical``: Otsu threshold (the minority phase is foreground), holes filled,
  specks < 16 px removed, distance-transform watershed (peaks >= 5 px apart).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_samrefine.evaluation.defects import synthesize_coarse_labels

__all__ = ["COARSE_KINDS", "coarse_labels", "eroded", "dilated", "merged", "classical"]

COARSE_KINDS = ("defects", "eroded", "dilated", "merged", "classical")


def _radii(labels: np.ndarray) -> np.ndarray:
    """Per-id radius max(1, round(d / 20)), d the object's equivalent diameter (index = id)."""
    areas = np.bincount(labels.ravel())
    return np.maximum(1, np.round(np.sqrt(4 * areas / np.pi) / 20)).astype(int)


def eroded(labels: np.ndarray) -> np.ndarray:
    """Every object eroded by its radius (pixels farther than r from anything not itself)."""
    out = np.zeros_like(labels)
    radii = _radii(labels)
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        own = np.pad(labels[grown] == i, 1, mode="edge")  # the image edge does not erode
        keep = ndi.distance_transform_edt(own)[1:-1, 1:-1] > radii[i]
        out[grown][keep] = i
    return out


def dilated(labels: np.ndarray) -> np.ndarray:
    """Every object grown into the background by its radius; a pixel goes to its nearest object."""
    dist, (iy, ix) = ndi.distance_transform_edt(labels == 0, return_indices=True)
    nearest = labels[iy, ix]
    grow = dist <= _radii(labels)[nearest]
    return np.where(labels > 0, labels, np.where(grow, nearest, 0)).astype(labels.dtype)


def merged(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Neighbouring objects (gap <= 2 px) joined in pairs under one id; unpaired objects dropped."""
    from skimage.morphology import disk
    from skimage.segmentation import expand_labels

    touch = expand_labels(labels, 1)
    pairs = set()
    for a, b in ((touch[:, :-1], touch[:, 1:]), (touch[:-1, :], touch[1:, :])):
        m = (a != b) & (a > 0) & (b > 0)
        pairs |= {(min(x, y), max(x, y)) for x, y in zip(a[m].tolist(), b[m].tolist(), strict=True)}
    neighbours: dict[int, set] = {}
    for x, y in pairs:
        neighbours.setdefault(x, set()).add(y)
        neighbours.setdefault(y, set()).add(x)
    rng = np.random.default_rng(seed)
    used: set[int] = set()
    out = np.zeros_like(labels)
    k = 0
    for a in rng.permutation(sorted(neighbours)).tolist():
        free = sorted(neighbours[a] - used)
        if a in used or not free:
            continue
        b = free[rng.integers(len(free))]
        used |= {a, b}
        k += 1
        both = (labels == a) | (labels == b)
        closed = ndi.binary_closing(np.pad(both, 3), disk(2))[3:-3, 3:-3]
        out[both | (closed & (labels == 0))] = k
    return out


def classical(image: np.ndarray) -> np.ndarray:
    """Otsu threshold + distance-transform watershed (scikit-image)."""
    from skimage.color import rgb2gray
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    grey = rgb2gray(image[..., :3]) if image.ndim == 3 else image.astype(np.float64)
    fg = grey > threshold_otsu(grey)
    if fg.mean() > 0.5:  # nuclei are the minority phase (dark on bright brightfield)
        fg = ~fg
    pieces, _ = ndi.label(ndi.binary_fill_holes(fg))
    fg = (np.bincount(pieces.ravel()) >= 16)[pieces] & (pieces > 0)  # specks < 16 px removed
    dist = ndi.distance_transform_edt(fg)
    comps, _ = ndi.label(fg)
    peaks = peak_local_max(dist, min_distance=5, labels=comps, exclude_border=False)
    markers = np.zeros(fg.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=fg).astype(np.int32)


def coarse_labels(kind: str, image: np.ndarray, truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """Coarse labels of one ``kind`` (:data:`COARSE_KINDS`) made from the true ``truth`` labels.

    Parameters
    ----------
    kind : str
        "defects" (:func:`~.defects.synthesize_coarse_labels`, IoU window
        [0.75, 0.85]), "eroded", "dilated", "merged" or "classical" (from the
        image alone: no ids in common with the truth).
    image : numpy.ndarray
        2D grey or (H, W, 3) image.
    truth : numpy.ndarray
        2D instance labels.
    seed : int
        Seed of the random kinds ("defects", "merged").

    Returns
    -------
    numpy.ndarray
        int32 instance labels. "defects", "eroded" and "dilated" keep the true
        ids; "merged" and "classical" number their objects from 1.
    """
    if kind not in COARSE_KINDS:
        raise ValueError(f"Unknown coarse-mask kind {kind!r}; choose one of {COARSE_KINDS}.")
    truth = truth.astype(np.int32)
    if kind == "defects":
        return synthesize_coarse_labels(image, truth, seed=seed).labels.astype(np.int32)
    if kind == "classical":
        return classical(image)
    if kind == "merged":
        return merged(truth, seed)
    return {"eroded": eroded, "dilated": dilated}[kind](truth)
