"""How often do prompts mined from a coarse mask land where they should? (weight-free)

For every object of the project's data with ground truth, a coarse mask is
synthesised (superpixel defects, IoU with the truth in [0.75, 0.85]), and
points are mined from it:

* positive points: SAMRefiner's distance-guided point (the maximum of the
  distance transform, ``excavate_prompts``), the centre of the coarse mask's
  tight box, and a random pixel of the coarse mask;
* negative points: SAMRefiner's distance-guided negative point (the background
  pixel of the box farthest from the mask) and a random background pixel of the
  coarse mask's box.

A positive point is right when it lies on the true object, a negative point when
it lies off it. Prints one markdown table.

    python benchmarks/prompt_quality.py [--data ../shared/data] [--include-3d]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from napari_samrefine.evaluation.benchmark import load_pairs, to_markdown
from napari_samrefine.evaluation.defects import synthesize_coarse_labels
from napari_samrefine.samrefiner.prompts import excavate_prompts

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def point_hits(truth: np.ndarray, coarse: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """One row per coarse object: whether each kind of point is right (NaN when there is none)."""
    # the points only: a small SAM frame keeps the (unused) mask prompt cheap
    prompts = excavate_prompts(coarse, cebox=None, image_size=64, lowres_size=16)
    rows = []
    for p in prompts:
        lid = p.label_id
        x1, y1, x2, y2 = (int(v) for v in p.tight_box)
        box_truth = truth[y1 : y2 + 1, x1 : x2 + 1] == lid
        box_coarse = coarse[y1 : y2 + 1, x1 : x2 + 1] == lid
        px, py = (int(round(v)) for v in p.positive_point)
        ys, xs = np.nonzero(box_coarse)
        k = rng.integers(len(ys))
        by, bx = np.nonzero(~box_coarse)
        row = dict(
            pos_distance=truth[py, px] == lid,
            pos_box_centre=truth[(y1 + y2) // 2, (x1 + x2) // 2] == lid,
            pos_random=box_truth[ys[k], xs[k]],
            neg_distance=np.nan,
            neg_random=np.nan,
        )
        if p.negative_point is not None:
            nx, ny = (int(round(v)) for v in p.negative_point)
            row["neg_distance"] = truth[ny, nx] != lid
        if len(by):
            j = rng.integers(len(by))
            row["neg_random"] = not box_truth[by[j], bx[j]]
        rows.append(row)
    return pd.DataFrame(rows, dtype=float)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with dsb2018/ and stardist/")
    parser.add_argument("--include-3d", action="store_true", help="also the planes of the StarDist 3D stack")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iou-range", type=float, nargs=2, default=(0.75, 0.85))
    args = parser.parse_args(argv)

    start = time.perf_counter()
    modality = {e["file"]: e["modality"] for e in json.loads((args.data / "dsb2018" / "index.json").read_text())}
    rng = np.random.default_rng(args.seed)
    frames = []
    for pair in load_pairs(args.data, include_3d=args.include_3d):
        coarse = synthesize_coarse_labels(pair.image, pair.labels, iou_range=tuple(args.iou_range), seed=args.seed)
        hits = point_hits(pair.labels, coarse.labels, rng)
        group = f"dsb2018 {modality[pair.name]}" if pair.dataset == "dsb2018" else pair.dataset
        frames.append(hits.assign(group=group, dataset=pair.dataset, coarse_iou=coarse.ious))
    data = pd.concat(frames, ignore_index=True)

    def table(df: pd.DataFrame) -> dict:
        return {
            "objects": len(df),
            "coarse IoU": df["coarse_iou"].mean(),
            "pos: distance": df["pos_distance"].mean(),
            "pos: box centre": df["pos_box_centre"].mean(),
            "pos: random in mask": df["pos_random"].mean(),
            "has negative": df["neg_distance"].notna().mean(),
            "neg: distance": df["neg_distance"].mean(),
            "neg: random in box": df["neg_random"].mean(),
        }

    rows = [dict(data=g, **table(df)) for g, df in data.groupby("group", sort=True)]
    rows += [dict(data=f"{d} (all)", **table(df)) for d, df in data.groupby("dataset", sort=True)
             if df["group"].nunique() > 1]
    rows.append(dict(data="all", **table(data)))
    print(to_markdown(pd.DataFrame(rows)))
    print(f"\n{len(data)} objects, seed {args.seed}, {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
