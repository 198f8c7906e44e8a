"""Feedback that does not mislead: result summaries in words, missing labels, suspicious sizes.

Found by trying the widgets as a new user: "Refined 28 objects" when none was
refined (label 999 chosen), an object that grew 190x reported "ok", a missing
label id giving "0 objects" and a napari colour warning, a Python dict in the
status line. The widgets are driven through their Run buttons, with the tiny
random SAM (whose masks grow far beyond the coarse objects: a deterministic
"suspicious growth") on the bundled nuclei sample.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from _widgets import open_widget, refine_widget

from napari_samrefine._napari.adaption_widget import adaption_summary
from napari_samrefine._napari.prompt_widget import prompt_summary
from napari_samrefine._napari.refine_output import result_summary
from napari_samrefine.pipeline.refiner import ObjectResult, RefineResult
from napari_samrefine.samrefiner.summary import GROWTH_WARNING, SHRINK_WARNING, size_warnings

pytestmark = pytest.mark.gui

TIMEOUT = 60_000


def click_run(qtbot, widget, launches: bool = True) -> None:
    """Press the widget's Run button (the Qt button itself) and wait for its worker."""
    widget._run_button.native.click()
    if launches:
        qtbot.waitUntil(lambda: widget.worker is not None and not widget.busy, timeout=TIMEOUT)


def plain_words(text: str) -> None:
    """No Python structures in a status line (a dict, a list, "27 ok" status codes)."""
    assert not re.search(r"[{}\[\]]", text), text
    assert "empty-input" not in text and "(27 ok)" not in text, text


def colour_warnings(records) -> list[str]:
    return [str(r.message) for r in records if "color" in str(r.message).lower()]


# --- through the buttons ---------------------------------------------------------------


def test_missing_label_in_refine_says_so_and_changes_nothing(viewer, qtbot, sam):
    coarse = viewer.layers["nuclei coarse"]
    coarse.selected_label = 999
    widget = refine_widget(viewer, sam, objects="selected label")
    names = [layer.name for layer in viewer.layers]
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        click_run(qtbot, widget, launches=False)
        qtbot.wait(50)
    assert widget.worker is None  # nothing to load, encode or decode
    assert widget.status.startswith("Nothing to refine: label 999 is not in 'nuclei coarse'."), widget.status
    assert "Refined" not in widget.status
    assert [layer.name for layer in viewer.layers] == names
    assert not colour_warnings(records)
    coarse.selected_label = 0  # the background is no object either
    click_run(qtbot, widget, launches=False)
    assert "label 0 is the background" in widget.status and widget.worker is None


def test_missing_label_in_prompt_excavation_says_so_without_colour_warnings(viewer, qtbot):
    coarse = viewer.layers["nuclei coarse"]
    coarse.selected_label = 999
    widget = open_widget(viewer, "Prompt excavation")
    widget.labels_layer.value = coarse
    widget.objects.value = "selected label"
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        click_run(qtbot, widget, launches=False)
        qtbot.wait(50)
    assert widget.status.startswith("Nothing to excavate: label 999 is not in 'nuclei coarse'."), (
        widget.status
    )
    assert not colour_warnings(records), colour_warnings(records)
    assert "nuclei coarse points" not in viewer.layers


def test_missing_label_on_the_plane_of_a_stack_names_the_plane(make_napari_viewer, qtbot, stardist_stack):
    _, labels = stardist_stack
    viewer = make_napari_viewer()
    layer = viewer.add_labels(labels, name="stack")
    viewer.dims.set_point(0, 2)
    elsewhere = [int(i) for i in np.unique(labels) if i and not (labels[2] == i).any()]
    assert elsewhere, "every object of the stack is on plane 2: choose another plane"
    layer.selected_label = elsewhere[0]
    widget = open_widget(viewer, "Prompt excavation")
    widget.labels_layer.value = layer
    widget.objects.value = "selected label"
    click_run(qtbot, widget, launches=False)
    assert widget.status.startswith(
        f"Nothing to excavate: label {elsewhere[0]} is not in plane 2 of 'stack'."
    ), widget.status


def test_prompts_of_an_empty_layer_say_so(viewer, qtbot):
    empty = viewer.add_labels(np.zeros((64, 64), np.uint16), name="empty")
    widget = open_widget(viewer, "Prompt excavation")
    widget.labels_layer.value = empty
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        click_run(qtbot, widget)
    assert widget.status == "No object in 'empty': no prompts to show.", widget.status
    assert not colour_warnings(records), colour_warnings(records)


def test_prompt_summary_in_words(viewer, qtbot):
    widget = open_widget(viewer, "Prompt excavation")
    widget.labels_layer.value = viewer.layers["nuclei coarse"]
    click_run(qtbot, widget)
    assert widget.status.startswith("Prompts of 27 objects shown (tight boxes"), widget.status
    viewer.layers["nuclei coarse"].selected_label = 5
    widget.objects.value = "selected label"
    click_run(qtbot, widget)
    assert widget.status.startswith("Prompts of label 5 shown"), widget.status


def test_refine_summary_in_words_with_growth_warning(viewer, qtbot, sam):
    """The tiny random SAM's masks are tens of times larger than the nuclei: each is flagged."""
    widget = refine_widget(viewer, sam)
    click_run(qtbot, widget)
    table = widget.last_table
    ratio = table["refined_area"] / table["coarse_area"]
    grown = table.loc[ratio > GROWTH_WARNING, "label_id"].tolist()
    assert len(grown) >= 2, "the tiny SAM no longer grows objects: choose another case"
    status = widget.status
    assert status.startswith("27 objects refined into 'nuclei coarse refined'."), status
    first = ", ".join(str(i) for i in grown[:8])
    assert f"{len(grown)} objects grew more than 4x (ids {first}" in status, status
    assert status.endswith("check them."), status
    plain_words(status)


def test_refine_one_selected_label(viewer, qtbot, sam):
    viewer.layers["nuclei coarse"].selected_label = 5
    widget = refine_widget(viewer, sam, objects="selected label")
    click_run(qtbot, widget)
    status = widget.status
    assert status.startswith(
        "1 object refined (id 5) into 'nuclei coarse refined'; 26 other objects left as they "
        "were (not chosen)."
    ), status
    ratio = widget.last_table.set_index("label_id").eval("refined_area / coarse_area")[5]
    assert ("1 object grew more than 4x (id 5): check it." in status) == (ratio > GROWTH_WARNING)
    plain_words(status)


def test_in_place_summary_keeps_the_undo_words(viewer, qtbot, sam):
    widget = refine_widget(viewer, sam, output="inplace")
    click_run(qtbot, widget)
    assert re.match(r"\d+ objects changed in place \(Ctrl\+Z undoes it\)\. 27 objects refined\.",
                    widget.status), widget.status  # fmt: skip


# --- the summaries themselves, on hand-built results ---------------------------------


def result(objects, mode="instance"):
    return RefineResult(np.zeros((4, 4), np.uint16), list(objects), [None] * len(objects), mode)


def ok(label_id, coarse=100, refined=120, plane=None, status="ok"):
    return ObjectResult(label_id, plane, status, 0.9, 2, coarse, refined)


def missing(label_id, plane=None):
    return ObjectResult(label_id, plane, "empty-input", float("nan"), 0, 0, 0)


def skipped(label_id, plane=None):
    return ObjectResult(label_id, plane, "skipped", float("nan"), 0, 50, 50)


NEW = SimpleNamespace(name="coarse refined")


def test_summary_counts_and_missing_ids():
    objects = [ok(i) for i in range(1, 28)]
    assert result_summary(result(objects), "new", NEW, None) == (
        "27 objects refined into 'coarse refined'."
    )
    assert result_summary(result([*objects, missing(999)]), "new", NEW, None) == (
        "27 objects refined into 'coarse refined'; 1 label id not found (999)."
    )
    nothing = result([missing(999), *(skipped(i) for i in range(1, 28))])
    assert result_summary(nothing, "new", NEW, None, labels_name="coarse") == (
        "No object was refined: label 999 is not in 'coarse'."
    )


def test_summary_warns_about_growth_and_shrinkage():
    objects = [ok(5, 10, 1900), ok(9, 10, 50), ok(3, 400, 20), ok(4, 100, 110), ok(7, 100, 400)]
    text = result_summary(result(objects), "new", NEW, None)
    assert text == (
        "5 objects refined into 'coarse refined'. 2 objects grew more than 4x (ids 5, 9): "
        "check them. 1 object shrank to less than 1/4 of its area (id 3): check it."
    )
    # exactly 4x either way is not flagged; the thresholds are the named constants
    table = result([ok(1, 100, 400), ok(2, 100, 25)]).table()
    assert size_warnings(table) == []
    assert size_warnings(table, grew=3.9, shrank=3.9) == [
        "1 object grew more than 3.9x (id 1): check it.",
        "1 object shrank to less than 1/3.9 of its area (id 2): check it.",
    ]
    assert GROWTH_WARNING == SHRINK_WARNING == 4.0


def test_summary_of_other_statuses_and_stacks():
    objects = [
        ok(3, 400, 300, status="kept-previous"),
        ObjectResult(4, None, "empty-output", 0.1, 1, 40, 0),
        ok(6),
        skipped(10),
        skipped(11),
    ]
    assert result_summary(result(objects), "new", NEW, None) == (
        "2 objects refined (ids 3, 6) into 'coarse refined'; 1 object kept as it was (SAM's "
        "mask came out empty: id 4); 1 refined object kept the mask of an earlier iteration "
        "(SAM's last one came out empty); 2 other objects left as they were (not chosen)."
    )
    # a label found in some planes of a stack is not "not found"
    stack = [ok(5, plane=p) for p in range(3)] + [missing(5, plane=3)]
    assert result_summary(result(stack), "new", NEW, None) == (
        "3 objects refined (id 5) in 3 planes into 'coarse refined'."
    )
    grown = [ok(5, 10, 100, plane=2), ok(6, 10, 10, plane=2)]
    assert "1 object grew more than 4x (id 5 (plane 2)): check it." in result_summary(
        result(grown), "new", NEW, None
    )
    semantic = [ok(1), ObjectResult(2, None, "specks", float("nan"), 0, 3, 3)]
    assert result_summary(result(semantic, "semantic"), "new", NEW, None) == (
        "1 region refined (class 1) into 'coarse refined'; 1 class left as it was (only "
        "specks, too small to refine)."
    )
    many = [ok(i, 10, 100) for i in range(1, 13)]
    assert "12 objects grew more than 4x (ids 1, 2, 3, 4, 5, 6, 7, 8, …): check them." in (
        result_summary(result(many), "new", NEW, None)
    )


def test_prompt_and_adaption_summaries_in_words():
    prompt = SimpleNamespace(label_id=5, expanded=True)
    assert prompt_summary([prompt], "coarse", cebox=True) == (
        "Prompts of label 5 shown; boxes expanded by CEBox: 1 of 1, the others kept tight."
    )
    assert prompt_summary([], "coarse", cebox=False) == "No object in 'coarse': no prompts to show."
    meta = dict(n_objects=27, epochs=1, n_steps=7, loss_before=0.5, loss_after=0.25,
                train_top1_before=0.4, train_top1_after=0.63)  # fmt: skip
    text = adaption_summary(Path("adaptor.pt"), meta)
    assert text == (
        "Saved adaptor.pt: trained on 27 objects (1 epoch, 7 steps). SAM now picks the "
        "candidate mask closest to the coarse labels for 63% of them (up from 40%); ranking "
        "loss 0.500 -> 0.250."
    )
    assert "top-1" not in text
