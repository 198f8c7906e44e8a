"""The cascade of SAMRefiner iterations for all objects of one image (SPEC section 1)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from napari_samrefine.engine.embedding import ImageEmbedding
from napari_samrefine.engine.frame import SamFrame
from napari_samrefine.labels.iou import crop_iou
from napari_samrefine.labels.objects import ObjectMask, trim
from napari_samrefine.models.profile import resolve_prompt_use
from napari_samrefine.samrefiner.cebox import FeatureGrid
from napari_samrefine.samrefiner.decode import (
    PromptSwitches,
    decode_batch,
    decode_prompts,
    lean_decoder,
    prompt_arrays,
)
from napari_samrefine.samrefiner.defaults import (
    BATCH_SIZE,
    CEBOX_LAMBDA,
    CONVERGENCE,
    GAMMA,
    ITERATIONS,
    STRENGTH,
)
from napari_samrefine.samrefiner.given import prompts_for_frame
from napari_samrefine.samrefiner.prompts import ObjectPrompts, excavate_object

__all__ = [
    "ObjectState", "ChosenLogits", "PromptSettings", "run_cascade", "REFINED_STATUSES",
    "COARSE_STATUSES",
]

REFINED_STATUSES = ("ok", "kept-previous")
"""Statuses of objects whose refined mask is written back: "ok", and "kept-previous"
(SAM's output came out empty at a later iteration; the previous iteration's mask stays)."""

COARSE_STATUSES = ("empty-output", "kept-coarse")
"""Statuses of objects the cascade ran on whose coarse mask is written back: "empty-output"
(SAM's output came out empty at the first iteration) and "kept-coarse" (a keep policy,
:func:`napari_samrefine.quality.keep.keep_objects`, judged the refined mask worse)."""


@dataclass(frozen=True)
class PromptSettings:
    """How prompts are excavated (SPEC section 2); the defaults are the paper's.

    Attributes
    ----------
    switches : PromptSwitches
        Which prompt kinds SAM is given (all by default).
    cebox : float or None
        CEBox's lambda (:data:`~napari_samrefine.samrefiner.defaults.CEBOX_LAMBDA`);
        None keeps the tight box.
    strength : float
        Amplitude w of the mask prompt (:data:`~napari_samrefine.samrefiner.defaults.STRENGTH`).
    gamma : float
        Span of the Gaussian map (:data:`~napari_samrefine.samrefiner.defaults.GAMMA`).
    """

    switches: PromptSwitches = PromptSwitches()
    cebox: float | None = CEBOX_LAMBDA
    strength: float = STRENGTH
    gamma: float = GAMMA

    @classmethod
    def for_model(
        cls,
        sam,
        *,
        use_points: bool | None = None,
        use_box: bool | None = None,
        use_mask: bool | None = None,
        use_negative_point: bool | None = None,
        cebox: float | None = CEBOX_LAMBDA,
        strength: float = STRENGTH,
        gamma: float = GAMMA,
    ) -> PromptSettings:
        """Settings whose unset prompt switches come from ``sam``'s profile.

        See :func:`~napari_samrefine.models.profile.resolve_prompt_use` (it warns
        about forced prompt kinds the model was not trained with).
        """
        use = resolve_prompt_use(
            sam, use_points=use_points, use_box=use_box, use_mask=use_mask,
            use_negative_point=use_negative_point,
        )
        switches = PromptSwitches(
            use["use_points"], use["use_box"], use["use_mask"], use["use_negative_point"]
        )
        return cls(switches=switches, cebox=cebox or None, strength=strength, gamma=gamma)

    def excavate(self, obj: ObjectMask, embedding: ImageEmbedding, grid=None) -> ObjectPrompts:
        """Mine one object's prompts with these settings (``grid``: prepared CEBox features)."""
        return excavate_object(
            obj,
            frame=embedding.frame,
            embedding=grid if grid is not None else embedding,
            cebox=self.cebox,
            strength=self.strength,
            gamma=self.gamma,
            use_negative_point=self.switches.negative_point,
        )


@dataclass(frozen=True)
class ChosenLogits:
    """The chosen candidate's low-res logits, cropped to what one region draws on.

    At most ``lowres_size ** 2`` floats (256 kB for the published models) however
    large the object; :meth:`upsample` recomputes the region's logits exactly as
    the cascade computed them when it thresholded the mask.

    Attributes
    ----------
    frame : SamFrame
        Frame of the image (or tile) the logits belong to.
    values : numpy.ndarray
        float32 crop of the low-res logits.
    offset : (int, int)
        Position of ``values`` in the low-res frame.
    region : (int, int, int, int)
        Half-open (y0, x0, y1, x1) of ``frame``'s original frame to upsample.
    """

    frame: SamFrame
    values: np.ndarray
    offset: tuple[int, int]
    region: tuple[int, int, int, int]

    @classmethod
    def crop(cls, frame: SamFrame, lowres: np.ndarray, region) -> ChosenLogits:
        """Keep the crop of ``lowres`` (L, L) that ``region`` draws on."""
        r0, c0, r1, c1 = frame.lowres_support(region)
        return cls(frame, np.array(lowres[r0:r1, c0:c1], np.float32), (r0, c0), tuple(region))

    def upsample(self, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """float32 logits inside ``region``, or inside ``box``, a box within ``region``.

        Each pixel's logit is computed from the same low-res values with the same
        weights whatever the box, so a box's logits equal the region's cropped.
        """
        return self.frame.lowres_crop_to_original(
            self.values, self.offset, self.region if box is None else box
        )


@dataclass
class ObjectState:
    """One object as it moves through the cascade.

    ``mask`` is the current binary mask (the coarse one before the first
    iteration). ``region`` (half-open y0, x0, y1, x1) is the box outside which
    the last iteration's chosen logits cannot be positive; ``chosen`` keeps those
    logits at low resolution and :meth:`region_logits` upsamples them inside
    ``region``. ``zoom`` is the view's: pixels of the model's input per image
    pixel (set by whoever chose the view; NaN until then).
    """

    coarse: ObjectMask
    mask: ObjectMask
    status: str = "ok"
    iterations: int = 0
    predicted_iou: float = float("nan")
    region: tuple[int, int, int, int] | None = None
    prompts: ObjectPrompts | None = None
    active: bool = True
    history: list[float] = field(default_factory=list)
    chosen: ChosenLogits | None = None
    zoom: float = float("nan")

    def region_logits(self, box: tuple[int, int, int, int] | None = None) -> np.ndarray | None:
        """The chosen candidate's float32 logits inside ``region`` or a box within it.

        ``box`` is in the frame of ``region`` (a state moved out of a tile keeps
        its ``chosen`` logits in the tile's frame). None without output.
        """
        if self.chosen is None:
            return None
        if box is None:
            return self.chosen.upsample()
        dy = self.region[0] - self.chosen.region[0]
        dx = self.region[1] - self.chosen.region[1]
        y0, x0, y1, x1 = box
        return self.chosen.upsample((y0 - dy, x0 - dx, y1 - dy, x1 - dx))


def _update(state: ObjectState, embedding: ImageEmbedding, lowres, iou: float, convergence):
    frame = embedding.frame
    low = lowres.numpy()
    region = frame.lowres_extent(low > 0)
    state.iterations += 1
    state.predicted_iou = float(iou)
    if region is not None:
        # only the low-res crop is kept (the region's logits would take 4 bytes a pixel);
        # write-back upsamples it again with the same arithmetic
        chosen = ChosenLogits.crop(frame, low, region)
        new = trim(chosen.upsample() > 0, region[:2], state.mask.label_id, state.mask.image_shape)
    if region is None or new.area == 0:
        state.active = False
        if state.chosen is None:
            # the first iteration: nothing refined yet, the coarse mask stays
            state.status = "empty-output"
        else:
            # a later iteration: the previous iteration's mask and logits stay
            state.status = "kept-previous"
        return
    change = crop_iou(state.mask, new)
    state.history.append(change)
    state.mask, state.chosen, state.region = new, chosen, region
    if convergence is not None and change >= convergence:
        state.active = False


def _point_count(p: ObjectPrompts, switches: PromptSwitches) -> int:
    """How many points :func:`~.decode.prompt_arrays` gives SAM for ``p``."""
    return len(p.points) if switches.negative_point else int(np.count_nonzero(p.point_labels))


def _decode_chunk(sam, embedding, mined, rows, switches, **decoding):
    """Decode a chunk's mined prompts with the given ones (``rows``: position -> prompts)
    in place of theirs; returns the low-res logits, predicted IoUs and prompts used.

    The other objects' decoder call is the one without given prompts, tensor for
    tensor (SAM reads every point slot, padding included): given prompts take their
    object's row, padded to the mined prompts' number of points; given prompts with
    more points than that are decoded in a call of their own.
    """
    if not rows:
        decoded = decode_prompts(sam, embedding, mined, switches, **decoding)
        return decoded.lowres, decoded.iou, mined
    slots = max(1, *(_point_count(p, switches) for p in mined))
    fits = {i: p for i, p in rows.items() if not switches.points or _point_count(p, switches) <= slots}
    batch = [fits.get(i, p) for i, p in enumerate(mined)]
    arrays = prompt_arrays(batch, switches)
    if arrays["points"] is not None and arrays["points"].shape[1] < slots:
        pad = slots - arrays["points"].shape[1]
        arrays["points"] = np.pad(arrays["points"], ((0, 0), (0, pad), (0, 0)))
        arrays["point_labels"] = np.pad(arrays["point_labels"], ((0, 0), (0, pad)), constant_values=-1)
    decoded = decode_batch(sam, embedding, **arrays, **decoding)
    lowres, iou = decoded.lowres, decoded.iou.copy()
    rest = [i for i in rows if i not in fits]
    if rest:
        extra = decode_prompts(sam, embedding, [rows[i] for i in rest], switches, **decoding)
        for j, i in enumerate(rest):
            lowres[i], iou[i], batch[i] = extra.lowres[j], extra.iou[j], rows[i]
    return lowres, iou, batch


def run_cascade(
    sam,
    embedding: ImageEmbedding,
    objects: Sequence[ObjectMask],
    settings: PromptSettings = PromptSettings(),
    *,
    iterations: int = ITERATIONS,
    convergence: float | None = CONVERGENCE,
    batch_size: int = BATCH_SIZE,
    iou_adaptor=None,
    step: Callable[[int, str], None] | None = None,
    decoder: str = "lean",
    prompts: Mapping[int, ObjectPrompts] | None = None,
) -> list[ObjectState]:
    """Refine all objects of one image through ``iterations`` cascaded SAM passes.

    Each iteration rebuilds every active object's prompts from its current binary
    mask and decodes all of them in batched calls; low-res logits are not fed
    back. An object leaves the cascade when its output is empty or when the IoU
    of its mask with the previous iteration's reaches ``convergence``. An empty
    output at the first iteration leaves the coarse mask (status
    "empty-output"); at a later one, the previous iteration's mask (status
    "kept-previous").

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
    embedding : ImageEmbedding
        The image's embedding (one encoder pass, reused by every iteration).
    objects : sequence of ObjectMask
        Coarse masks (non-empty).
    settings : PromptSettings
    iterations : int
        Maximum number of cascade iterations (T).
    convergence : float or None
        IoU with the previous iteration at which an object stops; None runs all
        iterations for every object.
    batch_size : int
        Objects per decoder call.
    iou_adaptor : optional
        SAMRefiner++ adaptor used to select candidates.
    step : callable, optional
        Called as ``step(iteration, message)`` after every decoder call and every
        few prompt excavations (progress and cancellation; it may raise to stop).
    decoder : {"lean", "reference"}
        "lean" (default) decodes with
        :class:`~napari_samrefine.engine.lean_decoder.LeanMaskDecoder`, built once for
        the image; "reference" with segment-anything's modules (same masks to
        float rounding, slower).
    prompts : mapping of int to ObjectPrompts, optional
        Given prompts (e.g. edited ones) by label id, in the embedding's frame:
        at the first iteration those objects are decoded from them instead of
        from prompts mined from their coarse mask (their mask prompt is rebuilt
        in the embedding's frame, :func:`~.given.prompts_for_frame`); later
        iterations mine prompts from the mask as for every object.

    Returns
    -------
    list of ObjectState
        In the order of ``objects``.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    states = [ObjectState(coarse=o, mask=o) for o in objects]
    given = {} if prompts is None else {int(k): v for k, v in prompts.items()}
    # CEBox features, prepared once per image rather than per object
    grid = FeatureGrid.from_embedding(embedding) if settings.cebox else None
    # decoder terms that depend only on the image, likewise prepared once
    if decoder not in ("lean", "reference"):
        raise ValueError(f"decoder must be 'lean' or 'reference', got {decoder!r}")
    if decoder == "lean":
        decoder = lean_decoder(sam, embedding) or "reference"
    for t in range(iterations):
        active = [s for s in states if s.active]
        if not active:
            break
        for start in range(0, len(active), batch_size):
            chunk = active[start : start + batch_size]
            mined = []
            for k, s in enumerate(chunk):
                mined.append(settings.excavate(s.mask, embedding, grid))
                if step is not None and k % 4 == 3:  # progress (and Cancel) between objects too
                    step(t, f"iteration {t + 1}/{iterations}: prompts of {start + k + 1}/{len(active)} objects")
            rows = {} if t else {
                i: prompts_for_frame(given[s.coarse.label_id], embedding.frame)
                for i, s in enumerate(chunk) if s.coarse.label_id in given
            }
            lowres, iou, batch = _decode_chunk(
                sam, embedding, mined, rows, settings.switches,
                batch_size=batch_size, iou_adaptor=iou_adaptor, decoder=decoder,
            )
            for i, s in enumerate(chunk):
                # the low-res mask input (256 kB for published models) is not kept:
                # it is only needed for this decoder call and can be recomputed
                s.prompts = replace(batch[i], mask_input=None)
                _update(s, embedding, lowres[i], iou[i], convergence)
            if step is not None:
                step(t, f"iteration {t + 1}/{iterations}: {start + len(chunk)}/{len(active)} objects")
    return states
