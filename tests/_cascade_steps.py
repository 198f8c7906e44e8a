"""Comparing two computations of SAMRefiner's cascade where float32 defines the result.

Two computations of the same function in float32 (the lean decoder and
segment-anything's, cropped and whole-image prompts, one CPU's kernels and
another's) agree to rounding, not bit for bit. What they must agree on:

- every logit, within :data:`LOGIT_TOL`;
- every pixel's label where the deciding logit is clear of the threshold by
  :data:`MARGIN` (a pixel whose logit is within the margin of 0, or of the
  winning object's logit, may go either way);
- each cascade iteration's output *from the same previous mask*: a cascade feeds
  its masks back, so one pixel decided differently at iteration 1 changes the
  prompts of iteration 2 and the difference grows with every iteration (127
  pixels after 2 iterations on one CPU, 3413 under ``MKL_CBWR=COMPATIBLE``).
  :func:`step_cascade` therefore runs the cascade one iteration at a time and
  gives the reference the same input masks at every iteration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from napari_samrefine.labels.objects import ObjectMask
from napari_samrefine.samrefiner.cascade import REFINED_STATUSES, ObjectState, run_cascade

LOGIT_TOL = 1e-5
"""How far two float32 computations of one logit (or predicted IoU) may be apart.

float32 keeps 24 bits (a relative rounding of 6e-8 per operation); the decoder's
logits (up to about 0.3 with the tiny random SAM) come out of some twenty layers
of sums over up to 4096 terms, and differ between the lean and the reference
decoder, and between CPU kernels (AVX-512, AVX2, ``ATEN_CPU_CAPABILITY=default``,
``MKL_CBWR=COMPATIBLE``), by at most 5e-7 (measured). 1e-5 is 20 times that and
still 1e-4 of the logits' range: any real change (another prompt, a wrong term,
a misplaced crop) moves logits by far more."""

MARGIN = 2 * LOGIT_TOL
"""A decision is defined where its logit is clear of the threshold by this much: two
computations each within :data:`LOGIT_TOL` of the exact value can disagree on
``logit > 0`` (or on which of two objects' logits is higher) only inside it."""


@dataclass
class Output:
    """One object's output of one cascade iteration, on the whole image.

    ``logits`` is NaN where the computation did not keep them (outside the region
    in which they can be positive); ``mask`` is all False for an empty output.
    ``active`` is the convergence decision (None where there is none to compare).
    """

    logits: np.ndarray
    mask: np.ndarray
    iou: float
    active: bool | None = None


def state_output(state: ObjectState, shape: tuple[int, int]) -> Output:
    """The :class:`Output` of a state after one iteration of :func:`run_cascade`."""
    logits = np.full(shape, np.nan, np.float32)
    mask = np.zeros(shape, bool)
    if state.status in REFINED_STATUSES:
        y0, x0, y1, x1 = state.region
        logits[y0:y1, x0:x1] = state.region_logits()
        mask = state.mask.to_image()
    return Output(logits, mask, state.predicted_iou, state.active)


def assert_outputs_agree(ours: Output, ref: Output, what: str = "") -> dict:
    """Logits within :data:`LOGIT_TOL`, masks equal wherever the logit is clear of :data:`MARGIN`.

    Returns counts: ``compared`` logits, ``differ`` (pixels decided differently),
    ``undecided`` (mask pixels of the reference within the margin of 0).
    """
    known = np.isfinite(ours.logits) & np.isfinite(ref.logits)
    gap = np.abs(ours.logits[known] - ref.logits[known])
    assert gap.size == 0 or gap.max() <= LOGIT_TOL, f"{what}: logits differ by {gap.max():.3g}"
    assert abs(ours.iou - ref.iou) <= LOGIT_TOL, f"{what}: predicted IoU {ours.iou} != {ref.iou}"
    differ = ours.mask != ref.mask
    # a pixel decided differently is positive on one side: that side's logit is known
    deciding = np.fmax(np.abs(np.where(ours.mask, ours.logits, np.nan)),
                       np.abs(np.where(ref.mask, ref.logits, np.nan)))[differ]
    assert (deciding < MARGIN).all(), f"{what}: {np.sum(deciding >= MARGIN)} pixels differ beyond ties"
    if ours.active is not None and ref.active is not None and not differ.any():
        # the same mask: the same change from the same previous mask, the same decision
        assert ours.active == ref.active, f"{what}: convergence decided differently"
    known_ref = np.isfinite(ref.logits)
    return dict(
        compared=int(known.sum()),
        differ=int(differ.sum()),
        undecided=int(np.sum(ref.mask & (np.abs(np.where(known_ref, ref.logits, 1.0)) < MARGIN))),
        mask=int(ref.mask.sum()),
    )


@dataclass
class Stepped:
    """The result of :func:`step_cascade`.

    ``states``: the cascade's final states (as :func:`run_cascade` with
    ``iterations`` would return them, in the order of the objects); ``final``:
    the reference's output at each object's last non-empty iteration of ours
    (None for objects whose first output was empty); ``counts``: the summed
    counts of :func:`assert_outputs_agree`; ``iterations``: how many outputs of
    each object were compared.
    """

    states: list[ObjectState]
    final: list[Output | None]
    counts: dict
    iterations: list[int]


def step_cascade(
    sam,
    embedding,
    objects: Sequence[ObjectMask],
    settings,
    reference: Callable[[list[ObjectMask]], list[Output]],
    *,
    iterations: int,
    convergence: float | None = 0.99,
    batch_size: int = 32,
    decoder: str = "lean",
) -> Stepped:
    """Run :func:`run_cascade` one iteration at a time and compare every iteration's output
    with ``reference``'s from the same input masks.

    The cascade does not feed logits back (:func:`run_cascade`): an iteration is a
    function of the current masks, so ``iterations`` one-iteration runs, each from
    the masks the previous one made, are the cascade. ``reference(masks)`` returns
    one :class:`Output` per mask.
    """
    shape = objects[0].image_shape
    n = len(objects)
    current = list(objects)
    last: list[ObjectState | None] = [None] * n
    final: list[Output | None] = [None] * n
    steps = [0] * n
    status = ["ok"] * n
    active = list(range(n))
    counts = dict(compared=0, differ=0, undecided=0, mask=0)
    for t in range(iterations):
        if not active:
            break
        masks = [current[i] for i in active]
        ours = run_cascade(sam, embedding, masks, settings, iterations=1, convergence=convergence,
                           batch_size=batch_size, decoder=decoder)
        theirs = reference(masks)
        still = []
        for i, state, ref in zip(active, ours, theirs, strict=True):
            out = state_output(state, shape)
            found = assert_outputs_agree(out, ref, f"object {objects[i].label_id}, iteration {t + 1}")
            for k, v in found.items():
                counts[k] += v
            steps[i] += 1
            if state.status == "empty-output":
                status[i] = "empty-output" if t == 0 else "kept-previous"
                continue
            last[i], final[i], current[i] = state, ref, state.mask
            if state.active:
                still.append(i)
        active = still
    states = []
    for i, obj in enumerate(objects):
        if last[i] is None:  # empty at the first iteration: the coarse mask stays
            states.append(ObjectState(coarse=obj, mask=obj, status="empty-output", iterations=1))
        else:
            states.append(replace(last[i], coarse=obj, status=status[i], iterations=steps[i]))
    return Stepped(states, final, counts, steps)


def assert_same_up_to_ties(ours: np.ndarray, reference: np.ndarray, ref_logits: dict,
                           ours_logits: dict | None = None) -> int:
    """Two written-back label images differ only where the decision is a float-rounding tie.

    ``ref_logits`` (and ``ours_logits``) map the refined label ids to whole-image
    logits, NaN where unknown (outside the region where they can be positive).
    Where ours says ``b`` and the reference ``a``, the reference's logits of
    ``a`` and ``b`` (0 for a label that is no refined object; ours where the
    reference's is unknown) must be within :data:`MARGIN`: the reference chose
    ``a``, ours ``b``, so with logits within :data:`LOGIT_TOL` of each other
    the two sit within twice that. Returns the number of pixels that differ.
    """
    ours_logits = ours_logits or {}

    def logit(label, p):
        for table in (ref_logits, ours_logits):
            if label in table and np.isfinite(table[label].ravel()[p]):
                return float(table[label].ravel()[p])
        return 0.0

    differ = np.flatnonzero(ours.ravel() != reference.ravel())
    for p in differ:
        a, b = int(reference.ravel()[p]), int(ours.ravel()[p])
        la, lb = logit(a, p), logit(b, p)
        assert abs(la - lb) < MARGIN, f"pixel {p}: reference {a} (logit {la}), ours {b} (logit {lb})"
    return differ.size
