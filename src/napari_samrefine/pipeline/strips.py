"""Writing refined objects back into a plane, one strip of rows at a time.

The rule is :mod:`napari_samrefine.samrefiner.writeback`'s (the highest logit
wins, ties to the lower id; ids that were not refined are kept): it does not
depend on the order in which objects are pasted, so it is applied as objects
come out of their tiles. :class:`StripWriter` holds the rows of the current row
of tiles (a refined object's mask lies inside its tile) with their owner id and
float32 "best logit" (:func:`~napari_samrefine.samrefiner.writeback.start`), and
writes rows out once no later tile reaches them. Objects refined on the whole
downscaled plane are painted into each strip as its rows are read. Finished rows
are written in whole chunks of the store (a zarr array's rows of chunks, one
chunk per write), so that no chunk is read back and rewritten. Memory: two
arrays of one tile's height by the plane's width, and up to one row of the
store's chunks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_samrefine.labels.arrays import chunk_shape, read
from napari_samrefine.samrefiner.cascade import ObjectState
from napari_samrefine.samrefiner.writeback import paint, start

__all__ = ["StripWriter"]


class StripWriter:
    """Refined labels of one plane, built and written strip by strip.

    Parameters
    ----------
    store : array
        Where the plane is written (``store[lead]``); numpy, zarr or any array
        that takes slice assignment.
    labels : array
        The coarse labels (read, never written).
    lead : tuple of int
        Index of the plane in the leading axes.
    shape : (int, int)
        (H, W) of the plane.
    refined : sequence of int
        Ids of the objects that go through the cascade (removed from the coarse
        labels before anything is pasted); the other ids are kept as they are.
    whole : sequence of ObjectState
        Objects refined on the whole plane; painted into every strip.
    alone : sequence of bool, optional
        Per object of ``whole``, as in :func:`~napari_samrefine.samrefiner.writeback.paint`.
    """

    def __init__(self, store, labels, lead, shape, refined, whole: Sequence[ObjectState], alone=None):
        self.store, self.labels, self.lead = store, labels, tuple(lead)
        self.height, self.width = shape
        self.dtype = np.dtype(np.uint8 if labels.dtype == np.bool_ else labels.dtype)
        self.refined = list(refined)
        self.whole = list(whole)
        self.alone = alone
        self.top = 0
        self.out = np.zeros((0, self.width), self.dtype)
        self.best = np.zeros((0, self.width), np.float32)
        chunks = chunk_shape(store)
        self.chunk_rows, self.chunk_cols = (0, self.width) if chunks is None else chunks[-2:]
        self.pending: list[np.ndarray] = []  # finished rows not yet written
        self.written = 0  # rows written to the store

    @property
    def bottom(self) -> int:
        """First plane row not yet read into the strip."""
        return self.top + self.out.shape[0]

    def hold(self, y1: int) -> None:
        """Read rows up to ``y1`` (exclusive) into the strip, painting the whole-plane objects."""
        y0 = self.bottom
        if y1 <= y0:
            return
        coarse = read(self.labels, (*self.lead, slice(y0, y1), slice(0, self.width)))
        out, best = start(coarse, self.refined)
        if self.out.shape[0]:
            out, best = np.concatenate([self.out, out]), np.concatenate([self.best, best])
        self.out, self.best = out, best
        self.paint(self.whole, rows=(y0, y1), alone=self.alone)

    def release(self, y: int) -> None:
        """Rows above ``y`` are final (no later tile reaches them): drop them from the strip
        and write them (once they complete a row of the store's chunks)."""
        y = min(y, self.bottom)
        if y <= self.top:
            return
        n = y - self.top
        self.pending.append(self.out[:n])
        self.out, self.best = self.out[n:].copy(), self.best[n:].copy()
        self.top = y
        end = y if y == self.height or not self.chunk_rows else y - y % self.chunk_rows
        if end > self.written:
            self._write(end)

    def _write(self, end: int) -> None:
        n, count = end - self.written, 0
        done: list[np.ndarray] = []
        rest: list[np.ndarray] = []
        for part in self.pending:
            k = min(len(part), n - count)
            done.append(part[:k])
            if k < len(part):
                rest.append(part[k:])
            count += k
        ys = slice(self.written, end)
        for x in range(0, self.width, self.chunk_cols):  # one column of chunks per write
            x1 = min(x + self.chunk_cols, self.width)
            piece = np.concatenate([part[:, x:x1] for part in done])
            if np.dtype(self.store.dtype) == np.bool_:
                piece = piece != 0
            self.store[(*self.lead, ys, slice(x, x1))] = piece
        self.pending, self.written = rest, end

    def advance(self, y0: int, y1: int) -> None:
        """Make rows ``y0:y1`` the strip: rows above ``y0`` are read (if they were not),
        painted and written, a strip's height at a time, so memory stays one strip."""
        step = max(1, self.out.shape[0], y1 - y0)
        self.release(y0)
        while self.bottom < y0:
            end = min(y0, self.bottom + step)
            self.hold(end)
            self.release(end)
        self.hold(y1)

    def close(self) -> None:
        """Write every row."""
        self.advance(self.height, self.height)

    def paint(self, states: Sequence[ObjectState], rows=None, alone=None) -> None:
        """Paste objects into the strip (only ``rows`` of them, default: the rows held)."""
        paint(self.out, self.best, states, top=self.top, rows=rows, alone=alone)
