"""The public refinement entry point: images and coarse labels in, refined labels out.

numpy arrays and lazy arrays (dask, zarr, memmaps) take one pipeline
(:mod:`.plane_loop`): a numpy array is a source read window by window like a lazy
one, whose windows are views and whose whole plane may be loaded at once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np

from napari_samrefine._progress import ProgressCallback
from napari_samrefine.engine.embedding import EmbeddingCache, default_cache
from napari_samrefine.labels.binary import BinaryMode
from napari_samrefine.models.loading import resolve_sam
from napari_samrefine.pipeline.given import resolve_given
from napari_samrefine.pipeline.options import DEFAULTS, OPTION_NAMES, RefineOptions
from napari_samrefine.pipeline.plane import PlaneJob, plane_indices
from napari_samrefine.pipeline.plane_loop import check_inputs, refine_planes
from napari_samrefine.pipeline.support import add_jfs_verdicts, check_support_inputs
from napari_samrefine.samrefiner.result import ObjectResult, RefineResult
from napari_samrefine.samrefiner.summary import GrowthWarning, size_warnings

__all__ = ["refine", "RefineResult", "ObjectResult", "RefineOptions"]


def refine(
    image: np.ndarray,
    labels: np.ndarray,
    sam="vit_b_lm",
    *,
    mode: Literal["instance", "semantic"] = DEFAULTS.mode,
    iterations: int | None = DEFAULTS.iterations,
    use_points: bool | None = DEFAULTS.use_points,
    use_box: bool | None = DEFAULTS.use_box,
    use_mask: bool | None = DEFAULTS.use_mask,
    use_negative_point: bool | None = DEFAULTS.use_negative_point,
    cebox: float | None | Literal["auto"] = DEFAULTS.cebox,
    strength: float = DEFAULTS.strength,
    gamma: float = DEFAULTS.gamma,
    label_ids: Iterable[int] | None = DEFAULTS.label_ids,
    planes: int | tuple[int, int] | Iterable | None = DEFAULTS.planes,
    channel: int | str | None = DEFAULTS.channel,
    channel_axis: int | None = DEFAULTS.channel_axis,
    percentiles: tuple[float, float] = DEFAULTS.percentiles,
    iou_adaptor=None,
    convergence: float | None = DEFAULTS.convergence,
    batch_size: int = DEFAULTS.batch_size,
    device: str = "auto",
    embedding_cache: EmbeddingCache | None = default_cache,
    progress: ProgressCallback | None = None,
    tile: int | Literal["auto"] | None = DEFAULTS.tile,
    halo: int | None = DEFAULTS.halo,
    binary: BinaryMode = DEFAULTS.binary,
    keep: Literal["refined", "better"] | None = DEFAULTS.keep,
    scale: float | Literal["auto"] | None = DEFAULTS.scale,
    prompts: Mapping | None = None,
    support=None,
    out=None,
) -> RefineResult:
    """Refine coarse masks with SAM using SAMRefiner's noise-tolerant prompts.

    Each image (or plane of a stack) is encoded once; for every cascade
    iteration, prompts (a distance-guided positive point, a negative point, a
    context-aware elastic box and a Gaussian mask prompt) are mined from each
    object's current mask and all objects are decoded in batched calls. The
    candidate with the highest predicted IoU is kept.

    Images and labels may be numpy arrays, or lazy arrays read a window at a
    time: dask and zarr arrays, numpy memmaps, anything with ``shape``,
    ``dtype``, ``ndim`` and numpy-style slicing. Both take one pipeline
    (:mod:`napari_samrefine.pipeline.plane_loop`): objects are found in one
    block-by-block pass over the labels and each tile reads only its window of
    image and labels. For lazy inputs the contrast limits come from an exact
    histogram of the image and the result is written strip by strip, so memory
    grows with the objects, the tile and the plane's width (one row of tiles is
    held), not with the image's area.

    The options (``mode`` to ``binary`` below, but ``sam``, ``iou_adaptor``,
    ``device``, ``embedding_cache``, ``progress`` and ``out``) take their
    defaults from, and are checked by, :class:`RefineOptions`; pass a prepared
    one as ``refine(image, labels, sam, **options.as_kwargs())``.

    Parameters
    ----------
    image : numpy.ndarray or lazy array
        (Y, X) grey, (Y, X, C) with channels last, a stack (Z, Y, X[, C]) or
        (T, Z, Y, X[, C]). uint8 grey/RGB is used as is; other dtypes are
        contrast-stretched.
    labels : numpy.ndarray or lazy array
        Coarse labels, (Y, X), (Z, Y, X) or (T, Z, Y, X), refined plane by plane;
        non-negative integers of any width (ids up to the dtype's maximum) or
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
    iterations : int or None
        Cascade iterations T. None (default): the model's measured default
        (:class:`~napari_samrefine.models.profile.RefineDefaults`; 1 for
        LiteMedSAM, the paper's 5 for SAM and micro-sam).
    use_points, use_box, use_mask, use_negative_point : bool or None
        Prompt switches (the paper's ablation). None (default) takes the model's
        profile (:func:`~napari_samrefine.models.profile.model_profile`): every
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
    planes : int, (t, z) or iterable, optional
        Planes of a stack to refine (default all); others are kept. For a 3D
        stack, an index or a list of them. For a 4D (T, Z, Y, X) stack, a (t, z)
        pair, a time point t (all its z planes), or a list of pairs and time
        points; ``ObjectResult.plane`` is then the (t, z) pair.
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
    keep : {"refined", "better"} or None
        Which mask each refined object keeps. "refined" (the paper's
        behaviour): the refined one. "better": the coarse one where the refined
        mask's IoU with it is below the model's ``keep_min_iou``, a label-free
        estimate that refinement made it worse (status "kept-coarse"; see
        docs/benchmarks.md, "Keep or replace: label-free signals"). None
        (default): the model's measured default ("better" for LiteMedSAM;
        "refined" for SAM and micro-sam, not measured here).
    scale : "auto", float or None
        The object scale (:mod:`napari_samrefine.pipeline.scale`): pixels of the
        model's input per pixel of the image. A number s refines each object in a
        window of input_size / s pixels around it, which the model resizes to its
        input, and maps the mask back to the image's pixels exactly. "auto"
        (default): per object, the zoom that brings it into the model's measured
        best size (``object_size`` of its
        :class:`~napari_samrefine.models.profile.RefineDefaults`), and where its
        ``native_too`` says so (LiteMedSAM) also at zoom 1, keeping per object the
        view whose mask agrees more with the coarse mask; for a model without
        that measurement, and with an explicit ``tile``, as None. None:
        the image (or its tiles, see ``tile``) as a whole, resized to the model's
        input, as before this option existed.
    prompts : mapping, optional
        Given prompts for some objects (instance mode), e.g. edited
        :func:`~napari_samrefine.excavate_prompts` output or ``RefineResult.prompts``
        with a point moved (``dataclasses.replace``): ``{label_id: ObjectPrompts}``
        for 2D labels or a stack of which one plane is refined, else
        ``{(plane, label_id): ObjectPrompts}``, in the plane's pixel frame. At the
        first cascade iteration those objects are decoded from these prompts
        instead of prompts mined from their coarse mask (every point, positive or
        negative, is given; the mask prompt is the Gaussian map's positive pixels
        at ``strength``); later iterations, the keep policy and the other objects
        go as the other options say. Prompts equal to the mined ones give the
        same masks. With a cached embedding (``embedding_cache``) no encoder pass
        runs again. Unknown ids, objects not refined (``label_ids``, ``planes``)
        and prompts outside the plane are refused with a ValueError.
    support : (image, labels) or list of such pairs, optional
        Support pairs for the JFS judge (:func:`~napari_samrefine.judge_refinement`):
        images of the same kind of objects with trusted instance labels. Each
        refined object's verdict ("improved", "degraded", "uncertain", "could not judge") is then
        in ``ObjectResult.jfs_verdict`` (the table's ``jfs_verdict`` column),
        from one ``judge_refinement`` call, with ``sam`` as the few-shot
        model, on the coarse labels and the labels returned (after ``keep``:
        an object kept coarse is judged on its coarse mask, "uncertain"). The
        verdict is reported only; it does not change which mask is kept (the
        verdicts' agreement with the truth is in docs/benchmarks.md). 2D
        instance labels in memory only: stacks, semantic mode, lazy inputs,
        ``out=`` and binary masks split into components are refused with a
        ValueError.
    out : zarr array, writable array, path or None
        Where to write the refined labels (see Notes), tile row by tile row, also
        for numpy input. The labels are never written into.

    Warns
    -----
    GrowthWarning
        A UserWarning, with ``keep="refined"``, for refined objects that grew more than
        :data:`~napari_samrefine.samrefiner.summary.GROWTH_WARNING` times their coarse
        area (naming them): such a mask is rarely right, and ``keep="better"``
        keeps their coarse masks (an IoU with the coarse mask below 1/4 is under
        every model's ``keep_min_iou``).

    Returns
    -------
    RefineResult
        ``.labels`` (same shape and dtype as ``labels``; for a binary mask, the
        same two values), ``.objects``, ``.table()``, ``.prompts``. With
        ``out``, ``.labels`` is that array.

    Raises
    ------
    ValueError
        Before any work, for labels that cannot be refined (float, negative,
        empty, wrongly shaped) or a parameter out of range, naming the fix.
        For lazy input also for a result too large to return in memory
        without ``out``, and, in semantic mode or for a binary mask split into
        components, for a plane too large to load (see Notes).

    Notes
    -----
    Lazy input, or ``out``:

    - The result is written tile row by tile row into ``out`` (a zarr array or
      any writable array of the labels' shape and dtype, or a path where a zarr
      store chunked like the labels is created; an existing path is refused).
      Without ``out``, the result is a numpy array when it fits
      :data:`~napari_samrefine.labels.arrays.MEMORY_BUDGET` (2 GiB), else a
      ValueError asks for ``out=``.
    - Objects that fit no tile are refined, as in memory, on the whole plane
      downscaled when its RGB fits the budget; otherwise they keep their coarse
      mask with status "too-large-for-tile" and a warning names ``tile=``.
      Untiled planes (``tile=None``, or a plane that fits one tile) are loaded
      whole, and refused with a ValueError naming ``tile=`` when they exceed it.
    - Overlaps between refined objects are resolved as in memory (the highest
      logit wins; ties go to the lower id), also across tiles: each row of
      tiles is written back into a strip of rows with a float32 best-logit
      buffer before the rows are written out.
    - Contrast limits are exact: one histogram pass for 8/16-bit images, 2 to 5
      radix-selection passes for wider integers and floats.
    - Semantic mode, and binary masks split into components, need whole
      planes (split-then-merge, connected components): each plane is loaded when
      it fits the budget, else a ValueError names the fix.

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
    # the options, checked (before any work) and made immutable in one object
    options = RefineOptions(**{k: v for k, v in locals().items() if k in OPTION_NAMES})
    src = check_inputs(image, labels, channel_axis, out)
    if support is not None:
        check_support_inputs(
            support, src.labels, in_memory=src.in_memory, mode=options.mode,
            binary=options.binary, out=out,
        )  # fmt: skip
    plane_ids = plane_indices(tuple(src.labels.shape), options.planes)
    ids = None if options.label_ids is None else list(options.label_ids)
    given = resolve_given(prompts, tuple(src.labels.shape), plane_ids, ids, options.mode)
    sam = resolve_sam(sam, device)
    chosen = options.model_defaults(sam)
    job = PlaneJob(
        sam=sam, settings=options.prompt_settings(sam), mode=options.mode, ids=ids,
        channel=options.channel, percentiles=options.percentiles, tile=options.tile,
        halo=options.halo, embedding_cache=embedding_cache, iterations=chosen.iterations,
        convergence=options.convergence, batch_size=options.batch_size, iou_adaptor=iou_adaptor,
        keep=chosen.keep, keep_min_iou=chosen.keep_min_iou, scale=options.scale,
        prompts=given,
    )
    result = refine_planes(job, src, out, plane_ids, options.binary, progress, stacklevel=3)
    if support is not None:
        result = add_jfs_verdicts(
            result, np.asarray(src.image), np.asarray(src.labels), support, sam=sam,
            channel=options.channel, embedding_cache=embedding_cache, progress=progress,
        )  # fmt: skip
    if job.keep == "refined":  # never keep an explosion silently
        for sentence in size_warnings(result.table(), shrank=math.inf):
            warnings.warn(
                f"{sentence[:-1]} (keep='refined'); keep='better' would have kept the coarse "
                "mask of such objects.", GrowthWarning, stacklevel=2,
            )
    return result
