"""The public refinement entry point: images and coarse labels in, refined labels out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from .._progress import ProgressCallback, report
from ..sam.embedding import EmbeddingCache, default_cache
from ..sam.loading import resolve_sam
from ..sam.preprocess import to_sam_rgb
from .cascade import REFINED_STATUSES, ObjectState, PromptSettings
from .inputs import (
    BinaryMode,
    arrange_image,
    binary_objects,
    check_labels,
    check_refine_options,
    restore_binary,
)
from .objects import objects_from_labels
from .prompts import ObjectPrompts
from .tiling import refine_plane, resolve_tiling
from .writeback import write_back

__all__ = ["refine", "RefineResult", "ObjectResult"]


@dataclass(frozen=True)
class ObjectResult:
    """What happened to one object (or one STM group in semantic mode).

    Attributes
    ----------
    label_id : int
        Object id (instance mode) or class id (semantic mode).
    plane : int or None
        Index of the plane in a stack; None for 2D input.
    status : str
        "ok"; "kept-previous" (SAM's mask came out empty at a later cascade
        iteration: the previous iteration's mask is kept); "empty-input" (the
        requested id is not in the labels); "empty-output" (SAM's mask came out
        empty at the first iteration: the coarse mask is kept); "skipped"
        (present in the labels but not selected with ``label_ids``; kept as is);
        "specks" (semantic mode: every component of the class is under STM's
        minimum size, so there is nothing to refine; kept as is).
    predicted_iou : float
        SAM's predicted IoU of the chosen candidate in the last iteration.
    iterations : int
        Decoder passes the object went through.
    coarse_area, refined_area : int
        Pixels before and after (refined_area before overlap resolution).
    group : int
        Index of the STM group within its class (semantic mode), else 0.
    """

    label_id: int
    plane: int | None
    status: str
    predicted_iou: float
    iterations: int
    coarse_area: int
    refined_area: int
    group: int = 0


@dataclass
class RefineResult:
    """Result of :func:`refine`.

    Attributes
    ----------
    labels : numpy.ndarray
        Refined labels, same shape and dtype as the input, ids preserved.
    objects : list of ObjectResult
        One record per object (per group in semantic mode).
    prompts : list of ObjectPrompts or None
        The prompts of each object's last iteration, aligned with ``objects``
        (None for objects that were not refined). ``mask_input`` is dropped to
        save memory (256 kB per object for the published models);
        :func:`~napari_samrefine.excavate_prompts` recomputes it.
    mode : str
        "instance" or "semantic".
    """

    labels: np.ndarray
    objects: list[ObjectResult] = field(default_factory=list)
    prompts: list[ObjectPrompts | None] = field(default_factory=list)
    mode: str = "instance"

    def table(self):
        """Per-object records as a pandas DataFrame (one row per object)."""
        import pandas as pd

        columns = list(ObjectResult.__dataclass_fields__)
        return pd.DataFrame([asdict(o) for o in self.objects], columns=columns)


def _plane_indices(labels: np.ndarray, planes) -> list[int | None]:
    if labels.ndim == 2:
        if planes not in (None, 0, [0]):
            raise ValueError("planes=... applies to 3D stacks; these labels are 2D.")
        return [None]
    n = labels.shape[0]
    if planes is None:
        return list(range(n))
    chosen = [planes] if np.isscalar(planes) else list(planes)
    bad = [p for p in chosen if not -n <= int(p) < n]
    if bad:
        raise ValueError(f"planes {bad} do not exist: the stack has {n} planes (0..{n - 1}).")
    return sorted({int(p) % n for p in chosen})


def _split(plane_labels: np.ndarray, mode: str, label_ids):
    """Objects (instance) or STM groups (semantic) of one plane to refine.

    Returns the targets, the requested ids that are missing, and the objects
    kept as they are with their status: present but not requested ("skipped"),
    or, in semantic mode, classes made of specks only ("specks").
    """
    present = objects_from_labels(plane_labels)
    wanted = None if label_ids is None else set(label_ids)
    chosen = [o for o in present if wanted is None or o.label_id in wanted]
    kept = [(o, "skipped") for o in present if wanted is not None and o.label_id not in wanted]
    missing = [] if wanted is None else sorted(wanted - {o.label_id for o in present})
    if mode == "semantic":
        from .stm import split_then_merge

        classes = {o.label_id: o for o in chosen}
        chosen = [g for g in split_then_merge(plane_labels) if g.label_id in classes]
        grouped = {g.label_id for g in chosen}
        kept += [(o, "specks") for lid, o in classes.items() if lid not in grouped]
    return chosen, missing, kept


def _records(states: Sequence[ObjectState], plane, mode) -> list[ObjectResult]:
    out, group_count = [], {}
    for s in states:
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
                refined_area=s.mask.area if s.status in REFINED_STATUSES else 0,
                group=g if mode == "semantic" else 0,
            )
        )
    return out


def refine(
    image: np.ndarray,
    labels: np.ndarray,
    sam="vit_b_lm",
    *,
    mode: Literal["instance", "semantic"] = "instance",
    iterations: int = 5,
    use_points: bool | None = None,
    use_box: bool | None = None,
    use_mask: bool | None = None,
    use_negative_point: bool | None = None,
    cebox: float | None | Literal["auto"] = "auto",
    strength: float = 15.0,
    gamma: float = 4.0,
    label_ids: Iterable[int] | None = None,
    planes: int | Iterable[int] | None = None,
    channel: int | str | None = None,
    channel_axis: int | None = None,
    percentiles: tuple[float, float] = (1.0, 99.8),
    iou_adaptor=None,
    convergence: float | None = 0.99,
    batch_size: int = 32,
    device: str = "auto",
    embedding_cache: EmbeddingCache | None = default_cache,
    progress: ProgressCallback | None = None,
    tile: int | Literal["auto"] | None = "auto",
    halo: int | None = None,
    binary: BinaryMode = "components",
) -> RefineResult:
    """Refine coarse masks with SAM using SAMRefiner's noise-tolerant prompts.

    Each image (or plane of a stack) is encoded once; for every cascade
    iteration, prompts (a distance-guided positive point, a negative point, a
    context-aware elastic box and a Gaussian mask prompt) are mined from each
    object's current mask and all objects are decoded in batched calls. The
    candidate with the highest predicted IoU is kept.

    Parameters
    ----------
    image : numpy.ndarray
        (Y, X) grey, (Y, X, C) with channels last, or a stack (Z, Y, X[, C]).
        uint8 grey/RGB is used as is; other dtypes are contrast-stretched.
    labels : numpy.ndarray
        Coarse labels, (Y, X) or (Z, Y, X), non-negative integers of any width or
        bool (0 = background). Instance ids in instance mode, class ids in
        semantic mode. A bool image, or one with exactly two values one of which
        is 0 (0/1, 0/255, ...), is a binary mask: see ``binary``. Float labels
        are refused with the fix (``labels.astype(np.int32)`` for whole numbers,
        ``labels > 0.5`` for a probability map).
    sam : Sam, str or path
        A loaded ``segment_anything`` model, a registry name (default "vit_b_lm")
        or a checkpoint file.
    mode : {"instance", "semantic"}
        Instance: one object per id. Semantic: split-then-merge (STM) per class.
    iterations : int
        Cascade iterations (T, default 5).
    use_points, use_box, use_mask, use_negative_point : bool or None
        Prompt switches (the paper's ablation). None (default) takes the model's
        profile (:func:`~napari_samrefine.sam.profile.model_profile`): every
        prompt kind the model was trained with (all four for SAM and micro-sam,
        the box alone for LiteMedSAM). Forcing on a kind the model was not
        trained with works and issues a warning that names it.
    cebox : float, None or "auto"
        CEBox threshold lambda; None or 0 keeps the tight box. "auto" is 0.1 in
        instance mode and off in semantic mode.
    strength : float
        Amplitude w of the mask prompt (paper: 15).
    gamma : float
        Spread of the Gaussian mask prompt (reference code: 4).
    label_ids : iterable of int, optional
        Only refine these ids (classes in semantic mode); others are kept.
    planes : int or iterable of int, optional
        Planes of a stack to refine (default all); others are kept.
    channel : int or "mean", optional
        Channel to use for multichannel images that are not RGB.
    channel_axis : int, optional
        Channel axis of ``image`` when it is not the last axis.
    percentiles : (float, float)
        Contrast-stretch percentiles for non-uint8 images.
    iou_adaptor : optional
        A SAMRefiner++ adaptor (:func:`napari_samrefine.load_iou_adaptor`).
    convergence : float or None
        An object stops once its mask's IoU with the previous iteration reaches
        this value; None always runs all iterations.
    batch_size : int
        Objects per decoder call (bounds memory).
    device : str
        Device for a model loaded by name ("auto": cuda, mps, cpu).
    embedding_cache : EmbeddingCache or None
        Where image embeddings are kept for reuse; None computes them afresh.
    progress : callable, optional
        ``progress(done, total, message)``; raise :class:`napari_samrefine.Cancelled`
        in it to stop.
    tile : int, "auto" or None
        Refine large images in square tiles of this side (SPEC section 6): each
        tile is encoded once and each object is refined in the tile that holds it
        (with context) whole, at full resolution; objects that fit no tile use the
        whole, downscaled image. "auto" (default) tiles at SAM's input size
        (1024 px) images whose long side exceeds twice that; None never tiles.
        An image that fits in one tile is refined exactly as without tiling.
    halo : int, optional
        Overlap margin of the tiles (they overlap by ``2 * halo``); default
        ``tile // 8``.
    binary : {"components", "one"}
        How a binary mask (see ``labels``) becomes objects in instance mode.
        "components" (default): if a plane of the mask holds more than one
        8-connected component, every component is an object, numbered from 1 in
        raster order in each plane (these numbers are the ids in ``objects`` and
        in ``label_ids``), and a UserWarning says how many there are; a mask of
        one connected object per plane is that object, its value as id. "one":
        the whole mask is one object, its value as id (1 for bool). Either way
        the result is a binary mask again: the input's dtype, and its foreground
        value (e.g. 255) on every refined object. In semantic mode a binary mask
        is one class, which split-then-merge splits.

    Returns
    -------
    RefineResult
        ``.labels`` (same shape and dtype as ``labels``; for a binary mask, the
        same two values), ``.objects``, ``.table()``, ``.prompts``.

    Raises
    ------
    ValueError
        Before any work, for labels that cannot be refined (float, negative,
        empty, wrongly shaped) or a parameter out of range, naming the fix.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_samrefine import refine
    >>> from napari_samrefine.testing import tiny_sam
    >>> image = np.zeros((64, 64), np.uint8); image[20:40, 20:40] = 200
    >>> coarse = np.zeros((64, 64), np.uint16); coarse[22:38, 18:41] = 7
    >>> result = refine(image, coarse, sam=tiny_sam(), iterations=2)
    >>> result.labels.dtype, result.objects[0].label_id
    (dtype('uint16'), 7)
    """
    if mode not in ("instance", "semantic"):
        raise ValueError(f"mode must be 'instance' or 'semantic', got {mode!r}")
    check_refine_options(
        iterations=iterations, batch_size=batch_size, convergence=convergence, tile=tile,
        halo=halo, cebox=cebox, strength=strength, gamma=gamma, binary=binary,
    )
    user_labels = check_labels(labels)
    image = arrange_image(image, user_labels.shape, channel_axis)
    labels, foreground = binary_objects(user_labels, binary, mode, stacklevel=2)
    ids = None if label_ids is None else sorted({int(i) for i in label_ids})
    if cebox == "auto":
        cebox = 0.1 if mode == "instance" else None
    sam = resolve_sam(sam, device)
    settings = PromptSettings.for_model(
        sam, use_points=use_points, use_box=use_box, use_mask=use_mask,
        use_negative_point=use_negative_point, cebox=cebox, strength=strength, gamma=gamma,
    )
    plane_ids = _plane_indices(labels, planes)
    total = len(plane_ids) * (iterations + 1)
    done = 0
    report(progress, done, total, "starting")

    out = labels.copy()
    objects: list[ObjectResult] = []
    prompts: list[ObjectPrompts | None] = []
    for p in plane_ids:
        plane_labels = labels if p is None else labels[p]
        plane_image = image if p is None else image[p]
        targets, missing, kept = _split(plane_labels, mode, ids)
        for lid in missing:
            objects.append(ObjectResult(lid, p, "empty-input", float("nan"), 0, 0, 0))
            prompts.append(None)
        for o, status in kept:
            objects.append(ObjectResult(o.label_id, p, status, float("nan"), 0, o.area, o.area))
            prompts.append(None)
        if not targets:
            done += iterations + 1
            report(progress, done, total, f"plane {p}: nothing to refine")
            continue
        rgb = to_sam_rgb(plane_image, channel=channel, percentiles=percentiles)
        where = "" if p is None else f"plane {p}: "

        def step(units: int, message: str, _where=where, _done=done) -> None:
            report(progress, _done + units, total, _where + message)

        states = refine_plane(
            sam, rgb, targets, settings,
            tiling=resolve_tiling(tile, halo, sam, rgb.shape[:2]),
            embedding_cache=embedding_cache,
            iterations=iterations, convergence=convergence, batch_size=batch_size,
            iou_adaptor=iou_adaptor, step=step,
        )
        refined = write_back(plane_labels, states)
        if p is None:
            out = refined
        else:
            out[p] = refined
        objects.extend(_records(states, p, mode))
        prompts.extend(s.prompts for s in states)
        done += iterations + 1
        report(progress, done, total, f"{where}done")
    out = restore_binary(out, user_labels, foreground)
    return RefineResult(labels=out, objects=objects, prompts=prompts, mode=mode)
