"""Prompt excavation for every object of a large label image vs one whole-image EDT.

A 2048 x 2048 label image with about 1000 objects (synthetic discs as in
decoder_speed.py, or irregular blobs with ``--shapes blobs``). Times
``excavate_prompts`` (tight box, points, Gaussian mask prompt in SAM's low-res
frame) without an embedding and with one (then CEBox runs too; the embedding
is random, only its shape matters for the cost), against one
``scipy.ndimage.distance_transform_edt`` of the whole image. Then breaks the
time down by step (cProfile, top functions).

    python benchmarks/excavation_speed.py
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import numpy as np
import torch
from decoder_speed import synthetic_scene
from scipy import ndimage as ndi

from napari_samrefine.engine.embedding import ImageEmbedding
from napari_samrefine.engine.frame import SamFrame
from napari_samrefine.samrefiner.prompts import excavate_prompts


def blob_scene(n_objects: int, size: int, seed: int = 0) -> np.ndarray:
    """Irregular objects: thresholded smoothed noise, split into ``n_objects``-ish pieces."""
    rng = np.random.default_rng(seed)
    _, discs = synthetic_scene(n_objects, size=size, seed=seed)
    noise = ndi.gaussian_filter(rng.normal(size=(size, size)), 4)
    labels = np.where(noise > -0.02, discs, 0)  # ragged edges and holes
    return labels.astype(discs.dtype)


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--shapes", choices=["discs", "blobs"], default="discs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = args.size
    if args.shapes == "discs":
        labels = synthetic_scene(args.objects, size=size)[1]
    else:
        labels = blob_scene(args.objects, size)
    n = len(np.unique(labels)) - 1
    torch.manual_seed(0)
    frame = SamFrame((size, size))  # the published models' 1024 / 64 / 256 geometry
    emb = ImageEmbedding(torch.randn(1, 256, 64, 64), frame, "random")

    t_edt = best_time(lambda: ndi.distance_transform_edt(labels > 0), args.repeats)
    t_plain = best_time(lambda: excavate_prompts(labels), args.repeats)
    t_cebox = best_time(lambda: excavate_prompts(labels, emb), args.repeats)
    print(f"{size} x {size} labels, {n} objects ({args.shapes}), best of {args.repeats}")
    print()
    print("| step | s | x one whole-image EDT |")
    print("|---|---|---|")
    print(f"| distance_transform_edt(labels > 0) | {t_edt:.3f} | 1.00 |")
    print(f"| excavate_prompts, no embedding | {t_plain:.3f} | {t_plain / t_edt:.2f} |")
    print(f"| excavate_prompts with embedding (CEBox) | {t_cebox:.3f} | {t_cebox / t_edt:.2f} |")
    print()
    prof = cProfile.Profile()
    prof.enable()
    excavate_prompts(labels, emb)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
    print("where the time goes (excavate_prompts with embedding, cProfile, by own time):")
    print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))


if __name__ == "__main__":
    main()
