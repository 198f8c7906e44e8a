"""Weight-free baselines against the ground truth: coarse vs random walker vs Chan-Vese.

Two kinds of coarse labels are made from the truth of the project's data:

1. superpixel defects (SPEC section 7; IoU with the truth in [0.75, 0.85]), the
   coarse masks of every quality benchmark;
2. every object grown by ``--grow`` pixels (``skimage.segmentation.expand_labels``,
   no overlaps), a smooth over-segmentation.

Each is refined by the baselines of ``napari_samrefine.evaluation.baselines`` and scored
per object (mean IoU / boundary IoU with the true object, object-weighted).
Prints two markdown tables.

    python benchmarks/classical_baselines.py [--data ../shared/data] [--include-3d]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from skimage.segmentation import expand_labels

from napari_samrefine.evaluation.baselines import CLASSICAL_METHODS, refine_classical
from napari_samrefine.evaluation.benchmark import (
    BenchmarkPair,
    load_pairs,
    run_benchmark,
    summarize,
    to_markdown,
)
from napari_samrefine.evaluation.metrics import object_ious

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COLUMNS = ["dataset", "method", "images", "objects", "coarse_iou", "refined_iou",
           "coarse_biou", "refined_biou", "time_object_ms"]


def grown(pairs: list[BenchmarkPair], grow: int, methods: list[str]) -> pd.DataFrame:
    """Refine the truth grown by ``grow`` px with every method; one row per image and method."""
    rows = []
    for pair in pairs:
        coarse = expand_labels(pair.labels, grow)
        before = object_ious(coarse, pair.labels)
        for method in methods:
            start = time.perf_counter()
            refined = refine_classical(pair.image, coarse, method)
            seconds = time.perf_counter() - start
            after = object_ious(refined, pair.labels)
            rows.append(dict(
                dataset=pair.dataset, image=pair.name, method=method, n_objects=len(before.iou),
                coarse_iou=before.iou.mean(), refined_iou=after.iou.mean(),
                coarse_biou=before.boundary_iou.mean(), refined_biou=after.boundary_iou.mean(),
                coarse_miou=np.nan, refined_miou=np.nan, time_image_s=seconds,
            ))
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with dsb2018/ and stardist/")
    parser.add_argument("--include-3d", action="store_true", help="also the planes of the StarDist 3D stack")
    parser.add_argument("--methods", nargs="+", default=list(CLASSICAL_METHODS), choices=CLASSICAL_METHODS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grow", type=int, default=2, help="pixels added around every object in table 2")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)

    start = time.perf_counter()
    modality = {e["file"]: e["modality"] for e in json.loads((args.data / "dsb2018" / "index.json").read_text())}
    pairs = [
        BenchmarkPair(f"dsb2018 {modality[p.name]}", p.name, p.image, p.labels) if p.dataset == "dsb2018" else p
        for p in load_pairs(args.data, include_3d=args.include_3d)
    ]
    defects = summarize(run_benchmark(pairs, configurations=None, baselines=args.methods, seed=args.seed))
    print(f"### Coarse = superpixel defects (IoU window [0.75, 0.85], seed {args.seed})\n")
    print(to_markdown(defects[COLUMNS]))
    print(f"\n### Coarse = truth grown by {args.grow} px\n")
    print(to_markdown(summarize(grown(pairs, args.grow, args.methods))[COLUMNS]))
    print(f"\n{sum(len(np.unique(p.labels)) - 1 for p in pairs)} objects in {len(pairs)} images, "
          f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
