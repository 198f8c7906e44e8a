"""Command line: ``napari-samrefine refine IMAGE LABELS -o OUT`` and friends."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from pathlib import Path

from ._progress import tqdm_progress

__all__ = ["main", "build_parser", "HelpFormatter", "Parser", "parse_ids"]

# subcommands contributed by other modules: (module, add-parser function)
_PLUGINS = (
    ("napari_samrefine.adaption_cli", "add_adapt_parser"),
    ("napari_samrefine.benchmark", "add_benchmark_parser"),
    ("napari_samrefine.judge_cli", "add_judge_parser"),
)


def _shown(default) -> str:
    """A default as ``--help`` shows it: lists as space-separated words."""
    if isinstance(default, (list, tuple)):
        return " ".join(str(v) for v in default)
    return str(default)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, unless its help already says it or it means nothing.

    Not shown: a ``None`` default (the help text says what happens instead), the
    ``False`` of an on/off flag, the default of a required option, and a help
    text that already contains "default".
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or default is None
            or default is argparse.SUPPRESS
            or action.required
            or not action.option_strings
            or (action.nargs == 0 and default is False)
        ):
            return text
        return f"{text} (default: {_shown(default).replace('%', '%%')})".strip()


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with :class:`HelpFormatter`; subcommands inherit it."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def parse_ids(text: str | None, what: str) -> list[int] | None:
    """``"0,3,5"`` -> ``[0, 3, 5]``; ``None`` or ``"all"`` -> ``None`` (all).

    Raises
    ------
    ValueError
        Naming the option ``what`` and the text, for anything but non-negative integers.
    """
    if text is None or text.strip().lower() == "all":
        return None
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        ids = []
    if not ids or min(ids) < 0:
        raise ValueError(
            f"{what} must be 'all' or comma-separated whole numbers >= 0 such as 0,3,5, got {text!r}"
        )
    return ids


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Model and device options shared by every subcommand that runs SAM."""
    g = parser.add_argument_group("model")
    g.add_argument(
        "--model", default="vit_b_lm",
        help="registry name (see `napari-samrefine models`)",
    )
    g.add_argument(
        "--checkpoint", type=Path, default=None,
        help="local SAM checkpoint file (any name); overrides --model, needs no download "
        "(default: the --model file, downloaded once)",
    )
    g.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, mps")
    g.add_argument(
        "--allow-unsafe-pickle", action="store_true",
        help="allow a checkpoint of your own that a safe (weights-only) load refuses; "
        "only for files you trust",
    )


def load_model_from_args(args):
    """Load the SAM model that ``--model``/``--checkpoint``/``--device`` describe."""
    from .sam.loading import load_sam

    return load_sam(
        args.checkpoint if args.checkpoint is not None else args.model,
        device=args.device,
        allow_unsafe_pickle=args.allow_unsafe_pickle,
    )


def _add_refine_parser(sub) -> None:
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
    g.add_argument("--mode", choices=("instance", "semantic"), default="instance",
                   help="instance: one object per id; semantic: split-then-merge per class id")
    g.add_argument(
        "--binary", choices=("components", "one"), default="components",
        help="for a binary mask (1-bit, or two values such as 0/255): refine each connected "
        "component as an object (default) or the whole mask as one object; written back as a mask",
    )
    g.add_argument("--iterations", type=int, default=5, help="cascade iterations")
    for flag, what in (("points", "point prompts"), ("box", "the box prompt"),
                       ("mask", "the Gaussian mask prompt"), ("negative-point", "the negative point")):
        g.add_argument(
            f"--{flag}", action=argparse.BooleanOptionalAction, default=None,
            help=f"use (or --no-{flag}: do not use) {what}; default: what the model was "
            "trained with (see `napari-samrefine models`)",
        )
    g.add_argument("--cebox", type=float, default=None,
                   help="CEBox lambda (default 0.1 in instance mode, off in semantic); 0 = tight box")
    g.add_argument("--strength", type=float, default=15.0, help="mask prompt amplitude w")
    g.add_argument("--gamma", type=float, default=4.0, help="Gaussian mask prompt spread")
    g.add_argument("--convergence", type=float, default=0.99,
                   help="an object stops once its mask's IoU with the previous iteration "
                   "reaches this; 1 = never stop early")
    g.add_argument("--batch-size", type=int, default=32, help="objects per decoder call")
    g.add_argument("--adaptor", type=Path, default=None,
                   help="SAMRefiner++ IoU adaptor file (default: none, SAM's own IoU head)")
    g.add_argument("--table", action="store_true", help="also write <output>.csv with per-object results")
    _add_image_arguments(p)
    p.set_defaults(func=_run_refine)


def _add_image_arguments(p: argparse.ArgumentParser) -> None:
    """Large images, stacks and channels: ``--tile``, ``--halo``, ``--planes``, ``--channel*``."""
    g = p.add_argument_group("large images, stacks and channels")
    g.add_argument("--tile", default="auto", metavar="PX|auto|none",
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
    g.add_argument("--percentiles", type=float, nargs=2, default=(1.0, 99.8),
                   metavar=("LOW", "HIGH"),
                   help="contrast-stretch percentiles for images that are not uint8")


def _tile(text: str) -> int | str | None:
    """``--tile``: a whole number of pixels, ``auto`` or ``none``."""
    if text.strip().lower() in ("auto", "none"):
        return None if text.strip().lower() == "none" else "auto"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--tile must be a whole number of pixels, 'auto' or 'none', got {text!r}") from None


def _percentiles(values) -> tuple[float, float]:
    """``--percentiles LOW HIGH``, checked: 0 <= LOW < HIGH <= 100."""
    low, high = (float(v) for v in values)
    if not 0 <= low < high <= 100:
        raise ValueError(f"--percentiles needs 0 <= LOW < HIGH <= 100, got {low:g} {high:g}")
    return low, high


def _refine_kwargs(args) -> dict:
    channel = args.channel
    if channel is not None and channel != "mean":
        channel = int(channel)
    return dict(
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
        tile=_tile(args.tile),
        halo=args.halo,
        planes=parse_ids(args.planes, "--planes"),
        channel_axis=args.channel_axis,
        percentiles=_percentiles(args.percentiles),
    )


_CHECKED = (
    "iterations", "batch_size", "convergence", "cebox", "strength", "gamma", "binary", "tile", "halo",
)


def _plan_refine(args) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Input pairs and output files of ``refine``, refused before any work if unsafe."""
    from .io import check_outputs, check_png_labels, find_pairs, read_image

    for given in (args.image, args.labels):
        if not given.exists():
            raise FileNotFoundError(f"No such file or folder: {given}")
    if args.image.is_dir() != args.labels.is_dir():
        raise ValueError("IMAGE and LABELS must both be files or both be folders.")
    if args.image.is_dir() and args.output.exists() and not args.output.is_dir():
        raise ValueError(f"-o {args.output} is a file: give a folder for folder input.")
    if args.image.is_dir():
        pairs = find_pairs(args.image, args.labels)
        outputs = [args.output / (lab.stem + ".tif") for _, lab in pairs]
    else:
        pairs, outputs = [(args.image, args.labels)], [args.output]
    for out in outputs:
        if out.suffix.lower() not in (".tif", ".tiff", ".png"):
            raise ValueError(f"Output {out} must end in .tif or .png (or be a folder for folder input).")
    written = outputs + ([o.with_suffix(".csv") for o in outputs] if args.table else [])
    models = [p for p in (args.checkpoint, args.adaptor) if p is not None]
    check_outputs(
        written, [p for pair in pairs for p in pair] + models,
        output_dir=args.output if args.image.is_dir() else None,
        input_dirs=[args.image, args.labels], overwrite=args.overwrite,
    )
    if args.output.suffix.lower() == ".png" and not args.image.is_dir():
        labels = read_image(args.labels)  # the output keeps the labels' dtype
        check_png_labels(labels.dtype, labels.ndim, labels.shape)
    return pairs, outputs


def _run_refine(args) -> int:
    from .io import read_image, write_labels, write_table
    from .samrefiner.inputs import check_refine_options
    from .samrefiner.refiner import refine

    kwargs = _refine_kwargs(args)
    check_refine_options(**{k: kwargs[k] for k in _CHECKED})
    pairs, outputs = _plan_refine(args)
    sam = load_model_from_args(args)
    if args.adaptor is not None:
        from .samrefiner.adaption import load_iou_adaptor

        kwargs["iou_adaptor"] = load_iou_adaptor(args.adaptor)
    for (image_path, labels_path), out in zip(pairs, outputs, strict=True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = refine(
                read_image(image_path), read_image(labels_path), sam, **kwargs,
                progress=tqdm_progress(desc=image_path.name, unit="step", leave=False),
            )
        for w in caught:
            if issubclass(w.category, UserWarning):
                print(f"{image_path.name}: note: {w.message}", file=sys.stderr)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        write_labels(out, result.labels)
        table = result.table()
        if args.table:
            write_table(out.with_suffix(".csv"), table)
        counts = table["status"].value_counts().to_dict()
        print(f"{image_path.name}: {len(table)} objects {counts} -> {out}")
    return 0


def _add_models_parser(sub) -> None:
    p = sub.add_parser(
        "models", help="list the registered SAM checkpoints and the cache folder",
        description="List the registered SAM checkpoints (with each one's prompt profile) and "
        "the cache folder (NAPARI_SAMREFINE_CACHE).",
    )
    p.set_defaults(func=_run_models)


def _run_models(args) -> int:
    from .sam import registry

    for name in registry.list_models():
        entry = registry.get_model(name)
        print(f"{name:22s} {entry.description}")
        print(f"{'':22s}   {entry.profile.summary()}")
    print(f"cache folder: {registry.model_cache_dir()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``napari-samrefine`` argument parser with every subcommand."""
    parser = Parser(
        prog="napari-samrefine",
        description="Refine coarse segmentations with the Segment Anything Model (SAMRefiner).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_refine_parser(sub)
    _add_models_parser(sub)
    for module, func in _PLUGINS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue
        getattr(mod, func)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``napari-samrefine`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as err:
        print(f"napari-samrefine {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
