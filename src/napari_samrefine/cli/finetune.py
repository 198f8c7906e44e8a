"""``napari-samrefine finetune``: teach SAM to refine, from images with corrected labels.

    napari-samrefine finetune img1.tif img2.tif --labels true1.tif true2.tif \\
        --model medsam_lite -o my_cells.pt
    napari-samrefine refine img3.tif coarse3.tif -o refined3.tif \\
        --model medsam_lite --finetune my_cells.pt

One line is printed per epoch (training loss, validation IoU), then the file
written; a progress bar shows the time left. Interrupting writes no file.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from napari_samrefine.cli.adapt import resolve_pairs
from napari_samrefine.cli.common import add_model_arguments, load_model_from_args, parse_channel
from napari_samrefine.engine.preprocess import PERCENTILES
from napari_samrefine.models.profile import PROMPT_KINDS
from napari_samrefine.teach.examples import DIHEDRAL
from napari_samrefine.teach.finetune import TeachOptions
from napari_samrefine.teach.views import TEACH_KINDS

__all__ = ["add_finetune_parser", "run_finetune_cli", "teach_options"]

_DEFAULTS = {f.name: f.default for f in fields(TeachOptions)}


def _augment_text(augment: tuple[int, ...]) -> str:
    return "all" if tuple(augment) == DIHEDRAL else "none" if tuple(augment) == (0,) else \
        " ".join(map(str, augment))


def add_finetune_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``finetune`` subcommand to the ``napari-samrefine`` parser's subparsers."""
    p = subparsers.add_parser(
        "finetune",
        help="teach SAM to refine your objects, from a few images with corrected labels",
        description="Teach SAM to refine (fine-tune its prompt encoder and mask decoder; the "
        "image encoder is not changed unless --lora-rank is given) from images and their corrected instance labels: "
        "coarse masks are made from the labels, and the model learns to answer the true masks "
        "to the prompts refine mines from them. Writes a small file of the changed weights; "
        "use it with `napari-samrefine refine ... --finetune FILE` and the same --model. "
        "IMAGES and --labels are files in the same order, or one folder each (paired by name).",
    )
    p.add_argument("images", nargs="+", type=Path, help="2D image files, or one folder of images")
    p.add_argument(
        "--labels", nargs="+", type=Path, required=True,
        help="corrected instance label files in the order of IMAGES, or one folder (paired by "
        "file name)",
    )
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="taught-model file to write, e.g. my_cells.pt (never an input file)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    add_model_arguments(p)
    g = p.add_argument_group("teaching")
    g.add_argument("--epochs", type=int, default=_DEFAULTS["epochs"],
                   help="at most this many passes over the training objects")
    g.add_argument("--lr", type=float, default=_DEFAULTS["lr"], help="AdamW learning rate")
    g.add_argument("--batch-size", type=int, default=_DEFAULTS["batch_size"],
                   help="objects per optimiser step")
    g.add_argument("--augment", nargs="+", default=[_augment_text(_DEFAULTS["augment"])],
                   metavar="all|none|K",
                   help="turns and flips of each view: all (the 8), none, or numbers 0-7 (k %% 4 "
                   "quarter turns, flipped when k >= 4)")
    g.add_argument("--kinds", nargs="+", choices=TEACH_KINDS, default=list(_DEFAULTS["kinds"]),
                   metavar="KIND",
                   help=f"kinds of coarse masks made from the labels, of {', '.join(TEACH_KINDS)}")
    g.add_argument("--seeds", nargs="+", type=int, default=list(_DEFAULTS["seeds"]), metavar="N",
                   help="seeds of the random coarse masks (more seeds, more examples)")
    g.add_argument("--prompts", nargs="+", choices=PROMPT_KINDS, default=list(_DEFAULTS["prompts"]),
                   metavar="KIND",
                   help=f"prompt kinds the model learns (and refine then uses), of {', '.join(PROMPT_KINDS)}")
    g.add_argument("--validation", type=float, default=_DEFAULTS["validation"],
                   help="fraction of the images held out to validate (with one image, its "
                   "unturned views validate)")
    g.add_argument("--patience", type=int, default=_DEFAULTS["patience"],
                   help="stop after this many epochs without a better validation IoU")
    g.add_argument("--max-minutes", type=float, default=_DEFAULTS["max_minutes"],
                   help="stop after this many minutes of training, keeping the best epoch "
                   "(default: no limit)")
    g.add_argument("--lora-rank", type=int, default=_DEFAULTS["lora_rank"], metavar="R",
                   help="also teach the image encoder: low-rank adaptors of rank R in its attention "
                   "(0, the default: off; each step then encodes its window again, slow on a CPU)")
    g.add_argument("--keep", choices=("better", "refined"), default=_DEFAULTS["keep"],
                   help="the keep policy the taught model refines with, unless refine is given "
                   "--keep")
    g.add_argument("--seed", type=int, default=_DEFAULTS["seed"],
                   help="seed of the validation split, the order of the examples and the adaptors' start")
    g.add_argument("--channel", default=None,
                   help="channel index, or 'mean', for multichannel images that are not RGB "
                   "(default: RGB(A) is used as RGB; other channel counts need this)")
    g.add_argument("--percentiles", type=float, nargs=2, default=PERCENTILES,
                   metavar=("LOW", "HIGH"),
                   help="contrast-stretch percentiles for images that are not uint8 (give "
                   "refine the same)")
    p.set_defaults(func=run_finetune_cli)
    return p


def _augment(words: list[str]) -> tuple[int, ...]:
    if len(words) == 1 and words[0].lower() in ("all", "none"):
        return DIHEDRAL if words[0].lower() == "all" else (0,)
    try:
        ks = tuple(sorted({int(w) for w in words}))
    except ValueError:
        ks = ()
    if not ks or not set(ks) <= set(DIHEDRAL):
        raise ValueError(f"--augment must be 'all', 'none' or numbers 0-7, got {' '.join(words)!r}")
    return ks


def teach_options(args: argparse.Namespace) -> TeachOptions:
    """The :class:`~napari_samrefine.teach.finetune.TeachOptions` the options give.

    Raises
    ------
    ValueError
        For an option out of range, before any work.
    """
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise ValueError(f"--max-minutes must be more than 0, got {args.max_minutes:g}")
    return TeachOptions(
        prompts=tuple(p for p in PROMPT_KINDS if p in args.prompts),
        kinds=tuple(dict.fromkeys(args.kinds)),
        seeds=tuple(dict.fromkeys(args.seeds)),
        augment=_augment(args.augment),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        validation=args.validation,
        patience=args.patience,
        max_minutes=args.max_minutes,
        keep=args.keep,
        seed=args.seed,
        lora_rank=args.lora_rank,
    )


def run_finetune_cli(args: argparse.Namespace) -> int:
    """Run ``napari-samrefine finetune``: read, check, teach, write; returns 0."""
    from tqdm.auto import tqdm

    from napari_samrefine._progress import tqdm_progress
    from napari_samrefine.io import check_outputs, read_image
    from napari_samrefine.teach.finetune import check_teaching_data, finetune

    options = teach_options(args)
    channel = parse_channel(args.channel)
    pairs = resolve_pairs(args.images, args.labels)
    output = Path(args.output)
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder: give a file name such as my_cells.pt.")
    base = args.checkpoint if args.checkpoint is not None else Path(args.model)
    inputs = [p for pair in pairs for p in pair] + ([base] if base.is_file() else [])
    check_outputs([output], inputs, overwrite=args.overwrite)
    images = [read_image(i) for i, _ in pairs]
    labels = [read_image(lab) for _, lab in pairs]
    for (image_path, labels_path), image, lab in zip(pairs, images, labels, strict=True):
        try:
            check_teaching_data([image], [lab])
        except ValueError as err:  # name the files, not list indices
            text = str(err).replace("labels[0]", labels_path.name).replace("images[0]", image_path.name)
            raise ValueError(text) from None
    sam = load_model_from_args(args)
    taught = finetune(
        images, labels, sam, out=output, options=options, channel=channel,
        percentiles=tuple(args.percentiles), log=tqdm.write,
        progress=tqdm_progress(desc="teaching", bar_format="{desc} {percentage:3.0f}%|{bar}|{postfix}"),
    )
    best = taught.metadata["validation"]
    held = "the training images" if best["on_training_images"] else "the held-out images"
    print(f"Best epoch {taught.best_epoch}: validation IoU {best['best_iou']:.3f} on {held} "
          f"(coarse masks {best['coarse_iou']:.3f}).")
    print(f"Saved the taught model to {taught.path} ({taught.path.stat().st_size} bytes); refine "
          f"with it: --model {args.checkpoint or args.model} --finetune {taught.path}")
    return 0
