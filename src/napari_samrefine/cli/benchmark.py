"""``napari-samrefine benchmark``: the quality tables of docs/benchmarks.md from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_samrefine.cli.common import add_model_arguments, load_model_from_args
from napari_samrefine.evaluation.baselines import CLASSICAL_METHODS
from napari_samrefine.evaluation.benchmark import (
    CONFIGURATIONS,
    DEFAULT_BASELINES,
    DEFAULT_CONFIGURATIONS,
    load_pairs,
    run_benchmark,
    summarize,
    to_markdown,
)
from napari_samrefine.pipeline.options import DEFAULTS

__all__ = ["add_benchmark_parser", "run_benchmark_cli"]


def add_benchmark_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``benchmark`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "benchmark",
        help="refine synthesised coarse masks of data with ground truth and print a table",
        description="Synthesise coarse masks from ground-truth labels (superpixel defects, "
        "IoU window), refine them with SAMRefiner configurations and weight-free baselines, "
        "and print mean IoU / boundary IoU / mIoU and timings per data set and method.",
    )
    p.add_argument("--data", type=Path, required=True,
                   help="folder holding dsb2018/ and stardist/ (the project's shared/data)")
    p.add_argument("--datasets", nargs="+", default=["dsb2018", "stardist"], choices=["dsb2018", "stardist"],
                   help="data sets to run")
    p.add_argument("--include-3d", action="store_true", help="also the planes of the StarDist 3D stack")
    p.add_argument("--max-images", type=int, default=None, help="at most this many images per data set (default: all)")
    p.add_argument("--configs", nargs="*", default=list(DEFAULT_CONFIGURATIONS),
                   metavar="NAME", help=f"SAMRefiner configurations: {', '.join(CONFIGURATIONS)}")
    p.add_argument("--baselines", nargs="*", default=list(DEFAULT_BASELINES),
                   choices=list(CLASSICAL_METHODS), help="weight-free baselines to run")
    p.add_argument("--iou-range", type=float, nargs=2, default=(0.75, 0.85), metavar=("LOW", "HIGH"),
                   help="IoU window of the synthesised coarse masks with the ground truth")
    p.add_argument("--seed", type=int, default=0, help="seed of the coarse-mask synthesis")
    p.add_argument("--iterations", type=int, default=DEFAULTS.iterations,
                   help="cascade iterations; default: the model's measured choice")
    p.add_argument("--output", type=Path, default=None,
                   help="write the per-image rows to this CSV (outside the --data folder; default: "
                   "print the table only)")
    p.add_argument("--overwrite", action="store_true", help="replace the --output file if it exists")
    add_model_arguments(p)
    p.set_defaults(func=run_benchmark_cli)
    return p


def _check_csv_output(output: Path, data: Path, overwrite: bool) -> None:
    """Refuse a CSV output inside the data folder, or an existing one without ``--overwrite``."""
    from napari_samrefine.io import check_outputs

    if output.resolve().is_relative_to(data.resolve()):
        raise ValueError(
            f"Refusing to write {output} into the data folder {data}: your data there could be "
            "overwritten. Give a file outside it with --output."
        )
    check_outputs([output], overwrite=overwrite, option="--output")


def run_benchmark_cli(args: argparse.Namespace) -> int:
    """Run the ``benchmark`` subcommand; prints the summary as a markdown table."""
    from napari_samrefine._progress import tqdm_progress

    if args.output is not None:  # refused before any work rather than after it
        _check_csv_output(args.output, args.data, args.overwrite)
    pairs = load_pairs(args.data, args.datasets, include_3d=args.include_3d, max_images=args.max_images)
    sam = load_model_from_args(args) if args.configs else None
    df = run_benchmark(
        pairs, sam=sam, configurations=args.configs, baselines=args.baselines,
        iou_range=tuple(args.iou_range), seed=args.seed,
        refine_kwargs=dict(iterations=args.iterations),
        progress=tqdm_progress(desc="benchmark", unit="run", leave=False),
    )
    if args.output is not None:
        from napari_samrefine.io import write_table

        write_table(args.output, df)  # atomic; creates the folder
    print(to_markdown(summarize(df)))
    return 0
