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

- ``--case sides``: ``excavate_prompts`` (no embedding: SAM's 1024 px frame
  and 256 px low-res frame) on label images of side 2000 to 50 000 px with a
  fixed density (a disc of radius 10 px every 500 px, uint16 ids); each side
  runs in its own process. Prints the peak above the memory held before (the
  labels included) next to what the prompts themselves hold (a 256 x 256
  float32 mask prompt per object) and the labels' size.
- ``--case ids``: the same discs (every 200 px) with ids 1..N and with ids near
  2**40 (and near 2**64 - 1 for uint64): ``objects_from_labels``,
  ``excavate_prompts`` on an 8000 px side and ``refine`` with the tiny random
  SAM (``napari_samrefine.testing.tiny_sam``, 1 iteration) on a 2000 px side,
  each in its own process.

Peak resident memory is read from /proc/self/status (VmHWM), reset with
/proc/self/clear_refs before the measured step (Linux).

    python benchmarks/memory.py --case 300
    python benchmarks/memory.py --case 4096 --iterations 1
    python benchmarks/memory.py --case sides --sides 2000 8000 16000 32000 50000
    python benchmarks/memory.py --case ids
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time

import numpy as np
import torch
from decoder_speed import build_model, synthetic_scene

import napari_samrefine as nsr
from napari_samrefine.engine.embedding import EmbeddingCache

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


def disc_labels(side: int, spacing: int, dtype, first_id: int = 1, radius: int = 10) -> np.ndarray:
    """A (side, side) label image: a disc of ``radius`` px in the centre of each spacing-px cell.

    Ids increase in raster order from ``first_id`` by 1 (built in place: no
    temporary of the image's size).
    """
    n = side // spacing
    yy, xx = np.mgrid[:spacing, :spacing] - spacing // 2
    disc = (yy**2 + xx**2 <= radius**2).astype(dtype)
    ids = (np.arange(n * n, dtype=np.uint64) + np.uint64(first_id)).astype(dtype).reshape(n, n)
    labels = np.empty((n * spacing, n * spacing), dtype)
    view = labels.reshape(n, spacing, n, spacing)
    np.multiply(disc[None, :, None, :], ids[:, None, :, None], out=view)
    return labels


def _child(args, payload: dict) -> dict:
    """Run one measurement in a fresh process (peak memory of that step alone)."""
    cmd = [sys.executable, __file__, "--threads", str(args.threads), "--child", json.dumps(payload)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _measure(step) -> dict:
    """Time and peak resident memory of ``step()`` above the memory held before it."""
    before = memory()["VmRSS"]
    reset_peak()
    t0 = time.perf_counter()
    result = step()
    seconds = time.perf_counter() - t0
    after = memory()
    return {"s": seconds, "before": before, "peak": after["VmHWM"] - before,
            "kept": after["VmRSS"] - before, "result": result}  # fmt: skip


def run_child(payload: dict) -> dict:
    """One measurement of ``--case sides`` or ``--case ids`` (in a child process)."""
    from napari_samrefine.labels.objects import objects_from_labels
    from napari_samrefine.samrefiner.prompts import excavate_prompts

    dtype = np.dtype(payload["dtype"])
    labels = disc_labels(payload["side"], payload["spacing"], dtype, payload["first_id"])
    info = {"labels_gb": labels.nbytes / GB}
    if payload["what"] == "objects":
        m = _measure(lambda: len(objects_from_labels(labels)))
    elif payload["what"] == "excavate":
        def step():
            prompts = excavate_prompts(labels)
            held = sum(p.mask_input.nbytes + p.gaussian.nbytes for p in prompts)
            return [len(prompts), held / GB]
        m = _measure(step)
    else:  # refine with the tiny random SAM
        from napari_samrefine.testing import tiny_sam

        sam = tiny_sam()
        image = np.where(labels > 0, 200, 40).astype(np.uint8)
        m = _measure(lambda: len(nsr.refine(image, labels, sam, iterations=1).objects))
    info.update(m)
    return info


def case_sides(args) -> None:
    print(f"excavate_prompts, no embedding (1024 px SAM frame, 256 px low-res), a disc of radius 10 "
          f"px every 500 px, uint16 ids, one process per side, {args.threads} threads")
    print()
    print("| side px | objects | labels GB | time s | peak above before GB | prompts' arrays GB |")
    print("|---|---|---|---|---|---|")
    for side in args.sides:
        r = _child(args, {"what": "excavate", "side": side, "spacing": 500, "dtype": "uint16",
                          "first_id": 1})  # fmt: skip
        n, held = r["result"]
        print(f"| {side} | {n} | {r['labels_gb']:.3f} | {r['s']:.1f} | {r['peak']:.3f} | "
              f"{held:.3f} |", flush=True)  # fmt: skip
    print()
    print("prompts' arrays: nbytes of the mask prompts (256 x 256 float32 each) and Gaussian maps; "
          "the mask prompts' zero pages are not all resident")


def case_ids(args) -> None:
    runs = [
        ("objects_from_labels", "objects", 8000),
        ("excavate_prompts", "excavate", 8000),
        ("refine, tiny SAM, 1 iteration", "refine", 2000),
    ]
    ids = [("1..N", "uint16", 1), ("1..N", "int64", 1), ("2**40 + 1..N", "int64", 2**40 + 1),
           ("2**64 - N..2**64 - 1", "uint64", None)]  # fmt: skip
    print(f"discs of radius 10 px every 200 px (1600 objects at 8000 px, 100 at 2000 px), "
          f"one process per row, {args.threads} threads")
    print()
    print("| step | side px | ids | dtype | labels GB | time s | peak above before GB |")
    print("|---|---|---|---|---|---|---|")
    for name, what, side in runs:
        for label, dtype, first in ids:
            if what == "refine" and dtype == "uint64":
                continue
            first_id = first if first is not None else 2**64 - (side // 200) ** 2
            r = _child(args, {"what": what, "side": side, "spacing": 200, "dtype": dtype,
                              "first_id": first_id})  # fmt: skip
            print(f"| {name} | {side} | {label} | {dtype} | {r['labels_gb']:.3f} | {r['s']:.2f} | "
                  f"{r['peak']:.3f} |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["300", "4096", "sides", "ids"], default="300")
    parser.add_argument("--sides", type=int, nargs="+", default=[2000, 8000, 16000, 32000, 50000])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, default=None,
                        help="cascade iterations (default 5 for 300, 1 for 4096)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return
    if args.iterations is None:
        args.iterations = 5 if args.case == "300" else 1
    cases = {"300": case_300, "4096": case_4096, "sides": case_sides, "ids": case_ids}
    cases[args.case](args)


if __name__ == "__main__":
    main()
