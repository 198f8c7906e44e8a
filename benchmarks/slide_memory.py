"""Peak memory and time of refine on whole slides held in zarr (the lazy path).

A square uint16 image and uint32 labels of side 2k to 50k are written into zarr
stores chunk by chunk (1024 x 1024 chunks; the full arrays are never built):
low-noise background, and one small disc (radius 6 to 14 px) per
``--spacing`` x ``--spacing`` cell, at a random place inside it. Then a fresh
process refines the slide with the "small" model of ``memory.py`` (SAM's 1024 px
input, the published prompt encoder and mask decoder, a 2-block 64-wide image
encoder; random weights), ``iterations=1``, tile "auto" (1024 px, halo 128),
no embedding cache, the result written to a new zarr store (``out=``).

Peak resident memory is the refining process's VmHWM (/proc/self/status, Linux),
model and torch included; "before" is its VmRSS just before ``refine``.
Each size runs in its own processes, smallest first; the stores are deleted
after each size unless ``--keep``.

    python benchmarks/slide_memory.py --sizes 2048 8192 --spacing 256
    python benchmarks/slide_memory.py --sizes 2048 8192 16384 32768 50000 --spacing 2048
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

CHUNK = 1024
GB = 1024**3


def status_gb(key: str) -> float:
    """VmRSS or VmHWM of this process in GB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024 / GB
    raise KeyError(key)


def make_slide(folder: str, side: int, spacing: int, seed: int = 0) -> dict:
    """Write the image and label stores chunk by chunk; returns the object count."""
    import zarr

    image = zarr.create_array(store=os.path.join(folder, "image.zarr"), shape=(side, side),
                              dtype=np.uint16, chunks=(CHUNK, CHUNK), fill_value=0)
    labels = zarr.create_array(store=os.path.join(folder, "labels.zarr"), shape=(side, side),
                               dtype=np.uint32, chunks=(CHUNK, CHUNK), fill_value=0)
    cell = min(spacing, CHUNK)  # cells never cross chunks (spacing divides or is a multiple of CHUNK)
    every = max(1, spacing // CHUNK)  # chunks between objects along each axis
    n = 0
    for cy in range(0, side, CHUNK):
        for cx in range(0, side, CHUNK):
            rng = np.random.default_rng((seed, cy, cx))
            h, w = min(CHUNK, side - cy), min(CHUNK, side - cx)
            block = (800 + rng.integers(0, 8, (h, w))).astype(np.uint16)
            lab = np.zeros((h, w), np.uint32)
            if (cy // CHUNK) % every == 0 and (cx // CHUNK) % every == 0:
                for y in range(0, h - cell + 1, cell):
                    for x in range(0, w - cell + 1, cell):
                        r = rng.uniform(6, 14)
                        py, px = rng.uniform(20, cell - 20, 2)
                        yy, xx = np.ogrid[: cell, : cell]
                        disc = (yy - py) ** 2 + (xx - px) ** 2 < r * r
                        n += 1
                        lab[y : y + cell, x : x + cell][disc] = n
                        block[y : y + cell, x : x + cell][disc] += int(rng.integers(300, 1500))
            image[cy : cy + h, cx : cx + w] = block
            labels[cy : cy + h, cx : cx + w] = lab
    return {"objects": n}


def refine_slide(folder: str, threads: int) -> dict:
    """Refine the stores in ``folder`` (in this process); time and memory."""
    import torch
    import zarr
    from memory import small_sam

    import napari_samrefine as nsr

    torch.set_num_threads(threads)
    sam = small_sam()
    encoded = [0]
    sam.image_encoder.register_forward_hook(lambda *a: encoded.__setitem__(0, encoded[0] + 1))
    image = zarr.open_array(os.path.join(folder, "image.zarr"), mode="r")
    labels = zarr.open_array(os.path.join(folder, "labels.zarr"), mode="r")
    before = status_gb("VmRSS")
    t0 = time.perf_counter()
    last = [t0]

    def progress(done, total, message):
        if time.perf_counter() - last[0] > 60:
            last[0] = time.perf_counter()
            print(f"  {last[0] - t0:.0f} s {done}/{total} {message}", file=sys.stderr, flush=True)

    result = nsr.refine(image, labels, sam, iterations=1, embedding_cache=None,
                        out=os.path.join(folder, "refined.zarr"), progress=progress)
    seconds = time.perf_counter() - t0
    statuses = result.table()["status"].value_counts().to_dict()
    return {"seconds": seconds, "before_gb": before, "peak_gb": status_gb("VmHWM"),
            "encoder_passes": encoded[0], "statuses": statuses}


def _child(args) -> None:
    if args.make:
        out = make_slide(args.folder, args.make, args.spacing)
    else:
        out = refine_slide(args.folder, args.threads)
    print("RESULT " + json.dumps(out))


def _run(*argv) -> dict:
    proc = subprocess.run([sys.executable, __file__, *map(str, argv)], capture_output=True,
                          text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    sys.stderr.write(proc.stderr)
    line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--spacing", type=int, default=256,
                        help="one object per spacing x spacing pixels (a divisor or multiple of 1024)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/slide_memory")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--make", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make or args.folder:
        _child(args)
        return
    print(f"small model (1024 px input, published decoder, 2-block encoder), iterations=1, "
          f"tile auto (1024 / halo 128), one object per {args.spacing} x {args.spacing} px, "
          f"{args.threads} threads")
    print()
    print("| side | objects | slide GB (uint16 + uint32) | encoder passes | write s | refine s | "
          "RSS before GB | peak RSS GB |")
    print("|---|---|---|---|---|---|---|---|")
    for side in args.sizes:
        folder = os.path.join(args.workdir, str(side))
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        t0 = time.perf_counter()
        made = _run("--make", side, "--spacing", args.spacing, "--folder", folder)
        written = time.perf_counter() - t0
        r = _run("--folder", folder, "--threads", args.threads)
        print(f"| {side} | {made['objects']} | {side * side * 6 / GB:.1f} | {r['encoder_passes']} | "
              f"{written:.0f} | {r['seconds']:.0f} | {r['before_gb']:.2f} | {r['peak_gb']:.2f} |",
              flush=True)
        print(f"  statuses: {r['statuses']}", file=sys.stderr, flush=True)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
