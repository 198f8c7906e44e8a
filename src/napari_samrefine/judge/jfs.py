"""JFS: judge a refinement with few-shot segmentation run in reverse (SPEC section 5).

For each object, the query image with the coarse mask Mc, then with the
refined mask Mr, serves as the *example* of a few-shot segmentation model
that searches the same kind of object in a support image with known labels:

    SMP1 = FSS(Iq, Mc -> Is),  SMP2 = FSS(Iq, Mr -> Is)
    E1 = IoU(SMP1, Ms),        E2 = IoU(SMP2, Ms),   delta = E2 - E1

The better mask of the object is the one that describes it better, so it
leads the FSS model to a better support mask prediction (SMP).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from napari_samrefine._progress import ProgressCallback, report
from napari_samrefine.engine.embedding import EmbeddingCache
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.judge.crops import (
    SupportCrop,
    context_window,
    pick_supports,
    support_candidates,
)
from napari_samrefine.judge.fss import FewShotSegmenter, MaskTransferFSS, check_prediction
from napari_samrefine.judge.masking import MASKING_MODES
from napari_samrefine.judge.result import JudgeResult, ObjectJudgement, SupportPrediction
from napari_samrefine.judge.verdicts import (
    IMPROVED,
    accepted_labels,
    decide,
    score_support,
)
from napari_samrefine.labels.iou import iou
from napari_samrefine.labels.objects import object_slices
from napari_samrefine.labels.values import label_plane

__all__ = ["judge_refinement", "BACKENDS"]

BACKENDS = ("sam", "seggpt", "mask-transfer")


def _plane_shape(image: np.ndarray, channel_axis: int | None, name: str) -> np.ndarray:
    img = np.asarray(image)
    if channel_axis is not None:
        img = np.moveaxis(img, channel_axis, -1)
    if img.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be one 2D plane, optionally with a channel axis, got shape "
            f"{img.shape}: pass a single plane (image[z]) and say channel_axis= for channels."
        )
    return img


def _pairs(support_image, support_labels) -> tuple[list, list]:
    many = isinstance(support_image, list | tuple)
    if many != isinstance(support_labels, list | tuple):
        raise ValueError(
            "Pass support_image and support_labels both as single arrays or both as lists "
            "of the same length (one label image per support image)."
        )
    images = list(support_image) if many else [support_image]
    labels = list(support_labels) if many else [support_labels]
    if len(images) != len(labels) or not images:
        raise ValueError(
            f"Got {len(images)} support images and {len(labels)} support label images: "
            "pass one label image per support image (at least one pair)."
        )
    return images, labels


def _present(slices: dict) -> set[int]:
    return set(slices)


def _resolve_backend(backend, sam, masking, cache, seggpt_model) -> FewShotSegmenter:
    if not isinstance(backend, str):
        if not isinstance(backend, FewShotSegmenter):
            raise TypeError(
                f"backend={backend!r} is neither one of {BACKENDS} nor an object with a "
                "predict(query_image, query_mask, support_image) method."
            )
        return backend
    name = backend.lower()
    if name == "sam":
        from napari_samrefine.judge.fss_sam import PerSamFSS

        if sam is None:
            from napari_samrefine import load_sam

            sam = load_sam()
        return PerSamFSS(sam, masking=masking, cache=cache)
    if name == "seggpt":
        from napari_samrefine.judge.fss_seggpt import SegGptFSS

        return SegGptFSS(seggpt_model, device=str(sam.device) if sam is not None else "cpu")
    if name == "mask-transfer":
        return MaskTransferFSS()
    raise ValueError(f"backend={backend!r} is not one of {BACKENDS} (or an FSS object).")


def judge_refinement(
    image: np.ndarray,
    coarse_labels: np.ndarray,
    refined_labels: np.ndarray,
    support_image: np.ndarray | Sequence[np.ndarray],
    support_labels: np.ndarray | Sequence[np.ndarray],
    *,
    sam=None,
    backend: str | FewShotSegmenter = "sam",
    masking: str = "hm",
    k: int = 3,
    tau: float = 0.02,
    min_agreement: float = 2 / 3,
    similar_iou: float = 0.95,
    score: str = "hard",
    context: float = 1.0,
    min_context: int = 32,
    label_ids: Iterable[int] | None = None,
    channel: int | str | None = None,
    channel_axis: int | None = None,
    seggpt_model: str = "BAAI/seggpt-vit-large",
    embedding_cache: EmbeddingCache | None = None,
    return_predictions: bool = False,
    progress: ProgressCallback | None = None,
) -> JudgeResult:
    """Judge, object by object, whether a refinement improved a coarse segmentation (JFS).

    Parameters
    ----------
    image : numpy.ndarray
        The query image, one 2D plane (grey, RGB or multichannel).
    coarse_labels, refined_labels : numpy.ndarray
        Integer label images of ``image`` (same shape as its plane); the refined
        labels must use the coarse labels' ids (a refined object is judged
        against the coarse object with the same id).
    support_image, support_labels : array or list of arrays
        One or more support pairs: images of the same kind of objects with
        trusted labels (e.g. a hand-corrected field of view).
    sam : segment_anything.modeling.Sam, optional
        Model of the "sam" backend; loaded with :func:`napari_samrefine.load_sam`
        when not given.
    backend : {"sam", "seggpt", "mask-transfer"} or FewShotSegmenter
        The FSS model: PerSAM-style on ``sam`` (default), SegGPT (needs the
        ``seggpt`` extra and ``seggpt_model``), the shape-prior baseline, or any
        object with ``predict(query_image, query_mask, support_image)``.
    masking : {"hm", "fm", "im"}
        Feature masking of the "sam" backend (hybrid, feature, input masking).
    k : int
        Support crops per object (k-shot): the k support objects closest in
        area to the object, over all support pairs.
    tau : float
        Delta margin of a verdict.
    min_agreement : float
        Fraction of the supports that must share the mean delta's sign.
    similar_iou : float
        IoU(coarse, refined) at or above which the verdict is "uncertain".
    score : {"hard", "soft"}
        Which delta decides the verdict (both are reported).
    context, min_context : float, int
        Crop margin around each object: ``max(context * object size, min_context)``
        pixels on every side.
    label_ids : iterable of int, optional
        Judge only these objects (the others stay coarse in ``accepted``).
    channel, channel_axis
        Channel choice for multichannel images (see :func:`to_sam_rgb`); applied
        to the query and the support images.
    seggpt_model : str
        Local folder or hub id of the "seggpt" backend's model.
    embedding_cache : EmbeddingCache, optional
        Cache of SAM embeddings (default: the package-wide cache).
    return_predictions : bool
        Keep the support mask predictions (SMP1, SMP2) in the result.
    progress : callable, optional
        ``progress(done, total, message)``, called once the objects and their
        supports are listed (``done`` 0, ``total`` the (object, support)
        evaluations to make) and after each evaluation, so the caller can time
        the first evaluations and tell the time left; raise
        :class:`napari_samrefine.Cancelled` in it to stop (nothing passed in is
        modified).

    Returns
    -------
    JudgeResult
        ``.table()`` (per-object E1, E2, delta, soft delta, IoU(coarse, refined),
        k, agreement, verdict), ``.accepted`` labels, ``.verdict_image()``.

    Raises
    ------
    ValueError
        On mismatched shapes, refined ids that the coarse labels lack, support
        labels without objects, or out-of-range parameters.

    Examples
    --------
    >>> from napari_samrefine.testing import tiny_sam
    >>> rng = np.random.default_rng(0)
    >>> img = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    >>> coarse = np.zeros((64, 64), np.uint8); coarse[20:40, 20:40] = 1
    >>> refined = np.zeros_like(coarse); refined[22:42, 22:42] = 1
    >>> result = judge_refinement(img, coarse, refined, img, refined, sam=tiny_sam(), k=1)
    >>> list(result.table()["label_id"])
    [1]
    """
    query = _plane_shape(image, channel_axis, "image")
    coarse = label_plane(coarse_labels, "coarse_labels")
    refined = label_plane(refined_labels, "refined_labels")
    if coarse.shape != refined.shape or coarse.shape != query.shape[:2]:
        raise ValueError(
            f"Shapes differ: image {query.shape[:2]}, coarse labels {coarse.shape}, refined "
            f"labels {refined.shape}. Pass the coarse and refined labels of this image plane."
        )
    simages, slabels = _pairs(support_image, support_labels)
    simages = [_plane_shape(im, channel_axis, f"support image {i}") for i, im in enumerate(simages)]
    slabels = [label_plane(lb, f"support labels {i}") for i, lb in enumerate(slabels)]
    for i, (im, lb) in enumerate(zip(simages, slabels, strict=True)):
        if im.shape[:2] != lb.shape:
            raise ValueError(
                f"Support pair {i}: the image plane is {im.shape[:2]} but its labels are "
                f"{lb.shape}. Pass the labels that belong to this support image."
            )
    if int(k) < 1:
        raise ValueError(f"k={k}: use at least one support crop per object.")
    if tau < 0:
        raise ValueError(f"tau={tau} must be >= 0.")
    if str(masking).lower() not in MASKING_MODES:
        raise ValueError(f"masking={masking!r} is not one of {MASKING_MODES} (FM, IM, HM).")

    candidates = support_candidates(slabels)
    if not candidates:
        raise ValueError(
            "The support labels hold no object: label at least one object of the same kind "
            "in a support image (0 is background)."
        )
    # boxes by id: memory grows with the objects, not with the largest id
    coarse_slices = object_slices(coarse)
    refined_slices = object_slices(refined)
    coarse_ids, refined_ids = _present(coarse_slices), _present(refined_slices)
    extra = sorted(refined_ids - coarse_ids)
    if extra:
        shown = ", ".join(map(str, extra[:10])) + (" ..." if len(extra) > 10 else "")
        raise ValueError(
            f"The refined labels hold ids the coarse labels lack ({shown}): JFS compares each "
            "refined object with the coarse object of the same id. Pass the refinement of "
            "these coarse labels (refine keeps ids), not a relabelled or unrelated image."
        )
    ids = sorted(coarse_ids)
    if label_ids is not None:
        wanted = sorted({int(i) for i in label_ids})
        missing = [i for i in wanted if i not in coarse_ids]
        if missing:
            raise ValueError(f"label_ids {missing} are not objects of the coarse labels.")
        ids = wanted

    fss = _resolve_backend(backend, sam, str(masking).lower(), embedding_cache, seggpt_model)
    qrgb = to_sam_rgb(query, channel=channel)
    srgb: dict[int, np.ndarray] = {}
    crops: dict[tuple[int, int], SupportCrop] = {}

    def support_crop(cand) -> SupportCrop:
        key = (cand.pair, cand.label_id)
        if key not in crops:
            if cand.pair not in srgb:
                srgb[cand.pair] = to_sam_rgb(simages[cand.pair], channel=channel)
            lb = slabels[cand.pair]
            y0, x0, y1, x1 = context_window(cand.box, lb.shape, context, min_context)
            crops[key] = SupportCrop(
                cand, (y0, x0, y1, x1), srgb[cand.pair][y0:y1, x0:x1], lb[y0:y1, x0:x1] > 0
            )
        return crops[key]

    per_object = min(int(k), len(candidates))
    total = len(ids) * per_object
    done = 0
    supports = "1 support" if per_object == 1 else f"{per_object} supports"
    report(progress, done, total, f"JFS: judging {len(ids)} objects, {supports} each")
    objects, predictions = [], []
    # objects of similar size share support crops: visiting them by area keeps those
    # crops' embeddings in the (LRU) cache; results are reported by id
    areas = {lid: int((coarse[coarse_slices[lid]] == lid).sum()) for lid in ids}
    for lid in sorted(ids, key=lambda i: (areas[i], i)):
        cs, rs = coarse_slices[lid], refined_slices.get(lid)
        box = [cs[0].start, cs[1].start, cs[0].stop, cs[1].stop]
        if rs is not None:
            box = [min(box[0], rs[0].start), min(box[1], rs[1].start),
                   max(box[2], rs[0].stop), max(box[3], rs[1].stop)]  # fmt: skip
        y0, x0, y1, x1 = context_window(tuple(box), coarse.shape, context, min_context)
        mc = coarse[y0:y1, x0:x1] == lid
        mr = refined[y0:y1, x0:x1] == lid
        q = qrgb[y0:y1, x0:x1]
        scores = []
        for cand in pick_supports(int(mc.sum()), candidates, per_object):
            crop = support_crop(cand)
            shape = crop.mask.shape
            smp1 = check_prediction(fss.predict(q, mc, crop.rgb), shape, fss)
            smp2 = (
                check_prediction(fss.predict(q, mr, crop.rgb), shape, fss)
                if mr.any()
                else np.zeros(shape, np.float32)
            )
            scores.append(score_support(cand.pair, cand.label_id, smp1, smp2, crop.mask))
            if return_predictions:
                predictions.append(
                    SupportPrediction(lid, cand.pair, cand.label_id, crop.window, smp1, smp2)
                )
            done += 1
            report(progress, done, total, f"JFS: object {lid}")
        iou_cr = iou(mc, mr)
        verdict = decide(
            scores, iou_cr, tau=tau, min_agreement=min_agreement, similar_iou=similar_iou,
            score=score,
        )  # fmt: skip
        objects.append(
            ObjectJudgement(
                label_id=lid,
                status="ok" if mr.any() else "empty-refined",
                verdict=verdict,
                iou_coarse_refined=iou_cr,
                area_coarse=int(mc.sum()),
                area_refined=int(mr.sum()),
                window=(y0, x0, y1, x1),
                scores=scores,
            )
        )
    objects.sort(key=lambda o: o.label_id)
    predictions.sort(key=lambda p: p.label_id)
    accepted = accepted_labels(
        coarse, refined, [o.label_id for o in objects if o.verdict.verdict == IMPROVED]
    )
    params = {
        "backend": backend if isinstance(backend, str) else type(backend).__name__,
        "masking": str(masking).lower(), "k": int(k), "tau": float(tau),
        "min_agreement": float(min_agreement), "similar_iou": float(similar_iou),
        "score": score, "context": float(context), "min_context": int(min_context),
    }  # fmt: skip
    return JudgeResult(
        accepted=accepted,
        objects=objects,
        predictions=predictions,
        support_shapes=[lb.shape for lb in slabels],
        parameters=params,
    )
