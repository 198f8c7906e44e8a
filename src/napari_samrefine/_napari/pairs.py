"""Choosing Image + Labels layer pairs in a widget (training sets, JFS support pairs)."""

from __future__ import annotations

from collections.abc import Callable

from magicgui.widgets import Container, PushButton, Select
from napari.layers import Image, Labels

from napari_samrefine._napari.layers import layer_field

__all__ = ["LayerPairs"]


class LayerPairs(Container):
    """An image field, a labels field, "Add", the list of added pairs and "Remove".

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    say : callable
        ``say(text, error=True)`` shows a message (the owning widget's status line).
    image_label, labels_label, list_label, add_text : str
        Texts of the two layer fields, the list and the Add button.
    prefer_image, prefer_labels : callable, optional
        ``prefer(layer) -> bool``: the layers the two fields preselect among
        (see :class:`~napari_samrefine._napari.layers.LayerField`).
    """

    def __init__(
        self, viewer, say: Callable[..., None], *, image_label: str = "image",
        labels_label: str = "labels", list_label: str = "pairs", add_text: str = "Add pair",
        prefer_image: Callable | None = None, prefer_labels: Callable | None = None,
    ):  # fmt: skip
        self._viewer = viewer
        self._say = say
        self._pairs: list[tuple[Image, Labels]] = []
        self.image_layer = layer_field(viewer, Image, image_label, prefer_image)
        self.labels_layer = layer_field(viewer, Labels, labels_label, prefer_labels)
        self.add_button = PushButton(text=add_text)
        self.pair_list = Select(label=list_label, choices=self._choices)
        self.remove_button = PushButton(text="Remove selected pairs")
        fields = [self.image_layer, self.labels_layer, self.add_button, self.pair_list]
        super().__init__(widgets=[*fields, self.remove_button], labels=True)
        self.add_button.changed.connect(self._add_current)
        self.remove_button.changed.connect(self._remove_selected)

    def _choices(self, _widget=None):
        return [(f"{img.name}  <->  {lab.name}", n) for n, (img, lab) in enumerate(self._pairs)]

    def _add_current(self, *_):
        img, lab = self.image_layer.value, self.labels_layer.value
        if img is None or lab is None:
            self._say("Choose an image layer and a labels layer first.", error=True)
            return
        # compared with == (napari may hand out proxies of the same layer)
        if not any(i == img and j == lab for i, j in self._pairs):
            self._pairs.append((img, lab))
            self.pair_list.reset_choices()

    def _remove_selected(self, *_):
        drop = set(self.pair_list.value)
        self._pairs = [p for n, p in enumerate(self._pairs) if n not in drop]
        self.pair_list.reset_choices()

    def add(self, image: Image, labels: Labels) -> None:
        """Add an (image, labels) layer pair, as the Add button does (scripting and tests)."""
        self.image_layer.value, self.labels_layer.value = image, labels
        self._add_current()

    def images(self) -> list[Image]:
        """The support images: the added pairs' and the image field's."""
        return [i for i, _ in self._pairs] + [self.image_layer.value]

    def labels(self) -> list[Labels]:
        """The support labels: the added pairs' and the labels field's."""
        return [j for _, j in self._pairs] + [self.labels_layer.value]

    def chosen(self, fallback: bool = True) -> list[tuple[Image, Labels]]:
        """The added pairs still in the viewer; if none, the two fields' pair (``fallback``)."""
        layers = list(self._viewer.layers)
        pairs = [(i, j) for i, j in self._pairs if i in layers and j in layers]
        current = (self.image_layer.value, self.labels_layer.value)
        if not pairs and fallback and None not in current:
            pairs = [current]
        return pairs
