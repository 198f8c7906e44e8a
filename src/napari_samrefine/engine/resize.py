"""1-D resize maps stored as bands: a few consecutive weights per output row.

A bilinear resize along one axis is a linear map ``y = A @ x`` whose every row
draws on at most two consecutive inputs; chains of such resizes (SAM's resize,
pad and low-res resize) still draw on a few inputs per row. :class:`Band`
stores such a matrix (n_out x n_in) as those inputs' first column and their
weights, so its memory is ``n_out * k`` numbers instead of ``n_out * n_in``.
:func:`bilinear_band` computes torch's bilinear weights directly and
``band @ band`` composes two maps, so no dense matrix is ever needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

__all__ = ["Band", "bilinear_band"]


@dataclass(frozen=True, eq=False)
class Band:
    """A resize matrix (n_out x n_in) stored as the few consecutive weights of each row.

    Row ``i`` of the matrix is zero except on columns ``start[i]`` to
    ``start[i] + k - 1``, where it holds ``weights[i]``. The window is the
    narrowest that holds every row's nonzeros (rows without any have weights 0).

    Attributes
    ----------
    start : numpy.ndarray
        int64 (n_out,) first column of each row's window.
    weights : numpy.ndarray
        float32 (n_out, k) the matrix's entries in the window (zeros included).
    n_in : int
        Number of columns of the matrix.
    """

    start: np.ndarray
    weights: np.ndarray
    n_in: int

    @property
    def shape(self) -> tuple[int, int]:
        """(n_out, n_in) of the matrix."""
        return self.weights.shape[0], self.n_in

    @property
    def nbytes(self) -> int:
        """Bytes held by ``start`` and ``weights``."""
        return self.start.nbytes + self.weights.nbytes

    @classmethod
    def from_sparse(cls, mat) -> Band:
        """The band of a scipy.sparse matrix whose rows have consecutive nonzeros.

        Parameters
        ----------
        mat : scipy.sparse array or matrix
            (n_out, n_in); its entries are rounded to float32, explicit zeros
            are dropped.

        Returns
        -------
        Band
            Exactly the matrix's (float32) entries.
        """
        csr = sparse.csr_array(mat, copy=True)
        csr.data = csr.data.astype(np.float32)
        csr.eliminate_zeros()
        csr.sort_indices()
        n_out, n_in = csr.shape
        counts = np.diff(csr.indptr)
        has = counts > 0
        first = np.zeros(n_out, np.int64)
        last = np.zeros(n_out, np.int64)
        first[has] = csr.indices[csr.indptr[:-1][has]]
        last[has] = csr.indices[csr.indptr[1:][has] - 1]
        k = int((last - first).max(initial=0)) + 1
        start = np.minimum(first, n_in - k).astype(np.int64)
        weights = np.zeros((n_out, k), np.float32)
        rows = np.repeat(np.arange(n_out), counts)
        weights[rows, csr.indices - start[rows]] = csr.data
        return cls(start, weights, int(n_in))

    @classmethod
    def from_matrix(cls, mat: np.ndarray) -> Band:
        """The band of a dense matrix whose rows have consecutive nonzeros (exactly its entries)."""
        return cls.from_sparse(sparse.csr_array(np.asarray(mat, dtype=np.float32)))

    def to_sparse(self) -> sparse.csr_array:
        """The matrix as a float64 scipy.sparse CSR array (exactly the float32 weights)."""
        n_out, k = self.weights.shape
        rows = np.repeat(np.arange(n_out), k)
        cols = (self.start[:, None] + np.arange(k)).ravel()
        data = self.weights.ravel().astype(np.float64)
        keep = data != 0
        return sparse.csr_array((data[keep], (rows[keep], cols[keep])), shape=self.shape)

    def to_dense(self) -> np.ndarray:
        """The matrix as a dense float32 (n_out, n_in) array (for small maps and tests)."""
        n_out, k = self.weights.shape
        out = np.zeros(self.shape, np.float32)
        np.put_along_axis(out, self.start[:, None] + np.arange(k), self.weights, axis=1)
        return out

    def __matmul__(self, other: Band) -> Band:
        """The composed map ``self @ other`` (apply ``other`` first) as a band.

        Each entry is the product of the two float32 matrices computed in
        float64 and rounded once to float32.
        """
        if not isinstance(other, Band):
            return NotImplemented
        if self.n_in != other.shape[0]:
            raise ValueError(f"Cannot compose a {self.shape} band with a {other.shape} band.")
        return Band.from_sparse(self.to_sparse() @ other.to_sparse())

    def take_rows(self, n: int) -> Band:
        """The first ``n`` rows (e.g. the resized image's part of SAM's padded frame)."""
        return Band(self.start[:n].copy(), self.weights[:n].copy(), self.n_in)

    def take_cols(self, n: int) -> Band:
        """The first ``n`` columns: inputs at or beyond ``n`` get weight 0 (zero padding)."""
        return Band.from_sparse(self.to_sparse()[:, :n])

    def nonzero_range(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which rows have a nonzero weight, and each row's first and last nonzero column.

        Returns
        -------
        used, first, last : numpy.ndarray
            bool (n_out,) and int64 (n_out,) x 2; for rows without a nonzero
            weight ``first`` is 0 and ``last`` is -1 (they reach no column).
        """
        nz = self.weights != 0
        used = nz.any(axis=1)
        k = nz.shape[1]
        first = np.where(used, self.start + nz.argmax(axis=1), 0)
        last = np.where(used, self.start + k - 1 - nz[:, ::-1].argmax(axis=1), -1)
        return used, first, last

    def apply(self, x: np.ndarray, rows: tuple[int, int], offset: int = 0) -> np.ndarray:
        """Rows ``rows[0]:rows[1]`` of ``matrix @ X`` where X is ``x`` at ``offset``, zero elsewhere.

        Parameters
        ----------
        x : numpy.ndarray
            (n, ...) the rows ``offset`` to ``offset + n - 1`` of X (bool or float).
        rows : (int, int)
            Half-open range of output rows to compute.
        offset : int
            Index of ``x``'s first row among the matrix's columns.

        Returns
        -------
        numpy.ndarray
            float32 (rows[1] - rows[0], ...).
        """
        lo, hi = rows
        n = x.shape[0]
        idx = self.start[lo:hi, None] - offset + np.arange(self.weights.shape[1])
        w = self.weights[lo:hi]
        inside = (idx >= 0) & (idx < n)
        if not inside.all():  # taps outside x read zeros
            w = np.where(inside, w, np.float32(0))
            idx = np.clip(idx, 0, n - 1)
        shape = (hi - lo,) + (1,) * (x.ndim - 1)
        out = np.take(x, idx[:, 0], axis=0).astype(np.float32, copy=False)
        out *= w[:, 0].reshape(shape)
        for j in range(1, idx.shape[1]):
            tap = np.take(x, idx[:, j], axis=0).astype(np.float32, copy=False)
            tap *= w[:, j].reshape(shape)
            out += tap
        return out


def _source_index(n_in: int, n_out: int) -> np.ndarray:
    """float64 ``scale * (i + 0.5) - 0.5`` for each output ``i``, rounded once, 0 below 0.

    ``scale`` is the double ``n_in / n_out``; torch's CPU kernels (built with
    fused multiply-add) round the product-and-subtract once, so it is computed
    here exactly in integers and rounded once (CPython's int division is
    correctly rounded). Two roundings would differ from torch in rare rows,
    e.g. 31 -> 1023 at row 16 (0 instead of 1.4e-17).
    """
    p, q = (float(n_in) / float(n_out)).as_integer_ratio()
    dst = np.arange(n_out, dtype=np.int64).astype(object)
    src = ((p * (2 * dst + 1) - q) / (2 * q)).astype(np.float64)
    src[src < 0] = 0.0
    return src


def bilinear_band(n_in: int, n_out: int) -> Band:
    """Torch's bilinear resize from ``n_in`` to ``n_out`` samples, as a :class:`Band`.

    The weights are those of ``F.interpolate(mode="bilinear",
    align_corners=False)`` without antialiasing (what segment-anything uses),
    computed as torch computes them, in float64, then rounded to float32:
    output ``i`` reads ``src = n_in / n_out * (i + 0.5) - 0.5`` (0 below 0;
    see :func:`_source_index` for its rounding),
    inputs ``i0 = floor(src)`` (of ``src`` as float32, like torch's ``floorf``,
    at most ``n_in - 1``) and ``i1 = min(i0 + 1, n_in - 1)``, with weights
    ``1 - lambda`` and ``lambda = src - i0``. Equal to resizing an identity
    matrix with torch, in O(n_out) memory.

    Parameters
    ----------
    n_in, n_out : int
        Input and output lengths (>= 1).

    Returns
    -------
    Band
        (n_out, n_in); each row sums to 1 (to float32 rounding).

    Examples
    --------
    >>> band = bilinear_band(4, 2)
    >>> band.start.tolist(), band.weights.tolist()
    ([0, 2], [[0.5, 0.5], [0.5, 0.5]])
    """
    n_in, n_out = int(n_in), int(n_out)
    if n_in < 1 or n_out < 1:
        raise ValueError(f"Resize lengths must be >= 1, got {n_in} -> {n_out}.")
    if n_in == n_out:  # torch copies
        eye = np.arange(n_out, dtype=np.int64)
        return Band(eye, np.ones((n_out, 1), np.float32), n_in)
    src = _source_index(n_in, n_out)
    i0 = np.minimum(np.floor(src.astype(np.float32)).astype(np.int64), n_in - 1)
    lam = np.clip(src - i0, 0.0, 1.0)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    rows = np.arange(n_out)
    # entries (i, i0) = 1 - lambda and (i, i1) = lambda, summed where i1 == i0 (as torch does)
    mat = sparse.coo_array(
        (np.concatenate([1.0 - lam, lam]), (np.concatenate([rows, rows]), np.concatenate([i0, i1]))),
        shape=(n_out, n_in),
    )
    return Band.from_sparse(mat)
