"""Decoder cost per object and memory: this project's path vs segment-anything's stock path.

Random-weight ViT-B (the architecture of the published model), one 1024 x 1024
image, N objects with box + point + mask prompts, multimask output. Prints a
markdown table. Timings are on whatever machine runs it; masks are compared
between the two paths.

    python benchmarks/decoder_speed.py --objects 100 --repeats 2
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from segment_anything import SamPredictor, build_sam_vit_b

from napari_samrefine.refine.decode import PromptSwitches, decode_prompts, prompt_tensors
from napari_samrefine.refine.objects import objects_from_labels
from napari_samrefine.refine.prompts import excavate_object
from napari_samrefine.sam.embedding import embed_image


def synthetic_scene(n_objects: int, size: int = 1024, seed: int = 0):
    """An image of bright discs on noise and its label image."""
    rng = np.random.default_rng(seed)
    image = rng.normal(40, 10, (size, size))
    labels = np.zeros((size, size), np.uint16)
    yy, xx = np.mgrid[:size, :size]
    grid = int(np.ceil(np.sqrt(n_objects)))
    step = size // grid
    k = 0
    for i in range(grid):
        for j in range(grid):
            if k == n_objects:
                break
            r = rng.uniform(0.2, 0.4) * step
            cy, cx = (i + 0.5) * step, (j + 0.5) * step
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            image[disc] += 120
            labels[disc] = k + 1
            k += 1
    return np.clip(image, 0, 255).astype(np.uint8), labels


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sam = build_sam_vit_b().eval()
    image, labels = synthetic_scene(args.objects)
    rgb = np.repeat(image[..., None], 3, -1)
    t0 = time.perf_counter()
    emb = embed_image(sam, rgb)
    t_enc = time.perf_counter() - t0
    rss_encoder = peak_rss_gb()
    objects = objects_from_labels(labels)
    prompts = [excavate_object(o, frame=emb.frame, embedding=emb) for o in objects]
    switches = PromptSwitches()

    # ours: chosen candidate only, upsampled inside its support box
    def ours():
        dec = decode_prompts(sam, emb, prompts, switches, batch_size=args.batch_size)
        masks = []
        for low in dec.lowres.numpy():
            ext = emb.frame.lowres_extent(low > 0)
            masks.append(None if ext is None else (ext, emb.frame.lowres_to_original(low, ext) > 0))
        return dec, masks

    # stock: SamPredictor.predict_torch, all candidates at full resolution
    predictor = SamPredictor(sam)
    predictor.features, predictor.is_image_set = emb.features, True
    predictor.original_size, predictor.input_size = emb.frame.original_size, emb.frame.input_size

    def stock():
        points, boxes, masks = prompt_tensors(prompts, emb, switches, torch.device("cpu"))
        out = []
        with torch.no_grad():
            for s in range(0, len(prompts), args.batch_size):
                sl = slice(s, s + args.batch_size)
                m, iou, _ = predictor.predict_torch(
                    points[0][sl], points[1][sl], boxes[sl], masks[sl], multimask_output=True
                )
                best = iou.argmax(1)
                out.append(m[torch.arange(len(best)), best])
        return torch.cat(out)

    times = {"ours": [], "stock": []}
    for _ in range(args.repeats):
        for name, fn in (("stock", stock), ("ours", ours)):
            t0 = time.perf_counter()
            res = fn()
            times[name].append(time.perf_counter() - t0)
            if name == "stock":
                stock_masks = res
            else:
                our_masks = res[1]
    rss_after = peak_rss_gb()
    differ = 0
    for i, m in enumerate(our_masks):
        full = np.zeros(emb.frame.original_size, bool)
        if m is not None:
            (y0, x0, y1, x1), crop = m
            full[y0:y1, x0:x1] = crop
        differ += int((full != stock_masks[i].numpy()).sum())
    n = len(prompts)
    t_stock, t_ours = min(times["stock"]), min(times["ours"])
    print("| objects | encoder s | stock ms/object | ours ms/object | speed-up | pixels differing | peak RSS GB (encoder only / after) |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {n} | {t_enc:.1f} | {1000 * t_stock / n:.1f} | {1000 * t_ours / n:.1f} | "
        f"{t_stock / t_ours:.2f}x | {differ} | {rss_encoder:.2f} / {rss_after:.2f} |"
    )


if __name__ == "__main__":
    main()
