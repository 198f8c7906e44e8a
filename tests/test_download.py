"""Checkpoint availability (cache, installed package, download) and download progress/cancel.

No network: downloads come from a local HTTP server on 127.0.0.1, "offline" is a
closed port, and cache folders are built in tmp_path.
"""

from __future__ import annotations

import hashlib

import pytest

from _http import FileServer, closed_port_url, xxh128
from napari_samrefine._progress import Cancelled
from napari_samrefine.models.download import (
    ModelDownloadError,
    availability_text,
    checkpoint_status,
    fetch_checkpoint,
    format_size,
)
from napari_samrefine.models.registry import get_model, register_model, unregister_model

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def test_entry():
    """Registers a test model (removed afterwards): ``add(url, digest, name=..., size=...)``."""
    names = []

    def add(url, digest, name="test_model", **kwargs):
        names.append(name)
        return register_model(name, url, digest, "custom", "test", overwrite=True, **kwargs)

    yield add
    for name in names:
        unregister_model(name)


@pytest.fixture
def packaged(tmp_path, monkeypatch):
    """A weights file inside an importable package 'fake_weights_pkg' (never imported)."""
    package = tmp_path / "site" / "fake_weights_pkg" / "asset"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (package / "__init__.py").write_text("")
    (package / "w.pth").write_bytes(PAYLOAD)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    names = []

    def add(name, resource):
        names.append(name)
        return register_model(
            name, "", xxh128(PAYLOAD, tmp_path), "custom", "test", package="fake-weights",
            resource=resource, sha256=hashlib.sha256(PAYLOAD).hexdigest(), overwrite=True,
        )

    yield add
    for name in names:
        unregister_model(name)


# --- what is usable offline ------------------------------------------------------------


def test_status_follows_the_cache_folder(cache, tmp_path, test_entry):
    entry = test_entry(closed_port_url(), xxh128(PAYLOAD, tmp_path), size=1_048_576)
    assert checkpoint_status("test_model") == "download"
    assert availability_text("test_model") == "download 1 MB"
    cache.mkdir()
    (cache / entry.filename).write_bytes(PAYLOAD)  # a copy made by hand, or a finished download
    assert checkpoint_status("test_model") == "cached"
    assert availability_text("test_model") == "in cache"
    # an explicit folder wins over the environment, as for the download itself
    assert checkpoint_status("test_model", cache_dir=tmp_path / "elsewhere") == "download"
    # a leftover temporary file of an interrupted download does not count
    (cache / entry.filename).unlink()
    (cache / "tmpab12cd").write_bytes(PAYLOAD[:100])
    assert checkpoint_status("test_model") == "download"


def test_status_of_packaged_models_without_network(packaged, cache):
    packaged("pkg_model", "fake_weights_pkg.asset/w.pth")
    packaged("pkg_missing", "no_such_weights_pkg.asset/w.pth")
    assert checkpoint_status("pkg_model") == "installed"
    assert availability_text("pkg_model") == "installed"
    assert checkpoint_status("pkg_missing") == "missing-package"
    assert availability_text("pkg_missing") == "needs pip install fake-weights"
    assert not cache.exists()  # nothing looked up or written there


def test_download_size_is_shown_only_where_documented(cache, tmp_path, test_entry):
    # the sizes given in the registry facts; micro-sam's files have none
    assert get_model("vit_b").size == 375_000_000
    assert get_model("vit_l").size == 1_200_000_000
    assert get_model("vit_h").size == 2_500_000_000
    assert get_model("vit_t").size == 40_000_000
    assert get_model("medsam_lite").size == 39_370_479
    assert get_model("vit_b_lm").size is None
    assert availability_text("vit_b") == "download 375 MB"
    assert availability_text("vit_h") == "download 2.5 GB"
    assert availability_text("vit_b_lm") == "download, size unknown"
    assert [format_size(n) for n in (None, 999, 40_000_000, 1_200_000_000, 12_000_000_000)] == [
        "size unknown", "999 B", "40 MB", "1.2 GB", "12 GB",
    ]
    with pytest.raises(ValueError, match="size"):
        test_entry("https://x/y.pt", "0" * 32, size=-1)


# --- download progress and cancel ------------------------------------------------------


def test_download_reports_bytes_up_to_the_full_size(cache, tmp_path, test_entry):
    calls = []
    with FileServer({"w.pt": PAYLOAD}, delay=0.03) as server:
        test_entry(f"{server.url}/w.pt", xxh128(PAYLOAD, tmp_path))
        path = fetch_checkpoint("test_model", progress=lambda *a: calls.append(a))
    assert path.read_bytes() == PAYLOAD
    assert calls[0][:2] == (0, len(PAYLOAD))  # before the first byte
    assert calls[-1][:2] == (len(PAYLOAD), len(PAYLOAD))
    assert {total for _, total, _ in calls} == {len(PAYLOAD)}
    done = [d for d, _, _ in calls]
    assert done == sorted(done) and any(0 < d < len(PAYLOAD) for d in done)
    assert len(calls) < 40  # a few a second, not one per chunk
    assert "test_model" in calls[-1][2] and "1 MB" in calls[-1][2]
    # in the cache now: no download, no report
    again = []
    assert fetch_checkpoint("test_model", progress=lambda *a: again.append(a)) == path
    assert again == [] and server.requests == ["w.pt"]


def test_download_without_content_length_ends_at_its_size(cache, tmp_path, test_entry):
    calls = []
    with FileServer({"w.pt": PAYLOAD}, delay=0.03, length=False) as server:
        test_entry(f"{server.url}/w.pt", xxh128(PAYLOAD, tmp_path))
        fetch_checkpoint("test_model", progress=lambda *a: calls.append(a))
    assert all(d < t for d, t, _ in calls[:-1])  # never "done" before the end
    assert calls[-1][:2] == (len(PAYLOAD), len(PAYLOAD))


@pytest.mark.parametrize("when", ["first byte", "halfway"])
def test_cancelled_download_leaves_nothing_in_the_cache(cache, tmp_path, test_entry, when):
    seen = []

    def progress(done, total, message):
        if when == "first byte" or 0 < done < total:
            seen.append(sorted(p.name for p in cache.iterdir()))
            raise Cancelled

    with FileServer({"w.pt": PAYLOAD}, delay=0.03) as server:
        entry = test_entry(f"{server.url}/w.pt", xxh128(PAYLOAD, tmp_path))
        with pytest.raises(Cancelled):
            fetch_checkpoint("test_model", progress=progress)
    # while it ran, the bytes went into a temporary file, not under the checkpoint's name
    assert len(seen) == 1 and len(seen[0]) == 1 and seen[0] != [entry.filename]
    assert list(cache.iterdir()) == []
    assert checkpoint_status("test_model") == "download"


def test_offline_error_keeps_the_python_and_cli_advice(cache, tmp_path, test_entry):
    test_entry(closed_port_url(), xxh128(PAYLOAD, tmp_path))
    calls = []
    with pytest.raises(ModelDownloadError) as info:
        fetch_checkpoint("test_model", progress=lambda *a: calls.append(a))
    assert "load_sam('/path/to/" in str(info.value) and "--checkpoint" in str(info.value)
    assert calls == []  # nothing was received
