"""``napari-samrefine adapt``: train a SAMRefiner++ IoU adaptor from the command line.

    napari-samrefine adapt img1.tif img2.tif --labels lab1.tif lab2.tif -o adaptor.pt
    napari-samrefine adapt images/ --labels coarse/ -o adaptor.pt \\
        --eval-images held_out/ --eval-labels held_out_coarse/

The adaptor is then used with ``napari-samrefine refine ... --adaptor adaptor.pt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_samrefine.cli.common import add_model_arguments, load_model_from_args, parse_channel
from napari_samrefine.samrefiner.defaults import BATCH_SIZE

__all__ = ["add_adapt_parser", "run_adapt_cli", "resolve_pairs"]


def add_adapt_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``adapt`` subcommand to the ``napari-samrefine`` parser's subparsers."""
    p = subparsers.add_parser(
        "adapt",
        help="train a SAMRefiner++ IoU adaptor on your images and coarse labels",
        description="Train a SAMRefiner++ IoU adaptor (a LoRA on SAM's IoU head) on your own "
        "images and their coarse labels, without annotations. The adaptor changes which of "
        "SAM's three candidate masks is chosen, never the masks themselves; use it with "
        "`napari-samrefine refine ... --adaptor FILE`. IMAGES and --labels are files in the "
        "same order, or one folder each (paired by file name).",
    )
    p.add_argument("images", nargs="+", type=Path, help="image files, or one folder of images")
    p.add_argument(
        "--labels", nargs="+", type=Path, required=True,
        help="coarse label files in the order of IMAGES, or one folder (paired by file name)",
    )
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="adaptor file to write, e.g. adaptor.pt (never an input file)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    add_model_arguments(p)
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=1, help="passes over the objects")
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation and order")
    g.add_argument("--channel", default=None,
                   help="channel index, or 'mean', for multichannel images that are not RGB "
                   "(default: RGB(A) is used as RGB; other channel counts need this)")
    g.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="objects per decoder call")
    e = p.add_argument_group("evaluation on held-out images (optional)")
    e.add_argument("--eval-images", nargs="+", type=Path, default=None,
                   help="held-out image files or folder: report top-1 selection accuracy "
                   "(default: no evaluation)")
    e.add_argument("--eval-labels", nargs="+", type=Path, default=None,
                   help="coarse labels of the held-out images (default: none; needed with "
                   "--eval-images)")
    e.add_argument("--eval-ground-truth", nargs="+", type=Path, default=None,
                   help="ground-truth labels of the held-out images (default: none, agreement with "
                   "the coarse masks only)")
    p.set_defaults(func=run_adapt_cli)
    return p


def resolve_pairs(images: list[Path], labels: list[Path], what: str = "") -> list[tuple[Path, Path]]:
    """Pair image and label paths: one folder each (by file name) or files in the same order.

    Raises
    ------
    ValueError
        For a folder mixed with files, or different numbers of images and labels.
    """
    from napari_samrefine.io import find_pairs

    images, labels = [Path(p) for p in images], [Path(p) for p in labels]
    if len(images) == 1 and len(labels) == 1 and images[0].is_dir() and labels[0].is_dir():
        return find_pairs(images[0], labels[0])
    if any(p.is_dir() for p in images + labels):
        raise ValueError(
            f"Give {what}images and labels either as one folder each or as files, not a mix."
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{len(images)} {what}images but {len(labels)} label files: give one label file "
            "per image, in the same order."
        )
    return list(zip(images, labels, strict=True))


def run_adapt_cli(args: argparse.Namespace) -> int:
    """Run ``napari-samrefine adapt``: train, save, optionally evaluate; returns 0."""
    from napari_samrefine._progress import tqdm_progress
    from napari_samrefine.adaption.selection import evaluate_selection
    from napari_samrefine.adaption.training import adapt_iou_head
    from napari_samrefine.io import check_outputs, read_image
    from napari_samrefine.models.profile import model_profile

    pairs = resolve_pairs(args.images, args.labels)
    eval_pairs, eval_gt = [], None
    if (args.eval_images is None) != (args.eval_labels is None):
        raise ValueError("--eval-images and --eval-labels go together.")
    if args.eval_images is not None:
        eval_pairs = resolve_pairs(args.eval_images, args.eval_labels, "held-out ")
        if args.eval_ground_truth is not None:
            gt_of = dict(resolve_pairs(args.eval_images, args.eval_ground_truth, "held-out "))
            missing = [i.name for i, _ in eval_pairs if i not in gt_of]
            if missing:
                raise ValueError(f"No ground-truth file for the held-out images {missing}.")
            eval_gt = [read_image(gt_of[i]) for i, _ in eval_pairs]
    elif args.eval_ground_truth is not None:
        raise ValueError("--eval-ground-truth needs --eval-images and --eval-labels.")
    channel = parse_channel(args.channel)
    output = Path(args.output)
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder: give a file name such as adaptor.pt.")
    inputs = [p for pair in pairs + eval_pairs for p in pair] + list(args.eval_ground_truth or [])
    inputs += [args.checkpoint] if args.checkpoint is not None else []
    check_outputs([output], inputs, overwrite=args.overwrite)

    images = [read_image(i) for i, _ in pairs]
    labels = [read_image(lab) for _, lab in pairs]
    sam = load_model_from_args(args)
    adaptor = adapt_iou_head(
        sam, images, labels, epochs=args.epochs, seed=args.seed, channel=channel,
        batch_size=args.batch_size, progress=tqdm_progress(desc="IoU adaption", unit="step"),
    )
    adaptor.save(output)  # atomic; creates the folder
    m = adaptor.metadata
    print(
        f"Trained on {m['n_objects']} objects of {m['n_images']} images ({m['n_steps']} steps): "
        f"ranking loss {m['loss_before']:.4f} -> {m['loss_after']:.4f}; top-1 agreement with "
        f"the coarse masks on the training objects {m['train_top1_before']:.3f} -> "
        f"{m['train_top1_after']:.3f}."
    )
    print(f"Saved the IoU adaptor to {output} ({output.stat().st_size} bytes).")
    note = model_profile(sam).defaults.adaptor_note
    if note:  # measured for this model: the adaptor made its masks worse
        print(f"warning: {note}", file=sys.stderr)
    if eval_pairs:
        report = evaluate_selection(
            sam,
            [read_image(i) for i, _ in eval_pairs],
            [read_image(lab) for _, lab in eval_pairs],
            ground_truth=eval_gt,
            iou_adaptor=adaptor,
            channel=channel,
            batch_size=args.batch_size,
            progress=tqdm_progress(desc="evaluation", unit="image"),
        )
        print("Held-out images: " + str(report))
    return 0
