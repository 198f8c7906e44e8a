"""The widgets start on refine's defaults, read from RefineOptions, and check with it.

Each value is read back from the docked widget (what a user sees) and compared
with :class:`~napari_samrefine.RefineOptions`; a widget that wrote a default out
again would drift from the object and fail here.
"""

from __future__ import annotations

import pytest
from _widgets import open_widget, refine_widget

from napari_samrefine._napari.field_help import HELP
from napari_samrefine.pipeline.options import DEFAULTS, RefineOptions
from napari_samrefine.samrefiner.defaults import CEBOX_LAMBDA, NEGATIVE_POINT

pytestmark = pytest.mark.gui


def test_the_refine_widget_starts_on_refines_defaults(viewer):
    widget = open_widget(viewer, "SAM refine")
    assert widget.mode.value == DEFAULTS.mode
    # refine's None (the model's default) shows as "model default"
    assert DEFAULTS.iterations is None and widget.iterations.value == 0
    assert widget.iterations.native.currentText() == "model default"
    kwargs = widget.refine_kwargs()
    assert (kwargs["iterations"], kwargs["keep"], kwargs["scale"]) == (
        DEFAULTS.iterations, DEFAULTS.keep, DEFAULTS.scale
    )
    assert widget.cebox.value == pytest.approx(DEFAULTS.cebox_lambda)
    # semantic mode: refine's "auto" turns CEBox off, and so does the form
    widget.mode.value = "semantic"
    assert (RefineOptions(mode="semantic").cebox_lambda or 0.0) == widget.cebox.value == 0.0
    widget.mode.value = "instance"
    assert widget.cebox.value == pytest.approx(RefineOptions(mode="instance").cebox_lambda)


def test_the_refine_widget_hands_refine_options_it_accepts(viewer, sam):
    widget = refine_widget(viewer, sam)
    kwargs = widget.refine_kwargs()
    options = RefineOptions(**kwargs)
    assert options.iterations == 2 and options.mode == DEFAULTS.mode
    assert options.cebox_lambda == pytest.approx(DEFAULTS.cebox_lambda)


def test_the_prompt_widget_starts_on_the_papers_cebox_and_negative_point(viewer):
    widget = open_widget(viewer, "Prompt excavation")
    assert widget.cebox.value == pytest.approx(CEBOX_LAMBDA)
    assert widget.use_negative_point.value is NEGATIVE_POINT


def test_tooltips_quote_the_defaults():
    assert DEFAULTS.iterations is None and "'model default' (the default)" in HELP["iterations"]
    assert DEFAULTS.keep is None and "'model default' (the default)" in HELP["keep"]
    assert DEFAULTS.scale == "auto" and "'auto' (the default)" in HELP["object scale"]
    assert f"{DEFAULTS.cebox_lambda:g} by default" in HELP["box growth"]
