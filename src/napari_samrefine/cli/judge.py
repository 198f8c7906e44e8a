"""``napari-samrefine judge``: the JFS judge of a refinement, from the command line.

    napari-samrefine judge image.tif coarse.tif refined.tif \\
        --support-image support.tif --support-labels support_labels.tif -o accepted.tif

Each object of COARSE is compared with the object of the same id in REFINED by
few-shot segmentation of the support images (JFS); the accepted label image
keeps the refined object where the refinement is judged improved, the coarse
one otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_samrefine.cli.common import (
    add_model_arguments,
    load_model_from_args,
    parse_channel,
    parse_ids,
)

__all__ = ["add_judge_parser", "run_judge_cli", "summary"]

_LABEL_SUFFIXES = (".tif", ".tiff", ".png")


def add_judge_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``judge`` subcommand to the ``napari-samrefine`` parser's subparsers.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``judge`` parser.
    """
    p = subparsers.add_parser(
        "judge",
        help="judge a refinement object by object (JFS) and keep only the improved objects",
        description="Judge, object by object, whether REFINED improved COARSE (JFS: few-shot "
        "segmentation of support images with trusted labels, prompted by each object), and "
        "write the accepted labels: the refined object where it is judged improved, the coarse "
        "object otherwise. REFINED must use COARSE's ids.",
    )
    p.add_argument("image", type=Path, help="the image (one 2D plane, grey, RGB or multichannel)")
    p.add_argument("coarse", type=Path, help="coarse label file")
    p.add_argument("refined", type=Path, help="refined label file, with the coarse labels' ids")
    p.add_argument("--support-image", nargs="+", type=Path, required=True, metavar="S",
                   help="support image files: the same kind of objects, with trusted labels")
    p.add_argument("--support-labels", nargs="+", type=Path, required=True, metavar="L",
                   help="label files of the support images, in the same order")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="accepted label file to write (.tif/.png); never an input file")
    p.add_argument("--table", type=Path, default=None, metavar="CSV",
                   help="also write the per-object verdicts to this CSV (default: no table)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace output files that exist already (inputs are never replaced)")
    add_model_arguments(p)
    _add_judge_options(p)
    p.set_defaults(func=run_judge_cli)
    return p


def _add_judge_options(p: argparse.ArgumentParser) -> None:
    """The JFS options: backend, masking, k, tau, objects and channel."""
    from napari_samrefine.judge.jfs import BACKENDS

    g = p.add_argument_group("judge")
    g.add_argument("--backend", choices=BACKENDS, default="sam",
                   help="few-shot segmenter: sam (PerSAM-style, the model options apply), "
                   "seggpt (needs the seggpt extra), mask-transfer (shape prior, no model)")
    g.add_argument("--seggpt-model", default="BAAI/seggpt-vit-large", metavar="NAME",
                   help="local folder or hub id of the seggpt backend's model")
    g.add_argument("--masking", choices=("hm", "fm", "im"), default="hm",
                   help="feature masking of the sam backend: hybrid, feature or input masking")
    g.add_argument("--k", type=int, default=3,
                   help="support crops per object: the k support objects closest in area")
    g.add_argument("--tau", type=float, default=0.02, help="margin of the score difference of a verdict")
    g.add_argument("--labels", default=None, metavar="IDS",
                   help="judge only these object ids, e.g. 3,7,12; the others stay coarse "
                   "(default: all objects)")
    g.add_argument("--channel", default=None,
                   help="channel index, or 'mean', for multichannel images that are not RGB "
                   "(default: RGB(A) is used as RGB; other channel counts need this)")


def summary(table, name: str, output: Path) -> str:
    """One line in words: ``"27 objects judged: 5 improved, 3 degraded, 19 uncertain -> out.tif"``.

    Parameters
    ----------
    table : pandas.DataFrame
        :meth:`JudgeResult.table`, with a ``verdict`` column.
    name : str
        The image's file name, which starts the line.
    output : pathlib.Path
        The accepted label file.

    Returns
    -------
    str
    """
    from napari_samrefine.judge.verdicts import DEGRADED, IMPROVED, UNCERTAIN, UNJUDGED

    counts = table["verdict"].value_counts().to_dict()
    words = ", ".join(f"{counts.get(v, 0)} {v}" for v in (IMPROVED, DEGRADED, UNCERTAIN))
    if counts.get(UNJUDGED, 0):  # only when some object's predictions all missed
        words += f", {counts[UNJUDGED]} {UNJUDGED}"
    noun = "object" if len(table) == 1 else "objects"
    return f"{name}: {len(table)} {noun} judged: {words} -> {output}"


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse, before any work, unpaired supports and outputs that are unsafe."""
    from napari_samrefine.io import check_outputs

    if len(args.support_image) != len(args.support_labels):
        raise ValueError(
            f"{len(args.support_image)} support images but {len(args.support_labels)} support "
            "label files: give one label file per support image, in the same order."
        )
    if args.output.suffix.lower() not in _LABEL_SUFFIXES:
        raise ValueError(f"-o {args.output} must end in .tif or .png.")
    if args.table is not None and args.table.suffix.lower() != ".csv":
        raise ValueError(f"--table {args.table} must end in .csv.")
    inputs = [args.image, args.coarse, args.refined, *args.support_image, *args.support_labels]
    for path in inputs:
        if not path.is_file():
            raise FileNotFoundError(f"No such file: {path}")
    models = [args.checkpoint] if args.checkpoint is not None else []
    outputs = [args.output] + ([args.table] if args.table is not None else [])
    check_outputs(outputs, inputs + models, overwrite=args.overwrite)


def _judge_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`judge_refinement` that the options give."""

    return dict(
        backend=args.backend,
        masking=args.masking,
        k=args.k,
        tau=args.tau,
        label_ids=parse_ids(args.labels, "--labels"),
        channel=parse_channel(args.channel),
        seggpt_model=args.seggpt_model,
    )


def run_judge_cli(args: argparse.Namespace) -> int:
    """Run ``napari-samrefine judge``: judge, write the accepted labels (and table); returns 0."""
    from napari_samrefine._progress import tqdm_progress
    from napari_samrefine.io import read_image, write_labels, write_table
    from napari_samrefine.judge.jfs import judge_refinement

    if args.k < 1:
        raise ValueError(f"--k must be a whole number >= 1, got {args.k}")
    kwargs = _judge_kwargs(args)
    _check_paths(args)
    sam = load_model_from_args(args) if args.backend == "sam" else None
    result = judge_refinement(
        read_image(args.image), read_image(args.coarse), read_image(args.refined),
        [read_image(p) for p in args.support_image], [read_image(p) for p in args.support_labels],
        sam=sam, **kwargs, progress=tqdm_progress(desc=args.image.name, unit="step", leave=False),
    )
    write_labels(args.output, result.accepted)
    table = result.table()
    if args.table is not None:
        write_table(args.table, table)
    print(summary(table, args.image.name, args.output))
    return 0
