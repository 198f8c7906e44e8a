"""Docking the widgets the way napari does (viewer first, in a fresh process) does not crash.

On machines whose OpenGL is Mesa's software renderer (this test machine under
Xvfb), loading triton's library after napari's canvas exists used to kill the
process with a segmentation fault: this runs that sequence in a subprocess,
after each order of imports a script may use (a module of the plugin imported
before the viewer exists used to crash it when SAM refine was docked).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.gui

SCRIPT = textwrap.dedent(
    """
    import faulthandler, sys, time
    faulthandler.enable()
    {before}
    import napari
    assert "triton" not in sys.modules or {triton_first}, "triton must come after the viewer here"
    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-samrefine", "nuclei")
    widgets = {
        name: viewer.window.add_plugin_dock_widget("napari-samrefine", name)[1]
        for name in ("Prompt excavation", "SAM refine", "JFS judge", "IoU adaption",
                     "Review refinement", "Teach the model")
    }
    from qtpy.QtWidgets import QApplication
    from napari_samrefine.testing import tiny_sam

    refine = widgets["SAM refine"]
    refine.model.sam = tiny_sam(seed=0)
    refine.image_layer.value = viewer.layers["nuclei"]
    refine.labels_layer.value = viewer.layers["nuclei coarse"]
    refine.iterations.value = 2
    refine.run()
    deadline = time.monotonic() + 120
    while (refine.worker is None or refine.busy) and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.01)
    assert not refine.busy, "the refinement did not finish"
    assert "nuclei coarse refined" in viewer.layers, refine.status
    viewer.close()
    print("NO CRASH")
    """
)


@pytest.mark.parametrize(
    ("before", "triton_first"),
    [
        ("pass", False),  # napari first: the plugin is imported once the canvas exists
        ("import napari_samrefine._napari.sample_data", False),  # the plugin first, triton later
        ("import napari_samrefine", False),  # the library first
        ("import napari_samrefine._napari.refine_widget", True),  # triton before any canvas
    ],
    ids=["napari-first", "sample-data-first", "library-first", "widget-module-first"],
)
def test_docking_every_widget_and_refining_in_a_fresh_process(tmp_path, before, triton_first):
    if not os.environ.get("DISPLAY"):
        pytest.skip("needs an X server (run the tests under xvfb-run)")
    script = tmp_path / "dock.py"
    script.write_text(SCRIPT.replace("{before}", before).replace("{triton_first}", str(triton_first)))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600,
        env={k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"},
    )
    assert done.returncode == 0 and "NO CRASH" in done.stdout, (
        f"exit status {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )
