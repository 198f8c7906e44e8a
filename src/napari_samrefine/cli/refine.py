"""``napari-samrefine refine``: SAMRefiner on image/label files or folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_samrefine.cli.common import (
    add_model_arguments,
    check_finetune_base,
    load_model_from_args,
    parse_channel,
    parse_ids,
)
from napari_samrefine.labels.binary import BINARY_CHOICES
from napari_samrefine.pipeline.options import DEFAULTS, MODES, RefineOptions
from napari_samrefine.quality.keep import KEEP_CHOICES

__all__ = ["add_refine_parser", "run_refine", "refine_options"]


def add_refine_parser(sub) -> argparse.ArgumentParser:
    """Add the ``refine`` subcommand to the parser's subparsers; returns its parser."""
    p = sub.add_parser(
        "refine",
        help="refine coarse labels with SAM",
        description="Refine coarse labels with SAM (SAMRefiner). IMAGE and LABELS are files "
        "(TIFF/PNG), or two folders whose files are paired by name.",
    )
    p.add_argument("image", type=Path, help="image file, or folder of images")
    p.add_argument("labels", type=Path, help="coarse label file, or folder of label files")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output label file (.tif/.png), or folder for folder input; never an "
                   "input file or folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace output files that exist already (inputs are never replaced)")
    add_model_arguments(p)
    g = p.add_argument_group("refinement")
    g.add_argument("--mode", choices=MODES, default=DEFAULTS.mode,
                   help="instance: one object per id; semantic: split-then-merge per class id")
    g.add_argument(
        "--binary", choices=BINARY_CHOICES, default=DEFAULTS.binary,
        help="for a binary mask (1-bit, or two values such as 0/255): refine each connected "
        "component as an object or the whole mask as one object; written back as a mask",
    )
    g.add_argument(
        "--keep", choices=KEEP_CHOICES, default=DEFAULTS.keep,
        help="refined: write every refined mask back (the paper); better: keep an object's "
        "coarse mask where its refined mask agrees too little with it (status kept-coarse); "
        "default: the model's measured choice (better for medsam_lite, refined for SAM)",
    )
    g.add_argument("--iterations", type=int, default=DEFAULTS.iterations,
                   help="cascade iterations; default: the model's measured choice (1 for "
                   "medsam_lite, the paper's 5 for SAM)")
    g.add_argument("--scale", type=_scale, default=DEFAULTS.scale, metavar="S|auto|none",
                   help="object scale: model-input pixels per image pixel, each object refined in "
                   "a window around it; auto: per object, the model's measured best size (none for "
                   "models without that measurement); none: the whole image (or its --tile tiles)")
    for flag, what in (("points", "point prompts"), ("box", "the box prompt"),
                       ("mask", "the Gaussian mask prompt"), ("negative-point", "the negative point")):
        g.add_argument(
            f"--{flag}", action=argparse.BooleanOptionalAction, default=None,
            help=f"use (or --no-{flag}: do not use) {what}; default: what the model was "
            "trained with (see `napari-samrefine models`)",
        )
    auto = DEFAULTS.cebox_lambda  # refine's cebox="auto" in instance mode
    g.add_argument("--cebox", type=float, default=None,
                   help=f"CEBox lambda (default {auto:g} in instance mode, off in semantic); "
                   "0 = tight box")
    g.add_argument("--strength", type=float, default=DEFAULTS.strength, help="mask prompt amplitude w")
    g.add_argument("--gamma", type=float, default=DEFAULTS.gamma, help="Gaussian mask prompt spread")
    g.add_argument("--convergence", type=float, default=DEFAULTS.convergence,
                   help="an object stops once its mask's IoU with the previous iteration "
                   "reaches this; 1 = never stop early")
    g.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                   help="objects per decoder call")
    g.add_argument("--adaptor", type=Path, default=None,
                   help="SAMRefiner++ IoU adaptor file (default: none, SAM's own IoU head)")
    g.add_argument("--finetune", type=Path, default=None, metavar="FILE",
                   help="a taught model's file (from `napari-samrefine finetune`) over the "
                   "--model/--checkpoint it was taught from (default: none, the model as it is)")
    g.add_argument("--table", action="store_true", help="also write <output>.csv with per-object results")
    g.add_argument("--support", type=Path, nargs=2, default=None, metavar=("IMAGE", "LABELS"),
                   help="a support pair (an image of the same kind of objects and its trusted "
                   "instance labels): each refined object's JFS verdict goes into the table's "
                   "jfs_verdict column (a column only: it does not change the masks); single "
                   "2D file input only (default: none, no jfs_verdict)")
    _add_image_arguments(p)
    _add_batch_arguments(p)
    p.set_defaults(func=run_refine)
    return p


def _add_image_arguments(p: argparse.ArgumentParser) -> None:
    """Large images, stacks and channels: ``--tile``, ``--halo``, ``--planes``, ``--channel*``."""
    g = p.add_argument_group("large images, stacks and channels")
    g.add_argument("--tile", default=_tile_text(DEFAULTS.tile), metavar="PX|auto|none",
                   help="refine large images in square tiles of this many pixels (>= 32); "
                   "auto: SAM's input size where the image is larger; none: whole image, downscaled")
    g.add_argument("--halo", type=int, default=None, metavar="PX",
                   help="tile overlap margin in pixels, less than half the tile (default: tile/8)")
    g.add_argument("--planes", default="all", metavar="LIST|all",
                   help="planes of a stack to refine, e.g. 0,3,5; the others stay coarse")
    g.add_argument("--channel", default=None,
                   help="channel index, or 'mean', for multichannel images that are not RGB "
                   "(default: RGB(A) is used as RGB; other channel counts need this)")
    g.add_argument("--channel-axis", type=int, default=None, metavar="AXIS",
                   help="axis of IMAGE that holds the channels, e.g. 0 for (C, Y, X) "
                   "(default: the last axis, when IMAGE has one axis more than LABELS)")
    g.add_argument("--percentiles", type=float, nargs=2, default=DEFAULTS.percentiles,
                   metavar=("LOW", "HIGH"),
                   help="contrast-stretch percentiles for images that are not uint8")


def _add_batch_arguments(p: argparse.ArgumentParser) -> None:
    """Folder input on dask.distributed: ``--workers``, ``--scheduler``."""
    g = p.add_argument_group(
        "many files (folder input)",
        "Outputs that exist already are skipped (restart an interrupted run with the same "
        "command); --overwrite refines them again. Workers need the distributed extra: "
        'pip install "napari-samrefine[distributed]".',
    )
    g.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="processes of a local dask cluster, one thread each; 0 or 1: this process "
        "(default: one per CPU core, at most one per 4 GiB of memory and one per file; this "
        "process for one file, on a GPU, or without the distributed extra)",
    )
    g.add_argument(
        "--scheduler", default=None, metavar="ADDRESS",
        help="address of a running dask scheduler, e.g. tcp://10.0.0.5:8786, whose workers "
        "refine the files; they must see the same paths and have napari-samrefine installed "
        "(default: none, see --workers)",
    )


def _tile_text(tile: int | str | None) -> str:
    """A ``tile`` option as ``--tile`` writes it."""
    return "none" if tile is None else str(tile)


def _tile(text: str) -> int | str | None:
    """``--tile``: a whole number of pixels, ``auto`` or ``none``."""
    if text.strip().lower() in ("auto", "none"):
        return None if text.strip().lower() == "none" else "auto"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--tile must be a whole number of pixels, 'auto' or 'none', got {text!r}") from None


def _scale(text: str) -> float | str | None:
    """``--scale``: a number > 0, ``auto`` or ``none``."""
    word = text.strip().lower()
    if word in ("auto", "none"):
        return None if word == "none" else "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number such as 2, 'auto' or 'none', got {text!r}") from None


def refine_options(args) -> RefineOptions:
    """The :class:`~napari_samrefine.pipeline.options.RefineOptions` that the options give.

    Raises
    ------
    ValueError
        For any option out of range (all of them named), before any work.
    """
    channel = parse_channel(args.channel)
    return RefineOptions(
        mode=args.mode,
        iterations=args.iterations,
        use_points=args.points,
        use_box=args.box,
        use_mask=args.mask,
        use_negative_point=args.negative_point,
        cebox="auto" if args.cebox is None else args.cebox,
        strength=args.strength,
        gamma=args.gamma,
        convergence=None if args.convergence == 1 else args.convergence,
        channel=channel,
        batch_size=args.batch_size,
        binary=args.binary,
        keep=args.keep,
        scale=args.scale,
        tile=_tile(args.tile),
        halo=args.halo,
        planes=parse_ids(args.planes, "--planes"),
        channel_axis=args.channel_axis,
        percentiles=tuple(args.percentiles),
    )


def _plan_refine(args) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Input pairs and output files of ``refine``, refused before any work if unsafe.

    For folder input, outputs that exist already are not refused: they are
    skipped (see :func:`~napari_samrefine.batch.many.refine_many`).
    """
    from napari_samrefine.io import check_outputs, check_png_labels, find_pairs, read_image

    for given in (args.image, args.labels):
        if not given.exists():
            raise FileNotFoundError(f"No such file or folder: {given}")
    if args.image.is_dir() != args.labels.is_dir():
        raise ValueError("IMAGE and LABELS must both be files or both be folders.")
    if args.image.is_dir() and args.output.exists() and not args.output.is_dir():
        raise ValueError(f"-o {args.output} is a file: give a folder for folder input.")
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {args.workers}")
    if args.scheduler is not None and args.workers is not None:
        raise ValueError("Give --scheduler or --workers, not both: --scheduler uses that "
                         "cluster's workers.")
    if not args.image.is_dir() and (args.scheduler is not None or (args.workers or 0) > 1):
        raise ValueError("--scheduler and --workers are for folder input; a single file is "
                         "refined in this process.")
    if args.support is not None:
        if args.image.is_dir():
            raise ValueError("--support is for single-file input (one 2D image and its labels), "
                             "not folders: refine the files one by one to get JFS verdicts.")
        for given in args.support:
            if not given.is_file():
                raise FileNotFoundError(f"--support: no such file: {given}")
    if args.image.is_dir():
        pairs = find_pairs(args.image, args.labels)
        outputs = [args.output / (lab.stem + ".tif") for _, lab in pairs]
    else:
        pairs, outputs = [(args.image, args.labels)], [args.output]
    for out in outputs:
        if out.suffix.lower() not in (".tif", ".tiff", ".png"):
            raise ValueError(f"Output {out} must end in .tif or .png (or be a folder for folder input).")
    written = outputs + ([o.with_suffix(".csv") for o in outputs] if args.table else [])
    models = [p for p in (args.checkpoint, args.adaptor, args.finetune, *(args.support or ()))
              if p is not None]
    check_outputs(
        written, [p for pair in pairs for p in pair] + models,
        output_dir=args.output if args.image.is_dir() else None,
        input_dirs=[args.image, args.labels],
        overwrite=args.overwrite or args.image.is_dir(),  # folders: existing outputs are skipped
    )
    if args.output.suffix.lower() == ".png" and not args.image.is_dir():
        labels = read_image(args.labels)  # the output keeps the labels' dtype
        check_png_labels(labels.dtype, labels.ndim, labels.shape)
    check_finetune_base(args)
    return pairs, outputs


def run_refine(args: argparse.Namespace) -> int:
    """Run ``napari-samrefine refine``; returns 0, or 1 when a file of a folder failed."""
    kwargs = refine_options(args).as_kwargs()
    pairs, outputs = _plan_refine(args)
    if args.image.is_dir():
        return _run_folder(args, kwargs, pairs)
    return _run_file(args, kwargs, pairs[0], outputs[0])


def _run_file(args, kwargs: dict, pair: tuple[Path, Path], out: Path) -> int:
    """One image: in this process, with a progress bar over the cascade."""
    from napari_samrefine._progress import tqdm_progress
    from napari_samrefine.batch.one_file import refine_file

    sam = load_model_from_args(args)
    adaptor = None
    if args.adaptor is not None:
        from napari_samrefine.adaption.adaptor import load_iou_adaptor

        adaptor = load_iou_adaptor(args.adaptor)
    if args.support is not None:
        from napari_samrefine.io import read_image

        kwargs = {**kwargs, "support": tuple(read_image(p) for p in args.support)}
    image_path, labels_path = pair
    row = refine_file(
        image_path, labels_path, out, sam, table=args.table, iou_adaptor=adaptor, **kwargs,
        progress=tqdm_progress(desc=image_path.name, unit="step", leave=False),
    )
    for note in filter(None, row["notes"].split("\n")):
        print(f"{image_path.name}: note: {note}", file=sys.stderr)
    print(f"{image_path.name}: {row['summary']} -> {out}")
    return 0


def _run_folder(args, kwargs: dict, pairs: list[tuple[Path, Path]]) -> int:
    """Folder input: :func:`~napari_samrefine.batch.many.refine_many`, a bar over files."""
    from tqdm.auto import tqdm

    from napari_samrefine.batch.cluster import DISTRIBUTED_HINT, distributed_available
    from napari_samrefine.batch.many import batch_summary, refine_many

    if (args.scheduler is not None or (args.workers or 0) > 1) and not distributed_available():
        asked = "--scheduler" if args.scheduler is not None else f"--workers {args.workers}"
        raise ValueError(
            f"{asked} needs dask.distributed, which is not installed: {DISTRIBUTED_HINT} "
            "(or leave out the option to refine in this process)."
        )
    done = [out for out in (args.output / (lab.stem + ".tif") for _, lab in pairs) if out.exists()]
    if done and not args.overwrite:
        print(f"{len(done)} of {len(pairs)} outputs exist in {args.output} already: skipped "
              "(--overwrite refines them again).", file=sys.stderr)
    bar = tqdm(desc="refine", unit="file", total=len(pairs) - (0 if args.overwrite else len(done)))

    def progress(n: int, total: int, message: str) -> None:
        if message:
            bar.write(message, file=sys.stdout)
        bar.total, bar.n = total, n
        bar.refresh()

    try:
        result = refine_many(
            pairs, args.output, args.checkpoint if args.checkpoint is not None else args.model,
            client=args.scheduler, workers=args.workers, device=args.device,
            allow_unsafe_pickle=args.allow_unsafe_pickle, iou_adaptor=args.adaptor,
            finetune=args.finetune, overwrite=args.overwrite, table=args.table, progress=progress, **kwargs,
        )
    except ModuleNotFoundError as err:  # e.g. a TinyViT model without its extra
        raise ValueError(str(err)) from err
    finally:
        bar.close()
    notes: dict[str, list[str]] = {}
    for row in result.itertuples():
        for note in filter(None, row.notes.split("\n")):
            notes.setdefault(note, []).append(Path(row.image).name)
    for note, names in notes.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        print(f"note ({shown}): {note}", file=sys.stderr)
    failed = result[result["status"].str.startswith("failed")]
    for row in failed.itertuples():
        print(f"{Path(row.image).name}: {row.status}", file=sys.stderr)
    print(batch_summary(result) + (": see the lines above." if len(failed) else "."))
    return 1 if len(failed) else 0
