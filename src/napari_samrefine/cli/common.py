"""What every subcommand shares: help format, the model/device group, id lists, channels."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = [
    "HelpFormatter", "Parser", "parse_ids", "parse_channel", "add_model_arguments",
    "load_model_from_args",
]


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
    from napari_samrefine.models.loading import load_sam

    return load_sam(
        args.checkpoint if args.checkpoint is not None else args.model,
        device=args.device,
        allow_unsafe_pickle=args.allow_unsafe_pickle,
    )




def parse_channel(value: str | None) -> int | str | None:
    """``--channel``: ``None``, ``"mean"`` or a channel index."""
    if value is None or value == "mean":
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"--channel must be an integer or 'mean', got {value!r}") from None
