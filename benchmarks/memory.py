"""Peak memory of refinement: many objects on one image, and a very large label image.

Two cases (random weights; synthetic discs as in decoder_speed.py):

- ``--case 300``: random ViT-B, a 1024 x 1024 image, 300 objects, the full
  cascade. The image is encoded first (the encoder-only run), then refined with
  that embedding; prints how much refinement raises the peak resident memory
  above the encoder-only peak and above the memory held before refining.
- ``--case 4096``: a 4096 x 4096 image with 3000 objects, tiled (tile "auto":
  1024 px tiles, 128 px halo, 25 tiles), with a "small" model: SAM's 1024 px
  input, the published prompt encoder and mask decoder (so decoder memory is
  ViT-B's), and a 2-block, 64-wide image encoder (random ViT-B's encoder would
  take 25 x 13 s on 2 CPU cores). Prints the peak next to what one N x H x W
  mask stack or one H x W x 256 feature map would need.

Peak resident memory is read from /proc/self/status (VmHWM), reset with
/proc/self/clear_refs before the measured step (Linux).

    python benchmarks/memory.py --case 300
    python benchmarks/memory.py --case 4096 --iterations 1
"""

from __future__ import annotations

import argparse
import importlib
import time

import numpy as np
import torch
from decoder_speed import build_model, synthetic_scene

import napari_samrefine as nsr
from napari_samrefine.sam.embedding import EmbeddingCache

GB = 1024**3


def memory() -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory in GB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024 / GB
    return out


def reset_peak() -> None:
    """Make VmHWM equal to the current VmRSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def small_sam():
    """SAM with a 1024 px input and the published decoder, but a tiny image encoder."""
    build = importlib.import_module("segment_anything.build_sam")
    torch.manual_seed(0)
    return build._build_sam(
        encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1]
    ).eval()


def case_300(args) -> None:
    sam = build_model("vit_b", "cpu")
    image, labels = synthetic_scene(300, size=1024)
    rgb = np.repeat(image[..., None], 3, -1)
    cache = EmbeddingCache()
    before_encoder = memory()["VmRSS"]
    reset_peak()
    t0 = time.perf_counter()
    cache.get(sam, rgb)
    t_enc = time.perf_counter() - t0
    enc = memory()
    reset_peak()
    t0 = time.perf_counter()
    result = nsr.refine(image, labels, sam, iterations=args.iterations, embedding_cache=cache,
                        batch_size=args.batch_size)
    t_ref = time.perf_counter() - t0
    ref = memory()
    passes = int(result.table()["iterations"].sum())
    held = sum(p.gaussian.nbytes for p in result.prompts if p is not None) / GB
    areas = result.table()["refined_area"]
    print(f"ViT-B (random), 1024 x 1024, {len(result.objects)} objects, up to {args.iterations} "
          f"iterations ({passes} object-iterations), batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    print()
    print("| step | time s | peak RSS GB | RSS after GB |")
    print("|---|---|---|---|")
    print(f"| model loaded | | | {before_encoder:.2f} |")
    print(f"| encoder only | {t_enc:.1f} | {enc['VmHWM']:.2f} | {enc['VmRSS']:.2f} |")
    print(f"| refinement | {t_ref:.1f} | {ref['VmHWM']:.2f} | {ref['VmRSS']:.2f} |")
    print()
    print(f"refinement raises the peak by {max(0.0, ref['VmHWM'] - enc['VmHWM']):.2f} GB above the "
          f"encoder-only peak; its own peak is {ref['VmHWM'] - enc['VmRSS']:.2f} GB above the "
          f"memory held before it (target: at most 0.5 GB)")
    print(f"the result keeps {ref['VmRSS'] - enc['VmRSS']:.2f} GB, of which {held:.2f} GB are the "
          f"Gaussian maps of the last prompts; refined objects cover {areas.mean():.0f} pixels "
          f"on average (median {areas.median():.0f}): random weights give image-sized masks")


def case_4096(args) -> None:
    sam = small_sam()
    size, n = 4096, 3000
    image, labels = synthetic_scene(n, size=size)
    cache = EmbeddingCache(max_items=32)
    before = memory()["VmRSS"]
    reset_peak()
    t0 = time.perf_counter()
    result = nsr.refine(image, labels, sam, iterations=args.iterations, tile="auto",
                        embedding_cache=cache, batch_size=args.batch_size)
    t_ref = time.perf_counter() - t0
    after = memory()
    table = result.table()
    print(f"small model (1024 px input, published decoder, tiny encoder), {size} x {size}, "
          f"{len(table)} objects, tile auto (1024 / halo 128), {cache.misses} encoder passes, "
          f"up to {args.iterations} iterations, batch {args.batch_size}")
    print()
    print("| time s | RSS before GB | peak RSS GB | peak - before GB | N x H x W bool would be GB | "
          "H x W x 256 float32 would be GB |")
    print("|---|---|---|---|---|---|")
    print(f"| {t_ref:.0f} | {before:.2f} | {after['VmHWM']:.2f} | {after['VmHWM'] - before:.2f} | "
          f"{n * size * size / GB:.0f} | {size * size * 256 * 4 / GB:.0f} |")
    print()
    print("statuses:", table["status"].value_counts().to_dict())
    print(f"refined objects cover {table['refined_area'].mean():.0f} pixels on average (random "
          f"weights give tile-sized masks; per-object state scales with the object's box)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["300", "4096"], default="300")
    parser.add_argument("--iterations", type=int, default=None,
                        help="cascade iterations (default 5 for 300, 1 for 4096)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.iterations is None:
        args.iterations = 5 if args.case == "300" else 1
    (case_300 if args.case == "300" else case_4096)(args)


if __name__ == "__main__":
    main()
