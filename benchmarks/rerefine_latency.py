"""Re-refining one object from edited prompts: latency once the image is encoded (issue 21).

What "Refine this object" in the Review refinement widget computes, timed from
its call to the object's new mask in the labels: the object's prompts edited
(its box moved by 2 px right and down, and its positive point to the box's
centre), then ``refine(image, coarse, sam, label_ids=[id], prompts={id: ...},
iterations=1, keep="refined")`` with the process's embedding cache, then the
pixels that put the new mask into the refined labels (``replace_edit``). The
image is refined once before timing at the same ``scale`` (its embeddings, of
the whole image or of the object windows, cached); encoder passes during the
timed calls are counted (a forward hook), since an object refined alone may
get a window of its own that the full run did not encode.

On the bundled nuclei sample (256 x 256, 27 nuclei; ``--objects`` of them)
with LiteMedSAM (real weights, the ``medsam`` extra) or the tiny random SAM:

    python benchmarks/rerefine_latency.py                         # LiteMedSAM, 2 threads
    python benchmarks/rerefine_latency.py --model tiny --objects 5  # plumbing, seconds

Prints one line per scale: median and slowest latency per object, and the
encoder passes the timed calls made.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

import napari_samrefine as nsr
from napari_samrefine.quality.review import replace_edit

DATA = Path(nsr.__file__).resolve().parent / "data"


def edited(p: nsr.ObjectPrompts, shape: tuple[int, int]) -> nsr.ObjectPrompts:
    """The object's box moved by 2 px right and down (within the image), its positive point to
    the box's centre."""
    h, w = shape
    box = np.minimum(p.box + 2, [w - 1, h - 1, w - 1, h - 1])
    centre = [(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0]
    return dataclasses.replace(p, box=box, points=np.array([centre, *p.points[1:]], float))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="medsam_lite", help="registry name, or 'tiny'")
    parser.add_argument("--objects", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scales", nargs="+", default=["auto", "none"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    sam = nsr.tiny_sam() if args.model == "tiny" else nsr.load_sam(args.model, device="cpu")
    image = np.asarray(Image.open(DATA / "nuclei.png"))
    coarse = tifffile.imread(DATA / "nuclei_coarse.tif")
    passes = []
    hook = sam.image_encoder.register_forward_hook(lambda *_: passes.append(1))
    cache = nsr.EmbeddingCache()
    print(f"model {args.model}, {args.threads} threads, {image.shape} image, "
          f"{len(np.unique(coarse)) - 1} objects")
    for name in args.scales:
        scale = None if name == "none" else name
        first = nsr.refine(image, coarse, sam, iterations=1, scale=scale, embedding_cache=cache)
        layer = np.array(first.labels)
        prompts = [p for p in first.prompts if p is not None][: args.objects]
        before, times = len(passes), []
        for p in prompts:
            start = time.perf_counter()
            again = nsr.refine(image, coarse, sam, label_ids=[p.label_id],
                               prompts={p.label_id: edited(p, coarse.shape)}, iterations=1, keep="refined",
                               scale=scale, embedding_cache=cache)
            indices, values = replace_edit(layer, np.asarray(again.labels) == p.label_id, p.label_id)
            layer[indices] = values
            times.append(time.perf_counter() - start)
        times = np.asarray(times)
        print(f"scale={name}: {len(times)} objects, median {np.median(times) * 1000:.0f} ms, "
              f"slowest {times.max() * 1000:.0f} ms, encoder passes {len(passes) - before}")
    hook.remove()


if __name__ == "__main__":
    main()
