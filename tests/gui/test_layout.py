"""The widgets keep the window usable: long status texts wrap, docks scroll, the canvas stays.

A 909-character offline-download error in one status line once widened the dock
to 3834 px and the window to 4197 px: the canvas vanished. Here all four widgets
are docked the way napari docks plugin widgets, in a 1600 x 1000 window, each
with such a message in its status line, and the window, canvas and dock
geometry is read back.
"""

from __future__ import annotations

import pytest
from qtpy.QtWidgets import QApplication, QPlainTextEdit

pytestmark = pytest.mark.gui

WIDGETS = ["Prompt excavation", "SAM refine", "JFS judge", "IoU adaption"]
WINDOW = (1600, 1000)
MARGIN = 40  # px napari or Qt may add (frame, rounding)
MIN_CANVAS = (400, 300)
MAX_DOCK_WIDTH = 700
MIN_DOCK_HEIGHT = 150  # the four docks share the column: none is squeezed to its title

# the message an offline user gets from the default model (models/download.py), 909 characters
URL = "https://owncloud.gwdg.de/index.php/s/TuDzuwVDHd1ZDnQ/download"
# a deep cache folder: one 140-character word that does not wrap at spaces
CACHE = (
    "/home/someone/miniforge3/envs/napari-samrefine-0.9/share/cache/napari_samrefine/"
    "checkpoints/vit_b_lm_micro_sam_light_microscopy_generalist.pt"
)
LONG_TEXT = (
    f"Failed: ModelDownloadError: Could not download model 'vit_b_lm' from {URL} "
    "(ConnectionError: HTTPSConnectionPool(host='owncloud.gwdg.de', port=443): Max retries "
    "exceeded with url: /index.php/s/TuDzuwVDHd1ZDnQ/download (Caused by NameResolutionError("
    "\"<urllib3.connection.HTTPSConnection object at 0x7f3c2a1b4d90>: Failed to resolve "
    "'owncloud.gwdg.de' ([Errno -3] Temporary failure in name resolution)\"))).\n"
    "Without network access, use a checkpoint file you copied by hand:\n"
    "  - pass its path: load_sam('/path/to/vit_b_lm.pt') in Python, or --checkpoint "
    "/path/to/vit_b_lm.pt on the command line; or\n"
    f"  - copy it to {CACHE} (the cache folder; move it with the NAPARI_SAMREFINE_CACHE "
    "environment variable); it is used when its xxh128 is 2a5ad3a8dc9c4e5d8a2ea3e1b34ec0f1."
)
LONG_TEXT = LONG_TEXT[:909]  # as long as the one reported


def settle(qtbot, rounds: int = 5) -> None:
    for _ in range(rounds):
        QApplication.processEvents()
        qtbot.wait(20)


@pytest.fixture()
def docked(make_napari_viewer, qtbot):
    """A shown 1600 x 1000 viewer with the nuclei sample and all four widgets docked."""
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-samrefine", "nuclei")
    window = viewer.window._qt_window
    window.resize(*WINDOW)
    settle(qtbot)
    docks = {}
    for name in WIDGETS:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-samrefine", name)
        docks[name] = (dock, widget)
    settle(qtbot)
    return viewer, docks


def test_long_status_texts_keep_the_canvas_visible(docked, qtbot):
    viewer, docks = docked
    assert len(LONG_TEXT) == 909
    needs = {name: w.native.minimumSizeHint().width() for name, (_, w) in docks.items()}
    for _, widget in docks.values():
        widget.say(LONG_TEXT)
    settle(qtbot, 10)
    for name, (_, widget) in docks.items():  # the text wraps: it asks for no extra width
        width = widget.native.minimumSizeHint().width()
        assert width <= max(needs[name], 300), f"{name} needs {width} px with the long text"
    window = viewer.window._qt_window
    canvas = viewer.window._qt_viewer.canvas.native
    size = (window.width(), window.height())
    assert size[0] <= WINDOW[0] + MARGIN and size[1] <= WINDOW[1] + MARGIN, f"window grew to {size}"
    assert canvas.isVisible(), "the canvas is hidden"
    assert canvas.width() >= MIN_CANVAS[0] and canvas.height() >= MIN_CANVAS[1], (
        f"canvas squeezed to {canvas.width()} x {canvas.height()} in a {size} window"
    )
    for name, (dock, widget) in docks.items():
        assert dock.isVisible(), name
        assert dock.width() <= MAX_DOCK_WIDTH, f"{name} dock is {dock.width()} px wide"
        assert dock.height() >= MIN_DOCK_HEIGHT, f"{name} dock is {dock.height()} px high"
        assert widget.status == LONG_TEXT  # the full text is still there for scripts and tests


def test_window_can_shrink_back_after_a_long_text(docked, qtbot):
    """The window's minimum size stays within the screen: it can be made smaller again."""
    viewer, docks = docked
    for _, widget in docks.values():
        widget.say(LONG_TEXT)
    settle(qtbot, 10)
    window = viewer.window._qt_window
    minimum = window.minimumSizeHint().expandedTo(window.minimumSize())
    assert minimum.width() <= WINDOW[0] and minimum.height() <= WINDOW[1], (
        f"the window cannot be smaller than {minimum.width()} x {minimum.height()}"
    )


def test_long_status_is_shortened_with_the_whole_text_on_demand(docked, qtbot):
    _, docks = docked
    widget = docks["SAM refine"][1]
    widget.say(LONG_TEXT)
    settle(qtbot)
    line = widget._status
    shown = line.text_shown
    assert len(shown) < 400 and shown.endswith("…")
    assert line.details_button.visible
    assert "TuDzuwVDHd1ZDnQ" in line.tooltip  # the whole text, wrapped, as a tooltip
    dialog = line.show_details()  # what the "Show all" button does
    try:
        assert dialog.isVisible()
        assert dialog.findChild(QPlainTextEdit).toPlainText() == LONG_TEXT  # exact, to copy
    finally:
        dialog.close()
    # a short message is shown whole, without a details button
    widget.say("Refining 'nuclei coarse' ...")
    assert line.text_shown == widget.status == "Refining 'nuclei coarse' ..."
    assert not line.details_button.visible and not line.tooltip


def _cut_off(widget) -> list[str]:
    """The labels of the fields shown only in part (cut off at the right of the dock's view)."""
    from qtpy.QtCore import QPoint

    view = widget._scroll.viewport()
    out = []
    for field in widget:
        native = field.native
        if not native.isVisible():
            continue
        right = native.mapTo(view, QPoint(native.width(), 0)).x()
        if right > view.width() + 1:
            out.append(field.label or type(field).__name__)
    return out


@pytest.mark.parametrize("name", WIDGETS)
def test_a_dock_shows_every_field_whole_when_more_appear(make_napari_viewer, qtbot, name):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-samrefine", "nuclei")
    viewer.window._qt_window.resize(*WINDOW)
    settle(qtbot)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-samrefine", name)
    settle(qtbot, 10)
    scroll = widget._scroll
    assert not scroll.horizontalScrollBar().isVisible() and not _cut_off(widget), name
    # the user ticks what shows more fields: "grow boxes" (prompts), the SegGPT backend (judge)
    if name == "Prompt excavation":
        widget.use_cebox.value = True
    elif name == "JFS judge":
        widget._backend.value = "seggpt"
    for field in widget:  # every field there is, shown (the widest case)
        field.visible = True
    settle(qtbot, 10)
    assert not scroll.horizontalScrollBar().isVisible(), f"{name}: fields scroll sideways"
    assert not _cut_off(widget), f"{name}: fields cut off: {_cut_off(widget)}"
    assert dock.width() <= MAX_DOCK_WIDTH
    canvas = viewer.window._qt_viewer.canvas.native
    assert canvas.width() >= MIN_CANVAS[0]
    # the user can still make the dock narrower (the fields scroll then)
    window = viewer.window._qt_window
    from qtpy.QtCore import Qt

    narrow = max(dock.minimumSizeHint().width(), 200)
    window.resizeDocks([dock], [narrow], Qt.Orientation.Horizontal)
    settle(qtbot, 10)
    assert dock.width() <= narrow + MARGIN
