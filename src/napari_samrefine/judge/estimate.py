"""How long a JFS run will take, said before it starts: encoder passes counted, times one pass.

On a CPU the judge's time goes into image-encoder passes (one ViT-B pass takes
seconds there; the prompt encoder, the mask decoder and the bookkeeping take a
small fraction of that). :func:`count_work` counts, from the inputs and
without running a model, the passes :func:`~napari_samrefine.judge.judge_refinement`
makes, as judge/jfs.py, judge/fss_sam.py, judge/masking.py and judge/crops.py
do the work:

* "sam" backend, per judged object: its query crop (the context window
  around the object) is encoded once, plus for IM and HM once per distinct
  non-empty mask with the outside filled (coarse and refined masks: two, or
  one when the refined object is empty or the same as the coarse one).
  Embeddings are cached by image content, so an image is never encoded twice
  in a run: objects whose windows coincide (small images) share one crop.
* "sam" backend, supports: the ``k`` support objects closest in size to each
  judged object (:func:`~napari_samrefine.judge.crops.pick_supports`) give
  the support crops; each distinct crop is encoded once for the whole run.
* "seggpt" backend: one SegGPT forward pass per prediction, two per (object,
  support) pair (one when the refined object is empty); nothing is cached.

Embeddings already in the cache (a rerun, the disk cache) are not encoded
again, so the count is what a first run costs.

The time of one pass is, in this order:

1. measured: the median of the passes :func:`timing_passes` timed in this
   process for the same encoder on the same device (the judge widget times
   every run);
2. a first guess from the encoder's size: its floating-point operations per
   pass (:data:`ENCODER_GFLOPS`, counted with
   :class:`torch.utils.flop_counter.FlopCounterMode`) divided by the rate at
   which this device multiplies float32 matrices (:func:`device_gflops`,
   measured once per process in a fraction of a second), divided by
   :data:`ENCODER_EFFICIENCY`.

Estimates are said as "about": the load of other programs alone changes a
CPU pass several-fold.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from napari_samrefine.judge.crops import context_window, pick_supports, support_candidates
from napari_samrefine.labels.objects import object_slices

__all__ = [
    "ENCODER_GFLOPS", "ENCODER_EFFICIENCY", "LONG_SECONDS", "JudgeWork", "JudgeEstimate",
    "count_work", "default_k", "device_gflops", "encoder_name", "estimate_judge",
    "pass_seconds", "remember_pass", "timing_passes",
]  # fmt: skip

ENCODER_GFLOPS: dict[str, float] = {
    "vit_b": 972.1, "vit_l": 2985.7, "vit_h": 5961.1, "vit_t": 77.5, "lite_medsam": 74.9,
    "seggpt": 1589.7,
}  # fmt: skip
"""GFLOPs of one encoder pass: SAM's ViTs and MobileSAM's TinyViT at 1024 px, LiteMedSAM's
TinyViT at 256 px (every crop is resized to that input), SegGPT ViT-L on a 448 x 448
query and prompt (``SegGptConfig()``, the published model's). Counted with
``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add) on random
weights; the architecture, not the weights, sets the count."""

ENCODER_EFFICIENCY = 0.5
"""Fraction of the device's float32 matrix-multiply rate (:func:`device_gflops`) that an
encoder pass reaches (attention, normalisation and memory traffic run below the peak).
Measured on the 2-core development CPU (AVX-512, shared with other jobs) with random
ViT-B and ``load_sam``'s fast encoder (sdpa): 0.39 to 0.61 over six passes with one and
two threads, median 0.5 (docs/napari.md, judge section). Only the first guess uses it;
timed passes replace it."""

LONG_SECONDS = 120.0
"""Estimates above this are said to be long, with the ways to shorten the run (the widget)."""

_MATMUL_SIZE = 1024


@dataclass(frozen=True)
class JudgeWork:
    """What a JFS run will compute, counted before it runs (see the module doc).

    Attributes
    ----------
    objects : int
        Objects to judge.
    k : int
        Support crops per object actually used (``k``, or fewer when the
        supports hold fewer objects).
    query_passes, support_passes : int
        Encoder passes of the "sam" backend for the query crops and the
        support crops.
    predictions : int
        Few-shot predictions (calls of the backend's ``predict``).
    backend : str
        "sam" or "seggpt".
    """

    objects: int
    k: int
    query_passes: int
    support_passes: int
    predictions: int
    backend: str

    @property
    def passes(self) -> int:
        """Encoder (SAM) or model (SegGPT) passes of the whole run."""
        if self.backend == "seggpt":
            return self.predictions
        return self.query_passes + self.support_passes


def count_work(
    coarse_labels: np.ndarray,
    refined_labels: np.ndarray,
    support_labels: Sequence[np.ndarray],
    *,
    k: int = 3,
    masking: str = "hm",
    backend: str = "sam",
    label_ids: Iterable[int] | None = None,
    context: float = 1.0,
    min_context: int = 32,
) -> JudgeWork:
    """Count the passes a :func:`~napari_samrefine.judge.judge_refinement` run makes.

    Parameters
    ----------
    coarse_labels, refined_labels : numpy.ndarray
        The 2D label planes to judge (the arguments of ``judge_refinement``).
    support_labels : sequence of numpy.ndarray
        The support label planes.
    k : int
        Support crops per object.
    masking : {"hm", "fm", "im"}
        Masking of the "sam" backend.
    backend : {"sam", "seggpt"}
        The few-shot model.
    label_ids : iterable of int, optional
        Judge only these objects (ids missing from the coarse labels are not
        counted: the run itself refuses them).
    context, min_context : float, int
        The crop margins of the run (``judge_refinement``'s defaults).

    Returns
    -------
    JudgeWork
        Nothing is judged, no model is run: invalid inputs give a count, and
        ``judge_refinement`` says what is wrong with them.
    """
    coarse, refined = np.asarray(coarse_labels), np.asarray(refined_labels)
    # boxes by id: memory grows with the objects, not with the largest id
    coarse_slices = object_slices(coarse)
    refined_slices = object_slices(refined) if refined.shape == coarse.shape else {}
    ids = list(coarse_slices)
    if label_ids is not None:
        wanted = {int(i) for i in label_ids}
        ids = [i for i in ids if i in wanted]
    slabels = [np.asarray(s) for s in support_labels]
    candidates = support_candidates(slabels)
    per_object = min(int(k), len(candidates))
    masked = str(masking).lower() in ("im", "hm")
    masks = predictions = 0
    windows: set[tuple[int, ...]] = set()  # query crops: the same window is the same image
    supports: set[tuple[int, ...]] = set()  # support crops, by pair and window
    for lid in ids:
        cs = coarse_slices[lid]
        rs = refined_slices.get(lid)
        box = [cs[0].start, cs[1].start, cs[0].stop, cs[1].stop]
        if rs is not None:
            box = [min(box[0], rs[0].start), min(box[1], rs[1].start),
                   max(box[2], rs[0].stop), max(box[3], rs[1].stop)]  # fmt: skip
        windows.add(context_window(tuple(box), coarse.shape, context, min_context))
        # IM encodes each distinct mask once: the refined one adds a pass unless empty or the same
        same = rs == cs and np.array_equal(refined[cs] == lid, coarse[cs] == lid)
        masks += 1 if rs is None or same else 2
        predictions += per_object * (1 if rs is None else 2)
        area = int(np.count_nonzero(coarse[cs] == lid))
        for cand in pick_supports(area, candidates, per_object):
            window = context_window(cand.box, slabels[cand.pair].shape, context, min_context)
            supports.add((cand.pair, *window))
    query = len(windows) + (masks if masked else 0)
    return JudgeWork(len(ids), per_object, query, len(supports), predictions, str(backend).lower())


def default_k(device: str) -> int:
    """The widget's default ``k`` on ``device``: 3 (JFS's k) on a GPU, 1 on a CPU.

    Each support adds about one encoder pass per object on a CPU, where a pass
    of ViT-B takes seconds: k=1 keeps a first run short there.
    """
    return 1 if str(device).split(":")[0] == "cpu" else 3


def encoder_name(model) -> str:
    """The :data:`ENCODER_GFLOPS` key of a loaded SAM (or SegGPT) model.

    ``"custom:<parameters>"`` for other architectures (small test models,
    fine-tuned variants of other sizes): their passes are timed under that
    name, and their first guess is made from their parameter count.
    """
    if type(model).__name__.startswith("SegGpt"):
        return "seggpt"
    encoder = getattr(model, "image_encoder", model)
    params = sum(p.numel() for p in encoder.parameters())
    size = getattr(encoder, "img_size", None)
    if type(encoder).__name__ == "TinyViT":
        if abs(params - 5.74e6) < 0.05e6:
            return "lite_medsam" if size == 256 else "vit_t"  # LiteMedSAM's 256 px input
    else:
        proj = getattr(getattr(encoder, "patch_embed", None), "proj", None)
        dims = (getattr(proj, "out_channels", 0), len(getattr(encoder, "blocks", ())))
        known = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}
        if dims in known and size == 1024:
            return known[dims]
    return f"custom:{params}"


def _custom_gflops(name: str) -> float:
    """First guess of an unknown encoder: 2 FLOPs per parameter and token at SAM's 64 x 64 grid.

    Without a parameter count (a checkpoint not loaded yet), ViT-B's is taken.
    """
    params = int(name.split(":", 1)[1]) if ":" in name else 90_000_000
    return 2.0 * params * 64 * 64 / 1e9


_lock = threading.Lock()
_measured: dict[tuple[str, str], list[float]] = {}
_rates: dict[str, float] = {}


def _device_key(device) -> str:
    text = str(device)
    return "cuda:0" if text == "cuda" else text


def remember_pass(encoder: str, device, seconds: float) -> None:
    """Record a measured pass of ``encoder`` on ``device`` (the last 20 are kept)."""
    with _lock:
        times = _measured.setdefault((encoder, _device_key(device)), [])
        times.append(float(seconds))
        del times[:-20]


def device_gflops(device) -> float:
    """The float32 matrix-multiply rate of ``device`` in GFLOP/s, measured once per process.

    Multiplies two 1024 x 1024 float32 matrices until 0.2 s have passed (at
    least 3 times) and keeps the fastest; takes about a fifth of a second.
    """
    import torch

    key = _device_key(device)
    with _lock:
        if key in _rates:
            return _rates[key]
    dev = torch.device(key)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        elif dev.type == "mps":
            torch.mps.synchronize()

    a = torch.rand(_MATMUL_SIZE, _MATMUL_SIZE, device=dev)
    b = torch.rand(_MATMUL_SIZE, _MATMUL_SIZE, device=dev)
    with torch.no_grad():
        (a @ b).sum().item()  # warm-up
        best, start, n = float("inf"), time.perf_counter(), 0
        while n < 3 or time.perf_counter() - start < 0.2:
            t0 = time.perf_counter()
            a @ b
            sync()
            best = min(best, time.perf_counter() - t0)
            n += 1
    rate = 2 * _MATMUL_SIZE**3 / max(best, 1e-9) / 1e9
    with _lock:
        _rates[key] = rate
    return rate


def pass_seconds(encoder: str, device) -> tuple[float, bool]:
    """Seconds of one pass of ``encoder`` on ``device``, and whether they were measured.

    The median of this process's measured passes (:func:`remember_pass`), else the
    first guess from :data:`ENCODER_GFLOPS` and :func:`device_gflops` (see the module doc).
    """
    with _lock:
        times = list(_measured.get((encoder, _device_key(device)), ()))
    if times:
        return statistics.median(times), True
    gflops = ENCODER_GFLOPS.get(encoder) or _custom_gflops(encoder)
    return gflops / (device_gflops(device) * ENCODER_EFFICIENCY), False


@contextmanager
def timing_passes(module, encoder: str, device) -> Iterator[None]:
    """Time every forward pass of ``module`` in this thread and :func:`remember_pass` it.

    Parameters
    ----------
    module : torch.nn.Module or None
        The encoder (``sam.image_encoder``) or the whole SegGPT model; None:
        nothing is timed.
    encoder : str
        Its :func:`encoder_name`.
    device : str or torch.device
        Where it runs.
    """
    if module is None:
        yield
        return
    owner = threading.get_ident()
    start: list[float] = []

    def before(_module, _args) -> None:
        if threading.get_ident() == owner:
            start[:] = [time.perf_counter()]

    def after(_module, _args, _output) -> None:
        if threading.get_ident() == owner and start:
            remember_pass(encoder, device, time.perf_counter() - start.pop())

    handles = [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class JudgeEstimate:
    """A run's counted work and its estimated time.

    Attributes
    ----------
    work : JudgeWork
    pass_seconds : float
        Seconds of one pass.
    measured : bool
        Whether ``pass_seconds`` comes from passes timed in this process (else
        from the encoder's size).
    device : str
    """

    work: JudgeWork
    pass_seconds: float
    measured: bool
    device: str

    @property
    def seconds(self) -> float:
        """Estimated seconds of the run (passes times the time of one)."""
        return self.work.passes * self.pass_seconds


def estimate_judge(work: JudgeWork, encoder: str, device) -> JudgeEstimate:
    """The estimate of ``work`` with ``encoder`` on ``device`` (see :func:`pass_seconds`)."""
    seconds, measured = pass_seconds(encoder, device)
    return JudgeEstimate(work, seconds, measured, _device_key(device))
