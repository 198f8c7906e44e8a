"""Docking the plugin's widgets the way napari does, running them, and the review set-up on the sample."""

import warnings

import numpy as np
from qtpy.QtCore import Qt

import napari_samrefine as nsr


def open_widget(viewer, name):
    """The widget ``name`` docked through napari's plugin menu path."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-samrefine", name)
    return widget


def refine_widget(viewer, sam, **values):
    """The docked "SAM refine" widget on the nuclei sample with ``sam``, 2 iterations, ``values``."""
    widget = open_widget(viewer, "SAM refine")
    widget.model.sam = sam
    widget.image_layer.value = viewer.layers["nuclei"]
    widget.labels_layer.value = viewer.layers["nuclei coarse"]
    widget.iterations.value = 2
    for key, value in values.items():
        getattr(widget, key).value = value
    return widget


def run_widget(widget, qtbot, timeout: int = 60_000):
    """Press the widget's run button and wait until its worker has finished."""
    widget._run_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is not None and not widget.busy, timeout=timeout)


def review_with_mined_prompts(viewer, qtbot, sam):
    """Refine the sample (keep "refined"), show its coarse prompts, open the review dock on the result.

    Returns the refined layer, the coarse layer and the review widget (loaded, with ``sam``).
    """
    run_widget(refine_widget(viewer, sam, keep="refined"), qtbot)
    coarse = viewer.layers["nuclei coarse"]
    prompt_widget = open_widget(viewer, "Prompt excavation")
    prompt_widget.labels_layer.value = coarse
    run_widget(prompt_widget, qtbot)
    review = open_widget(viewer, "Review refinement")
    review.model.sam = sam
    review.image_layer.value = viewer.layers["nuclei"]
    review.load_button.native.click()
    return viewer.layers["nuclei coarse refined"], coarse, review


def decode_one(image, coarse, sam, prompts):
    """What Refine this object gives for ``prompts``: refine that object alone, one iteration (its mask)."""
    label = prompts.label_id
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nsr.refine(image, coarse, sam, label_ids=[label], prompts={label: prompts},
                          iterations=1, keep="refined").labels == label


def refine_again_with_e(qtbot, review, sam, refined, start, label: int, again):
    """Press E on the selected object: it runs in a worker, with no encoder pass, and writes ``again``
    (its mask) over ``start`` for that object only, decided "re-refined". Returns the prompts kept."""
    passes = []  # the image encoder's passes from now on (a forward hook, not a mock)
    hook = sam.image_encoder.register_forward_hook(lambda *_: passes.append(1))
    qtbot.keyClick(review.table.native, Qt.Key.Key_E)
    assert review.busy  # in a worker thread
    qtbot.waitUntil(lambda: not review.busy, timeout=60_000)
    hook.remove()
    assert not passes  # the cached embedding: no encoder pass
    want = start.copy()
    want[want == label] = 0
    want[again] = label
    np.testing.assert_array_equal(refined.data, want)
    changed = refined.data != start
    assert changed.any() and ((start[changed] == label) | (refined.data[changed] == label)).all()  # no other
    assert refined.features.set_index("label_id")["decision"][label] == "re-refined"
    return refined.metadata["samrefine_edited_prompts"][(None, label)]  # kept with the layer
