"""Refinement end to end per object-iteration vs segment-anything's ``predict_torch``.

Random-weight ViT-B (``build_sam_vit_b``, seed 0; ``--model tiny`` for a quick
plumbing run) on one 1024 x 1024 image of real nuclei: four DSB2018
fluorescence images from tests/data (105 nuclei), each upscaled 2x (nearest
neighbour) and tiled 2 x 2, with their ground-truth labels as the coarse masks.
The image is encoded once before timing and the embedding is cached, so the
encoder is in neither path's time. Paths, interleaved, minimum over
``--repeats``:

- refine T=1: ``napari_samrefine.refine(image, labels, sam, iterations=1)``
  end to end (prompt excavation with CEBox, batched lean decoding, the
  thresholded masks, write-back into a label image), per object;
- refine T=5: the same with ``iterations=5`` (convergence 0.99, the default),
  per object-iteration (the decoder passes the objects went through); run
  ``--t5-repeats`` times (default once: with random weights every mask grows to
  most of the image after the first iteration, and the later iterations'
  prompt excavation on those masks dominates);
- predict_torch: the prompts refine gives SAM at its first iteration (box,
  points, mask prompt; computed before timing, so prompt excavation is NOT in
  this path's time), decoded by ``SamPredictor.predict_torch`` in batches of
  ``--batch-size`` with all 3 candidates at full resolution (the single-mask
  output for a model whose profile says so: LiteMedSAM), then the best
  candidate picked (as benchmarks/decoder_speed.py's stock path), per object.

Masks are compared: each object's mask after refine's first iteration
(``run_cascade``, the masks refine writes back) against predict_torch's chosen
mask. ``--profile`` adds a table of where refine's time goes (exclusive time
in timers wrapped around the stages: prompt excavation without CEBox, CEBox,
the decoder with its prompt tensors, upsampling the chosen logits in the
cascade and in write-back, the rest of write-back, and everything else).

    python benchmarks/refine_speed.py                 # ViT-B, 2 threads
    python benchmarks/refine_speed.py --profile       # + where refine T=1's time goes
    python benchmarks/refine_speed.py --profile 5 --repeats 0  # only the T=5 profile
    python benchmarks/refine_speed.py --model medsam_lite --t5-repeats 3  # real weights
    python benchmarks/refine_speed.py --model tiny    # plumbing, seconds
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _data import DSB2018  # noqa: E402

IMAGES = ("00071198d059", "98c5ead89cd0", "ea00f5a91ca7", "1db1cddf28e3")
"""Four 256 x 256 grey DSB2018 images: 27 + 29 + 40 + 9 = 105 nuclei."""


def nuclei_scene(upscale: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Four DSB2018 images upscaled ``upscale`` x (nearest) and tiled 2 x 2, with their labels."""
    import tifffile
    from PIL import Image

    images, labels, offset = [], [], 0
    for name in IMAGES:
        img = np.asarray(Image.open(DSB2018 / "images" / f"{name}.png"))
        img = img[..., 0] if img.ndim == 3 else img
        lab = tifffile.imread(DSB2018 / "labels" / f"{name}.tif").astype(np.int32)
        lab = np.where(lab > 0, lab + offset, 0)
        offset = int(lab.max())
        images.append(np.kron(img, np.ones((upscale, upscale), img.dtype)))
        labels.append(np.kron(lab, np.ones((upscale, upscale), lab.dtype)))
    image = np.block([[images[0], images[1]], [images[2], images[3]]])
    label = np.block([[labels[0], labels[1]], [labels[2], labels[3]]]).astype(np.uint16)
    return image, label


# ---------------------------------------------------------------- stage timers

STAGES = ("excavation", "CEBox", "decoder", "upsampling", "write-back")

# (module, attribute, stage): functions whose time (minus that of wrapped
# functions they call) counts for a stage; missing ones are skipped, so the
# table also works on older versions of the package
WRAPPED = [
    ("napari_samrefine.samrefiner.cascade", "PromptSettings.excavate", "excavation"),
    ("napari_samrefine.samrefiner.prompts", "elastic_box", "CEBox"),
    ("napari_samrefine.samrefiner.cascade", "decode_prompts", "decoder"),
    ("napari_samrefine.samrefiner.cascade", "ChosenLogits.upsample", "upsampling"),
    ("napari_samrefine.pipeline.refiner", "write_back", "write-back"),
]


class StageTimers:
    """Exclusive wall time per stage, from wrappers installed around functions."""

    def __init__(self):
        self.total = dict.fromkeys(STAGES, 0.0)
        self._stack: list[list] = []
        self._undo: list = []

    def wrap(self, fn, stage):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            frame = [time.perf_counter(), 0.0]
            self._stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stack.pop()
                elapsed = time.perf_counter() - frame[0]
                self.total[stage] += elapsed - frame[1]
                if self._stack:
                    self._stack[-1][1] += elapsed

        return timed

    def install(self):
        import importlib

        for module, attr, stage in WRAPPED:
            mod = importlib.import_module(module)
            owner, name = mod, attr
            if "." in attr:
                cls_name, name = attr.split(".")
                owner = getattr(mod, cls_name, None)
            if owner is None or not hasattr(owner, name):
                continue
            original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            setattr(owner, name, self.wrap(original, stage))
            self._undo.append((owner, name, original))
        return self

    def remove(self):
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


# ---------------------------------------------------------------------- paths


def build_model(name: str):
    from segment_anything import build_sam_vit_b

    from napari_samrefine.testing import tiny_sam

    if name == "medsam_lite":  # real weights (the medsam extra), box prompts only
        from napari_samrefine import load_sam

        return load_sam("medsam_lite", device="cpu").eval()
    torch.manual_seed(0)
    sam = build_sam_vit_b() if name == "vit_b" else tiny_sam()
    return sam.eval()


def best_of(fn, results: dict, key: str):
    t0 = time.perf_counter()
    out = fn()
    t = time.perf_counter() - t0
    results[key] = min(results.get(key, float("inf")), t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["vit_b", "medsam_lite", "tiny"], default="vit_b",
                        help="random ViT-B, LiteMedSAM's real weights (box prompts only: its "
                             "profile), or a tiny random model for a plumbing run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--t5-repeats", type=int, default=1,
                        help="repeats of refine with iterations=5 (0 skips it; default 1: it "
                             "takes as long as the other paths together)")
    parser.add_argument("--profile", type=int, nargs="?", const=1, default=0, metavar="T",
                        help="also time the stages of one refine run with T iterations (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from segment_anything import SamPredictor

    import napari_samrefine as nsr
    from napari_samrefine.engine.embedding import EmbeddingCache
    from napari_samrefine.engine.preprocess import to_sam_rgb
    from napari_samrefine.labels.objects import objects_from_labels
    from napari_samrefine.samrefiner.cascade import PromptSettings, run_cascade
    from napari_samrefine.samrefiner.cebox import FeatureGrid
    from napari_samrefine.samrefiner.decode import prompt_tensors

    sam = build_model(args.model)
    image, labels = nuclei_scene()
    objects = objects_from_labels(labels)
    n = len(objects)
    cache = EmbeddingCache()
    t0 = time.perf_counter()
    emb = cache.get(sam, to_sam_rgb(image))  # encoded once, outside every timing
    t_enc = time.perf_counter() - t0
    frame = emb.frame
    bs = args.batch_size

    # the prompts of refine's first iteration, precomputed for predict_torch
    settings = PromptSettings.for_model(sam, cebox=0.1)
    grid = FeatureGrid.from_embedding(emb)
    prompts = [settings.excavate(o, emb, grid) for o in objects]
    points, boxes, masks = prompt_tensors(prompts, emb, settings.switches, torch.device("cpu"))
    # the model's profile says whether to choose among 3 candidates (SAM) or take the
    # single-mask output (LiteMedSAM), as refine does
    multimask = nsr.model_profile(sam).multimask
    predictor = SamPredictor(sam)
    predictor.features, predictor.is_image_set = emb.features, True
    predictor.original_size, predictor.input_size = frame.original_size, frame.input_size

    def stock():
        out, chosen = [], []
        with torch.no_grad():
            for s in range(0, n, bs):
                sl = slice(s, s + bs)
                m, iou, _ = predictor.predict_torch(
                    *((None, None) if points is None else (points[0][sl], points[1][sl])),
                    None if boxes is None else boxes[sl],
                    None if masks is None else masks[sl],
                    multimask_output=multimask,
                )
                best = iou.argmax(1)
                out.append(m[torch.arange(len(best)), best].cpu())
                chosen.append(best.cpu())
        return torch.cat(out), torch.cat(chosen).numpy()

    def refine(t):
        return lambda: nsr.refine(image, labels, sam, iterations=t, batch_size=bs, embedding_cache=cache)

    times: dict[str, float] = {}
    object_iterations = n
    for r in range(args.repeats):
        stock_masks, _ = best_of(stock, times, "predict_torch")
        best_of(refine(1), times, "refine T=1")
        if r < args.t5_repeats:
            r5 = best_of(refine(5), times, "refine T=5")
            object_iterations = sum(o.iterations for o in r5.objects)

    print(
        f"model {args.model}, {args.threads} threads, image {image.shape[0]} x {image.shape[1]}, "
        f"{n} objects (DSB2018 nuclei), batch {bs}, encoder {t_enc:.1f} s (not timed), "
        f"min of {args.repeats} (refine T=5: of {min(args.repeats, args.t5_repeats)})"
    )
    if args.repeats:
        # masks: refine's first iteration vs predict_torch's chosen candidate
        states = run_cascade(sam, emb, objects, settings, iterations=1, batch_size=bs)
        differ, changed = 0, 0
        for i, s in enumerate(states):
            mine = s.mask.to_image() if s.status == "ok" else np.zeros(frame.original_size, bool)
            bad = int((mine != stock_masks[i].numpy()).sum())
            differ += bad
            changed += bad > 0
        print()
        print("| path | object-iterations | s | ms per object-iteration | speed-up vs predict_torch |")
        print("|---|---|---|---|---|")
        rows = [("predict_torch", n), ("refine T=1", n)]
        if "refine T=5" in times:
            rows.append(("refine T=5", object_iterations))
        per_stock = times["predict_torch"] / n
        for name, k in rows:
            t = times[name]
            print(f"| {name} | {k} | {t:.2f} | {1000 * t / k:.1f} | {per_stock / (t / k):.2f}x |")
        print()
        print(
            f"refine T=1 masks vs predict_torch's chosen masks: {n - changed}/{n} objects "
            f"identical, {differ} of {n * frame.original_size[0] * frame.original_size[1]} "
            "pixels differ"
        )

    if args.profile:
        timers = StageTimers().install()
        try:
            t0 = time.perf_counter()
            result = refine(args.profile)()
            total = time.perf_counter() - t0
        finally:
            timers.remove()
        k = sum(o.iterations for o in result.objects)
        print()
        print(f"Profile of refine T={args.profile} ({k} object-iterations, one run, {total:.2f} s; "
              "exclusive time per stage):")
        print()
        print("| stage | s | ms per object-iteration | share |")
        print("|---|---|---|---|")
        other = total - sum(timers.total.values())
        for stage, t in (*timers.total.items(), ("other", other)):
            print(f"| {stage} | {t:.2f} | {1000 * t / k:.1f} | {100 * t / total:.0f} % |")


if __name__ == "__main__":
    main()
