"""Top-1 selection accuracy of SAM's IoU head, with and without an IoU adaptor.

SAM returns three candidates per prompt and keeps the one its IoU head rates
highest. The selection is right when that candidate is (one of) the best: the
best overlap with the coarse mask (what IoU adaption learns from) or with the
ground truth (the paper's Table 1 "Top-1 Acc"). Evaluate on held-out images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from napari_samrefine._progress import ProgressCallback, report
from napari_samrefine.adaption.candidates import collect_candidates, plan_planes
from napari_samrefine.adaption.lora import lora_delta
from napari_samrefine.engine.embedding import EmbeddingCache, default_cache
from napari_samrefine.engine.preprocess import PERCENTILES
from napari_samrefine.samrefiner.defaults import BATCH_SIZE, CEBOX_LAMBDA, GAMMA, STRENGTH

__all__ = ["SelectionReport", "evaluate_selection", "top1_correct"]


def top1_correct(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Whether the highest-scored candidate (ties: lowest index) has the best target.

    Parameters
    ----------
    scores, targets : numpy.ndarray
        (N, 3) predicted IoU and true IoU of the candidates.

    Returns
    -------
    numpy.ndarray
        (N,) bool; a chosen candidate that ties with the best counts as right.
    """
    scores, targets = np.asarray(scores), np.asarray(targets)
    if len(scores) == 0:
        return np.zeros(0, bool)
    chosen = np.argmax(scores, axis=1)
    picked = targets[np.arange(len(targets)), chosen]
    return picked >= np.max(targets, axis=1)


@dataclass(frozen=True)
class SelectionReport:
    """Per-object candidate scores and the top-1 accuracies they give.

    Attributes
    ----------
    label_id, pair, plane : numpy.ndarray
        (N,) object id, index of its (image, labels) pair, plane (-1 for 2D).
    coarse_iou : numpy.ndarray
        (N, 3) IoU of each candidate with the coarse mask.
    ground_truth_iou : numpy.ndarray or None
        (N, 3) IoU with the matching ground-truth object (NaN rows: none overlaps).
    scores_before : numpy.ndarray
        (N, 3) IoU predicted by SAM's own head.
    scores_after : numpy.ndarray or None
        (N, 3) IoU predicted with the adaptor; None without one.
    prompts : str
        "refine" (SAMRefiner's prompts) or "box" (tight box only).
    """

    label_id: np.ndarray
    pair: np.ndarray
    plane: np.ndarray
    coarse_iou: np.ndarray
    ground_truth_iou: np.ndarray | None
    scores_before: np.ndarray
    scores_after: np.ndarray | None
    prompts: str

    @property
    def n_objects(self) -> int:
        return int(len(self.label_id))

    def accuracy(self, reference: str = "coarse", adapted: bool = True) -> float:
        """Top-1 accuracy against ``reference`` ("coarse" or "ground_truth").

        ``adapted=True`` uses the adaptor's scores when there is an adaptor.
        NaN when there is nothing to count (no objects, no ground truth).
        """
        if reference not in ("coarse", "ground_truth"):
            raise ValueError(f"reference must be 'coarse' or 'ground_truth', got {reference!r}")
        targets = self.coarse_iou if reference == "coarse" else self.ground_truth_iou
        scores = self.scores_after if adapted and self.scores_after is not None else self.scores_before
        if targets is None:
            return float("nan")
        valid = ~np.isnan(targets).any(axis=1)
        if not valid.any():
            return float("nan")
        return float(top1_correct(scores[valid], targets[valid]).mean())

    def summary(self) -> dict:
        """Top-1 accuracies before and after adaption (after: NaN without an adaptor)."""
        has_after = self.scores_after is not None
        out = {"objects": self.n_objects, "prompts": self.prompts}
        for ref in ("coarse", "ground_truth"):
            out[f"top1_{ref}_before"] = self.accuracy(ref, adapted=False)
            out[f"top1_{ref}_after"] = self.accuracy(ref) if has_after else float("nan")
        return out

    def table(self):
        """One row per object: ids, scores, candidate IoUs, choices (pandas DataFrame)."""
        import pandas as pd

        cols = {"pair": self.pair, "plane": self.plane, "label_id": self.label_id}
        sets = {"score_before": self.scores_before, "score_after": self.scores_after,
                "coarse_iou": self.coarse_iou, "gt_iou": self.ground_truth_iou}
        for name, arr in sets.items():
            if arr is not None:
                for k in range(3):
                    cols[f"{name}_{k}"] = arr[:, k]
        cols["chosen_before"] = np.argmax(self.scores_before, axis=1)
        if self.scores_after is not None:
            cols["chosen_after"] = np.argmax(self.scores_after, axis=1)
        return pd.DataFrame(cols)

    def __str__(self) -> str:
        s = self.summary()
        lines = [f"Top-1 selection accuracy on {s['objects']} objects ({self.prompts} prompts):"]
        for ref, name in (("coarse", "vs coarse-IoU argmax"), ("ground_truth", "vs ground truth")):
            before, after = s[f"top1_{ref}_before"], s[f"top1_{ref}_after"]
            if np.isnan(before):
                continue
            line = f"  {name}: {before:.3f}"
            if not np.isnan(after):
                line += f" -> {after:.3f} with the adaptor"
            lines.append(line)
        return "\n".join(lines)


def evaluate_selection(
    sam,
    images,
    labels,
    ground_truth=None,
    iou_adaptor=None,
    *,
    prompts: str = "refine",
    use_points: bool | None = None,
    use_box: bool | None = None,
    use_mask: bool | None = None,
    use_negative_point: bool | None = None,
    cebox: float | None = CEBOX_LAMBDA,
    strength: float = STRENGTH,
    gamma: float = GAMMA,
    channel: int | str | None = None,
    channel_axis: int | None = None,
    percentiles: tuple[float, float] = PERCENTILES,
    batch_size: int = BATCH_SIZE,
    device: str = "auto",
    embedding_cache: EmbeddingCache | None = default_cache,
    progress: ProgressCallback | None = None,
) -> SelectionReport:
    """Top-1 selection accuracy of SAM's IoU head before and after IoU adaption.

    Every object is decoded once with the prompts of the first refinement
    iteration; the three candidates are scored by SAM's own IoU head and, when
    an adaptor is given, by the adapted head (both from the same decoder pass:
    the adaptor changes the scores, never the masks). The selection is right
    when the chosen candidate has the highest IoU with the coarse mask, or with
    the ground truth when given (the paper's Table 1 "Top-1 Acc"). Use images
    the adaptor was not trained on.

    Parameters
    ----------
    sam : Sam, str or path
        The base model.
    images, labels : array or list of arrays
        Held-out images and their coarse labels (one pair or lists of pairs).
    ground_truth : array or list of arrays, optional
        Reference labels aligned with ``labels``; each coarse object is compared
        with the ground-truth object it overlaps most.
    iou_adaptor : IoUAdaptor, optional
        The adaptor to evaluate (it must fit ``sam``).
    prompts : {"refine", "box"}
        SAMRefiner's prompts (inference, default) or the tight box only (training).
    use_points, use_box, use_mask, use_negative_point, cebox, strength, gamma
        Prompt settings for ``prompts="refine"`` (as in :func:`napari_samrefine.refine`;
        None takes the model's profile).
    channel, channel_axis, percentiles, batch_size, device, embedding_cache
        As in :func:`napari_samrefine.refine`.
    progress : callable, optional
        ``progress(done, total, message)``; raise :class:`napari_samrefine.Cancelled` to stop.

    Returns
    -------
    SelectionReport
        ``summary()`` gives ``top1_coarse_before/after`` and
        ``top1_ground_truth_before/after``; ``table()`` the per-object rows.
    """
    from napari_samrefine.models.loading import resolve_sam
    from napari_samrefine.samrefiner.cascade import PromptSettings

    sam = resolve_sam(sam, device)
    if iou_adaptor is not None:
        iou_adaptor.check_model(sam)
    settings = None
    if prompts == "refine":
        settings = PromptSettings.for_model(
            sam, use_points=use_points, use_box=use_box, use_mask=use_mask,
            use_negative_point=use_negative_point, cebox=cebox, strength=strength, gamma=gamma,
        )
    planes = plan_planes(images, labels, ground_truth, channel_axis=channel_axis)
    done, total = 0, len(planes)
    report(progress, done, total, "decoding objects")

    def step(message: str) -> None:
        nonlocal done
        done += 1
        report(progress, done, total, message)

    cands = collect_candidates(
        sam, planes, prompts=prompts, settings=settings, channel=channel,
        percentiles=percentiles, batch_size=batch_size, embedding_cache=embedding_cache,
        step=step,
    )
    after = None
    if iou_adaptor is not None:
        dev = cands.hidden.device
        with torch.no_grad():
            delta = lora_delta(
                cands.hidden, iou_adaptor.down.to(dev), iou_adaptor.up.to(dev), iou_adaptor.scale
            )
            base = torch.as_tensor(cands.scores, device=dev)
            after = (base + delta[:, 1:]).cpu().numpy()
    return SelectionReport(
        label_id=cands.label_id,
        pair=cands.pair,
        plane=cands.plane,
        coarse_iou=cands.coarse_iou,
        ground_truth_iou=cands.ground_truth_iou,
        scores_before=cands.scores,
        scores_after=after,
        prompts=prompts,
    )
