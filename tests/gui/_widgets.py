"""Docking the plugin's widgets the way napari does, and a SAM refine widget set up on the sample."""


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
