"""Decoder passes saved by stopping converged objects early, on real data.

For DSB2018 images (../shared/data/dsb2018) and StarDist's 2D test images,
coarse labels are synthesised from the ground truth (SPEC section 7,
``synthesize_coarse_labels``) and refined twice with T = 5 iterations: with
``convergence=0.99`` (an object stops when its mask's IoU with the previous
iteration reaches 0.99) and with ``convergence=None`` (all objects run all
iterations). Prints decoder object-iterations, i.e. decoder work, for both.

No pretrained weights are available here: the model is the tiny random-weight
SAM, so the counts show the bookkeeping works, not how often a real model
converges. With a published model, run it with ``--model vit_b_lm``.

    python benchmarks/convergence.py --images 8
"""

from __future__ import annotations

import argparse
import time

from shared_data import DATA, real_images

import napari_samrefine as nsr
from napari_samrefine.engine.embedding import EmbeddingCache
from napari_samrefine.evaluation.defects import synthesize_coarse_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="DSB2018 images (of 32)")
    parser.add_argument("--model", default="tiny", help="'tiny' or a registry name / checkpoint")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--convergence", type=float, default=0.99)
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"real data not found at {DATA}")
    sam = nsr.tiny_sam() if args.model == "tiny" else nsr.load_sam(args.model)
    cache = EmbeddingCache()
    rows = []
    for name, image, truth in real_images(DATA, args.images):
        coarse = synthesize_coarse_labels(image, truth, seed=0).labels
        counts, times = {}, {}
        for key, conv in (("early", args.convergence), ("all", None)):
            t0 = time.perf_counter()
            result = nsr.refine(image, coarse, sam, iterations=args.iterations, convergence=conv,
                                embedding_cache=cache)
            times[key] = time.perf_counter() - t0
            counts[key] = int(result.table()["iterations"].sum())
        rows.append((name, len(result.objects), counts["early"], counts["all"], times["early"],
                     times["all"]))
    print(f"model {args.model}, T = {args.iterations}, convergence {args.convergence} vs None")
    print()
    print("| image | objects | decoder object-iterations (early stop) | (all iterations) | saved | "
          "time s (early / all) |")
    print("|---|---|---|---|---|---|")
    for name, n, early, full, te, ta in rows:
        print(f"| {name} | {n} | {early} | {full} | {1 - early / full:.0%} | {te:.2f} / {ta:.2f} |")
    n = sum(r[1] for r in rows)
    early = sum(r[2] for r in rows)
    full = sum(r[3] for r in rows)
    te, ta = sum(r[4] for r in rows), sum(r[5] for r in rows)
    print(f"| all | {n} | {early} | {full} | {1 - early / full:.0%} | {te:.1f} / {ta:.1f} |")


if __name__ == "__main__":
    main()
