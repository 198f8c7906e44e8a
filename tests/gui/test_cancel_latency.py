"""Cancel acts inside an image-encoder pass of a full-size (random) ViT-B, not after it.

A ViT-B pass takes 15-30 s on a two-core CPU. Before the encoder reported its
layers, Cancel waited for the whole pass (62 s were measured with model
loading); now the bar moves during the pass and Cancel stops it between two
layers.
"""

from __future__ import annotations

import time

import pytest
import torch

pytestmark = pytest.mark.gui

TIMEOUT = 120_000
BOUND_S = 5.0  # generous: one layer of ViT-B is well under a second on two cores


@pytest.fixture(scope="module")
def vit_b():
    from segment_anything import build_sam_vit_b

    torch.manual_seed(0)
    return build_sam_vit_b().eval()


def test_cancel_during_encoding_acts_within_seconds(make_napari_viewer, qtbot, vit_b):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-samrefine", "nuclei")
    widget = viewer.window.add_plugin_dock_widget("napari-samrefine", "SAM refine")[1]
    widget.model.sam = vit_b
    widget.image_layer.value = viewer.layers["nuclei"]
    widget.labels_layer.value = viewer.layers["nuclei coarse"]
    layers_before = [layer.name for layer in viewer.layers]
    passes = []
    handle = vit_b.image_encoder.register_forward_hook(lambda *_: passes.append(1))
    try:
        widget._run_button.native.click()
        # the bar moves during the pass: wait until it has reported a few layers
        qtbot.waitUntil(
            lambda: "encoding" in widget.status and widget._bar.value > 2, timeout=TIMEOUT
        )
        assert 0 < widget._bar.value < widget._bar.max
        start = time.monotonic()
        widget._stop_button.native.click()
        qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
        latency = time.monotonic() - start
    finally:
        handle.remove()
    assert latency < BOUND_S, f"Cancel took {latency:.1f} s inside an encoder pass"
    assert passes == []  # stopped inside the pass, not after it
    assert [layer.name for layer in viewer.layers] == layers_before
    assert widget.status.startswith("Cancelled")
    # the hooks are gone: the model encodes as before, without reporting
    assert all(not m._forward_pre_hooks for m in vit_b.image_encoder.modules())


def test_cancel_during_decoding_acts_within_seconds(make_napari_viewer, qtbot, vit_b):
    """The image already encoded, the run goes straight to the cascade; Cancel stops it there.

    With random weights every mask grows to most of the image after the first
    iteration, so each iteration's prompt excavation works on megapixel masks:
    the slowest case for the checks between objects.
    """
    from napari_samrefine.engine.embedding import default_cache
    from napari_samrefine.engine.preprocess import to_sam_rgb

    viewer = make_napari_viewer()
    viewer.open_sample("napari-samrefine", "nuclei")
    widget = viewer.window.add_plugin_dock_widget("napari-samrefine", "SAM refine")[1]
    widget.model.sam = vit_b
    widget.iterations.value = 20
    default_cache.get(vit_b, to_sam_rgb(viewer.layers["nuclei"].data))  # what refine will ask for
    layers_before = [layer.name for layer in viewer.layers]
    passes = []
    handle = vit_b.image_encoder.register_forward_hook(lambda *_: passes.append(1))
    try:
        widget._run_button.native.click()
        qtbot.waitUntil(lambda: "iteration 2/" in widget.status, timeout=TIMEOUT)
        start = time.monotonic()
        widget._stop_button.native.click()
        qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
        latency = time.monotonic() - start
    finally:
        handle.remove()
    print(f"cancel latency while decoding: {latency:.2f} s")
    assert passes == []  # the embedding came from the cache: only decoding ran
    assert latency < BOUND_S, f"Cancel took {latency:.1f} s during the cascade"
    assert [layer.name for layer in viewer.layers] == layers_before
    assert widget.status.startswith("Cancelled")
