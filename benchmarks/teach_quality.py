"""Teach LiteMedSAM on part of the shared DSB2018 images, score it on the rest and on StarDist 2D.

The split (:func:`split`): the DSB2018 images of each modality, sorted by name,
alternate between training (1st, 3rd, ...) and test (2nd, 4th, ...): 16 and 16.
``--train N`` teaches on the first N training images, taken in turn from the
modalities (fluorescence, stained brightfield, grey brightfield), so that 1, 3
and 10 images mix them as the whole split does.

Teaching is :func:`napari_samrefine.teach.finetune.finetune` with the options
given (20 % of the training images validate; the best epoch is kept). With
``--evaluate``, the held-out DSB2018 images and StarDist's two 2D images are
refined with ``refine_quality.py``'s ``defaults`` configuration (coarse masks:
superpixel defects, seed 0) by the taught model, and the table compares them
with the untaught model's CSV (``--untaught``, the same command without
``--finetune``) when given.

Example (16 training images, then the evaluation)::

    python benchmarks/teach_quality.py --data ../shared/data --train 16 --out taught16.pt \\
        --threads 2 --embeddings EMB --evaluate --csv taught16.csv --untaught untaught.csv
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refine_quality import main as refine_quality  # noqa: E402

from napari_samrefine.evaluation.benchmark import load_pairs, to_markdown  # noqa: E402

MODALITIES = ("fluorescence", "stained_brightfield", "grey_brightfield")


def split(index: list[dict]) -> tuple[list[str], list[str]]:
    """Training and test DSB2018 image names; training ordered modality by modality in turn."""
    train: dict[str, list[str]] = {}
    test = []
    for m in sorted({e["modality"] for e in index}, key=lambda m: (m not in MODALITIES, m)):
        names = sorted(e["file"] for e in index if e["modality"] == m)
        train[m] = names[0::2]
        test += names[1::2]
    order = []
    while any(train.values()):
        for m in list(train):
            if train[m]:
                order.append(train[m].pop(0))
    return order, sorted(test)


def summary(taught: pd.DataFrame, untaught: pd.DataFrame | None) -> str:
    """Coarse, untaught and taught mean IoU and boundary IoU per data set."""
    lines = []
    for group, rows in taught.groupby(taught.dataset.map(lambda d: "DSB2018 test" if d == "dsb2018" else
                                                         "StarDist 2D")):
        line = {"data": group, "images": rows.image.nunique(), "objects": len(rows),
                "coarse IoU": rows.coarse_iou.mean(), "coarse BIoU": rows.coarse_biou.mean()}
        if untaught is not None:
            u = untaught[untaught.image.isin(set(rows.image)) & (untaught.config == "defaults")
                         & (untaught.kind == "defects")]
            line.update({"untaught IoU": u.refined_iou.mean(), "untaught BIoU": u.refined_biou.mean()})
        line.update({"taught IoU": rows.refined_iou.mean(), "taught BIoU": rows.refined_biou.mean()})
        lines.append(line)
    return to_markdown(pd.DataFrame(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--train", type=int, default=16, help="training images (1 to 16)")
    parser.add_argument("--out", type=Path, required=True, help="the taught model's file")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--augment", type=int, nargs="+", default=None, help="dihedral turns (0-7)")
    parser.add_argument("--kinds", nargs="+", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--prompts", nargs="+", default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--keep", default=None, choices=("better", "refined"))
    parser.add_argument("--lora-rank", type=int, default=None, help="adaptors in the image encoder (0: off)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--embeddings", type=Path, default=None,
                        help="disk cache of embeddings (the folder refine_quality.py's --embeddings takes)")
    parser.add_argument("--evaluate", action="store_true", help="refine the test images afterwards")
    parser.add_argument("--skip-teaching", action="store_true", help="evaluate an existing --out")
    parser.add_argument("--csv", type=Path, default=None, help="per-object rows of the evaluation")
    parser.add_argument("--untaught", type=Path, default=None,
                        help="refine_quality.py CSV of the untaught model (defaults, defects)")
    args = parser.parse_args(argv)

    import torch

    import napari_samrefine as nsr
    from napari_samrefine.teach.finetune import TeachOptions, finetune

    if args.threads:
        torch.set_num_threads(args.threads)
    index = json.loads((args.data / "dsb2018" / "index.json").read_text())
    train, test = split(index)
    train = train[: args.train]
    print(f"training images ({len(train)}): {' '.join(train)}")
    print(f"test images ({len(test)}): {' '.join(test)}")
    if not args.skip_teaching:
        pairs = {p.name: p for p in load_pairs(args.data, ("dsb2018",))}
        sam = nsr.load_sam("medsam_lite", device="cpu")
        chosen = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(
            epochs=args.epochs, max_minutes=args.max_minutes, augment=args.augment, kinds=args.kinds,
            seeds=args.seeds, prompts=args.prompts, lr=args.lr, batch_size=args.batch_size,
            keep=args.keep, lora_rank=args.lora_rank).items() if v is not None}
        options = TeachOptions(**chosen)
        # refine_quality.py keeps zoom-1 views' embeddings in <embeddings>/x1: the same windows
        cache = nsr.EmbeddingCache(max_items=4096, disk=args.embeddings and args.embeddings / "x1")
        start = time.perf_counter()
        taught = finetune([pairs[n].image for n in train], [pairs[n].labels for n in train], sam,
                          out=args.out, options=options, embedding_cache=cache, log=print)
        print(f"taught in {time.perf_counter() - start:.0f} s ({cache.misses} encoder passes, "
              f"{torch.get_num_threads()} torch threads); best epoch {taught.best_epoch}; "
              f"options {options}")
    if args.evaluate:
        csv = args.csv or args.out.with_suffix(".csv")
        refine_quality(["--data", str(args.data), "--names", *test, "tests_img2d", "img2d",
                        "--kinds", "defects", "--configs", "defaults", "--finetune", str(args.out),
                        "--csv", str(csv)]
                       + (["--threads", str(args.threads)] if args.threads else [])
                       + (["--embeddings", str(args.embeddings)] if args.embeddings else []))
        untaught = pd.read_csv(args.untaught) if args.untaught else None
        print("\n" + summary(pd.read_csv(csv), untaught))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
