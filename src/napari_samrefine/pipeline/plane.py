"""One plane of a label stack: which planes to refine, its records, a plane loaded whole.

Used by the pipeline of :func:`~napari_samrefine.refine` (:mod:`.plane_loop`): the
planes to refine, the records of its objects, and the refinement of a plane
that is needed whole (semantic mode, binary masks split into components).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.labels.objects import ObjectMask, objects_from_labels
from napari_samrefine.pipeline.scale import resolve_layout
from napari_samrefine.pipeline.tiling import refine_plane
from napari_samrefine.quality.keep import keep_objects
from napari_samrefine.quality.signals import ObjectSignals, state_signals
from napari_samrefine.samrefiner.cascade import REFINED_STATUSES, ObjectState, PromptSettings
from napari_samrefine.samrefiner.given import given_for_objects
from napari_samrefine.samrefiner.prompts import ObjectPrompts
from napari_samrefine.samrefiner.result import ObjectResult, Plane
from napari_samrefine.samrefiner.writeback import write_back

__all__ = [
    "PlaneJob",
    "plane_indices",
    "lead",
    "select_ids",
    "split_plane",
    "records",
    "kept_records",
    "refine_loaded_plane",
]

Step = Callable[[int, str], None]


@dataclass(frozen=True)
class PlaneJob:
    """Everything :func:`~napari_samrefine.refine` applies to each plane alike."""

    sam: object
    settings: PromptSettings
    mode: str
    ids: list[int] | None
    channel: int | str | None
    percentiles: tuple[float, float]
    tile: object
    halo: int | None
    embedding_cache: object
    iterations: int
    convergence: float | None
    batch_size: int
    iou_adaptor: object
    keep: str = "refined"
    keep_min_iou: float | None = None
    scale: object = None
    prompts: Mapping[Plane, Mapping[int, ObjectPrompts]] | None = None
    """Given prompts (:func:`~.given.resolve_given`): per plane, by label id, in the plane's frame."""

    def given(self, plane: Plane, window=None) -> dict[int, ObjectPrompts]:
        """The given prompts of ``plane``, moved into ``window``'s frame (None: the plane's)."""
        mine = (self.prompts or {}).get(plane)
        return given_for_objects(mine, list(mine or ()), window)

    def layout(self, shape: tuple[int, int]):
        """How a plane of ``shape`` is cut for the model
        (:func:`~napari_samrefine.pipeline.scale.resolve_layout`)."""
        return resolve_layout(self.tile, self.halo, self.scale, self.sam, shape)

    def refine(
        self, rgb: np.ndarray, objects: Sequence[ObjectMask], tiling, step: Step,
        prompts: Mapping[int, ObjectPrompts] | None = None,
    ) -> tuple[list[ObjectState], list[ObjectSignals]]:
        """:func:`~.tiling.refine_plane` of ``objects`` in ``rgb`` with this job's options
        (and ``prompts``, given prompts in ``rgb``'s frame, :meth:`given`), then its keep
        policy (:func:`~napari_samrefine.quality.keep.keep_objects`).

        Returns the states after the keep policy and, aligned with them, each
        object's label-free signals (:func:`~napari_samrefine.quality.signals.state_signals`
        in ``rgb``, of the states before the policy: a "kept-coarse" object's are
        those of the mask it rejected), computed from the objects' boxes.
        """
        states = refine_plane(
            self.sam, rgb, objects, self.settings,
            tiling=tiling, embedding_cache=self.embedding_cache,
            iterations=self.iterations, convergence=self.convergence,
            batch_size=self.batch_size, iou_adaptor=self.iou_adaptor, step=step,
            prompts=prompts,
        )
        signals = state_signals(rgb, states)
        return keep_objects(states, self.keep, self.keep_min_iou), signals


def _pair(entry, lead_shape) -> list[tuple[int, int]]:
    nt, nz = lead_shape
    if isinstance(entry, (tuple, list)) and len(entry) == 2 and all(np.isscalar(v) for v in entry):
        t, z = (int(v) for v in entry)
        if not (-nt <= t < nt and -nz <= z < nz):
            raise ValueError(
                f"plane {(t, z)} does not exist: the stack has {nt} x {nz} (T, Z) planes."
            )
        return [(t % nt, z % nz)]
    if np.isscalar(entry):
        t = int(entry)
        if not -nt <= t < nt:
            raise ValueError(f"time point {t} does not exist: the stack has {nt} (0..{nt - 1}).")
        return [(t % nt, z) for z in range(nz)]
    raise ValueError(
        f"planes entries of a 4D stack are (t, z) pairs or time points t, got {entry!r}."
    )


def plane_indices(shape: tuple[int, ...], planes) -> list[Plane]:
    """The planes to refine, sorted: [None] for 2D, ints for 3D, (t, z) pairs for 4D.

    ``planes`` is None (all), an int or a list of ints for a 3D stack; for a 4D
    (T, Z, Y, X) stack a (t, z) pair, an int t (every z of that time point), or a
    list of pairs and ints. Negative indices count from the end.
    """
    if len(shape) == 2:
        if planes not in (None, 0, [0]):
            raise ValueError("planes=... applies to 3D and 4D stacks; these labels are 2D.")
        return [None]
    if len(shape) == 4:
        lead_shape = shape[:2]
        if planes is None:
            return [tuple(int(v) for v in p) for p in np.ndindex(*lead_shape)]
        single = isinstance(planes, tuple) and len(planes) == 2 and all(map(np.isscalar, planes))
        entries = [planes] if single or np.isscalar(planes) else list(planes)
        return sorted({p for e in entries for p in _pair(e, lead_shape)})
    n = shape[0]
    if planes is None:
        return list(range(n))
    chosen = [planes] if np.isscalar(planes) else list(planes)
    bad = [p for p in chosen if not -n <= int(p) < n]
    if bad:
        raise ValueError(f"planes {bad} do not exist: the stack has {n} planes (0..{n - 1}).")
    return sorted({int(p) % n for p in chosen})


def lead(plane: Plane) -> tuple[int, ...]:
    """The index of a plane in the leading axes: () for 2D, (z,) or (t, z)."""
    if plane is None:
        return ()
    return tuple(plane) if isinstance(plane, tuple) else (plane,)


def select_ids(ids: Sequence[int], label_ids) -> tuple[list[int], list[int], list[int]]:
    """The one target selection: which of a plane's ``ids`` are refined.

    Returns the positions in ``ids`` of the targets and of the ids kept as they
    are ("skipped": present but not in ``label_ids``), and the requested ids
    that are absent, sorted. ``label_ids`` None refines every id.
    """
    wanted = None if label_ids is None else set(label_ids)
    targets = [i for i, lid in enumerate(ids) if wanted is None or lid in wanted]
    skipped = [i for i, lid in enumerate(ids) if wanted is not None and lid not in wanted]
    missing = [] if wanted is None else sorted(wanted - set(ids))
    return targets, skipped, missing


def split_plane(plane_labels: np.ndarray, mode: str, label_ids):
    """Objects (instance) or STM groups (semantic) of one plane to refine.

    Returns the targets, the requested ids that are missing, and the objects
    kept as they are with their status: present but not requested ("skipped"),
    or, in semantic mode, classes made of specks only ("specks").
    """
    present = objects_from_labels(plane_labels)
    chosen_at, skipped_at, missing = select_ids([o.label_id for o in present], label_ids)
    chosen = [present[i] for i in chosen_at]
    kept = [(present[i], "skipped") for i in skipped_at]
    if mode == "semantic":
        from napari_samrefine.samrefiner.stm import split_then_merge

        classes = {o.label_id: o for o in chosen}
        chosen = [g for g in split_then_merge(plane_labels) if g.label_id in classes]
        grouped = {g.label_id for g in chosen}
        kept += [(o, "specks") for lid, o in classes.items() if lid not in grouped]
    return chosen, missing, kept


def records(
    states: Sequence[ObjectState],
    plane: Plane,
    mode: str,
    signals: Sequence[ObjectSignals] | None = None,
) -> list[ObjectResult]:
    """One :class:`ObjectResult` per cascade state (groups numbered per class in semantic mode),
    with the object's ``signals`` (aligned with ``states``; None: NaN) and the zoom of the
    view it was refined in (``ObjectState.zoom``)."""
    out, group_count = [], {}
    signals = [None] * len(states) if signals is None else signals
    for s, q in zip(states, signals, strict=True):
        nan = float("nan")
        g = group_count.get(s.coarse.label_id, 0)
        group_count[s.coarse.label_id] = g + 1
        out.append(
            ObjectResult(
                label_id=int(s.coarse.label_id),
                plane=plane,
                status=s.status,
                predicted_iou=s.predicted_iou,
                iterations=s.iterations,
                coarse_area=s.coarse.area,
                refined_area=s.mask.area if s.status in (*REFINED_STATUSES, "kept-coarse") else 0,
                group=g if mode == "semantic" else 0,
                iou_coarse=nan if q is None else q.iou_coarse,
                stability=nan if q is None else q.stability,
                edge_contrast=nan if q is None else q.edge_contrast,
                scale=float(s.zoom),
            )
        )
    return out


def kept_records(missing, kept, plane: Plane) -> list[ObjectResult]:
    """Records of requested ids that are absent, then of objects kept as they are.

    ``kept`` holds (label_id, area, status) triples.
    """
    out = [ObjectResult(int(lid), plane, "empty-input", float("nan"), 0, 0, 0) for lid in missing]
    out += [
        ObjectResult(int(lid), plane, status, float("nan"), 0, int(area), int(area))
        for lid, area, status in kept
    ]
    return out


def refine_loaded_plane(
    job: PlaneJob, plane_image: np.ndarray, plane_labels: np.ndarray, plane: Plane, step: Step
) -> tuple[np.ndarray | None, list[ObjectResult], list[ObjectPrompts | None]]:
    """Refine one plane held in memory.

    Returns
    -------
    refined : numpy.ndarray or None
        The refined plane (None when there was nothing to refine: the plane stays).
    objects : list of ObjectResult
    prompts : list of ObjectPrompts or None
    """
    targets, missing, kept = split_plane(plane_labels, job.mode, job.ids)
    objects = kept_records(missing, [(o.label_id, o.area, st) for o, st in kept], plane)
    prompts: list[ObjectPrompts | None] = [None] * len(objects)
    if not targets:
        return None, objects, prompts
    rgb = to_sam_rgb(plane_image, channel=job.channel, percentiles=job.percentiles)
    states, signals = job.refine(rgb, targets, job.layout(rgb.shape[:2]), step, job.given(plane))
    refined = write_back(plane_labels, states)
    objects.extend(records(states, plane, job.mode, signals))
    prompts.extend(s.prompts for s in states)
    return refined, objects, prompts
