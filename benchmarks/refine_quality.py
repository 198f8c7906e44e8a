"""Mask quality with LiteMedSAM per coarse-mask kind: coarse vs refined, per object.

Every image of ``shared/data`` (32 DSB2018 images, StarDist's img2d and
tests_img2d) gets five kinds of coarse labels made from its truth:

* ``defects``: superpixel defects (``synthesize_coarse_labels``, seed 0, IoU
  window [0.75, 0.85]);
* ``eroded`` / ``dilated``: every true object eroded / grown by
  r = max(1, round(d / 20)) px, d its equivalent diameter (a disk of radius r;
  growth only into background, each pixel to its nearest object);
* ``merged``: neighbouring true objects (gap <= 2 px) joined in pairs (seed 0,
  random order, each object in at most one pair; the gap is closed with a disk
  of radius 2). Only the merged pairs are coarse objects: unpaired objects are
  left out;
* ``classical``: Otsu threshold (the minority phase is foreground), holes
  filled, specks < 16 px removed, distance-transform watershed (peaks at least
  5 px apart), scikit-image.

Each coarse object is matched to a true object by overlap (one-to-one, the
assignment maximising the summed IoU, any IoU > 0); unmatched coarse and true
objects are counted. Each configuration refines the coarse labels with the
real LiteMedSAM weights (``load_sam("medsam_lite")``) and every matched object
is scored: IoU and boundary IoU (``evaluation.metrics.object_ious``) of its
coarse and its refined mask with its true object. Configurations:

* ``defaults``: ``refine(image, coarse, sam)`` at today's defaults; ``paper``: the defaults
  before issue 20 (5 iterations, CEBox 0.1, the
  profile's box prompt, ``tile="auto"``); ``T1``: 1 iteration; ``noCEBox``:
  tight box; ``box``: 1 iteration and the tight box (one box call per object);
  ``allprompts``: points, box and mask forced on (not the profile's box only);
* ``box scale=S`` / ``box scale=auto`` / ``T1 scale=...``: refine's own object scale
  (``scale=``), 1 iteration, tight box (``T1``: CEBox 0.1), every mask replaced;
  ``--by-size`` and ``--keep-table`` print IoU per object size in model-input pixels
  and per agreement threshold from such rows;
* ``box@Sx`` / ``defaults@Sx``: the object scale, outside refine: image
  resampled bilinearly by S (``skimage.transform.resize``, order 1), labels
  repeated (nearest neighbour), refined with ``tile=256`` (the model's input:
  tiles of the upscaled image are seen at full resolution; ``tile="auto"``
  would shrink it back) and the result sampled back by nearest neighbour;
* ``predictor``: ``segment_anything.SamPredictor``, one ``predict`` call per
  coarse object with its tight box, single mask, the image min-max normalised
  as LiteMedSAM's profile says; overlaps go to the highest logit.

All refine calls pass ``binary="one"`` (a label image with one id stays one
object) and share an embedding cache per (image, scale). Prints one markdown
table per kind; ``--csv`` writes one row per object and configuration, and
``--tables-from`` prints the tables of such CSVs (runs split with
``--images``/``--skip`` can be joined so).

    python benchmarks/refine_quality.py --csv rows.csv

Every configuration on all 34 images takes hours on a shared 2-core CPU (a 256 px
LiteMedSAM encoding took ~4 s there; 2x and 4x multiply the tiles by ~4 and ~16):
split a run with ``--names`` / ``--images`` / ``--skip`` and ``--configs``, and join
the CSVs with ``--tables-from``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from napari_samrefine.evaluation.benchmark import load_pairs, to_markdown
from napari_samrefine.evaluation.coarse_kinds import COARSE_KINDS, coarse_labels
from napari_samrefine.evaluation.metrics import match_objects, object_ious

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KINDS = COARSE_KINDS
#: refine() keyword arguments and object scale of each configuration (scale None: the image as
#: is). Every configuration but "defaults" pins the options it names and keep="refined",
#: scale=None unless it names them, so that a change of refine's defaults leaves it as it was.
_PAPER = dict(iterations=5, keep="refined", scale=None)  # refine's defaults before issue 20
_BOX = dict(iterations=1, cebox=None, keep="refined", scale=None)
CONFIGS: dict[str, tuple[dict, int | None]] = {
    "defaults": ({}, None),
    "paper": (dict(_PAPER), None),
    "T1": (dict(_PAPER, iterations=1), None),
    "noCEBox": (dict(_PAPER, cebox=None), None),
    "box": (dict(_BOX), None),
    "allprompts": (dict(_PAPER, use_points=True, use_box=True, use_mask=True), None),
    "box@1x": (dict(_BOX), 1),
    "box@2x": (dict(_BOX), 2),
    "box@4x": (dict(_BOX), 4),
    "defaults@1x": (dict(_PAPER), 1),
    "defaults@2x": (dict(_PAPER), 2),
    "defaults@4x": (dict(_PAPER), 4),
    "box scale=1": (dict(_BOX, scale=1), None),
    "box scale=2": (dict(_BOX, scale=2), None),
    "box scale=4": (dict(_BOX, scale=4), None),
    "box scale=auto": (dict(_BOX, scale="auto"), None),
    "T1 scale=auto": (dict(_BOX, cebox=0.1, scale="auto"), None),
    "T1 scale=2": (dict(_BOX, cebox=0.1, scale=2), None),
    "T1 cebox=0.2 scale=auto": (dict(_BOX, cebox=0.2, scale="auto"), None),
    "T1 cebox=0.3 scale=auto": (dict(_BOX, cebox=0.3, scale="auto"), None),
    "T2 scale=auto": (dict(_BOX, iterations=2, cebox=0.1, scale="auto"), None),
    "predictor": ({}, None),
}
DEFAULT_CONFIGS = ("defaults", "paper", "T1", "box", "box scale=1", "box scale=auto", "predictor")


# --- refinement ------------------------------------------------------------------------------

def upscale(image: np.ndarray, labels: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Image resampled bilinearly by s (pixel centres aligned), labels by nearest neighbour."""
    if s == 1:
        return image, labels
    from skimage.transform import resize

    shape = (image.shape[0] * s, image.shape[1] * s) + image.shape[2:]
    big = resize(image, shape, order=1, preserve_range=True, anti_aliasing=False)
    if np.issubdtype(image.dtype, np.integer):
        big = np.round(big)
    return big.astype(image.dtype), np.repeat(np.repeat(labels, s, axis=0), s, axis=1)


def predictor_labels(predictor, coarse: np.ndarray) -> tuple[np.ndarray, dict]:
    """One SamPredictor box call per coarse object; the highest logit wins where masks overlap."""
    best = np.full(coarse.shape, -np.inf, np.float32)
    out = np.zeros_like(coarse)
    scores = {}
    for i, sl in enumerate(ndi.find_objects(coarse), start=1):
        if sl is None:
            continue
        ys, xs = np.nonzero(coarse[sl] == i)
        box = np.array([xs.min() + sl[1].start, ys.min() + sl[0].start,
                        xs.max() + sl[1].start, ys.max() + sl[0].start])
        logits, score, _ = predictor.predict(box=box, multimask_output=False, return_logits=True)
        logit = logits[0]
        win = logit > best
        best[win] = logit[win]
        out[win] = i
        scores[i] = (float(score[0]), predictor.model.image_encoder.img_size / max(coarse.shape),
                     np.nan, np.nan, "ok")
    out[best <= 0] = 0
    return out, scores


def refined_labels(name, image, coarse, sam, caches, predictors, tile):
    """(refined labels at the image's own size, {coarse id: (predicted IoU, zoom, stability,
    edge contrast, status)})."""
    import napari_samrefine as nsr

    kwargs, scale = CONFIGS[name]
    if name == "predictor":
        return predictor_labels(predictors(), coarse)
    img, lab = upscale(image, coarse, scale or 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = nsr.refine(img, lab, sam, binary="one", embedding_cache=caches(scale or 1),
                            **({} if scale is None else {"tile": tile}), **kwargs)
    out = result.labels
    if scale and scale > 1:
        out = out[scale // 2 :: scale, scale // 2 :: scale]
    outside = scale or 1  # the zoom of the resampling outside refine
    return out, {o.label_id: (o.predicted_iou, o.scale * outside, o.stability, o.edge_contrast, o.status)
                 for o in result.objects}


# --- scoring ---------------------------------------------------------------------------------

def _remap(labels: np.ndarray, mapping: dict[int, int], dtype) -> np.ndarray:
    ids, inverse = np.unique(labels, return_inverse=True)
    lut = np.array([mapping.get(int(i), 0) for i in ids], dtype=dtype)
    return lut[inverse].reshape(labels.shape)


def score(truth, coarse, refined, mapping: dict[int, int]) -> pd.DataFrame:
    """Per matched object: IoU / boundary IoU of coarse and refined with the truth, and their areas."""
    before = object_ious(_remap(coarse, mapping, truth.dtype), truth)
    after = object_ious(_remap(refined, mapping, truth.dtype), truth)
    agree = object_ious(refined, coarse)  # refined id k vs coarse id k: label-free agreement
    agree_of = dict(zip(agree.label_ids.tolist(), agree.iou.tolist(), strict=True))
    index = {t: k for k, t in enumerate(before.label_ids.tolist())}
    rows = []
    for c, t in mapping.items():
        k = index[t]
        rows.append(dict(coarse_id=c, true_id=t, coarse_iou=before.iou[k], refined_iou=after.iou[k],
                         coarse_biou=before.boundary_iou[k], refined_biou=after.boundary_iou[k],
                         coarse_refined_iou=agree_of.get(c, np.nan)))
    df = pd.DataFrame(rows)
    if len(df):
        df["true_area"] = np.bincount(truth.ravel())[df.true_id]
        df["coarse_area"] = np.bincount(coarse.ravel().astype(np.int64), minlength=df.coarse_id.max() + 1)[df.coarse_id]
        df["refined_area"] = np.bincount(refined.ravel().astype(np.int64), minlength=df.coarse_id.max() + 1)[
            df.coarse_id]
        boxes = ndi.find_objects(coarse.astype(np.int64))
        df["coarse_side"] = [max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) for sl in
                             (boxes[c - 1] for c in df.coarse_id)]
    return df


SIZE_BINS = (0, 16, 24, 32, 48, 64, 96, 128, 192, 256, 100_000)
"""Bins of an object's size in the model's input: its coarse box's longer side times its zoom."""


def size_table(rows: pd.DataFrame) -> str:
    """Mean IoU with the truth per configuration and bin of the object's size in model-input
    pixels (``coarse_side * zoom``): where the model refines best (``--by-size``)."""
    rows = rows[rows.config != "predictor"].assign(model_side=rows.coarse_side * rows.zoom)
    rows = rows.assign(bin=pd.cut(rows.model_side, SIZE_BINS, right=False))
    out = rows.groupby(["bin", "config"], observed=True).agg(
        objects=("refined_iou", "size"), coarse_iou=("coarse_iou", "mean"),
        refined_iou=("refined_iou", "mean"))
    out["delta"] = out.refined_iou - out.coarse_iou
    out = out.reset_index()
    out["bin"] = out["bin"].astype(str)
    return to_markdown(out)


KEEP_THRESHOLDS = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85)


def keep_table(rows: pd.DataFrame) -> str:
    """Mean IoU with the truth if each object kept its refined mask only where the refined
    mask's IoU with the coarse one is >= t (keep="better" with keep_min_iou t), per
    configuration run with keep="refined" (``--keep-table``). Per object, from the
    per-object IoUs: refine's write-back of overlaps between kept and refined masks is
    not replayed."""
    lines = []
    for (kind, name), r in rows[rows.config != "predictor"].groupby(["kind", "config"], sort=False):
        line = {"kind": kind, "configuration": name, "objects": len(r), "coarse": r.coarse_iou.mean(),
                "refined": r.refined_iou.mean()}
        for t in KEEP_THRESHOLDS:
            keep = r.coarse_refined_iou >= t
            line[f">= {t:g}"] = np.where(keep, r.refined_iou, r.coarse_iou).mean()
        line["oracle"] = np.maximum(r.coarse_iou, r.refined_iou).mean()
        lines.append(line)
    return to_markdown(pd.DataFrame(lines))


def tables(rows: pd.DataFrame, counts: pd.DataFrame | None = None) -> str:
    """One markdown table per kind: a row per configuration."""
    parts = []
    for kind in [k for k in KINDS if k in set(rows.kind)]:
        g = rows[rows.kind == kind]
        lines = []
        for name in [c for c in CONFIGS if c in set(g.config)]:
            r = g[g.config == name]
            ci, ri = r.coarse_iou.mean(), r.refined_iou.mean()
            lines.append({"configuration": name, "images": r.image.nunique(), "objects": len(r),
                          "coarse IoU": ci, "refined IoU": ri, "delta": ri - ci,
                          "coarse BIoU": r.coarse_biou.mean(), "refined BIoU": r.refined_biou.mean(),
                          "% improved": f"{100 * (r.refined_iou > r.coarse_iou).mean():.0f}",
                          "oracle IoU": np.maximum(r.coarse_iou, r.refined_iou).mean()})
        head = f"### {kind}\n"
        if counts is not None and kind in set(counts.kind):
            c = counts[counts.kind == kind].sum(numeric_only=True)
            head += (f"\n{int(c.true)} true objects, {int(c.coarse)} coarse objects, {int(c.matched)} matched; "
                     f"unmatched: {int(c.true - c.matched)} true, {int(c.coarse - c.matched)} coarse.\n")
        parts.append(head + "\n" + to_markdown(pd.DataFrame(lines)))
    return "\n\n".join(parts)


# --- main ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with dsb2018/ and stardist/")
    parser.add_argument("--images", type=int, default=None, help="at most this many images (after --skip)")
    parser.add_argument("--skip", type=int, default=0, help="skip the first N images (to split a run)")
    parser.add_argument("--names", nargs="+", default=None, help="only these images (name prefixes)")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--scale-max-side", type=int, default=None,
                        help="run the scaled configurations only on images whose long side is at most this")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--embeddings", type=Path, default=None,
                        help="keep the embeddings on disk in this folder, so that a later run "
                        "with other configurations encodes nothing it has seen")
    parser.add_argument("--finetune", type=Path, default=None,
                        help="refine with LiteMedSAM taught by this file (napari-samrefine finetune)")
    parser.add_argument("--csv", type=Path, default=None, help="write one row per object and configuration")
    parser.add_argument("--tables-from", type=Path, nargs="+", default=None,
                        help="print the tables of per-object CSVs written by --csv (no refinement)")
    parser.add_argument("--keep-table", action="store_true",
                        help="with --tables-from: IoU if the refined mask were kept only where it "
                        "agrees with the coarse one by IoU >= t")
    parser.add_argument("--by-size", action="store_true",
                        help="with --tables-from: IoU per bin of object size in model-input pixels")
    args = parser.parse_args(argv)

    if args.tables_from:
        rows = pd.concat([pd.read_csv(p) for p in args.tables_from], ignore_index=True)
        found = [p.with_suffix(".counts.csv") for p in args.tables_from]
        counts = [pd.read_csv(p) for p in found if p.is_file()]
        print(tables(rows, pd.concat(counts, ignore_index=True) if counts else None))
        if args.keep_table:
            print("\n" + keep_table(rows))
        if args.by_size:
            print("\n" + size_table(rows))
        return 0

    import torch
    from segment_anything import SamPredictor

    import napari_samrefine as nsr
    from napari_samrefine.engine.embedding import minmax_padded
    from napari_samrefine.engine.preprocess import to_sam_rgb

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    sam = nsr.load_sam("medsam_lite", device="cpu", finetune=args.finetune)
    tile = int(sam.image_encoder.img_size)
    modality = {e["file"]: e["modality"] for e in json.loads((args.data / "dsb2018" / "index.json").read_text())}
    pairs = load_pairs(args.data)
    if args.names:
        pairs = [p for p in pairs if p.name.startswith(tuple(args.names))]
    pairs = pairs[args.skip:]
    pairs = pairs[: args.images]
    rows, counts = [], []
    for n, pair in enumerate(pairs, start=1):
        truth = pair.labels.astype(np.int32)
        caches: dict[int, nsr.EmbeddingCache] = {}

        def cache_of(s, _caches=caches):
            disk = None if args.embeddings is None else args.embeddings / f"x{s}"
            return _caches.setdefault(s, nsr.EmbeddingCache(max_items=4096, disk=disk))

        predictor = []

        def predictor_of(_p=predictor, _image=pair.image):
            if not _p:
                sam.preprocess = lambda x: minmax_padded(x, tile)  # the profile's normalisation
                try:
                    p = SamPredictor(sam)
                    p.set_image(to_sam_rgb(_image))
                finally:
                    del sam.preprocess
                _p.append(p)
            return _p[0]

        configs = [c for c in args.configs
                   if CONFIGS[c][1] is None or args.scale_max_side is None
                   or max(truth.shape) <= args.scale_max_side]
        t0 = time.perf_counter()
        kinds = {}
        for kind in args.kinds:
            coarse = coarse_labels(kind, pair.image, truth)
            m = match_objects(coarse, truth, threshold=1e-9)
            mapping = dict(zip(m.pred_ids.tolist(), m.true_ids.tolist(), strict=True))
            counts.append(dict(kind=kind, image=pair.name, true=len(np.unique(truth)) - 1,
                               coarse=len(np.unique(coarse)) - 1, matched=len(mapping)))
            if mapping:
                kinds[kind] = coarse, mapping
        # by scale, so that one scale's embeddings are dropped before the next one's are made
        encodings = {}
        for name in sorted(configs, key=lambda c: (c == "predictor", CONFIGS[c][1] or 1)):
            scale = CONFIGS[name][1] or 1
            for s in [s for s in caches if s != scale]:
                encodings[s] = caches.pop(s).misses
            for kind, (coarse, mapping) in kinds.items():
                refined, predicted = refined_labels(name, pair.image, coarse, sam, cache_of, predictor_of, tile)
                df = score(truth, coarse, refined, mapping)
                for k, column in enumerate(("predicted_iou", "zoom", "stability", "edge_contrast", "status")):
                    df[column] = df.coarse_id.map(lambda c, _p=predicted, _k=k: _p[c][_k] if c in _p else np.nan)
                rows.append(df.assign(kind=kind, config=name, dataset=pair.dataset, image=pair.name,
                                      modality=modality.get(pair.name, pair.dataset)))
        encodings.update({s: c.misses for s, c in caches.items()})
        if args.csv:  # after every image, so that a long run can be read while it goes on
            pd.concat(rows, ignore_index=True).to_csv(args.csv, index=False)
            pd.DataFrame(counts).to_csv(args.csv.with_suffix(".counts.csv"), index=False)
        print(f"[{n}/{len(pairs)}] {pair.name} {truth.shape}: {time.perf_counter() - t0:.0f} s "
              f"({', '.join(f'{s}x: {k} encodings' for s, k in sorted(encodings.items()))})",
              file=sys.stderr, flush=True)
    data = pd.concat(rows, ignore_index=True)
    counts = pd.DataFrame(counts)
    if args.csv:
        data.to_csv(args.csv, index=False)
        counts.to_csv(args.csv.with_suffix(".counts.csv"), index=False)
    print(tables(data, counts))
    print(f"\n{len(pairs)} images, {time.perf_counter() - start:.0f} s, torch threads {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
