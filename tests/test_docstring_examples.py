"""Every ``>>>`` example in the package's docstrings runs and prints what it shows.

One test per module of ``napari_samrefine`` (the napari package included: its
modules import without a viewer). An example that needs something a test run
does not have (a viewer, a downloaded checkpoint, a real image) is marked
``# doctest: +SKIP`` in its docstring, next to the example, so the reader sees it.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import napari_samrefine

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# ``python -m napari_samrefine.cli`` runs the command line on import.
NOT_IMPORTABLE = {"napari_samrefine.cli.__main__"}


def _modules() -> list[str]:
    names = [
        m.name
        for m in pkgutil.walk_packages(napari_samrefine.__path__, "napari_samrefine.")
        if m.name not in NOT_IMPORTABLE
    ]
    return sorted(names)


def _examples(module) -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [t for t in finder.find(module, module.__name__) if t.examples]


WITH_EXAMPLES = [name for name in _modules() if _examples(importlib.import_module(name))]


def test_the_walk_finds_the_examples():
    """A broken walk would leave the test below with nothing to run."""
    assert "napari_samrefine.samrefiner.prompts" in WITH_EXAMPLES
    assert "napari_samrefine.pipeline.refiner" in WITH_EXAMPLES
    assert len(WITH_EXAMPLES) >= 20


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    tests = _examples(module)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see the output above)"
