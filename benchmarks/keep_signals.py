"""Keep or replace per object: how well label-free signals predict "refined beats coarse".

On all DSB2018 images of ``shared/data`` and StarDist's two 2D images, coarse
labels are synthesised from the truth (``synthesize_coarse_labels``, seed 0)
and refined as ``refine`` does it (one plane: ``to_sam_rgb``, ``refine_plane``,
``write_back``; checked equal to ``napari_samrefine.refine`` on the first image
of each run) at today's defaults and at ``iterations=1``, with LiteMedSAM
(``medsam_lite``) and the tiny random SAM (the floor). Per object it computes
the signals of :mod:`napari_samrefine.quality.signals` and the truth: the IoU of
the coarse and of the refined (written-back) object with the true object.

Prints, per model and configuration:

- the ROC AUC of each signal for "refined IoU > coarse IoU" (Mann-Whitney rank
  formula, ties counted half; a missing signal (NaN) ranks lowest);
- the mean IoU of coarse, refined, the per-object oracle (the better of the
  two per object, from the per-object IoUs), and of simple rules: keep the
  refined mask where a signal >= t, else the coarse mask, written back by
  refine's rule (a kept coarse mask pastes like an "empty-output" object).

    OMP_NUM_THREADS=2 python benchmarks/keep_signals.py --csv keep_signals.csv

On the 2-core shared CPU machine (load 5-6) the whole run took 40 minutes,
LiteMedSAM at the defaults 21 of them; ``--images 8`` or ``--models
medsam_lite`` shorten it. Results: docs/benchmarks.md, "Keep or replace:
label-free signals".
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.stats import rankdata
from shared_data import DATA, real_images

import napari_samrefine as nsr
from napari_samrefine.engine.embedding import EmbeddingCache
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.evaluation.defects import synthesize_coarse_labels
from napari_samrefine.labels.objects import objects_from_labels
from napari_samrefine.pipeline.options import RefineOptions
from napari_samrefine.pipeline.tiling import refine_plane, resolve_tiling
from napari_samrefine.quality.signals import SIGNALS, state_signals
from napari_samrefine.samrefiner.writeback import write_back

THRESHOLDS = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
RULE_SIGNALS = ("iou_coarse", "predicted_iou", "stability")
CONFIGS = {"defaults": RefineOptions(), "iterations=1": RefineOptions(iterations=1)}


def ious_by_id(pred: np.ndarray, truth: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """IoU of object k of ``pred`` with object k of ``truth`` for each k of ``ids``."""
    n = int(max(pred.max(), truth.max())) + 1
    same = pred == truth
    inter = np.bincount(truth[same].ravel(), minlength=n)
    union = np.bincount(pred.ravel(), minlength=n) + np.bincount(truth.ravel(), minlength=n) - inter
    return inter[ids] / np.maximum(union[ids], 1)


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank formula (ties half; NaN scores rank lowest)."""
    score = np.where(np.isnan(score), -np.inf, score)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def run(sam, model: str, images, options: RefineOptions, config: str, check: bool):
    """Per-object rows (dicts) for one model and configuration."""
    cache = EmbeddingCache()
    settings = options.prompt_settings(sam)
    rows = []
    for k, (name, image, truth, coarse) in enumerate(images):
        rgb = to_sam_rgb(image, channel=options.channel, percentiles=options.percentiles)
        objects = objects_from_labels(coarse)
        states = refine_plane(
            sam, rgb, objects, settings,
            tiling=resolve_tiling(options.tile, options.halo, sam, rgb.shape[:2]),
            embedding_cache=cache, iterations=options.iterations,
            convergence=options.convergence, batch_size=options.batch_size,
        )
        refined = write_back(coarse, states)
        if check and k == 0:
            ref = nsr.refine(image, coarse, sam, **options.as_kwargs(), embedding_cache=cache).labels
            assert np.array_equal(ref, refined), "the study's path differs from refine"
        ids = np.array([s.coarse.label_id for s in states])
        coarse_iou = ious_by_id(coarse, truth, ids)
        refined_iou = ious_by_id(refined, truth, ids)
        signals = state_signals(rgb, states)
        rule = {}
        for sig in RULE_SIGNALS:
            values = np.array([getattr(s, sig) for s in signals])
            for t in THRESHOLDS:
                kept = [s if v >= t else replace(s, status="empty-output", mask=s.coarse)
                        for s, v in zip(states, values, strict=True)]
                rule[(sig, t)] = ious_by_id(write_back(coarse, kept), truth, ids)
        for i, s in enumerate(signals):
            row = dict(model=model, config=config, image=name, label_id=s.label_id,
                       status=states[i].status, coarse_iou=coarse_iou[i], refined_iou=refined_iou[i])
            row.update({sig: getattr(s, sig) for sig in SIGNALS})
            row.update({f"{sig}>={t}": v[i] for (sig, t), v in rule.items()})
            rows.append(row)
    return rows


def report(rows, model: str, config: str, seconds: float) -> None:
    sel = [r for r in rows if r["model"] == model and r["config"] == config]
    col = {key: np.array([r[key] for r in sel], dtype=float) for key in sel[0] if key not in
           ("model", "config", "image", "status")}
    better = col["refined_iou"] > col["coarse_iou"]
    oracle = np.maximum(col["refined_iou"], col["coarse_iou"])
    print(f"\n### {model}, {config}: {len(sel)} objects, refined beats coarse for "
          f"{better.mean():.1%} ({seconds:.0f} s)\n")
    print("| signal | ROC AUC |\n|---|---|")
    for sig in SIGNALS:
        print(f"| {sig} | {auc(col[sig], better):.3f} |")
    closeness = -np.abs(np.log(np.where(col["area_ratio"] > 0, col["area_ratio"], 1e-9)))
    print(f"| -abs(log area_ratio) | {auc(closeness, better):.3f} |")
    print("\n| rule | mean IoU | kept refined |\n|---|---|---|")
    print(f"| coarse | {col['coarse_iou'].mean():.3f} | 0 % |")
    print(f"| refined | {col['refined_iou'].mean():.3f} | 100 % |")
    print(f"| oracle (per object) | {oracle.mean():.3f} | {better.mean():.0%} |")
    for sig in RULE_SIGNALS:
        for t in THRESHOLDS:
            kept = np.nan_to_num(col[sig], nan=-np.inf) >= t
            print(f"| {sig} >= {t} | {col[f'{sig}>={t}'].mean():.3f} | {kept.mean():.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--images", type=int, default=None, help="DSB2018 images (default all 32)")
    parser.add_argument("--models", nargs="+", default=["medsam_lite", "tiny"])
    parser.add_argument("--csv", type=Path, default=None, help="write the per-object rows here")
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(f"real data not found at {args.data}")
    t0 = time.perf_counter()
    images = [(n, im, tr, synthesize_coarse_labels(im, tr, seed=0).labels)
              for n, im, tr in real_images(args.data, args.images)]
    print(f"{len(images)} images, coarse masks in {time.perf_counter() - t0:.0f} s; "
          f"{platform.processor() or platform.machine()}, torch threads "
          f"{__import__('torch').get_num_threads()}")
    rows = []
    for model in args.models:
        sam = nsr.tiny_sam() if model == "tiny" else nsr.load_sam(model, device="cpu")
        for config, options in CONFIGS.items():
            t = time.perf_counter()
            rows += run(sam, model, images, options, config, check=True)
            report(rows, model, config, time.perf_counter() - t)
    if args.csv is not None:
        import pandas as pd

        pd.DataFrame(rows).to_csv(args.csv, index=False)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
