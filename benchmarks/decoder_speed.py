"""Decoder cost per object-iteration: segment-anything's stock path vs this project's.

Random-weight ViT-B (the architecture of the published model; ``--model tiny``
for a quick plumbing run), one 1024 x 1024 image, N objects with box + points +
mask prompts, multimask output. Three paths decode the same prompts:

- stock: ``SamPredictor.predict_torch`` (prompt encoder, ``MaskDecoder``, all 3
  candidates upsampled to the full image), then the best candidate is picked;
- reference: ``decode_prompts(decoder="reference")``: segment-anything's prompt
  encoder and decoder, only the chosen candidate upsampled inside its box;
- lean: ``decode_prompts`` with the :class:`LeanMaskDecoder` (the default).

Times are the minimum over ``--repeats`` runs, all paths interleaved in one
process, so the ratios are comparable even on a shared machine. Masks of the
lean path are compared with the stock masks: the chosen candidate must be the
same for every object, and pixels that differ must be float-rounding ties
(|logit| below 1e-4).

    python benchmarks/decoder_speed.py --objects 100 --repeats 2
    python benchmarks/decoder_speed.py --device cuda --autocast bf16   # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time

import numpy as np
import torch
from segment_anything import SamPredictor, build_sam_vit_b

from napari_samrefine.engine.embedding import embed_image
from napari_samrefine.labels.objects import objects_from_labels
from napari_samrefine.samrefiner.decode import (
    PromptSwitches,
    decode_prompts,
    lean_decoder,
    prompt_tensors,
)
from napari_samrefine.samrefiner.prompts import excavate_object
from napari_samrefine.testing import tiny_sam


def synthetic_scene(n_objects: int, size: int = 1024, seed: int = 0):
    """An image of bright discs on noise and its label image."""
    rng = np.random.default_rng(seed)
    image = rng.normal(40, 10, (size, size))
    labels = np.zeros((size, size), np.uint16)
    grid = int(np.ceil(np.sqrt(n_objects)))
    step = size // grid
    yy, xx = np.mgrid[:step, :step]
    k = 0
    for i in range(grid):
        for j in range(grid):
            if k == n_objects:
                break
            r = rng.uniform(0.2, 0.4) * step
            disc = (yy - step / 2) ** 2 + (xx - step / 2) ** 2 < r**2
            tile = (slice(i * step, (i + 1) * step), slice(j * step, (j + 1) * step))
            image[tile][disc] += 120
            labels[tile][disc] = k + 1
            k += 1
    return np.clip(image, 0, 255).astype(np.uint8), labels


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def autocast_context(device: str, autocast: str):
    """``torch.autocast`` for ``--autocast bf16|fp16``, else a no-op."""
    if autocast == "none":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[autocast]
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def build_model(name: str, device: str):
    torch.manual_seed(0)
    sam = build_sam_vit_b() if name == "vit_b" else tiny_sam()
    return sam.to(device).eval()


def timed(fn, repeats: int, device: str):
    best, result = float("inf"), None
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", choices=["vit_b", "tiny"], default="vit_b")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--autocast", choices=["none", "bf16", "fp16"], default="none")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dev = args.device
    sam = build_model(args.model, dev)
    size = 1024 if args.model == "vit_b" else 256
    image, labels = synthetic_scene(args.objects, size=size)
    rgb = np.repeat(image[..., None], 3, -1)
    with autocast_context(dev, args.autocast):
        t0 = time.perf_counter()
        emb = embed_image(sam, rgb)
        t_enc = time.perf_counter() - t0
    rss_encoder = peak_rss_gb()
    frame = emb.frame
    objects = objects_from_labels(labels)
    prompts = [excavate_object(o, frame=frame, embedding=emb) for o in objects]
    switches = PromptSwitches()
    n = len(prompts)

    def upsample_chosen(dec):
        masks = []
        for low in dec.lowres.numpy():
            ext = frame.lowres_extent(low > 0)
            masks.append(None if ext is None else (ext, frame.lowres_to_original(low, ext)))
        return dec, masks

    def ours(decoder):
        def run():
            with autocast_context(dev, args.autocast):
                if decoder == "lean":  # built per image, included in the time
                    d = lean_decoder(sam, emb)
                else:
                    d = decoder
                dec = decode_prompts(sam, emb, prompts, switches, batch_size=args.batch_size, decoder=d)
            return upsample_chosen(dec)

        return run

    predictor = SamPredictor(sam)
    predictor.features, predictor.is_image_set = emb.features, True
    predictor.original_size, predictor.input_size = frame.original_size, frame.input_size

    def stock():
        points, boxes, masks = prompt_tensors(prompts, emb, switches, torch.device(dev))
        out, chosen = [], []
        with torch.no_grad(), autocast_context(dev, args.autocast):
            for s in range(0, n, args.batch_size):
                sl = slice(s, s + args.batch_size)
                m, iou, _ = predictor.predict_torch(
                    points[0][sl], points[1][sl], boxes[sl], masks[sl], multimask_output=True
                )
                best = iou.argmax(1)
                out.append(m[torch.arange(len(best)), best].cpu())
                chosen.append(best.cpu())
        return torch.cat(out), torch.cat(chosen).numpy()

    times = {}
    times["stock"], (stock_masks, stock_index) = timed(stock, args.repeats, dev)
    times["reference"], _ = timed(ours("reference"), args.repeats, dev)
    times["lean"], (lean_dec, lean_masks) = timed(ours("lean"), args.repeats, dev)
    rss_after = peak_rss_gb()

    same_choice = int((lean_dec.index == stock_index).sum())
    differ, worst = 0, 0.0
    for i, m in enumerate(lean_masks):
        full = np.zeros(frame.original_size, bool)
        logits = np.zeros(frame.original_size, np.float32)
        if m is not None:
            (y0, x0, y1, x1), crop = m
            full[y0:y1, x0:x1] = crop > 0
            logits[y0:y1, x0:x1] = crop
        bad = full != stock_masks[i].numpy()
        differ += int(bad.sum())
        if bad.any():
            worst = max(worst, float(np.abs(logits[bad]).max()))

    t_stock = times["stock"]
    print(
        f"model {args.model}, device {dev}, autocast {args.autocast}, {args.threads} threads, "
        f"image {size} x {size}, {n} objects, batch {args.batch_size}, encoder {t_enc:.1f} s"
    )
    print()
    print("| path | ms per object-iteration | speed-up vs stock |")
    print("|---|---|---|")
    for name in ("stock", "reference", "lean"):
        t = times[name]
        print(f"| {name} | {1000 * t / n:.1f} | {t_stock / t:.2f}x |")
    print()
    print(
        f"lean vs stock: same candidate for {same_choice}/{n} objects; {differ} of "
        f"{n * size * size} pixels differ, all with |logit| <= {worst:.1e} "
        f"({'float rounding' if args.autocast == 'none' else 'reduced precision'}); "
        f"peak RSS {rss_encoder:.2f} GB after the encoder, {rss_after:.2f} GB at the end"
    )


if __name__ == "__main__":
    main()
