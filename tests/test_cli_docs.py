"""docs/cli.md and ``--help`` cannot drift: every option is documented, every documented option exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from napari_samrefine.cli import build_parser

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
MODEL_SECTION = "Model options"
OPTION = re.compile(r"(?<![\w-])(--?[a-z][a-z0-9-]*)")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Subcommand name -> its parser."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of a parser but ``-h``/``--help``."""
    return {s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")}


def _table_options(section: str) -> set[str]:
    """Options named in the table rows (lines starting with ``|``) of a section."""
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return {m for row in rows for cell in re.findall(r"`([^`]*)`", row) for m in OPTION.findall(cell)}


def _sections() -> dict[str, str]:
    """docs/cli.md's ``## `` sections, by heading."""
    parts = re.split(r"^## ", DOC.read_text(), flags=re.MULTILINE)[1:]
    return {part.splitlines()[0]: part for part in parts}


def _section_of(command: str) -> str:
    return next(text for head, text in _sections().items() if f"napari-samrefine {command}`" in head)


SUBCOMMANDS = sorted(_subparsers(build_parser()))


def test_every_subcommand_has_a_section():
    assert {"refine", "judge", "adapt", "benchmark", "models"} <= set(SUBCOMMANDS)
    for command in SUBCOMMANDS:
        assert _section_of(command)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_option_is_documented(command):
    parser = _subparsers(build_parser())[command]
    documented = _table_options(_section_of(command))
    if "--checkpoint" in _options(parser):
        documented |= _table_options(_sections()[next(h for h in _sections() if MODEL_SECTION in h)])
    missing = _options(parser) - documented
    assert not missing, f"docs/cli.md does not document {sorted(missing)} of `{command}`"


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_documented_option_exists(command):
    extra = _table_options(_section_of(command)) - _options(_subparsers(build_parser())[command])
    assert not extra, f"docs/cli.md documents {sorted(extra)}, which `{command}` lacks"


def test_model_options_exist_in_every_subcommand_that_loads_a_model():
    model = _table_options(_sections()[next(h for h in _sections() if MODEL_SECTION in h)])
    assert model == {"--model", "--checkpoint", "--device", "--allow-unsafe-pickle"}
    for command in ("refine", "judge", "adapt", "benchmark"):
        assert model <= _options(_subparsers(build_parser())[command])


def test_convergence_reads_the_right_way_round():
    row = next(line for line in DOC.read_text().splitlines() if "`--convergence" in line)
    assert "reaches C" in row and "1 means never stop early" in row
