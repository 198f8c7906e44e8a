"""Context-aware elastic box (CEBox, SAMRefiner; SPEC section 2).

A coarse mask often misses parts of its object, so its tight box is too small.
CEBox looks just outside each side of the tight box: if enough pixels there look
like the object in SAM's feature space, that side moves out by one step.

- Features: the image embedding's valid (unpadded) grid, bilinearly upsampled
  to the original frame, each pixel L2-normalised over channels.
- Query: the mean of the low-res features under the mask (the mask downsampled to
  the valid grid with torch's nearest rule), L2-normalised.
- A pixel is similar when its cosine with the query exceeds 0.5.
- Per side, a strip outside the tight box, ``ceil(min(side / 10, 10))`` pixels
  wide (at least 1; left/right use the box width, top/bottom its height),
  spanning the box along that side and clipped to the image; the side moves out by
  the strip's clipped width when the fraction of similar pixels in the strip
  exceeds ``lam``.

Only strip pixels are ever upsampled: memory scales with the strips, never with
H x W x C (the reference code builds the whole upsampled feature map).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from napari_samrefine.engine.embedding import ImageEmbedding
from napari_samrefine.engine.frame import SamFrame
from napari_samrefine.labels.objects import ObjectMask
from napari_samrefine.samrefiner.defaults import CEBOX_LAMBDA

__all__ = [
    "SIMILARITY_THRESHOLD",
    "FeatureGrid",
    "nearest_indices",
    "cebox_strips",
    "elastic_box",
]

SIMILARITY_THRESHOLD = 0.5
"""Cosine above which a pixel counts as similar to the object's query feature."""


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output position of torch's ``nearest`` resize along one axis.

    torch computes ``floor(dst * (in / out))`` with a single-precision scale, which
    differs from exact arithmetic for some sizes; the indices are therefore read off
    torch itself.

    Parameters
    ----------
    n_in, n_out : int
        Input and output lengths.

    Returns
    -------
    numpy.ndarray
        int64 (n_out,), non-decreasing.
    """
    src = torch.arange(n_in, dtype=torch.float64).reshape(1, 1, n_in, 1)
    out = F.interpolate(src, size=(n_out, 1), mode="nearest")
    return out[0, 0, :, 0].to(torch.int64).numpy()


@dataclass(frozen=True)
class FeatureGrid:
    """An embedding's valid feature grid, prepared once per image for CEBox.

    Attributes
    ----------
    features : numpy.ndarray
        float32 (C, gh, gw): the embedding cells that cover the image.
    frame : SamFrame
        Geometry of the image (its ``from_embedding_*`` maps upsample the grid).
    row_index, col_index : numpy.ndarray
        Image row (column) that torch's nearest rule samples for each grid row (column).
    """

    features: np.ndarray
    frame: SamFrame
    row_index: np.ndarray
    col_index: np.ndarray

    @classmethod
    def from_embedding(cls, embedding: ImageEmbedding) -> FeatureGrid:
        """Copy an embedding's valid grid to the CPU (once per image, not per object)."""
        frame = embedding.frame
        features = embedding.valid_features()
        H, W = frame.original_size
        gh, gw = features.shape[1:]
        return cls(features, frame, nearest_indices(H, gh), nearest_indices(W, gw))

    def query(self, obj: ObjectMask) -> np.ndarray | None:
        """The object's L2-normalised mean feature, or None when no grid cell samples it.

        The mask is downsampled to the grid with torch's nearest rule; only the grid
        rows and columns that sample the object's crop are looked at.
        """
        y0, x0, y1, x1 = obj.bbox
        i0, i1 = np.searchsorted(self.row_index, [y0, y1])
        j0, j1 = np.searchsorted(self.col_index, [x0, x1])
        sampled = obj.mask[np.ix_(self.row_index[i0:i1] - y0, self.col_index[j0:j1] - x0)]
        if not sampled.any():
            return None
        q = self.features[:, i0:i1, j0:j1][:, sampled].astype(np.float64).mean(axis=1)
        norm = np.linalg.norm(q)
        return None if norm == 0 else q / norm

    def cosine(self, query: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        """Cosine of ``query`` with the upsampled, normalised features of an image rectangle.

        Parameters
        ----------
        query : numpy.ndarray
            (C,) unit vector.
        rows, cols : slice
            Half-open, non-empty rectangle of the original frame.

        Returns
        -------
        numpy.ndarray
            float64 (rows, cols); 0 where the upsampled feature is zero.

        Notes
        -----
        Each pixel's feature is a bilinear blend of a few consecutive grid rows
        and columns (:class:`~napari_samrefine.engine.frame.Band`), so the features
        are blended along one axis first (``T``, over the grid lines in use on
        the other axis) and the dot product and squared norm of the second blend
        come from ``q . T`` and the inner products of neighbouring lines of
        ``T``: no pixel's C-vector is ever formed. Same values as upsampling
        every channel, to float64 rounding.
        """
        frame = self.frame
        br, bc = frame.band("from_embedding_rows"), frame.band("from_embedding_cols")
        query = np.asarray(query, dtype=np.float64)
        nr, nc = rows.stop - rows.start, cols.stop - cols.start
        sr, sc = br.start[rows], bc.start[cols]
        na = int(sr.max() - sr.min()) + br.weights.shape[1]  # grid rows in use
        nb = int(sc.max() - sc.min()) + bc.weights.shape[1]  # grid columns in use
        # blend first along the axis that leaves the smaller intermediate
        if nb * nr < na * nc:
            grid = self.features.transpose(0, 2, 1)
            return _banded_cosine(grid, query, bc, cols, br, rows).T
        return _banded_cosine(self.features, query, br, rows, bc, cols)


def _banded_cosine(features, query, br, rows: slice, bc, cols: slice, block: int = 256):
    """:meth:`FeatureGrid.cosine`, blending along columns first (``features`` (C, gh, gw))."""
    sr, wr = br.start[rows], br.weights[rows].astype(np.float64)  # (nr,), (nr, kr)
    kr = wr.shape[1]
    a0, a1 = int(sr.min()), int(sr.max()) + kr  # grid rows in use
    ir = sr - a0
    out = []
    for c0 in range(cols.start, cols.stop, block):
        sl = slice(c0, min(c0 + block, cols.stop))
        sc, wc = bc.start[sl], bc.weights[sl].astype(np.float64)
        b0, b1 = int(sc.min()), int(sc.max()) + wc.shape[1]
        f = features[:, a0:a1, b0:b1].astype(np.float64).transpose(1, 2, 0)  # (na, nb, C)
        # T[a, x] = sum_k wc[x, k] f[a, sc[x] + k]: the column blend of grid row a at column x
        t = sum(wc[None, :, k, None] * f[:, sc - b0 + k] for k in range(wc.shape[1]))
        d = t @ query  # (na, nx)
        # inner products of T's grid rows a and a + delta at each column
        g = [np.einsum("axc,axc->ax", t[: len(t) - delta], t[delta:]) for delta in range(kr)]
        dot = sum(wr[:, i, None] * d[ir + i] for i in range(kr))
        norm2 = sum(wr[:, i, None] ** 2 * g[0][ir + i] for i in range(kr))
        for i in range(kr):
            for j in range(i + 1, kr):
                norm2 = norm2 + 2 * wr[:, i, None] * wr[:, j, None] * g[j - i][ir + i]
        norm = np.sqrt(np.maximum(norm2, 0.0))
        out.append(np.divide(dot, norm, out=np.zeros_like(dot), where=norm > 0))
    return np.concatenate(out, axis=1)


def cebox_strips(
    tight_box: np.ndarray, image_shape: tuple[int, int]
) -> dict[str, tuple[slice, slice, int]]:
    """The four strips CEBox inspects around a tight box.

    Parameters
    ----------
    tight_box : array-like
        Inclusive [x1, y1, x2, y2].
    image_shape : (int, int)
        (H, W) of the image.

    Returns
    -------
    dict
        ``{"left" | "top" | "right" | "bottom": (rows, cols, width)}``: half-open
        slices of the strip in the image and its width after clipping (sides at
        the image border are left out). The step is ``ceil(min(side / 10, 10))``
        pixels, at least 1, in exact integer arithmetic.
    """
    x1, y1, x2, y2 = (int(v) for v in tight_box)
    H, W = image_shape
    step_x = max(1, -(-min(x2 - x1 + 1, 100) // 10))  # ceil(min(0.1 * width, 10))
    step_y = max(1, -(-min(y2 - y1 + 1, 100) // 10))
    rows, cols = slice(y1, y2 + 1), slice(x1, x2 + 1)
    candidates = {
        "left": (rows, slice(max(x1 - step_x, 0), x1)),
        "top": (slice(max(y1 - step_y, 0), y1), cols),
        "right": (rows, slice(x2 + 1, min(x2 + 1 + step_x, W))),
        "bottom": (slice(y2 + 1, min(y2 + 1 + step_y, H)), cols),
    }
    out = {}
    for side, (r, c) in candidates.items():
        width = (c.stop - c.start) if side in ("left", "right") else (r.stop - r.start)
        if width > 0:
            out[side] = (r, c, width)
    return out


def elastic_box(
    obj: ObjectMask,
    grid: FeatureGrid,
    lam: float = CEBOX_LAMBDA,
    tight_box: np.ndarray | None = None,
) -> tuple[np.ndarray, bool]:
    """One CEBox step: the tight box with each side moved out where the context is similar.

    Parameters
    ----------
    obj : ObjectMask
        A non-empty object of the image ``grid`` was computed for.
    grid : FeatureGrid
        The image's prepared embedding (:meth:`FeatureGrid.from_embedding`).
    lam : float
        A side moves out when more than this fraction of its strip is similar (SPEC's
        lambda, :data:`~napari_samrefine.samrefiner.defaults.CEBOX_LAMBDA` by default).
    tight_box : array-like, optional
        The object's inclusive [x1, y1, x2, y2] when already known.

    Returns
    -------
    box : numpy.ndarray
        int64 inclusive [x1, y1, x2, y2], inside the image.
    expanded : bool
        True when at least one side moved.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from napari_samrefine.engine.embedding import ImageEmbedding
    >>> from napari_samrefine.engine.frame import SamFrame
    >>> from napari_samrefine.labels.objects import ObjectMask
    >>> frame = SamFrame((64, 64), image_size=64, lowres_size=16, embedding_size=4)
    >>> emb = ImageEmbedding(torch.ones(1, 8, 4, 4), frame, "uniform")
    >>> mask = np.zeros((64, 64), bool); mask[20:40, 20:40] = True
    >>> box, expanded = elastic_box(ObjectMask.from_full(mask), FeatureGrid.from_embedding(emb))
    >>> box.tolist(), expanded
    ([18, 18, 41, 41], True)
    """
    if tuple(obj.image_shape) != tuple(grid.frame.original_size):
        raise ValueError(
            f"object of a {tuple(obj.image_shape)} image but an embedding of a "
            f"{tuple(grid.frame.original_size)} image: embed the image the labels belong to"
        )
    box = np.asarray(obj.tight_box if tight_box is None else tight_box, dtype=np.int64)
    q = grid.query(obj) if lam else None
    if q is None:
        return box.copy(), False
    new = box.copy()
    moves = {"left": (0, -1), "top": (1, -1), "right": (2, 1), "bottom": (3, 1)}
    strips = cebox_strips(box, obj.image_shape)
    # small objects: one cosine call for the rectangle around all strips (the
    # per-call overhead dominates); large ones: strip by strip (the rectangle
    # would be mostly the box itself)
    union = None
    if strips:
        r0 = min(r.start for r, _, _ in strips.values())
        r1 = max(r.stop for r, _, _ in strips.values())
        c0 = min(c.start for _, c, _ in strips.values())
        c1 = max(c.stop for _, c, _ in strips.values())
        strip_area = sum((r.stop - r.start) * (c.stop - c.start) for r, c, _ in strips.values())
        if (r1 - r0) * (c1 - c0) <= 4 * strip_area:
            union = grid.cosine(q, slice(r0, r1), slice(c0, c1)) > SIMILARITY_THRESHOLD
    for side, (rows, cols, width) in strips.items():
        if union is not None:
            similar = union[rows.start - r0 : rows.stop - r0, cols.start - c0 : cols.stop - c0]
        else:
            similar = grid.cosine(q, rows, cols) > SIMILARITY_THRESHOLD
        if similar.mean() > lam:
            k, sign = moves[side]
            new[k] += sign * width
    return new, bool((new != box).any())
