"""What every subcommand shares: help format, the model/device group, id lists, channels."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = [
    "HelpFormatter", "Parser", "parse_ids", "parse_channel", "add_model_arguments",
    "load_model_from_args", "check_finetune_base",
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
    """Load the SAM model that ``--model``/``--checkpoint``/``--device`` describe.

    With a ``--finetune`` option (``refine``), the taught model over that base.
    """
    from napari_samrefine.models.loading import load_sam

    return load_sam(
        args.checkpoint if args.checkpoint is not None else args.model,
        device=args.device,
        allow_unsafe_pickle=args.allow_unsafe_pickle,
        finetune=getattr(args, "finetune", None),
    )


def check_finetune_base(args) -> None:
    """Refuse a ``--finetune`` file that does not fit the chosen base model, before loading it.

    The file is read safely (:func:`~napari_samrefine.models.finetune_file.read_finetune_file`)
    and the base it names is compared with the ``--model``/``--checkpoint``
    file's hash (a registry name's hash is known without its file).

    Raises
    ------
    FileNotFoundError
        For a missing file.
    ValueError
        For a file that is not a taught-model file, or was taught from another base
        (the message names both and the option to use).
    """
    path = getattr(args, "finetune", None)
    if path is None:
        return
    from napari_samrefine.models.checkpoint import checkpoint_digest
    from napari_samrefine.models.finetune_file import read_finetune_file
    from napari_samrefine.models.registry import get_model, list_models

    meta = read_finetune_file(path).metadata
    base = args.checkpoint if args.checkpoint is not None else args.model
    if isinstance(base, str) and base in list_models():
        digest = get_model(base).xxh128
    elif Path(base).expanduser().is_file():
        digest = checkpoint_digest(Path(base).expanduser().resolve())
    else:
        return  # an unknown model: load_sam says so
    if meta["base_identity"] != f"file:{digest}":
        raise ValueError(
            f"--finetune {path} was taught from {meta['base_model']!r}, not from {str(base)!r}: "
            "give the model it was taught from, with --model (a registry name) or "
            "--checkpoint (its file)."
        )



def parse_channel(value: str | None) -> int | str | None:
    """``--channel``: ``None``, ``"mean"`` or a channel index."""
    if value is None or value == "mean":
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"--channel must be an integer or 'mean', got {value!r}") from None
