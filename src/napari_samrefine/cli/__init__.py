"""The ``napari-samrefine`` command line: one module per subcommand.

    napari-samrefine refine IMAGE LABELS -o OUT      # SAMRefiner (cli/refine.py)
    napari-samrefine judge IMAGE COARSE REFINED ...  # JFS (cli/judge.py)
    napari-samrefine adapt IMAGES --labels ... -o F  # SAMRefiner++ (cli/adapt.py)
    napari-samrefine finetune IMAGES --labels ... -o F  # teach SAM to refine (cli/finetune.py)
    napari-samrefine benchmark --data DIR            # quality tables (cli/benchmark.py)
    napari-samrefine models                          # the registry (cli/models.py)
    napari-samrefine cache info|clear                # embeddings on disk (cli/cache.py)

Options shared by the subcommands that run SAM (``--model``, ``--checkpoint``,
``--device``) are defined once, in :mod:`napari_samrefine.cli.common`.
"""

from __future__ import annotations

import argparse
import sys

from napari_samrefine.cli.adapt import add_adapt_parser
from napari_samrefine.cli.benchmark import add_benchmark_parser
from napari_samrefine.cli.cache import add_cache_parser
from napari_samrefine.cli.common import HelpFormatter, Parser, parse_ids
from napari_samrefine.cli.finetune import add_finetune_parser
from napari_samrefine.cli.judge import add_judge_parser
from napari_samrefine.cli.models import add_models_parser
from napari_samrefine.cli.refine import add_refine_parser

__all__ = ["main", "build_parser", "HelpFormatter", "Parser", "parse_ids"]

_SUBCOMMANDS = (
    add_refine_parser, add_judge_parser, add_adapt_parser, add_finetune_parser, add_benchmark_parser,
    add_models_parser, add_cache_parser,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``napari-samrefine`` argument parser with every subcommand."""
    parser = Parser(
        prog="napari-samrefine",
        description="Refine coarse segmentations with the Segment Anything Model (SAMRefiner).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
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
