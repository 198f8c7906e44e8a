"""``refine(..., prompts=...)``: given prompts checked against the labels, by plane.

:func:`resolve_given` checks the mapping before any work and keys it by plane;
:func:`check_present` checks, once the objects of each plane are known, that
every prompted object exists. The cascade decodes those objects from their
prompts at the first iteration (:mod:`napari_samrefine.samrefiner.given`).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np

from napari_samrefine.pipeline.plane import plane_indices
from napari_samrefine.samrefiner.given import check_object_prompts
from napari_samrefine.samrefiner.prompts import ObjectPrompts
from napari_samrefine.samrefiner.result import Plane

__all__ = ["resolve_given", "check_present"]

Given = dict[Plane, dict[int, ObjectPrompts]]


def _label_id(value, key) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0:
        return int(value)
    raise ValueError(f"prompts: key {key!r} is not a label id (a positive int)")


def _plane_and_id(key, shape: tuple[int, ...], plane_ids: list[Plane]) -> tuple[Plane, int]:
    if len(shape) == 2:
        if isinstance(key, tuple):
            raise ValueError(f"prompts: the labels are 2D, so keys are label ids, got {key!r}")
        return None, _label_id(key, key)
    if not isinstance(key, tuple):
        if len(plane_ids) != 1:
            raise ValueError(
                f"prompts: the labels are a stack and {len(plane_ids)} planes are refined, so "
                f"keys are (plane, label_id) pairs (plane as in RefineResult.objects), got {key!r}"
            )
        return plane_ids[0], _label_id(key, key)
    if len(key) != 2:
        raise ValueError(f"prompts: keys of a stack are (plane, label_id) pairs, got {key!r}")
    plane, lid = key
    found = plane_indices(shape, [plane] if len(shape) == 3 else [tuple(plane)])
    if len(found) != 1:
        raise ValueError(f"prompts: {plane!r} in key {key!r} is not one plane")
    return found[0], _label_id(lid, key)


def resolve_given(
    prompts: Mapping | None,
    shape: tuple[int, ...],
    plane_ids: list[Plane],
    label_ids,
    mode: str,
) -> Given | None:
    """``refine``'s ``prompts`` checked and keyed by plane (None when there are none).

    Parameters
    ----------
    prompts : mapping or None
        ``{label_id: ObjectPrompts}`` for 2D labels (or a stack of which one plane
        is refined), ``{(plane, label_id): ObjectPrompts}`` for a stack, the plane
        as in ``ObjectResult.plane`` (negative indices count from the end).
    shape : tuple of int
        The labels' shape.
    plane_ids : list
        The planes refined (:func:`~.plane.plane_indices`).
    label_ids : iterable of int or None
        ``refine``'s ``label_ids``: a prompted object must be one of them.
    mode : str
        ``refine``'s ``mode``: prompts are for instance mode only.

    Raises
    ------
    TypeError, ValueError
        For a mapping that is not one, a key that names no plane or label id,
        a plane or an object that is not refined, prompts of another object or
        frame (:func:`~napari_samrefine.samrefiner.given.check_object_prompts`).
    """
    if prompts is None:
        return None
    if not isinstance(prompts, Mapping):
        raise TypeError(
            f"prompts must be a mapping {{label_id: ObjectPrompts}}, got {type(prompts).__name__}"
            " (e.g. {p.label_id: p for p in result.prompts if p is not None})"
        )
    if prompts and mode != "instance":
        raise ValueError("prompts=... applies to instance mode; semantic mode mines one "
                         "prompt set per split-then-merge group.")
    wanted = None if label_ids is None else {int(i) for i in label_ids}
    out: Given = {}
    for key, value in prompts.items():
        plane, lid = _plane_and_id(key, tuple(shape), plane_ids)
        if plane not in plane_ids:
            raise ValueError(f"prompts: plane {plane!r} (key {key!r}) is not refined: add it to planes=")
        if wanted is not None and lid not in wanted:
            raise ValueError(f"prompts: object {lid} is not refined: add it to label_ids=")
        out.setdefault(plane, {})[lid] = check_object_prompts(lid, value, tuple(shape[-2:]))
    return out or None


def check_present(given: Given | None, present: Mapping[Plane, np.ndarray]) -> None:
    """Every prompted object exists in its plane (``present``: each plane's ids)."""
    for plane, by_id in (given or {}).items():
        missing = sorted(set(by_id) - {int(i) for i in present[plane]})
        if missing:
            where = "the labels" if plane is None else f"plane {plane!r}"
            raise ValueError(f"prompts: objects {missing} are not in {where}: give prompts only "
                             "for objects of the coarse labels (their ids as in RefineResult.objects)")
