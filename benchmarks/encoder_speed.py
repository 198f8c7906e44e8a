"""Image encoder on the CPU: stock vs the fast path of ``napari_samrefine.models.fast_encoder``.

For each model, every path encodes the same bundled DSB2018 images
(tests/data/dsb2018; the encoder input is always the model's full square, 1024
px for ViT-B and MobileSAM, 256 px for LiteMedSAM, whatever the image size),
paths interleaved in one process (their order rotated from round to round). The
time is the minimum over images and repeats; the speed-up is the median, over
those rounds, of the stock pass's time over the path's pass in the same round,
which a varying load on a shared machine disturbs less. CPU s is the process's
CPU time per pass (all threads; with several threads it includes OpenMP
spin-waiting, so ``--threads 1`` gives the steadiest CPU speed-up, min / min,
on a busy machine). The embeddings are
compared with the stock path's (largest absolute difference), and each path's
embeddings then refine the images' true labels with ``napari_samrefine.refine``
(``iterations=1``): the per-object IoU between that result and the stock
path's result is the agreement (min and mean over all objects of all images).

Models: random ViT-B (``segment_anything.build_sam_vit_b``, seed 0; its
zero-initialised relative position tables randomised, N(0, 0.02), so that the
rel-pos bias is exercised), random MobileSAM TinyViT (``mobile_sam``'s
``build_sam_vit_t``, seed 0, attention biases randomised likewise) and the real
LiteMedSAM weights (``load_sam("medsam_lite")``, offline).

The bfloat16-autocast and channels-last paths measured in docs/benchmarks.md
were removed from the package (and from here) because they failed the
agreement bar.

    python benchmarks/encoder_speed.py                       # about 7-10 min on 2 cores
    python benchmarks/encoder_speed.py --threads 1           # steadiest ratios on a busy machine
    python benchmarks/encoder_speed.py --models medsam_lite --images 11 --repeats 3
    python benchmarks/encoder_speed.py --memory --models vit_b --paths sdpa   # peak RSS
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

from napari_samrefine import load_sam, refine
from napari_samrefine.engine.embedding import EmbeddingCache, embed_image
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.models.fast_encoder import disable_fast_encoder, enable_fast_encoder

DSB = Path(__file__).resolve().parents[1] / "tests" / "data" / "dsb2018"

PATHS = {
    "stock": None,
    "sdpa": dict(sdpa=True),
}
DEFAULT_PATHS = "sdpa"


def dsb_images(n: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(id, image, labels) of the first ``n`` bundled DSB2018 images, in index order."""
    index = json.loads((DSB / "index.json").read_text())[:n]
    return [
        (
            e["file"],
            np.asarray(Image.open(DSB / "images" / f"{e['file']}.png")),
            tifffile.imread(DSB / "labels" / f"{e['file']}.tif"),
        )
        for e in index
    ]


def _randomise(sam, name_part: str, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sam.named_parameters():
            if name_part in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


def build_model(name: str):
    """The model of ``--models`` (stock encoder)."""
    if name == "vit_b":
        from segment_anything import build_sam_vit_b

        torch.manual_seed(0)
        sam = build_sam_vit_b()
        _randomise(sam, "rel_pos")
        return sam.eval()
    if name == "vit_t":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from mobile_sam import build_sam_vit_t

            from napari_samrefine.models.architecture import build_sam, infer_sam_config

            torch.manual_seed(0)
            state = build_sam_vit_t().state_dict()
        sam = build_sam(infer_sam_config(state), state)
        _randomise(sam, "attention_biases")
        return sam.eval()  # eval() after the change: TinyViT caches its biases there
    if name == "medsam_lite":
        return load_sam("medsam_lite", device="cpu", fast_encoder=False)
    raise ValueError(f"unknown model {name!r}")


def use(sam, path: str) -> None:
    """Switch the model's encoder to a path of ``PATHS``."""
    if PATHS[path] is None:
        disable_fast_encoder(sam)
    else:
        enable_fast_encoder(sam, **PATHS[path])


def per_object_iou(a: np.ndarray, b: np.ndarray, ids) -> list[float]:
    """IoU of each id's pixels in two label images (1.0 where both lack it)."""
    out = []
    for i in ids:
        ma, mb = a == i, b == i
        union = np.count_nonzero(ma | mb)
        out.append(1.0 if union == 0 else np.count_nonzero(ma & mb) / union)
    return out


def run_model(name: str, n_images: int, repeats: int, paths: list[str]) -> list[list[str]]:
    """Rows of the table for one model."""
    start = time.perf_counter()
    sam = build_model(name)
    print(f"  {name}: model built in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    data = dsb_images(n_images)
    rgbs = [to_sam_rgb(image) for _, image, _ in data]
    caches = {p: EmbeddingCache(max_items=len(data)) for p in paths}
    times = {p: [] for p in paths}
    cpu = {p: [] for p in paths}
    diff = dict.fromkeys(paths, 0.0)
    scale = 0.0
    with torch.no_grad():
        for k, rgb in enumerate(rgbs):
            features = {}
            for r in range(repeats):
                shift = (k * repeats + r) % len(paths)  # rotate the order: no path has a fixed slot
                order = paths[shift:] + paths[:shift]
                for p in order:
                    use(sam, p)
                    t, c = time.perf_counter(), time.process_time()
                    emb = caches[p].get(sam, rgb) if r == 0 else embed_image(sam, rgb)
                    times[p].append(time.perf_counter() - t)
                    cpu[p].append(time.process_time() - c)
                    features.setdefault(p, emb.features)
            scale = max(scale, features["stock"].abs().max().item())
            for p in paths:
                diff[p] = max(diff[p], (features[p] - features["stock"]).abs().max().item())
            print(f"  {name}: image {k + 1}/{len(rgbs)} encoded by {len(paths)} paths", file=sys.stderr)
    results = {}
    for p in paths:
        use(sam, p)
        hits = caches[p].hits
        results[p] = [
            refine(image, labels, sam, iterations=1, embedding_cache=caches[p]).labels
            for _, image, labels in data
        ]
        assert caches[p].hits - hits == len(data), "refine re-encoded an image"
    print(f"  {name}: refined, {time.perf_counter() - start:.0f} s in all", file=sys.stderr)
    disable_fast_encoder(sam)
    stock_times = np.array(times["stock"])
    rows = []
    for p in paths:
        ious = []
        for (_, _, labels), ref, got in zip(data, results["stock"], results[p], strict=True):
            ious += per_object_iou(ref, got, np.unique(labels[labels > 0]))
        # the ratio of passes run back to back is steadier than min / min under a varying load
        ratio = np.median(stock_times / np.array(times[p]))
        rows.append([
            name, p, f"{min(times[p]):.2f}", f"{ratio:.2f}x", f"{min(cpu[p]):.2f}",
            f"{min(cpu['stock']) / min(cpu[p]):.2f}x", f"{diff[p]:.1e}",
            f"{min(ious):.4f}" if ious else "-", f"{np.mean(ious):.4f}" if ious else "-",
        ])
    rows.append([name, f"(embedding max abs {scale:.2f}; {sum(len(np.unique(lb)) - 1 for *_, lb in data)} objects)"]
                + [""] * 7)
    return rows


def _one_pass_peak(model: str, path: str) -> tuple[float, float]:
    """(RSS before, peak RSS during) one encoder pass in this process, in GB (Linux)."""
    import psutil

    sam = build_model(model)
    use(sam, path)
    size = sam.image_encoder.img_size
    x = torch.randn(1, 3, size, size)
    before = psutil.Process().memory_info().rss / 2**30
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak (VmHWM) to the current RSS
    with torch.no_grad():
        sam.image_encoder(x)
    status = Path("/proc/self/status").read_text()
    peak_kb = int(status.split("VmHWM:")[1].split()[0])
    return before, peak_kb / 2**20


def peak_memory(models: list[str], paths: list[str]) -> None:
    """Print the peak RSS of one encoder pass per model and path, each in a fresh process."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    print("\n| model | path | RSS before pass GB | peak RSS GB | peak - before GB |")
    print("|---|---|---|---|---|", flush=True)
    for model in models:
        for path in paths:
            with ctx.Pool(1) as pool:
                before, peak = pool.apply(_one_pass_peak, (model, path))
            print(f"| {model} | {path} | {before:.2f} | {peak:.2f} | {peak - before:.2f} |", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vit_b,vit_t,medsam_lite",
                        help="comma-separated: vit_b, vit_t, medsam_lite (default: all three)")
    parser.add_argument("--images", type=int, default=None,
                        help="bundled DSB2018 images per model (default: 2 for vit_b, 3 for vit_t, 6 for medsam_lite)")
    parser.add_argument("--repeats", type=int, default=1, help="encoder passes per image and path")
    parser.add_argument("--paths", default=DEFAULT_PATHS,
                        help=f"comma-separated, of: {', '.join(PATHS)} (stock always runs)")
    parser.add_argument("--memory", action="store_true",
                        help="only measure the peak RSS of one encoder pass per model and path")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = [p.strip() for p in args.paths.split(",")]
    if "stock" in paths:
        paths.remove("stock")
    paths = ["stock", *paths]
    default_images = {"vit_b": 2, "vit_t": 3, "medsam_lite": 6}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    if args.memory:
        peak_memory([m.strip() for m in args.models.split(",")], paths)
        return
    header = ["model", "path", "wall s per pass (min)", "wall speed-up", "CPU s per pass (min)",
              "CPU speed-up", "max abs embedding diff",
              "min object IoU", "mean object IoU"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header), flush=True)
    for name in args.models.split(","):
        n = args.images or default_images.get(name.strip(), 6)
        for row in run_model(name.strip(), n, args.repeats, paths):
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
