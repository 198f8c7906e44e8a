"""refine's options in one frozen object: every option, its default and its check.

:func:`~napari_samrefine.refine` builds one :class:`RefineOptions` from its
keyword arguments (whose defaults are this object's), and the command line, the
widgets and :func:`~napari_samrefine.refine_many` read their defaults from it and
check their options with it. The paper's values come from
:mod:`napari_samrefine.samrefiner.defaults`, the contrast stretch's from
:data:`napari_samrefine.engine.preprocess.PERCENTILES`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

from napari_samrefine.engine.preprocess import PERCENTILES
from napari_samrefine.labels.binary import BINARY_CHOICES, BinaryMode
from napari_samrefine.models.profile import RefineDefaults, model_profile
from napari_samrefine.quality.keep import KEEP_CHOICES
from napari_samrefine.samrefiner.defaults import (
    BATCH_SIZE,
    CEBOX_LAMBDA,
    CONVERGENCE,
    GAMMA,
    STRENGTH,
    prompt_option_problems,
)

__all__ = ["RefineOptions", "DEFAULTS", "OPTION_NAMES", "MODES"]

MODES = ("instance", "semantic")
"""The values of ``mode``."""

MIN_TILE = 32
"""The smallest tile side in pixels."""


def _whole(value, low: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _switch(value):
    """A prompt switch as a plain bool (numpy's included), None, or the value itself if neither."""
    if value is None or isinstance(value, bool):
        return value
    return bool(value) if isinstance(value, np.bool_) else value


def _ids(value):
    """``label_ids`` as a sorted tuple of ints, or None; the value itself when it is not valid."""
    if value is None or isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return value
    ids = list(value)
    if not all(_whole(i, 0) for i in ids):
        return value
    return tuple(sorted({int(i) for i in ids}))


def _plane_entry(entry):
    """A plane: an int, or a (t, z) pair of ints; None when it is neither."""
    if _whole(entry, -(2**63)):
        return int(entry)
    if isinstance(entry, (tuple, list)) and len(entry) == 2 and all(_whole(v, -(2**63)) for v in entry):
        return tuple(int(v) for v in entry)
    return None


def _planes(value):
    """``planes`` made immutable: None, an int, a (t, z) pair, or a frozenset of those.

    A frozenset, not a tuple, holds several entries, so that a list of two time
    points ``[1, 2]`` keeps its meaning (a tuple ``(1, 2)`` is the plane t=1, z=2 of
    a 4D stack). Returns the value itself when it is not valid.
    """
    if value is None:
        return None
    single = _plane_entry(value) if isinstance(value, tuple) or _whole(value, -(2**63)) else None
    if single is not None:
        return single
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return value
    entries = [_plane_entry(e) for e in value]
    if not entries or any(e is None for e in entries):
        return value
    return frozenset(entries)


def _percentiles(value):
    try:
        low, high = value
    except (TypeError, ValueError):
        return value
    if not (_finite(low) and _finite(high)):
        return value
    return float(low), float(high)


@dataclass(frozen=True)
class RefineOptions:
    """Every option of :func:`~napari_samrefine.refine`, with its default, checked once.

    The object is frozen: make a changed copy with :func:`dataclasses.replace`.
    Pass it to refine as keyword arguments: ``refine(image, labels, sam,
    **options.as_kwargs())``.

    Parameters
    ----------
    mode : {"instance", "semantic"}
        Instance: one object per id. Semantic: split-then-merge (STM) per class.
    iterations : int or None
        Cascade iterations T. None (default): the model's measured default
        (:class:`~napari_samrefine.models.profile.RefineDefaults`: 1 for LiteMedSAM,
        the paper's 5 for SAM and micro-sam).
    use_points, use_box, use_mask, use_negative_point : bool or None
        Prompt switches (the paper's ablation). None (default) takes the model's
        profile (:func:`~napari_samrefine.models.profile.model_profile`): every
        prompt kind the model was trained with (all four for SAM and micro-sam,
        the box alone for LiteMedSAM). Forcing on a kind the model was not
        trained with works and issues a warning that names it.
    cebox : float, None or "auto"
        CEBox threshold lambda; None or 0 keeps the tight box. "auto" is the
        model's measured lambda in instance mode (``cebox`` of its
        :class:`~napari_samrefine.models.profile.RefineDefaults`; the paper's 0.1
        for SAM, :attr:`cebox_lambda`) and off in semantic mode.
    strength : float
        Amplitude w of the mask prompt (paper: 15).
    gamma : float
        Spread of the Gaussian mask prompt (reference code: 4).
    label_ids : iterable of int, optional
        Only refine these ids (classes in semantic mode); others are kept.
        Kept as a sorted tuple.
    planes : int, (t, z) or iterable, optional
        Planes of a stack to refine (default all); others are kept. For a 3D
        stack, an index or a list of them. For a 4D (T, Z, Y, X) stack, a (t, z)
        pair, a time point t (all its z planes), or a list of pairs and time
        points; ``ObjectResult.plane`` is then the (t, z) pair. A list is kept
        as a frozenset (the planes are refined in order whatever the order given).
    channel : int or "mean", optional
        Channel to use for multichannel images that are not RGB.
    channel_axis : int, optional
        Channel axis of ``image`` when it is not the last axis.
    percentiles : (float, float)
        Contrast-stretch percentiles for non-uint8 images.
    convergence : float or None
        An object stops once its mask's IoU with the previous iteration reaches
        this value; None always runs all iterations.
    batch_size : int
        Objects per decoder call (bounds memory).
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
        How a binary mask becomes objects in instance mode. "components"
        (default): if a plane of the mask holds more than one 8-connected
        component, every component is an object, numbered from 1 in raster order
        in each plane; "one": the whole mask is one object, its value as id.
    keep : {"refined", "better"} or None
        Which mask each refined object keeps. "refined" (the paper's behaviour):
        the refined one. "better": the coarse one where the refined mask's IoU
        with it is below the model's threshold (``keep_min_iou`` of its
        :class:`~napari_samrefine.models.profile.RefineDefaults`; status
        "kept-coarse"), a label-free estimate that the refinement made it worse
        (measured in docs/benchmarks.md, "Keep or replace: label-free signals").
        None (default): the model's measured default ("better" for LiteMedSAM,
        "refined" for SAM and micro-sam, which were not measured).
    scale : "auto", float or None
        The object scale (:mod:`napari_samrefine.pipeline.scale`): how many
        pixels of the model's input one pixel of the image spans. A number s
        refines each object in a window of input_size / s pixels around it, which
        the model resizes to its input; "auto" (default) picks s per object so
        that it spans the model's measured best size (``object_size`` of its
        :class:`~napari_samrefine.models.profile.RefineDefaults`; with its
        ``native_too``, also at zoom 1, the view agreeing more with the coarse mask
        kept), or, for a model without that measurement, behaves as None. None: the image (or its
        tiles, see ``tile``) as a whole, resized to the model's input. A number
        cannot be combined with an explicit ``tile``; an explicit ``tile`` (an
        int, or None) turns "auto" off.

    Raises
    ------
    ValueError
        For any option out of range, naming each one, its valid values, its
        default and the value given.

    Examples
    --------
    >>> from dataclasses import replace
    >>> options = RefineOptions(iterations=2)
    >>> options.iterations, options.cebox_lambda, replace(options, mode="semantic").cebox_lambda
    (2, 0.1, None)
    >>> RefineOptions(iterations=0)
    Traceback (most recent call last):
    ...
    ValueError: iterations must be a whole number >= 1, or None for the model's default, got 0.
    """

    mode: Literal["instance", "semantic"] = "instance"
    iterations: int | None = None
    use_points: bool | None = None
    use_box: bool | None = None
    use_mask: bool | None = None
    use_negative_point: bool | None = None
    cebox: float | None | Literal["auto"] = "auto"
    strength: float = STRENGTH
    gamma: float = GAMMA
    label_ids: Iterable[int] | None = None
    planes: int | tuple[int, int] | Iterable | None = None
    channel: int | str | None = None
    channel_axis: int | None = None
    percentiles: tuple[float, float] = PERCENTILES
    convergence: float | None = CONVERGENCE
    batch_size: int = BATCH_SIZE
    tile: int | Literal["auto"] | None = "auto"
    halo: int | None = None
    binary: BinaryMode = "components"
    keep: Literal["refined", "better"] | None = None
    scale: float | Literal["auto"] | None = "auto"

    def __post_init__(self) -> None:
        for name, tidy in (
            ("use_points", _switch), ("use_box", _switch), ("use_mask", _switch),
            ("use_negative_point", _switch), ("label_ids", _ids), ("planes", _planes),
            ("percentiles", _percentiles),
        ):  # fmt: skip
            object.__setattr__(self, name, tidy(getattr(self, name)))
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems) + ".")

    @staticmethod
    def default(name: str):
        """The default of option ``name``."""
        return _FIELDS[name].default

    def problems(self) -> list[str]:
        """What is wrong with these options, one sentence each (empty when valid)."""
        d = self.default
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode must be 'instance' or 'semantic', got {self.mode!r}")
        if not (self.iterations is None or _whole(self.iterations, 1)):
            problems.append(
                f"iterations must be a whole number >= 1, or None for the model's default, "
                f"got {self.iterations!r}"
            )
        for name in ("use_points", "use_box", "use_mask", "use_negative_point"):
            value = getattr(self, name)
            if not (value is None or isinstance(value, bool)):
                problems.append(
                    f"{name} must be True, False or None (the model's profile), got {value!r}"
                )
        problems += prompt_option_problems(self.cebox, self.strength, self.gamma, auto=True)
        if not (self.label_ids is None or isinstance(self.label_ids, tuple)):
            problems.append(
                f"label_ids must be None (all) or a list of whole numbers >= 0 such as [3, 7], "
                f"got {self.label_ids!r}"
            )
        if not (self.planes is None or isinstance(self.planes, (int, tuple, frozenset))):
            problems.append(
                f"planes must be None (all), a plane index, a (t, z) pair or a list of them, "
                f"got {self.planes!r}"
            )
        if not (self.channel is None or self.channel == "mean" or _whole(self.channel, -(2**63))):
            problems.append(f"channel must be None, 'mean' or a channel index, got {self.channel!r}")
        if not (self.channel_axis is None or _whole(self.channel_axis, -(2**63))):
            problems.append(f"channel_axis must be None or an axis index, got {self.channel_axis!r}")
        p = self.percentiles
        if not (isinstance(p, tuple) and len(p) == 2 and 0 <= p[0] < p[1] <= 100):
            problems.append(
                f"percentiles must be two numbers 0 <= low < high <= 100 "
                f"({' '.join(f'{v:g}' for v in d('percentiles'))} by default), got {p!r}"
            )
        if self.convergence is not None and not (
            _finite(self.convergence) and 0 <= self.convergence <= 1
        ):
            problems.append(
                f"convergence must be in [0, 1] or None ({d('convergence')} by default), "
                f"got {self.convergence!r}"
            )
        if not _whole(self.batch_size, 1):
            problems.append(
                f"batch_size must be a whole number >= 1 (objects per decoder call, "
                f"{d('batch_size')} by default), got {self.batch_size!r}"
            )
        tile, halo = self.tile, self.halo
        if not (tile is None or tile == "auto" or _whole(tile, MIN_TILE)):
            problems.append(
                f"tile must be None, 'auto' or a whole number of pixels >= {MIN_TILE}, got {tile!r}"
            )
        if halo is not None and not (
            _whole(halo, 0) and (not _whole(tile, MIN_TILE) or 2 * halo < tile)
        ):
            problems.append(
                f"halo must be None or a whole number of pixels >= 0 and less than half the "
                f"tile, got {halo!r}"
            )
        if self.binary not in BINARY_CHOICES:
            problems.append(f"binary must be 'components' or 'one', got {self.binary!r}")
        if not (self.keep is None or self.keep in KEEP_CHOICES):
            problems.append(
                f"keep must be 'refined' (every refined mask), 'better' (the coarse mask where "
                f"the refined one agrees too little with it) or None (the model's default), "
                f"got {self.keep!r}"
            )
        scale = self.scale
        if not (scale is None or scale == "auto" or (_finite(scale) and scale > 0)):
            problems.append(f"scale must be 'auto', None or a number > 0 such as 2, got {scale!r}")
        elif _finite(scale) and self.tile != "auto":
            problems.append(
                f"scale={scale!r} chooses the windows the model sees, and tile={self.tile!r} too: "
                "pass one of them (leave tile='auto' with a scale)"
            )
        return problems

    def model_defaults(self, sam) -> RefineDefaults:
        """The settings :func:`~napari_samrefine.refine` uses with ``sam``: the model's
        :class:`~napari_samrefine.models.profile.RefineDefaults`, with ``iterations``
        and ``keep`` replaced where these options set them.

        Examples
        --------
        >>> from napari_samrefine.testing import tiny_sam
        >>> RefineOptions(keep="better").model_defaults(tiny_sam()).keep
        'better'
        """
        from dataclasses import replace

        chosen = model_profile(sam).defaults
        if self.iterations is not None:
            chosen = replace(chosen, iterations=int(self.iterations))
        if self.keep is not None:
            chosen = replace(chosen, keep=self.keep)
        return chosen

    @property
    def cebox_lambda(self) -> float | None:
        """The CEBox lambda the cascade uses: ``cebox`` with "auto" and 0 resolved.

        "auto" is :data:`~napari_samrefine.samrefiner.defaults.CEBOX_LAMBDA` in
        instance mode and None (the tight box) in semantic mode; 0 is None.
        """
        if self.cebox == "auto":
            return CEBOX_LAMBDA if self.mode == "instance" else None
        return float(self.cebox) if self.cebox else None

    def prompt_settings(self, sam):
        """The cascade's :class:`~napari_samrefine.samrefiner.cascade.PromptSettings` for ``sam``.

        Unset prompt switches, and CEBox's "auto" in instance mode, come from the
        model's profile.
        """
        from napari_samrefine.samrefiner.cascade import PromptSettings  # torch: on first use

        cebox = self.cebox_lambda
        if self.cebox == "auto" and self.mode == "instance":
            cebox = model_profile(sam).defaults.cebox
        return PromptSettings.for_model(
            sam, use_points=self.use_points, use_box=self.use_box, use_mask=self.use_mask,
            use_negative_point=self.use_negative_point, cebox=cebox,
            strength=self.strength, gamma=self.gamma,
        )

    def as_kwargs(self) -> dict:
        """The options as keyword arguments of :func:`~napari_samrefine.refine`."""
        return {name: getattr(self, name) for name in OPTION_NAMES}


_FIELDS = {f.name: f for f in fields(RefineOptions)}

OPTION_NAMES: tuple[str, ...] = tuple(_FIELDS)
"""The names of refine's options, in the order of its signature."""

DEFAULTS = RefineOptions()
"""refine's defaults (the signature of :func:`~napari_samrefine.refine` reads them)."""
