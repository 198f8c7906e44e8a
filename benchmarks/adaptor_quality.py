"""Does SAMRefiner++'s IoU adaptor make a model's masks better? Coarse vs refined, per object.

On the images of ``shared/data`` (32 DSB2018 images and StarDist's two 2D
images), coarse labels are synthesised from the truth
(``synthesize_coarse_labels``, seed 0). An IoU adaptor is trained the way users
train one (``napari_samrefine.adapt_iou_head`` at its defaults: the coarse
masks of the training images, no truth) on ``--train`` images spread evenly
over the list (``numpy.linspace``); every image is then refined with
``napari_samrefine.refine`` at the same settings (``keep="refined"``,
``scale=None``, ``binary="one"``, ``iterations`` pinned) three ways:

* ``without``: no adaptor (the model's profile decides the decoder output:
  LiteMedSAM's single mask, SAM's best-ranked of three candidates);
* ``adaptor``: ``iou_adaptor=`` the trained adaptor (the decoder then always
  ranks the three multimask candidates, with the adapted IoU head);
* ``untrained``: ``iou_adaptor=IoUAdaptor.untrained(sam)`` (zero LoRA update:
  the three candidates ranked by the model's own IoU head), which separates
  the switch to multimask output from what the training changed (at the first
  ``--iterations`` value only). "trained != untrained %" counts the objects
  whose IoU with the truth differs between the two.

Each coarse object is matched to a true object by overlap
(``evaluation.metrics.match_objects``, one to one, any IoU > 0) and scored
against it (IoU and boundary IoU, ``evaluation.metrics.object_ious``, via
``refine_quality.score``). Prints one markdown table per model and iteration
count, for the held-out images and for all images, and the top-1 selection
accuracy of the paper's Table 1 on the held-out objects
(``evaluate_selection`` with the truth).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/adaptor_quality.py --csv rows.csv

Options: ``--images N`` (the first N DSB2018 images, plus StarDist's),
``--train K``, ``--epochs E``, ``--iterations 1 5``, ``--models medsam_lite tiny``.
Results: docs/benchmarks.md, "SAMRefiner++ IoU adaptor with LiteMedSAM".
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from refine_quality import score
from shared_data import DATA, real_images

import napari_samrefine as nsr
from napari_samrefine.adaption.adaptor import IoUAdaptor
from napari_samrefine.evaluation.benchmark import to_markdown
from napari_samrefine.evaluation.defects import synthesize_coarse_labels
from napari_samrefine.evaluation.metrics import match_objects


def refine_ways(sam, image, coarse, adaptors: dict, iterations: int, cache) -> dict[str, np.ndarray]:
    """The refined labels of one image, per way (same settings, only the adaptor differs)."""
    out = {}
    for way, adaptor in adaptors.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GrowthWarning etc.: the scores say it
            result = nsr.refine(image, coarse, sam, iterations=iterations, keep="refined", scale=None,
                                binary="one", iou_adaptor=adaptor, embedding_cache=cache)
        out[way] = result.labels
    return out


def table(rows: pd.DataFrame) -> str:
    """One row per (iterations, image set): mean IoU of coarse and of each way, % better/worse."""
    lines = []
    for (it, subset), g in rows.groupby(["iterations", "subset"], sort=False):
        w = g.pivot_table(index=["image", "coarse_id"], columns="way", values=["refined_iou", "refined_biou"])
        c = g[g.way == "without"]
        iou = w["refined_iou"]
        delta = iou["adaptor"] - iou["without"]
        lines.append({
            "iterations": it, "images": subset, "n images": c.image.nunique(), "objects": len(c),
            "coarse IoU": c.coarse_iou.mean(), "without adaptor": iou["without"].mean(),
            "with adaptor": iou["adaptor"].mean(),
            "untrained adaptor": iou["untrained"].mean() if "untrained" in iou else np.nan,
            "adaptor better %": f"{100 * (delta > 1e-9).mean():.0f}",
            "adaptor worse %": f"{100 * (delta < -1e-9).mean():.0f}",
            "trained != untrained %": f"{100 * (iou['adaptor'] != iou['untrained']).mean():.0f}"
            if "untrained" in iou else "",
            "BIoU without / with": f"{w['refined_biou']['without'].mean():.3f} / "
                                   f"{w['refined_biou']['adaptor'].mean():.3f}",
        })
    return to_markdown(pd.DataFrame(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--images", type=int, default=None, help="DSB2018 images (default all 32)")
    parser.add_argument("--train", type=int, default=4, help="training images, spread over the list")
    parser.add_argument("--epochs", type=int, default=1, help="adapt_iou_head's epochs (its default 1)")
    parser.add_argument("--iterations", type=int, nargs="+", default=[1])
    parser.add_argument("--models", nargs="+", default=["medsam_lite", "tiny"])
    parser.add_argument("--no-untrained", action="store_true",
                        help="skip the untrained-adaptor way (else run at the first --iterations only)")
    parser.add_argument("--csv", type=Path, default=None, help="write one row per object and way")
    args = parser.parse_args(argv)
    if not args.data.exists():
        raise SystemExit(f"real data not found at {args.data}")

    import torch

    start = time.perf_counter()
    images = [(n, im, tr.astype(np.int32), synthesize_coarse_labels(im, tr, seed=0).labels)
              for n, im, tr in real_images(args.data, args.images)]
    train_idx = set(np.unique(np.linspace(0, len(images) - 1, args.train).round().astype(int)).tolist())
    train = [images[k] for k in sorted(train_idx)]
    print(f"{len(images)} images; training on {[n for n, *_ in train]}; "
          f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    all_rows = []
    for model in args.models:
        sam = nsr.tiny_sam() if model == "tiny" else nsr.load_sam(model, device="cpu")
        cache = nsr.EmbeddingCache(max_items=4096)
        t0 = time.perf_counter()
        adaptor = nsr.adapt_iou_head(sam, [im for _, im, _, _ in train], [c for *_, c in train],
                                     epochs=args.epochs, embedding_cache=cache)
        t_train = time.perf_counter() - t0
        m = adaptor.metadata
        print(f"\n## {model}\n\nadaptor: {m['n_objects']} objects of {m['n_images']} images, "
              f"{m['n_steps']} steps, {t_train:.0f} s (encodings included); ranking loss "
              f"{m['loss_before']:.4f} -> {m['loss_after']:.4f}; top-1 agreement with the coarse "
              f"masks on the training objects {m['train_top1_before']:.3f} -> {m['train_top1_after']:.3f}; "
              f"largest LoRA weight |up| {float(adaptor.up.abs().max()):.2e}, |down| "
              f"{float(adaptor.down.abs().max()):.2e}")
        held = [x for k, x in enumerate(images) if k not in train_idx]
        sel = nsr.evaluate_selection(sam, [x[1] for x in held], [x[3] for x in held],
                                     ground_truth=[x[2] for x in held], iou_adaptor=adaptor,
                                     embedding_cache=cache)
        print(f"held-out top-1 selection accuracy (refine prompts): {sel}")
        adaptors = {"without": None, "adaptor": adaptor}
        for it in args.iterations:
            if it == args.iterations[0] and not args.no_untrained:  # once: it only separates effects
                adaptors["untrained"] = IoUAdaptor.untrained(sam)
            else:
                adaptors.pop("untrained", None)
            rows = []
            t0 = time.perf_counter()
            for k, (name, image, truth, coarse) in enumerate(images):
                t1 = time.perf_counter()
                match = match_objects(coarse, truth, threshold=1e-9)
                mapping = dict(zip(match.pred_ids.tolist(), match.true_ids.tolist(), strict=True))
                if not mapping:
                    continue
                refined = refine_ways(sam, image, coarse, adaptors, it, cache)
                for way, labels in refined.items():
                    df = score(truth, coarse, labels, mapping)
                    rows.append(df.assign(model=model, iterations=it, way=way, image=name,
                                          train=k in train_idx))
                print(f"[{model} T={it} {k + 1}/{len(images)}] {name} {truth.shape}: "
                      f"{time.perf_counter() - t1:.0f} s", file=sys.stderr, flush=True)
            data = pd.concat(rows, ignore_index=True)
            all_rows.append(data)
            both = pd.concat([data[~data.train].assign(subset="held-out"), data.assign(subset="all")])
            print(f"\n### {model}, iterations={it} ({time.perf_counter() - t0:.0f} s)\n")
            print(table(both))
    if args.csv is not None:
        pd.concat(all_rows, ignore_index=True).to_csv(args.csv, index=False)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
