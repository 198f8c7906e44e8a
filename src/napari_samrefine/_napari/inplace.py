"""Merging a refinement into labels the user may have edited while it ran.

A run refines a snapshot of the labels taken when it started. Writing its
result back in place must not undo what the user painted meanwhile, so only the
pixels the run changed (result != snapshot) are candidates, and every object the
user touched during the run is left exactly as the user left it.

The rule, per plane of a stack:

- an object the run changed is *kept* (not written at all) when the user edited
  any pixel of it during the run: a pixel it had in the snapshot, a pixel it has
  in the result, or a pixel the user painted with its id;
- a kept object is treated like an object outside the refinement's scope: the
  other objects neither take pixels from it nor give pixels to it;
- pixels the user edited are never written, whatever the objects.

Pure numpy; nothing here imports napari.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["InPlaceEdit", "plan_in_place"]


@dataclass(frozen=True)
class InPlaceEdit:
    """The pixels to write for an in-place refinement, and which objects they belong to.

    Attributes
    ----------
    indices : tuple of numpy.ndarray
        Pixel coordinates to write, one array per axis (napari's ``data_setitem``).
    values : numpy.ndarray
        The refined labels at ``indices``.
    changed : list
        Objects with at least one written pixel: label ids, or ``(plane, label id)``
        for a stack.
    kept : list
        Objects the run would have changed but the user edited during the run;
        left as the user painted them.
    """

    indices: tuple[np.ndarray, ...]
    values: np.ndarray
    changed: list = field(default_factory=list)
    kept: list = field(default_factory=list)

    @property
    def size(self) -> int:
        """Number of pixels to write."""
        return int(self.values.size)


def _plane(snapshot: np.ndarray, refined: np.ndarray, current: np.ndarray):
    """Write mask, changed ids and kept ids of one 2D plane (None when the run changed nothing)."""
    changed = refined != snapshot
    if not changed.any():
        return None
    touched = np.union1d(snapshot[changed], refined[changed])
    touched = touched[touched != 0]
    edited = current != snapshot
    write = changed & ~edited
    kept = touched[:0]
    if edited.any():
        at_edits = np.union1d(np.union1d(snapshot[edited], refined[edited]), current[edited])
        kept = np.intersect1d(touched, at_edits)
        if kept.size:
            write &= ~np.isin(snapshot, kept) & ~np.isin(refined, kept)
    written = np.union1d(snapshot[write], refined[write])
    return write, written[written != 0], kept


def plan_in_place(snapshot, refined, current) -> InPlaceEdit:
    """Which pixels of ``current`` to set to ``refined`` so that no user edit is lost.

    Parameters
    ----------
    snapshot : numpy.ndarray
        The labels the run started from (2D, or a 3D stack refined plane by plane).
    refined : numpy.ndarray
        The run's result, same shape as ``snapshot``.
    current : array-like
        The layer's labels now, after the user may have painted during the run.

    Returns
    -------
    InPlaceEdit
        The pixels to write and the objects changed and kept.

    Raises
    ------
    ValueError
        When ``current`` no longer has the snapshot's shape (the layer's data was
        replaced during the run): nothing can be merged safely.

    Examples
    --------
    >>> import numpy as np
    >>> snap = np.zeros((4, 6), np.uint8); snap[1:3, 0:2] = 1; snap[1:3, 4:6] = 2
    >>> refined = snap.copy(); refined[0, 0] = 1; refined[0, 5] = 2   # both objects grow
    >>> current = snap.copy(); current[3, 5] = 2                     # the user paints object 2
    >>> edit = plan_in_place(snap, refined, current)
    >>> edit.changed, edit.kept, edit.indices
    ([1], [2], (array([0]), array([0])))
    """
    snapshot, refined, current = np.asarray(snapshot), np.asarray(refined), np.asarray(current)
    if refined.shape != snapshot.shape:
        raise ValueError(f"The result {refined.shape} does not match the labels {snapshot.shape}.")
    if current.shape != snapshot.shape:
        raise ValueError(
            f"The labels were replaced during the run (shape {snapshot.shape} -> "
            f"{current.shape}): nothing was written. Run again on the new labels."
        )
    planes = [None] if snapshot.ndim == 2 else range(snapshot.shape[0])
    coords: list[tuple[np.ndarray, ...]] = []
    changed: list = []
    kept: list = []
    for p in planes:
        at = slice(None) if p is None else p
        found = _plane(snapshot[at], refined[at], current[at])
        if found is None:
            continue
        write, written, kept_ids = found
        rows, cols = np.nonzero(write)
        coords.append((rows, cols) if p is None else (np.full(rows.size, p, np.intp), rows, cols))
        changed += [int(i) if p is None else (p, int(i)) for i in written]
        kept += [int(i) if p is None else (p, int(i)) for i in kept_ids]
    if coords:
        indices = tuple(np.concatenate(axis) for axis in zip(*coords, strict=True))
    else:
        indices = tuple(np.zeros(0, np.intp) for _ in range(snapshot.ndim))
    return InPlaceEdit(indices, refined[indices], changed, kept)
