"""The model field as a user sees it: what works offline, download size, progress, cancel, advice.

No network: the cache folder is a tmp_path (NAPARI_SAMREFINE_CACHE), downloads
come from a local HTTP server and "offline" is a closed port.
"""

from __future__ import annotations

import io
import threading

import pytest
import torch

from _http import FileServer, closed_port_url, xxh128
from napari_samrefine._napari.model_choice import LOCAL_FILE, ModelPicker
from napari_samrefine._progress import Cancelled
from napari_samrefine.models.cache import clear_model_cache, model_cache_info
from napari_samrefine.models.download import CACHE_ENV, ModelDownloadError, availability_text
from napari_samrefine.models.info import model_info
from napari_samrefine.models.registry import list_models, register_model, unregister_model

PAYLOAD = b"not a checkpoint, only bytes\n" * 40_000  # ~1.2 MB


@pytest.fixture
def entries():
    """Registers test models (removed afterwards, with any model loaded from them)."""
    names = []

    def add(name, url, digest, **kwargs):
        names.append(name)
        return register_model(name, url, digest, "custom", "test", overwrite=True, **kwargs)

    yield add
    for name in names:
        unregister_model(name)
    clear_model_cache()


def test_labels_say_what_works_offline_and_values_stay_names(qtbot, cache, tmp_path, entries):
    entry = entries("offline_model", closed_port_url(), xxh128(PAYLOAD, tmp_path), size=1_200_000)
    entries("unknown_size", closed_port_url(), "0" * 32)
    picker = ModelPicker()
    labels = picker.labels
    assert picker._model.value == "vit_b_lm"
    assert picker._model.choices == (*list_models(), LOCAL_FILE)  # the values are the names
    assert labels["offline_model"] == "offline_model \u2014 download 1 MB"
    assert labels["unknown_size"] == "unknown_size \u2014 download, size unknown"
    assert labels["vit_h"] == "vit_h \u2014 download 2.5 GB"
    assert labels["vit_b_lm"] == "vit_b_lm \u2014 download, size unknown"
    assert labels["medsam_lite"] == f"medsam_lite \u2014 {availability_text('medsam_lite')}"
    assert labels[LOCAL_FILE] == LOCAL_FILE
    # the chosen entry needs a download: the field says so before Run
    picker._model.value = "offline_model"
    assert "Not in the cache" in picker._model.tooltip
    assert LOCAL_FILE in picker._model.tooltip and str(cache) in picker._model.tooltip

    cache.mkdir()
    (cache / entry.filename).write_bytes(PAYLOAD)  # copied by hand
    (cache / "sam_vit_h_4b8939.pth").write_bytes(b"x")
    changed = []
    picker._model.changed.connect(changed.append)
    picker.refresh()
    assert picker.labels["offline_model"] == "offline_model \u2014 in cache"
    assert picker.labels["vit_h"] == "vit_h \u2014 in cache"
    assert list(picker.labels) == [*list_models(), LOCAL_FILE]  # order kept
    assert picker._model.value == "offline_model" and changed == []  # the choice is kept
    assert "Not in the cache" not in picker._model.tooltip


def test_offline_error_points_at_local_file_and_cache_folder(qtbot, cache, tmp_path, entries):
    entry = entries("offline_model", closed_port_url(), xxh128(PAYLOAD, tmp_path), size=1_200_000)
    picker = ModelPicker()
    picker._model.value = "offline_model"
    with pytest.raises(ModelDownloadError) as info:
        picker.load()
    message = str(info.value)
    assert "'local file...'" in message and "model field" in message
    assert str(cache / entry.filename) in message and CACHE_ENV in message
    assert "load_sam" not in message and "--checkpoint" not in message  # GUI advice only
    assert len(message) < 400
    usable = [n for n in list_models() if "installed" in picker.labels[n] or "cache" in picker.labels[n]]
    if usable:
        assert usable[0] in message
    # the core's message, for Python and the command line, is the cause
    assert "load_sam('/path/to/" in str(info.value.__cause__)


def test_offline_error_in_the_refine_widget_status(make_napari_viewer, qtbot, cache, tmp_path, entries):
    entries("offline_model", closed_port_url(), xxh128(PAYLOAD, tmp_path))
    viewer = make_napari_viewer()
    viewer.open_sample("napari-samrefine", "nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("napari-samrefine", "SAM refine")
    widget.model._model.value = "offline_model"
    widget.image_layer.value = viewer.layers["nuclei"]
    widget.labels_layer.value = viewer.layers["nuclei coarse"]
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is not None and not widget.busy, timeout=60_000)
    assert "'local file...'" in widget.status and str(cache) in widget.status


def test_download_through_the_widget_load_reports_progress_and_cancels(qtbot, cache, tmp_path, entries):
    from napari_samrefine.testing import tiny_sam

    buffer = io.BytesIO()
    torch.save(tiny_sam(seed=2).state_dict(), buffer)
    data = buffer.getvalue()
    with FileServer({"tiny.pth": data}, delay=0.02) as server:
        entry = entries("served_model", f"{server.url}/tiny.pth", xxh128(data, tmp_path))
        picker = ModelPicker()
        picker._model.value = "served_model"
        picker._device.value = "cpu"
        assert "download" in picker.labels["served_model"]

        def cancel_halfway(done, total, message):
            if 0 < done < total:
                raise Cancelled  # what the widget's Cancel button makes its callback do

        with pytest.raises(Cancelled):
            picker.load(progress=cancel_halfway)
        assert list(cache.iterdir()) == []
        assert "download" in picker.labels["served_model"]

        # the widgets call load in their worker thread
        loads = model_cache_info().loads
        calls, result = [], {}
        worker = threading.Thread(
            target=lambda: result.update(sam=picker.load(progress=lambda *a: calls.append(a)))
        )
        worker.start()
        qtbot.waitUntil(lambda: not worker.is_alive(), timeout=60_000)
    assert model_info(result["sam"]).name == "served_model"
    downloads = [c for c in calls if c[2].startswith("downloading")]
    assert downloads[-1][:2] == (len(data), len(data))
    assert any(0 < d < t for d, t, _ in downloads)
    assert (cache / entry.filename).read_bytes() == data
    qtbot.waitUntil(lambda: picker.labels["served_model"] == "served_model \u2014 in cache")
    # loaded once: a second load neither downloads nor reports
    again = []
    assert picker.load(progress=lambda *a: again.append(a)) is result["sam"]
    assert again == [] and server.requests == ["tiny.pth", "tiny.pth"]
    assert model_cache_info().loads == loads + 1  # the checkpoint was read once
