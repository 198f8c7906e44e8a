"""The disk tier of the embedding cache: refining a tiled image again in a new process.

Refines one synthetic image (bright discs on noise, as in decoder_speed.py),
tiled, twice, each time in a fresh Python process that shares one cache folder
(``NAPARI_SAMREFINE_CACHE``, a temporary folder unless ``--cache-dir``) and uses
``refine``'s default ``embedding_cache`` (memory, then disk). Encoder passes are
counted with a forward pre-hook on ``sam.image_encoder``; the second process
should run none and read every tile from disk.

Models (random weights, built in the child, the fast encoder enabled as
``load_sam`` does):

- ``small`` (default): SAM's 1024 px input and published prompt encoder and
  mask decoder, with a 2-block, 64-wide image encoder (as benchmarks/memory.py),
  so a run takes seconds; the saving is small because the encoder is cheap.
- ``vit_b``: random ViT-B, the published encoder's cost (about 13 s per tile
  on 2 CPU cores).

    python benchmarks/embedding_cache.py
    python benchmarks/embedding_cache.py --model vit_b
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(name: str):
    """A random-weight SAM (seeded, so both processes build the same model)."""
    import torch

    from napari_samrefine.models.fast_encoder import FAST_ENCODER_DEFAULTS, enable_fast_encoder

    sam_build = importlib.import_module("segment_anything.build_sam")
    torch.manual_seed(0)
    if name == "vit_b":
        sam = sam_build.build_sam_vit_b()
    else:
        sam = sam_build._build_sam(
            encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2,
            encoder_global_attn_indexes=[1],
        )
    sam = sam.eval()
    enable_fast_encoder(sam, **FAST_ENCODER_DEFAULTS)
    return sam


def child(args) -> None:
    """One run: refine, count encoder passes, print one JSON line."""
    import numpy as np
    import xxhash
    from decoder_speed import synthetic_scene

    import napari_samrefine as nsr
    from napari_samrefine.engine.embedding import default_cache

    sam = build(args.model)
    passes = []
    sam.image_encoder.register_forward_pre_hook(lambda *a: passes.append(1))
    image, labels = synthetic_scene(args.objects, size=args.size)
    t0 = time.perf_counter()
    result = nsr.refine(image, labels, sam, iterations=args.iterations, tile=args.tile)
    seconds = time.perf_counter() - t0
    print(json.dumps({
        "passes": len(passes), "disk_hits": default_cache.disk_hits,
        "misses": default_cache.misses, "refine_s": seconds,
        "labels": xxhash.xxh3_128(np.ascontiguousarray(result.labels).data).hexdigest(),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("small", "vit_b"), default="small")
    parser.add_argument("--size", type=int, default=2048, help="image side in pixels")
    parser.add_argument("--tile", type=int, default=1024, help="tile side in pixels")
    parser.add_argument("--objects", type=int, default=64, help="discs in the image")
    parser.add_argument("--iterations", type=int, default=1, help="cascade iterations")
    parser.add_argument("--runs", type=int, default=2, help="processes, one after the other")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="shared cache folder (default: a new temporary one)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.cache_dir or Path(tmp)
        env = {**os.environ, "NAPARI_SAMREFINE_CACHE": str(folder)}
        env.pop("NAPARI_SAMREFINE_EMBEDDING_CACHE_GB", None)
        command = [sys.executable, __file__, "--child", "--model", args.model, "--size",
                   str(args.size), "--tile", str(args.tile), "--objects", str(args.objects),
                   "--iterations", str(args.iterations)]
        rows = []
        for run in range(1, args.runs + 1):
            t0 = time.perf_counter()
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t0
            if out.returncode:
                sys.exit(f"run {run} failed:\n{out.stderr}")
            rows.append({**json.loads(out.stdout.strip().splitlines()[-1]), "process_s": wall})
        stored = sum(p.stat().st_size for p in (folder / "embeddings").glob("*.zarr.zip"))

    print(f"{args.model} model (random weights, fast encoder), {args.size} x {args.size} image, "
          f"{args.objects} objects, tile {args.tile}, {args.iterations} iteration(s); "
          f"{os.cpu_count()} CPU cores; {stored / 1e6:.0f} MB of embeddings on disk after the runs")
    print()
    print("| run | encoder passes | disk hits | refine wall time s | process wall time s "
          "| labels equal run 1 |")
    print("|---|---|---|---|---|---|")
    for run, row in enumerate(rows, 1):
        same = "yes" if row["labels"] == rows[0]["labels"] else "NO"
        print(f"| {run} | {row['passes']} | {row['disk_hits']} | {row['refine_s']:.1f} | "
              f"{row['process_s']:.1f} | {same} |")


if __name__ == "__main__":
    main()
