"""Refining whole slides and lazy stacks with bounded memory (the lazy path of ``refine``).

Taken when the image or the labels are lazy (dask, zarr, numpy memmaps: read a
window at a time) or ``out=`` is given. Per plane:

1. one pass over the labels, block by block, lists the objects with their
   boxes and areas (:func:`~napari_samrefine.labels.scan.scan_objects`); one or a few passes over the image
   give its exact contrast limits (:mod:`.slide_contrast`);
2. the tiles and each object's tile are those of the in-memory path
   (:func:`~.tiling.resolve_tiling`, :func:`~.tiling.tile_windows`,
   :func:`~.tiling.assign_to_tiles`); each tile with objects reads only its
   window of image and labels, converts it with the plane's limits (the same
   pixels as the window of the whole converted plane), and refines its objects
   exactly as :func:`~.tiling.refine_plane` does in that window;
3. objects that fit no tile are refined on the whole downscaled plane when its
   RGB fits :data:`~napari_samrefine.labels.arrays.MEMORY_BUDGET`, otherwise kept with status
   "too-large-for-tile" and a warning that names ``tile=``;
4. refined objects are written back strip by strip (:mod:`.slide_writeback`)
   with the rule of :func:`~.writeback.write_back`, into ``out`` or an
   in-memory result.

Memory: the object table and the per-object records and prompts; one tile's
image, labels, embedding and objects; two strips of one tile's height by the
plane's width; never an array of the whole plane (except as stated in 3, and in
semantic mode or for binary masks split into components, which load one plane
when it fits the budget). The labels are those of the in-memory path.
"""

from __future__ import annotations

import warnings

import numpy as np

from napari_samrefine._progress import report
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.labels import arrays
from napari_samrefine.labels.arrays import arrange_image, block_side, blocks, read
from napari_samrefine.labels.binary import announce_components, restore_binary
from napari_samrefine.labels.objects import ObjectMask, label_components, read_object
from napari_samrefine.labels.plane import table_foreground
from napari_samrefine.labels.scan import ObjectTable, scan_objects
from napari_samrefine.labels.values import EMPTY_LABELS, check_labels, negative_labels
from napari_samrefine.pipeline.lazy_arrays import open_out
from napari_samrefine.pipeline.plane import (
    PlaneJob,
    kept_records,
    lead,
    plane_indices,
    records,
    refine_loaded_plane,
)
from napari_samrefine.pipeline.slide_contrast import plane_limits
from napari_samrefine.pipeline.slide_writeback import StripWriter
from napari_samrefine.pipeline.tiling import (
    assign_to_tiles,
    from_window,
    resolve_tiling,
    tile_windows,
    to_window,
)
from napari_samrefine.samrefiner.result import RefineResult

__all__ = ["check_slide_inputs", "refine_slide"]


GiB = float(1 << 30)


def check_slide_inputs(image, labels, channel_axis, out):
    """Check lazy inputs and ``out`` without reading them; returns (image, labels, out)."""
    check_labels(labels, max_ndim=4)
    image = arrange_image(image, tuple(labels.shape), channel_axis)
    open_out(out, labels, create=False) if out is not None else None
    nbytes = int(np.prod(labels.shape)) * np.dtype(labels.dtype).itemsize
    if out is None and nbytes > arrays.MEMORY_BUDGET:
        raise ValueError(
            f"The refined labels would take {nbytes / GiB:.3g} GiB in memory: pass out= "
            "(a path for a new zarr store, or a zarr array) to write them tile by tile."
        )
    return image, labels, out


def _plane_bytes(image, labels) -> int:
    """About what loading and refining one whole plane in memory takes."""
    h, w = labels.shape[-2:]
    per_pixel = np.dtype(image.dtype).itemsize * (image.ndim - labels.ndim + 1)
    return int(h) * int(w) * (per_pixel + 2 * np.dtype(labels.dtype).itemsize + 4 + 3 + 16)


def _too_large(what: str, need: int, fix: str) -> ValueError:
    return ValueError(
        f"{what} needs about {need / GiB:.3g} GiB in memory, over the lazy path's budget "
        f"({arrays.MEMORY_BUDGET / GiB:.3g} GiB, "
        f"napari_samrefine.labels.arrays.MEMORY_BUDGET): {fix}"
    )


def _extra(image, labels) -> tuple:
    return (slice(None),) * (image.ndim - labels.ndim)


def _copy_plane(labels, store, key: tuple) -> None:
    for y0, x0, y1, x1 in blocks(tuple(labels.shape[-2:]), block_side(labels)):
        window = (*key, slice(y0, y1), slice(x0, x1))
        store[window] = read(labels, window)


def refine_slide(job: PlaneJob, image, labels, out, plane_ids, binary, progress, stacklevel=3):
    """Refine lazy inputs plane by plane with bounded memory (see the module's description).

    Parameters
    ----------
    job : PlaneJob
        The refinement options.
    image, labels : arrays
        Checked inputs (:func:`check_slide_inputs`); channels last.
    out : array, path or None
        Where the result goes (:func:`~.lazy_arrays.open_out`); None: a numpy array.
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
        counts = [label_components(_load_labels(labels, image, p, "binary"))[1][0] for p in every]
        split = max(counts) > 1
        if split:
            announce_components(fg, counts, stacklevel)
    _check_whole_planes(job, image, labels, split)
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
            objs, prm = _refine_loaded(job, image, labels, store, p, fg if split else None, step)
        else:
            objs, prm = _refine_tiles(job, image, labels, store, p, tables[p], step, stacklevel + 1)
        objects.extend(objs)
        prompts.extend(prm)
        done += units
        report(progress, done, total, f"{where}done")
    return RefineResult(labels=store, objects=objects, prompts=prompts, mode=job.mode)


def _check_whole_planes(job, image, labels, split: bool) -> None:
    """Before any work: planes that must be loaded whole fit the budget."""
    need = _plane_bytes(image, labels)
    if need <= arrays.MEMORY_BUDGET:
        return
    h, w = (int(s) for s in labels.shape[-2:])
    if job.mode == "semantic":
        raise _too_large(f"Semantic mode on a {h} x {w} plane", need,
                         "refine in instance mode, or crop the image.")
    if not split and resolve_tiling(job.tile, job.halo, job.sam, (h, w)) is None:
        raise _too_large(f"tile={job.tile!r} refines the whole {h} x {w} plane at once, which",
                         need, "pass tile='auto' (or a tile size in pixels).")


def _load_labels(labels, image, p, why: str) -> np.ndarray:
    """One whole plane of labels, as stored (bool stays bool), if it fits the budget."""
    need = _plane_bytes(image, labels)
    if need > arrays.MEMORY_BUDGET:
        fix = (
            "split the binary mask into objects yourself (e.g. dask_image.ndmeasure.label) "
            "and pass instance labels, or pass binary='one'."
            if why == "binary"
            else "refine in instance mode, or crop the image."
        )
        raise _too_large(f"Loading a {labels.shape[-2]} x {labels.shape[-1]} plane ({why})", need, fix)
    return read(labels, lead(p))


def _refine_loaded(job, image, labels, store, p, fg, step):
    """A plane that needs all of it at once (semantic mode, binary components), loaded whole."""
    raw = _load_labels(labels, image, p, "semantic mode" if fg is None else "binary")
    plane_labels = raw.view(np.uint8) if raw.dtype == np.bool_ else raw
    targets = label_components(plane_labels != 0)[0] if fg is not None else plane_labels
    key = lead(p)
    plane_image = read(image, (*key, *(slice(None),) * (image.ndim - len(key))))
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


def _whole_states(job, image, labels, key, limits, table, members, shape, step):
    """Objects that fit no tile, refined on the whole plane (read block by block)."""
    rgb = np.empty((*shape, 3), np.uint8)
    extra = _extra(image, labels)
    for y0, x0, y1, x1 in blocks(shape, block_side(image, (len(key), len(key) + 1))):
        block = read(image, (*key, slice(y0, y1), slice(x0, x1), *extra))
        rgb[y0:y1, x0:x1] = to_sam_rgb(
            block, channel=job.channel, percentiles=job.percentiles, limits=limits
        )
    objs = [read_object(labels, key, table.ids[i], table.boxes[i], shape) for i in members]
    return job.refine(rgb, objs, None, step)


def _refine_tiles(job, image, labels, store, p, table: ObjectTable, step, stacklevel):
    """One plane of instance labels, tile by tile (see the module's description)."""
    key, shape = lead(p), table.shape
    ids = table.ids.tolist()
    wanted = None if job.ids is None else set(job.ids)
    targets = [i for i, lid in enumerate(ids) if wanted is None or lid in wanted]
    skipped = [i for i, lid in enumerate(ids) if wanted is not None and lid not in wanted]
    missing = [] if wanted is None else sorted(wanted - set(ids))
    objects = kept_records(missing, [(ids[i], table.counts[i], "skipped") for i in skipped], p)
    prompts: list = [None] * len(objects)
    if not targets:
        _copy_plane(labels, store, key)
        step(job.iterations + 1, "nothing to refine")
        return objects, prompts
    limits = plane_limits(image, key, channel=job.channel, percentiles=job.percentiles)
    tiling = resolve_tiling(job.tile, job.halo, job.sam, shape)
    if tiling is None:  # the whole plane is one window (it fits the budget: checked before)
        windows, where = [(0, 0, *shape)], [0] * len(targets)
    else:
        windows = tile_windows(shape, tiling)
        where = assign_to_tiles([table.box(i) for i in targets], windows)
    members = {j: [targets[k] for k, w in enumerate(where) if w == j] for j in range(len(windows))}
    members = {j: m for j, m in members.items() if m}
    whole = [targets[k] for k, w in enumerate(where) if w is None]
    groups = len(members) + bool(whole)
    units = job.iterations + 1

    def group_step(g: int, label: str):
        return lambda u, message: step((g * units + u) // groups, f"{label}: {message}")

    whole_states: list = []
    too_large: list[int] = []
    if whole:
        boxes = sum(int(np.prod(table.boxes[i, 2:] - table.boxes[i, :2])) for i in whole)
        if 3 * shape[0] * shape[1] + boxes <= arrays.MEMORY_BUDGET:
            whole_states = _whole_states(job, image, labels, key, limits, table, whole, shape,
                                         group_step(groups - 1, "image"))
        else:
            too_large = whole
            _warn_too_large(table, whole, p, tiling, stacklevel)
    refined_whole = whole if whole_states else []
    done = {
        i: (records([s], p, "instance")[0], s.prompts)
        for i, s in zip(refined_whole, whole_states, strict=True)
    }
    refined = [ids[i] for i in targets if i not in set(too_large)]
    writer = StripWriter(store, labels, key, shape, refined, whole_states)
    extra = _extra(image, labels)
    for g, (j, m) in enumerate(sorted(members.items())):
        window = windows[j]
        y0, x0, y1, x1 = window
        writer.advance(y0, y1)  # rows above this tile's are final; its rows are held
        rgb = to_sam_rgb(
            read(image, (*key, slice(y0, y1), slice(x0, x1), *extra)),
            channel=job.channel, percentiles=job.percentiles, limits=limits,
        )
        coarse = _window_objects(labels, key, window, table, m, shape)
        local = [to_window(o, window) for o in coarse]
        found = job.refine(rgb, local, None, group_step(g, f"tile {g + 1}/{groups}"))
        found = [from_window(s, o, window) for s, o in zip(found, coarse, strict=True)]
        writer.paint(found)
        # keep the records and prompts, drop the masks and logits
        done.update((i, (records([s], p, "instance")[0], s.prompts)) for i, s in zip(m, found, strict=True))
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
    warnings.warn(
        f"{len(members)} objects{where} (ids {shown}; up to {max(sides)} px across) fit in no "
        f"{tiling.tile} px tile with their context, and the whole {h} x {w} plane is too large "
        f"to refine downscaled within {arrays.MEMORY_BUDGET / GiB:.3g} GiB: they keep "
        "their coarse masks (status 'too-large-for-tile'). Pass a larger tile= (several times their size) "
        "to refine them.",
        UserWarning,
        stacklevel=stacklevel + 1,
    )
