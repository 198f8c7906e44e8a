"""A model's refinement defaults change only with the table that chose them (issue 20).

docs/benchmarks.md states, per registered model with measured defaults, one line
``Measured defaults of NAME: iterations=..., cebox=..., keep=..., keep_min_iou=...,
object_size=LOW-HIGH, max_scale=..., native_too=yes|no``, next to the table that chose them. The
registry's profile must say the same: changing either alone fails here.
"""

import re
from pathlib import Path

import pytest

from napari_samrefine.models.profile import SAM_PROFILE, RefineDefaults
from napari_samrefine.models.registry import get_model, list_models

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
LINE = re.compile(r"^Measured defaults of `(?P<name>[\w.-]+)`: (?P<values>.+?)\.?$", re.M)


def _stated() -> dict[str, dict[str, str]]:
    out = {}
    for m in LINE.finditer(DOC.read_text()):
        values = dict(part.strip().strip("`").split("=", 1) for part in m["values"].split(","))
        out[m["name"]] = values
    return out


def _as_text(defaults: RefineDefaults) -> dict[str, str]:
    size = defaults.object_size
    return {
        "iterations": str(defaults.iterations),
        "cebox": "none" if defaults.cebox is None else f"{defaults.cebox:g}",
        "keep": defaults.keep,
        "keep_min_iou": f"{defaults.keep_min_iou:g}",
        "object_size": "none" if size is None else f"{size[0]:g}-{size[1]:g}",
        "max_scale": f"{defaults.max_scale:g}",
        "native_too": "yes" if defaults.native_too else "no",
    }


def test_the_docs_state_the_measured_defaults_of_every_model_that_has_them():
    stated = _stated()
    measured = {n for n in list_models() if get_model(n).profile.defaults != SAM_PROFILE.defaults}
    assert measured, "no registered model has measured defaults"
    assert set(stated) == measured


@pytest.mark.parametrize("name", sorted(_stated()))
def test_each_models_defaults_equal_the_line_next_to_its_table(name):
    assert _stated()[name] == _as_text(get_model(name).profile.defaults)
