"""The one pipeline of ``refine``: planes, tiles and write-back, for numpy and lazy inputs.

An image and labels are sources read a window at a time (numpy arrays, dask,
zarr, numpy memmaps: :mod:`napari_samrefine.labels.arrays`); a numpy array is
such a source whose windows are views. Per plane:

1. one pass over the labels, block by block, lists the objects with their
   boxes and areas (:func:`~napari_samrefine.labels.scan.scan_objects`); the
   plane's contrast is that of the whole plane (:class:`~.contrast.PlaneRGB`:
   converted whole for numpy, exact limits for a lazy image);
2. the objects are grouped by tile (:func:`~.tiling.group_objects`): each tile
   with objects reads only its window of image and labels and refines its
   objects in that window; objects that fit no tile (or all of them, untiled)
   are refined on the whole, downscaled plane;
3. refined objects are written back strip by strip (:mod:`.strips`)
   with the rule of :mod:`napari_samrefine.samrefiner.writeback`, into ``out``
   or an in-memory result.

Semantic mode and binary masks split into components need whole planes
(split-then-merge, connected components): such a plane is loaded and refined
by :func:`~.plane.refine_loaded_plane`.

Memory, for lazy inputs: the object table and the per-object records and
prompts; one tile's image, labels, embedding and objects; two strips of one
tile's height by the plane's width; a whole plane only for the objects that fit
no tile, in semantic mode or for binary components, each when it fits
:data:`~napari_samrefine.labels.arrays.MEMORY_BUDGET` (else a ValueError, or
for objects that fit no tile the status "too-large-for-tile" and a warning that
names ``tile=``). numpy inputs are in memory already: no budget applies.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np

from napari_samrefine._progress import report
from napari_samrefine.labels import arrays
from napari_samrefine.labels.arrays import arrange_image, block_side, blocks, is_lazy, read
from napari_samrefine.labels.binary import announce_components, restore_binary
from napari_samrefine.labels.objects import ObjectMask, label_components
from napari_samrefine.labels.plane import table_foreground
from napari_samrefine.labels.scan import ObjectTable, scan_objects
from napari_samrefine.labels.values import EMPTY_LABELS, check_labels, negative_labels
from napari_samrefine.pipeline.contrast import PlaneRGB
from napari_samrefine.pipeline.given import check_present
from napari_samrefine.pipeline.plane import (
    PlaneJob,
    kept_records,
    lead,
    plane_indices,
    records,
    refine_loaded_plane,
    select_ids,
)
from napari_samrefine.pipeline.sink import open_out
from napari_samrefine.pipeline.strips import StripWriter
from napari_samrefine.pipeline.tiling import (
    from_window,
    group_label,
    group_objects,
    group_step,
    to_window,
)
from napari_samrefine.quality.keep import choose_view
from napari_samrefine.samrefiner.result import RefineResult
from napari_samrefine.samrefiner.writeback import alone_flags

__all__ = ["Sources", "check_inputs", "refine_planes"]


GiB = float(1 << 30)


@dataclass(frozen=True)
class Sources:
    """The checked image (channels last) and labels, and what may be loaded at once.

    ``budget`` is the bytes one whole-plane array may take: unbounded for numpy
    inputs (they are in memory already), :data:`~napari_samrefine.labels.arrays.MEMORY_BUDGET`
    when the image or the labels are lazy.
    """

    image: object
    labels: object
    in_memory: bool

    @property
    def budget(self) -> float:
        return float("inf") if self.in_memory else arrays.MEMORY_BUDGET


def check_inputs(image, labels, channel_axis, out) -> Sources:
    """Check the inputs and ``out`` before any work (lazy inputs are not read)."""
    in_memory = not is_lazy(image) and not is_lazy(labels)
    labels = check_labels(labels if is_lazy(labels) else np.asarray(labels), max_ndim=4)
    image = arrange_image(image, tuple(labels.shape), channel_axis)
    if out is not None:
        open_out(out, labels, create=False)
    src = Sources(image, labels, in_memory)
    nbytes = int(np.prod(labels.shape)) * np.dtype(labels.dtype).itemsize
    if out is None and nbytes > src.budget:
        raise ValueError(
            f"The refined labels would take {nbytes / GiB:.3g} GiB in memory: pass out= "
            "(a path for a new zarr store, or a zarr array) to write them tile by tile."
        )
    return src


def _plane_bytes(src: Sources) -> int:
    """About what loading and refining one whole plane in memory takes."""
    image, labels = src.image, src.labels
    h, w = labels.shape[-2:]
    per_pixel = np.dtype(image.dtype).itemsize * (image.ndim - labels.ndim + 1)
    return int(h) * int(w) * (per_pixel + 2 * np.dtype(labels.dtype).itemsize + 4 + 3 + 16)


def _too_large(what: str, need: int, fix: str) -> ValueError:
    return ValueError(
        f"{what} needs about {need / GiB:.3g} GiB in memory, over the lazy path's budget "
        f"({arrays.MEMORY_BUDGET / GiB:.3g} GiB, "
        f"napari_samrefine.labels.arrays.MEMORY_BUDGET): {fix}"
    )


def _copy_plane(labels, store, key: tuple) -> None:
    for y0, x0, y1, x1 in blocks(tuple(labels.shape[-2:]), block_side(labels)):
        window = (*key, slice(y0, y1), slice(x0, x1))
        store[window] = read(labels, window)


def refine_planes(job: PlaneJob, src: Sources, out, plane_ids, binary, progress, stacklevel=3):
    """Refine the planes of checked inputs (see the module's description).

    Parameters
    ----------
    job : PlaneJob
        The refinement options.
    src : Sources
        The checked inputs (:func:`check_inputs`).
    out : array, path or None
        Where the result goes (:func:`~.sink.open_out`); None: a numpy array.
    plane_ids : list
        Planes to refine (:func:`~.plane.plane_indices`).
    binary : str
        As in :func:`~napari_samrefine.refine`.
    progress : callable or None
        ``progress(done, total, message)``.
    stacklevel : int
        Where warnings point (3: the caller of the function that called this one).

    Returns
    -------
    RefineResult
    """
    labels = src.labels
    units = job.iterations + 1
    total = len(plane_ids) * units
    report(progress, 0, total, "finding objects")
    every = plane_indices(tuple(labels.shape), None)
    tables = {p: scan_objects(labels, lead(p)) for p in every}
    low = min(t.low for t in tables.values())
    if low < 0:
        raise negative_labels(low, labels.dtype)
    if all(t.ids.size == 0 for t in tables.values()):
        raise ValueError(EMPTY_LABELS)
    fg = table_foreground(list(tables.values()), labels.dtype)
    split = False
    if fg is not None and job.mode == "instance" and binary == "components":
        counts = [label_components(_load_labels(src, p, "binary"))[1][0] for p in every]
        split = max(counts) > 1
        if split:
            announce_components(fg, counts, stacklevel)
    if split:
        check_present(job.prompts, {p: np.arange(1, c + 1) for p, c in zip(every, counts, strict=True)})
    else:
        check_present(job.prompts, {p: t.ids for p, t in tables.items()})
    _check_whole_planes(job, src, split)
    store = open_out(out, labels) if out is not None else np.zeros(labels.shape, labels.dtype)
    chosen = set(plane_ids)
    objects, prompts = [], []
    done = 0
    for p in every:
        if p not in chosen:
            _copy_plane(labels, store, lead(p))
            continue
        where = "" if p is None else f"plane {p}: "

        def step(u: int, message: str, _where=where, _done=done) -> None:
            report(progress, _done + u, total, _where + message)

        if split or job.mode == "semantic":
            objs, prm = _refine_loaded(job, src, store, p, fg if split else None, step)
        else:
            objs, prm = _refine_tiles(job, src, store, p, tables[p], step, stacklevel + 1)
        objects.extend(objs)
        prompts.extend(prm)
        done += units
        report(progress, done, total, f"{where}done")
    return RefineResult(labels=store, objects=objects, prompts=prompts, mode=job.mode)


def _check_whole_planes(job, src: Sources, split: bool) -> None:
    """Before any work: planes that must be loaded whole fit the budget."""
    need = _plane_bytes(src)
    if need <= src.budget:
        return
    h, w = (int(s) for s in src.labels.shape[-2:])
    if job.mode == "semantic":
        raise _too_large(f"Semantic mode on a {h} x {w} plane", need,
                         "refine in instance mode, or crop the image.")
    if not split and job.layout((h, w)) is None:
        raise _too_large(f"tile={job.tile!r} refines the whole {h} x {w} plane at once, which",
                         need, "pass tile='auto' (or a tile size in pixels).")


def _load_labels(src: Sources, p, why: str) -> np.ndarray:
    """One whole plane of labels, as stored (bool stays bool), if it fits the budget."""
    need = _plane_bytes(src)
    if need > src.budget:
        fix = (
            "split the binary mask into objects yourself (e.g. dask_image.ndmeasure.label) "
            "and pass instance labels, or pass binary='one'."
            if why == "binary"
            else "refine in instance mode, or crop the image."
        )
        h, w = src.labels.shape[-2:]
        raise _too_large(f"Loading a {h} x {w} plane ({why})", need, fix)
    return read(src.labels, lead(p))


def _refine_loaded(job, src: Sources, store, p, fg, step):
    """A plane that needs all of it at once (semantic mode, binary components), loaded whole."""
    raw = _load_labels(src, p, "semantic mode" if fg is None else "binary")
    plane_labels = raw.view(np.uint8) if raw.dtype == np.bool_ else raw
    targets = label_components(plane_labels != 0)[0] if fg is not None else plane_labels
    key = lead(p)
    plane_image = read(src.image, (*key, *(slice(None),) * (src.image.ndim - len(key))))
    refined, objs, prm = refine_loaded_plane(job, plane_image, targets, p, step)
    if refined is None:
        refined = raw
    elif fg is not None:
        refined = restore_binary(refined, raw, fg)
    elif raw.dtype == np.bool_:
        refined = refined != 0
    store[key] = refined
    return objs, prm


def _window_objects(labels, key, window, table, members, shape) -> list[ObjectMask]:
    """The coarse objects of ``members``, cut from one read of the window's labels."""
    y0, x0, y1, x1 = window
    lab = read(labels, (*key, slice(y0, y1), slice(x0, x1)))
    lab = lab.view(np.uint8) if lab.dtype == np.bool_ else lab
    out = []
    for i in members:
        by0, bx0, by1, bx1 = (int(v) for v in table.boxes[i])
        crop = lab[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0] == table.ids[i]
        out.append(ObjectMask(int(table.ids[i]), crop, (by0, bx0), shape))
    return out


def _refine_tiles(job, src: Sources, store, p, table: ObjectTable, step, stacklevel):
    """One plane of instance labels, tile by tile (see the module's description)."""
    labels = src.labels
    key, shape = lead(p), table.shape
    ids = table.ids.tolist()
    targets, skipped, missing = select_ids(ids, job.ids)
    objects = kept_records(missing, [(ids[i], table.counts[i], "skipped") for i in skipped], p)
    prompts: list = [None] * len(objects)
    if not targets:
        _copy_plane(labels, store, key)
        step(job.iterations + 1, "nothing to refine")
        return objects, prompts
    rgb = PlaneRGB(src.image, key, shape, channel=job.channel, percentiles=job.percentiles,
                   in_memory=src.in_memory)
    tiling = job.layout(shape)
    groups = group_objects([table.box(i) for i in targets], shape, tiling)
    groups = [(w, [targets[k] for k in m]) for w, m in groups]
    views = Counter(i for _, m in groups for i in m)  # two where an object has two views
    n = len(groups)
    units = job.iterations + 1
    whole = groups[0][1] if groups[0][0] is None else []
    whole_states: list = []
    whole_signals: list = []
    too_large: list[int] = []
    if whole:
        boxes = sum(int(np.prod(table.boxes[i, 2:] - table.boxes[i, :2])) for i in whole)
        plane = (3 + np.dtype(labels.dtype).itemsize) * shape[0] * shape[1]  # RGB and labels
        if plane + boxes <= src.budget:
            objs = _window_objects(labels, key, (0, 0, *shape), table, whole, shape)
            tick = group_step(step, 0, n, units, group_label(None, 0, n))
            whole_states, whole_signals = job.refine(rgb.whole(), objs, None, tick, job.given(p))
        else:  # refined in their other view, if they have one
            too_large = [i for i in whole if views[i] == 1]
            views.subtract(whole)
            if too_large:
                _warn_too_large(table, too_large, p, tiling, stacklevel)
    seen: dict[int, list] = {}  # an object's (state, signals) of each view so far
    done: dict[int, tuple] = {}

    def finished(members, found, signals) -> list:
        """The states of ``members`` whose every view is refined, each the chosen view; their
        records and prompts are kept (the masks and logits are dropped once painted)."""
        out = []
        for i, s, q in zip(members, found, signals, strict=True):
            seen.setdefault(i, []).append((s, q))
            if len(seen[i]) == views[i]:
                best = choose_view([c for c, _ in seen[i]])
                q = next(qq for c, qq in seen.pop(i) if c is best)
                done[i] = (records([best], p, "instance", [q])[0], best.prompts)
                out.append(best)
        return out

    whole_final = finished(whole if whole_states else [], whole_states, whole_signals)
    refined = [ids[i] for i in targets if i not in set(too_large)]
    # with one group, every refined object of the plane is painted at once: boxes that
    # meet no other need no logits
    single = n == 1
    writer = StripWriter(store, labels, key, shape, refined, whole_final,
                         alone_flags(whole_final) if single else None)
    if single and whole:
        writer.advance(0, shape[0])  # the whole plane is one strip
    for g, (window, members) in enumerate(groups):
        if window is None:
            continue
        y0, x0, y1, x1 = window
        writer.advance(y0, y1)  # rows above this tile's are final; its rows are held
        coarse = _window_objects(labels, key, window, table, members, shape)
        plane = window == (0, 0, *shape)
        local = coarse if plane else [to_window(o, window) for o in coarse]
        tick = group_step(step, g, n, units, group_label(window, g, n))
        given = job.given(p, window)  # the window's frame, like rgb.window and local
        found, signals = job.refine(rgb.window(window), local, None, tick, given)
        if not plane:
            found = [from_window(s, o, window) for s, o in zip(found, coarse, strict=True)]
        # an object is painted once its last view is refined: every view holds it, so its
        # rows are still held then (rows above this window's top are all that was written)
        final = finished(members, found, signals)
        writer.paint(final, alone=alone_flags(final) if single else None)
    writer.close()
    for i in targets:
        if i in done:
            objects.append(done[i][0])
            prompts.append(done[i][1])
        else:  # fits no tile, and the plane is too large to refine downscaled
            area = int(table.counts[i])
            objects.extend(kept_records([], [(ids[i], area, "too-large-for-tile")], p))
            prompts.append(None)
    return objects, prompts


def _warn_too_large(table, members, p, tiling, stacklevel) -> None:
    sides = [int((table.boxes[i, 2:] - table.boxes[i, :2]).max()) for i in members]
    where = "" if p is None else f" of plane {p}"
    shown = ", ".join(str(table.ids[i]) for i in members[:10]) + (", ..." if len(members) > 10 else "")
    h, w = table.shape
    tile = getattr(tiling, "tile", None)
    windows = f"{tile} px tile" if tile else "window of their object scale"
    fix = ("Pass a larger tile= (several times their size) to refine them." if tile
           else "Pass a larger scale= or scale=None, or crop the image, to refine them.")
    warnings.warn(
        f"{len(members)} objects{where} (ids {shown}; up to {max(sides)} px across) fit in no "
        f"{windows} with their context, and the whole {h} x {w} plane is too large "
        f"to refine downscaled within {arrays.MEMORY_BUDGET / GiB:.3g} GiB: they keep "
        f"their coarse masks (status 'too-large-for-tile'). {fix}",
        UserWarning,
        stacklevel=stacklevel + 1,
    )
