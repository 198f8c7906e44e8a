"""Prompts given for an object instead of mined from its mask (edited prompts).

:func:`~napari_samrefine.refine` takes ``prompts={label_id: ObjectPrompts}``: those
objects are decoded from the given prompts at the first cascade iteration (later
iterations mine prompts from the mask as usual). The prompts are in the image's
(plane's) frame, like :func:`~.prompts.excavate_prompts`' output and
``RefineResult.prompts``; this module checks them, moves them into the frame of a
tile or object window, and rebuilds their mask prompt in the frame they are
decoded in: the mask prompt is the Gaussian map's positive pixels (its support is
the mask it was mined from) with amplitude ``strength``
(:func:`~.prompts.mask_prompt`), so a prompt mined in one frame decodes the same in
any other.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from napari_samrefine.engine.frame import SamFrame
from napari_samrefine.samrefiner.prompts import ObjectPrompts, mask_prompt

__all__ = ["check_object_prompts", "shift_prompts", "prompts_for_frame", "given_for_objects"]


def _bad(label_id, what: str) -> ValueError:
    return ValueError(f"prompts of object {label_id}: {what}")


def check_object_prompts(label_id, prompts, shape: tuple[int, int]) -> ObjectPrompts:
    """Check one object's given prompts against the plane they are for; return them unchanged.

    Parameters
    ----------
    label_id : int
        The object's id (the key the prompts were given under).
    prompts : ObjectPrompts
        In the plane's frame: points (x, y) = (column, row), box [x1, y1, x2, y2]
        inclusive, the Gaussian map's crop at ``offset`` (row, column).
    shape : (int, int)
        (H, W) of the plane.

    Raises
    ------
    TypeError
        For prompts that are not an :class:`~.prompts.ObjectPrompts`.
    ValueError
        For prompts of another object or of another image frame (points, box or
        Gaussian map outside the plane), or malformed arrays, naming the problem.
    """
    if not isinstance(prompts, ObjectPrompts):
        raise TypeError(
            f"prompts of object {label_id} must be an ObjectPrompts (from excavate_prompts or "
            f"RefineResult.prompts, edited with dataclasses.replace), got {type(prompts).__name__}"
        )
    if int(prompts.label_id) != int(label_id):
        raise _bad(label_id, f"they are object {prompts.label_id}'s (label_id): give them under "
                   f"that id, or dataclasses.replace(prompts, label_id={label_id})")
    h, w = (int(s) for s in shape)
    points = np.asarray(prompts.points, dtype=np.float64)
    labels = np.asarray(prompts.point_labels)
    if points.ndim != 2 or points.shape[1] != 2 or labels.shape != (len(points),):
        raise _bad(label_id, f"points must be (P, 2) (x, y) with P point_labels, got points "
                   f"{points.shape} and point_labels {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise _bad(label_id, "point_labels must be 1 (positive) or 0 (negative)")
    frame = f"the plane is {h} x {w} (rows x columns): prompts of another image frame?"
    if not np.isfinite(points).all() or (len(points) and (
        (points < -0.5).any() or (points[:, 0] > w - 0.5).any() or (points[:, 1] > h - 0.5).any()
    )):
        raise _bad(label_id, f"points {points.tolist()} lie outside the plane; {frame}")
    box = np.asarray(prompts.box, dtype=np.float64)
    if box.shape != (4,) or not np.isfinite(box).all() or box[0] > box[2] or box[1] > box[3]:
        raise _bad(label_id, f"box must be [x1, y1, x2, y2] with x1 <= x2, y1 <= y2, got {box.tolist()}")
    if box.min() < -0.5 or box[2] > w - 0.5 or box[3] > h - 0.5:
        raise _bad(label_id, f"box {box.tolist()} reaches outside the plane; {frame}")
    g = np.asarray(prompts.gaussian)
    y0, x0 = (int(v) for v in prompts.offset)
    if g.ndim != 2:
        raise _bad(label_id, f"gaussian must be a 2D map, got shape {g.shape}")
    if y0 < 0 or x0 < 0 or y0 + g.shape[0] > h or x0 + g.shape[1] > w:
        raise _bad(label_id, f"the Gaussian map ({g.shape[0]} x {g.shape[1]} at row, column "
                   f"{(y0, x0)}) reaches outside the plane; {frame}")
    if not _positive_number(prompts.strength):
        raise _bad(label_id, f"strength must be a positive number, got {prompts.strength!r}")
    return prompts


def _positive_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) and v > 0


def shift_prompts(prompts: ObjectPrompts, dy: int, dx: int) -> ObjectPrompts:
    """The prompts moved by (``dy``, ``dx``) pixels (e.g. into or out of a window's frame).

    ``mask_input`` is dropped: it lives in one frame's low-res grid
    (:func:`prompts_for_frame` rebuilds it).
    """
    shift = np.array([dx, dy, dx, dy], dtype=np.int64)
    return replace(
        prompts,
        tight_box=np.asarray(prompts.tight_box, dtype=np.int64) + shift,
        box=np.asarray(prompts.box) + shift,
        points=np.asarray(prompts.points, dtype=np.float64) + np.array([dx, dy], dtype=np.float64),
        offset=(int(prompts.offset[0]) + dy, int(prompts.offset[1]) + dx),
        mask_input=None,
    )


def prompts_for_frame(prompts: ObjectPrompts, frame: SamFrame) -> ObjectPrompts:
    """The prompts with their mask prompt built in ``frame``'s low-res grid.

    The mask prompt is :func:`~.prompts.mask_prompt` of the Gaussian map's
    positive pixels, the map and ``strength``: for mined prompts exactly the mask
    prompt mining computes in that frame. The part of the map outside the frame
    (an object near a window's edge whose map was edited beyond it) is left out.
    """
    h, w = frame.original_size
    y0, x0 = (int(v) for v in prompts.offset)
    g = np.asarray(prompts.gaussian, dtype=np.float32)
    top, left = max(0, -y0), max(0, -x0)
    g = g[top : max(top, h - y0), left : max(left, w - x0)]
    if g.size == 0:
        mask_input = np.full((frame.lowres_size,) * 2, -np.float32(prompts.strength), np.float32)
    else:
        mask_input = mask_prompt(frame, g > 0, g, (y0 + top, x0 + left), prompts.strength)
    return replace(prompts, mask_input=mask_input)


def given_for_objects(
    given: Mapping[int, ObjectPrompts] | None, label_ids, window=None
) -> dict[int, ObjectPrompts]:
    """The given prompts of the objects ``label_ids``, moved into ``window``'s frame.

    ``window`` is (y0, x0, y1, x1) of the image frame, or None for the image itself.
    """
    if not given:
        return {}
    wanted = [int(i) for i in label_ids if int(i) in given]
    if window is None:
        return {i: given[i] for i in wanted}
    return {i: shift_prompts(given[i], -int(window[0]), -int(window[1])) for i in wanted}
