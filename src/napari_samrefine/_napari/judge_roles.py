"""Telling the judge's layers apart by role: the query's image and labels, the supports'."""

from __future__ import annotations

from napari_samrefine._napari.layers import is_refined_layer, is_result_layer

__all__ = ["LayerRoles"]


class LayerRoles:
    """Which layer plays which part in a judge run, for the fields to preselect by role.

    A refined layer the SAM refine widget made names its coarse labels and its
    image (``metadata["samrefine"]`` ``source`` and ``image``): those are the
    query's, and the other images and labels are support candidates. Without
    such a link, a layer chosen as support is not taken as the query's, and the
    other way round.
    """

    def __init__(self, viewer, widget):
        self._viewer, self._widget = viewer, widget

    def _linked(self, key: str) -> set:
        return {
            layer.metadata["samrefine"].get(key) for layer in self._viewer.layers if is_refined_layer(layer)
        } - {None}

    def _field(self, name: str):
        field = getattr(self._widget, name, None)
        return None if field is None else field.value

    def _supports(self, kind: str) -> list:
        pairs = getattr(self._widget, "supports", None)
        return [] if pairs is None else getattr(pairs, kind)()

    def query_image(self, layer) -> bool:
        """The image the refinement ran on, else an image not chosen as support."""
        linked = self._linked("image")
        if linked:
            return layer.unique_id in linked
        return not is_result_layer(layer) and not any(layer == s for s in self._supports("images"))

    def coarse(self, layer) -> bool:
        """The labels a refined layer was made from, else labels not chosen as support."""
        linked = self._linked("source")
        if linked:
            return layer.unique_id in linked
        return not is_result_layer(layer) and not any(layer == s for s in self._supports("labels"))

    def support_image(self, layer) -> bool:
        """An image that is not the query's."""
        query = self._field("_image")
        return (not is_result_layer(layer) and layer.unique_id not in self._linked("image")
                and not (query is not None and layer == query))  # fmt: skip

    def support_labels(self, layer) -> bool:
        """Labels that are neither the query's coarse labels nor a result."""
        coarse = self._field("_coarse")
        return (not is_result_layer(layer) and layer.unique_id not in self._linked("source")
                and not (coarse is not None and layer == coarse))  # fmt: skip
