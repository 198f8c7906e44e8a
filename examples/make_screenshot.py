"""Make docs/images/screenshot.png: the sample data, its prompt layers and the SAM refine widget.

Needs a display (run under ``xvfb-run -a python examples/make_screenshot.py``).
No model weights are needed: the prompts shown are mined from the coarse labels
(tight boxes; CEBox needs a model).
"""

import warnings
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_samrefine._napari.prompt_widget import show_prompts
from napari_samrefine.samrefiner.prompts import excavate_prompts

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "screenshot.png"

warnings.simplefilter("ignore")  # keep deprecation toasts out of the picture
viewer = napari.Viewer(show=True)
viewer.window.resize(1400, 850)
viewer.open_sample("napari-samrefine", "nuclei")
coarse = viewer.layers["nuclei coarse"]
coarse.opacity = 0.4
_, prompt_widget = viewer.window.add_plugin_dock_widget("napari-samrefine", "Prompt excavation")
_, refine_widget = viewer.window.add_plugin_dock_widget("napari-samrefine", "SAM refine", tabify=True)
prompt_widget.labels_layer.value = coarse
refine_widget.image_layer.value = viewer.layers["nuclei"]
refine_widget.labels_layer.value = coarse
show_prompts(viewer, coarse, excavate_prompts(coarse.data, cebox=None))
viewer.layers["nuclei coarse Gaussian prompts"].opacity = 0.6
viewer.reset_view()
for _ in range(20):
    QApplication.processEvents()
# close notification toasts (the PyQt5 deprecation notice) so they do not cover the canvas
for widget in QApplication.allWidgets():
    if type(widget).__name__ == "NapariQtNotification":
        widget.close()
QApplication.processEvents()
OUT.parent.mkdir(parents=True, exist_ok=True)
viewer.screenshot(str(OUT), canvas_only=False)
print("saved", OUT)
viewer.close()
