"""Many small files: one process vs a local dask.distributed cluster (``refine_many``).

A folder of ``--files`` (200) small images of real nuclei with their labels:
``--size`` x ``--size`` (128) crops of the 256 x 256 grey DSB2018 fluorescence
images in tests/data, in the 8 orientations of the square (rotations and
flips), each with its ground-truth labels as the coarse labels (relabelled
1..n). Every configuration refines the whole folder into a folder of its own
with ``napari_samrefine.batch.many.refine_many`` (default options,
``iterations=5``), from the checkpoint file (paths travel, each worker loads
the model once); the time is the wall clock of the whole call: cluster
start-up, model loads, reading, refining, writing.

- 1 process: ``workers=1``, torch with its default thread count (all cores);
- 1 process, 1 thread: the same with ``torch.set_num_threads(1)``;
- N workers: ``workers=N``, a ``LocalCluster`` of N processes with one thread each
  (dask sets ``OMP_NUM_THREADS=1`` in them), started and closed inside the call;
- N workers, warm cluster: ``client=`` a cluster started before the clock.

Outputs are compared file by file (``numpy.array_equal``) with those of the
first configuration.

The model is a tiny random-weight SAM saved to a temporary checkpoint by
default (``napari_samrefine.testing.tiny_sam``: the encoder costs little, so
the time is prompt mining, decoding and file input/output); ``--model
medsam_lite`` (LiteMedSAM, offline) gives a real model's balance.

    python benchmarks/batch_throughput.py                       # tiny SAM, 200 files, 2 workers
    python benchmarks/batch_throughput.py --model medsam_lite --files 40
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _data import DSB2018  # noqa: E402


def make_folder(root: Path, n_files: int, size: int) -> tuple[Path, Path]:
    """``n_files`` crops (PNG images, TIFF labels) in ``root/images`` and ``root/labels``."""
    import tifffile
    from PIL import Image
    from skimage.segmentation import relabel_sequential

    index = json.loads((DSB2018 / "index.json").read_text())
    names = [e["file"] for e in index
             if e["modality"] == "fluorescence" and tuple(e["shape"][:2]) == (256, 256)]
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    crops = []
    for name in names:
        img = np.asarray(Image.open(DSB2018 / "images" / f"{name}.png"))
        img = img[..., 0] if img.ndim == 3 else img
        lab = tifffile.imread(DSB2018 / "labels" / f"{name}.tif")
        for y in range(0, 256 - size + 1, size):
            for x in range(0, 256 - size + 1, size):
                crops.append((img[y:y + size, x:x + size], lab[y:y + size, x:x + size]))
    k = 0
    for turn in range(8):  # the 8 orientations of the square
        for img, lab in crops:
            if k == n_files:
                return images, labels
            img, lab = np.rot90(img, turn % 4), np.rot90(lab, turn % 4)
            if turn >= 4:
                img, lab = img[:, ::-1], lab[:, ::-1]
            Image.fromarray(np.ascontiguousarray(img)).save(images / f"n{k:04d}.png")
            lab = relabel_sequential(np.ascontiguousarray(lab))[0].astype(np.uint16)
            tifffile.imwrite(labels / f"n{k:04d}.tif", lab)
            k += 1
    raise ValueError(f"only {k} distinct crops of {size} px: ask for fewer --files")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--size", type=int, default=128, help="crop side in pixels (<= 256)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="tiny", help="tiny (random, saved to a file) or a registry name")
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="batch_throughput_"))
    try:
        return _run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args, tmp: Path) -> int:
    import tifffile
    import torch
    from distributed import Client, LocalCluster

    from napari_samrefine.batch.many import batch_summary, refine_many
    from napari_samrefine.io import find_pairs

    images, labels = make_folder(tmp, args.files, args.size)
    pairs = find_pairs(images, labels)
    if args.model == "tiny":
        from napari_samrefine.testing import tiny_sam

        model = tmp / "tiny_sam.pth"
        torch.save(tiny_sam(seed=0).state_dict(), model)
    else:
        model = args.model
    default_threads = torch.get_num_threads()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{len(pairs)} files of {args.size} x {args.size} px, model {args.model}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__} ({default_threads} threads by default), "
          f"load average before: {load}", flush=True)
    options = dict(device="cpu", iterations=args.iterations)

    def run(name: str, **where) -> dict:
        out = tmp / name.replace(" ", "_").replace(",", "")
        start = time.perf_counter()
        table = refine_many(pairs, out, model, **where, **options)
        seconds = time.perf_counter() - start
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"  {name}: {seconds:.1f} s, {batch_summary(table)} (load average after: {load})",
              flush=True)
        return dict(name=name, seconds=seconds, out=out, done=int((table.status == "done").sum()))

    runs = [run("1 process", workers=1)]
    torch.set_num_threads(1)
    runs.append(run("1 process, 1 thread", workers=1))
    torch.set_num_threads(default_threads)
    runs.append(run(f"{args.workers} workers", workers=args.workers))
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=":0", scheduler_kwargs={"dashboard": False},
                      silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(args.workers)
        runs.append(run(f"{args.workers} workers, warm cluster", client=client))

    reference = runs[0]
    print()
    print("| configuration | wall time (s) | files/s | throughput vs 1 process | outputs identical to 1 process |")
    print("|---|---|---|---|---|")
    for r in runs:
        same = sum(
            np.array_equal(tifffile.imread(r["out"] / f.name), tifffile.imread(f))
            for f in sorted(reference["out"].iterdir())
        )
        rate = r["done"] / r["seconds"]
        print(f"| {r['name']} | {r['seconds']:.1f} | {rate:.2f} | "
              f"{reference['seconds'] / r['seconds']:.2f}x | {same}/{reference['done']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
