"""The judge widget's result layers: verdicts with their names, accepted labels, SMPs, on their plane.

The judge works on 2D planes (the plane of each layer the viewer shows). Its
results are drawn on that plane only: on a stack, a result layer holds one
plane, ``(1, H, W)`` (one leading axis of length 1 per leading axis of the
source layer), translated to the judged plane. The layers stay linked to their
source (:func:`~napari_samrefine._napari.layers.upsert_layer`): judging
another plane moves them there with the new result, so the layers and the
table always describe the last judged plane.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from napari.utils.colormaps import DirectLabelColormap

from napari_samrefine._napari.layers import (
    find_linked,
    geometry,
    label_rows,
    layer_data,
    upsert_layer,
)
from napari_samrefine.judge.verdicts import VERDICT_CODES

__all__ = [
    "VERDICT_NAME_COLORS",
    "SMP_COLORMAPS",
    "ACCEPTED_CONTOUR",
    "VERDICT_COLORS",
    "legend_html",
    "verdict_features",
    "on_plane",
    "show_judge_result",
]

VERDICT_NAME_COLORS = {
    "improved": "limegreen", "degraded": "red", "uncertain": "yellow", "could not judge": "darkgray",
}  # fmt: skip
"""Colour of each verdict in the verdict layer and the widget's legend."""

SMP_COLORMAPS = {"SMP1": "magenta", "SMP2": "cyan"}
"""Colormaps of the support mask predictions (from the coarse and the refined mask): none is
a verdict colour, so a prediction never reads as a verdict."""

VERDICT_COLORS = {
    None: "transparent",
    0: "transparent",
    **{VERDICT_CODES[name]: color for name, color in VERDICT_NAME_COLORS.items()},
}
"""The verdict layer's colormap: label value (:data:`~napari_samrefine.judge.VERDICT_CODES`) to colour."""

ACCEPTED_CONTOUR = 1
"""Outline width of the accepted labels layer, drawn under the verdict colours."""


def legend_html() -> str:
    """The widget's legend: a coloured square and the name of each verdict (Qt rich text)."""
    items = (
        f'<span style="color:{color}">&#9632;</span>&nbsp;{name}'
        for name, color in VERDICT_NAME_COLORS.items()
    )
    return "&nbsp;&nbsp; ".join(items)


def verdict_features() -> pd.DataFrame:
    """The verdict layer's ``features``: napari shows the hovered label's ``verdict`` by name.

    Row ``i`` is value ``i`` (row 0: background), as napari's Features table widget expects.
    """
    names = ["", *sorted(VERDICT_CODES, key=VERDICT_CODES.get)]
    return pd.DataFrame({"index": np.arange(len(names), dtype=np.int64), "verdict": names})


def on_plane(viewer, layer) -> tuple[tuple[int, ...] | None, Callable, dict]:
    """Where a 2D result computed on ``layer``'s displayed plane goes.

    Returns
    -------
    plane : tuple of int or None
        The displayed plane's index along the leading axes (None for a 2D layer).
    lift : callable
        ``lift(data)`` gives a 2D result the layer's leading axes, of length 1.
    geo : dict
        ``scale`` and ``translate`` placing the lifted result over that plane.
    """
    lead = layer.ndim - 2
    geo = geometry(layer)
    if lead <= 0:
        return None, lambda data: data, geo
    shape = np.array(layer_data(layer).shape[:lead])
    position = np.round(layer.world_to_data(viewer.dims.point)[:lead]).astype(int)
    plane = tuple(int(p) for p in np.clip(position, 0, shape - 1))
    translate = np.array(geo["translate"], float)
    translate[:lead] += np.array(plane) * np.array(geo["scale"][:lead], float)
    geo["translate"] = tuple(translate)
    return plane, lambda data: np.asarray(data)[(None,) * lead], geo


def show_judge_result(viewer, result, refined, pairs, table: pd.DataFrame) -> dict:
    """Add or update the verdict, accepted and SMP layers of ``result`` (returns them by name).

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    result : JudgeResult
        What :func:`~napari_samrefine.judge_refinement` returned for the
        displayed plane of ``refined``.
    refined : napari.layers.Labels
        The refined labels layer (the verdict and accepted layers are linked to it).
    pairs : list of (Image, Labels)
        The support pairs, in the run's order (the SMPs go over their images).
    table : pandas.DataFrame
        ``result.table()``, the accepted layer's ``features``.
    """
    _, lift, geo = on_plane(viewer, refined)
    layers = {}
    # the accepted labels first and as outlines, the verdict colours over them: the accepted
    # layer never hides a verdict
    new = find_linked(viewer, refined, "jfs accepted") is None
    layers["accepted"] = upsert_layer(
        viewer, refined, "jfs accepted", "labels", lift(result.accepted),
        name=f"{refined.name} accepted", features=label_rows(table), **geo,  # row i: label i
    )  # fmt: skip
    if new:
        layers["accepted"].contour = ACCEPTED_CONTOUR
    layers["verdicts"] = upsert_layer(
        viewer, refined, "jfs verdicts", "labels", lift(result.verdict_image()),
        name=f"{refined.name} JFS verdicts", opacity=0.5,
        colormap=DirectLabelColormap(color_dict=VERDICT_COLORS), features=verdict_features(),
        **geo,
    )  # fmt: skip
    _above(viewer, layers["verdicts"], layers["accepted"])
    for n, (img, _) in enumerate(pairs if result.predictions else []):
        _, lift_smp, smp_geo = on_plane(viewer, img)
        smp = result.support_mask_predictions(n)
        for name, data in zip(("SMP1", "SMP2"), smp, strict=True):
            new = find_linked(viewer, img, f"jfs {name}") is None
            layer = layers[f"{name} {n}"] = upsert_layer(
                viewer, img, f"jfs {name}", "image", lift_smp(data), name=f"{name} on {img.name}",
                colormap=SMP_COLORMAPS[name], blending="additive", contrast_limits=(0, 1),
                **smp_geo,
            )  # fmt: skip
            if new:
                _on_support_image(viewer, layer, img)
    return layers


def _above(viewer, layer, below) -> None:
    """Move ``layer`` just above ``below`` in the layer list when it lies under it."""
    layers = list(viewer.layers)
    i, j = layers.index(layer), layers.index(below)
    if i < j:
        viewer.layers.move(i, j + 1)  # napari inserts before the destination index


def _on_support_image(viewer, smp, image) -> None:
    """Draw a support mask prediction with its support image only.

    The prediction goes just above its image in the layer list, so any layer
    above the image (the query image, the verdicts) covers it as it covers the
    image, and it is shown only while its image is: a prediction is never seen
    over the query image, at the query's coordinates.
    """
    layers = list(viewer.layers)
    i, j = layers.index(smp), layers.index(image)
    if i != j + 1:
        viewer.layers.move(i, j + 1)  # napari inserts before the destination index
    smp.visible = bool(image.visible)

    def follow(event=None) -> None:
        if smp in viewer.layers:
            smp.visible = bool(image.visible)

    image.events.visible.connect(follow)
