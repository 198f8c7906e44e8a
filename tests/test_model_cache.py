"""The process-wide model cache: a checkpoint is read once per process, keyed by its content.

Reads are counted twice, independently: by the cache's own counter
(``model_cache_info().loads``) and by Python's audit events, which report every
``open()`` of the checkpoint file (torch.load's and the hashing's), with no mock.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pooch
import pytest
import torch

import napari_samrefine as nsr
from napari_samrefine.engine.embedding import EmbeddingCache, model_key
from napari_samrefine.models.cache import cached_model, clear_model_cache, model_cache_info
from napari_samrefine.models.download import CACHE_ENV
from napari_samrefine.models.fast_encoder import disable_fast_encoder, enable_fast_encoder
from napari_samrefine.models.info import ModelInfo, model_info, weights_digest
from napari_samrefine.models.loading import load_sam
from napari_samrefine.models.profile import (
    BOX_ONLY_MINMAX_PROFILE,
    SAM_PROFILE,
    model_profile,
    set_model_profile,
)
from napari_samrefine.models.registry import register_model, unregister_model
from napari_samrefine.models.source import ModelSource, model_source, set_model_source
from napari_samrefine.testing import tiny_sam

_WATCHED: dict[str, list[str]] = {}


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _WATCHED and isinstance(args[0], (str, os.PathLike)):
        path = os.path.realpath(os.fspath(args[0]))
        if path in _WATCHED:
            _WATCHED[path].append(event)


sys.addaudithook(_audit)  # one hook for the process; it only looks while something is watched


@contextmanager
def opens_of(path: Path):
    """The list of ``open()`` calls on ``path`` made inside the block (real file opens)."""
    key = os.path.realpath(path)
    _WATCHED[key] = []
    try:
        yield _WATCHED[key]
    finally:
        del _WATCHED[key]


def _save(path: Path, seed: int) -> Path:
    torch.save(tiny_sam(seed=seed).state_dict(), path)
    return path


def _pair():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 56), dtype=np.uint8)
    labels = np.zeros((48, 56), np.uint16)
    labels[10:25, 12:30] = 1
    labels[30:44, 30:50] = 2
    return image, labels


def _refine(model):
    image, labels = _pair()
    return nsr.refine(image, labels, model, iterations=1, device="cpu", embedding_cache=EmbeddingCache())


def test_refine_twice_with_a_path_reads_the_checkpoint_once(tmp_path):
    path = _save(tmp_path / "weights.pth", seed=2)
    loads = model_cache_info().loads
    with opens_of(path) as first:
        a = _refine(path)
    with opens_of(path) as second:
        b = _refine(str(path))
    assert len(first) >= 1 and second == []  # hashed and read once; then not even opened
    assert model_cache_info().loads == loads + 1
    np.testing.assert_array_equal(a.labels, b.labels)


def test_refine_twice_with_a_registry_name_reads_the_checkpoint_once(tmp_path, monkeypatch):
    source = _save(tmp_path / "source.pth", seed=2)
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv(CACHE_ENV, str(cache))
    entry = register_model(
        "test_cached", "http://127.0.0.1:9/none.pth", pooch.file_hash(str(source), alg="xxh128"),
        "custom", "test", overwrite=True,
    )
    try:
        path = cache / entry.filename
        path.write_bytes(source.read_bytes())  # in the cache folder: no download
        loads = model_cache_info().loads
        with opens_of(path) as first:
            _refine("test_cached")
        with opens_of(path) as second:
            _refine("test_cached")
        assert len(first) >= 1 and second == []
        assert model_cache_info().loads == loads + 1
        assert model_info(load_sam("test_cached", device="cpu")).name == "test_cached"
    finally:
        unregister_model("test_cached")


def test_keyed_by_content_not_path(tmp_path):
    one = _save(tmp_path / "one.pth", seed=2)
    two = tmp_path / "elsewhere" / "two.pt"
    two.parent.mkdir()
    two.write_bytes(one.read_bytes())
    loads = model_cache_info().loads
    sam = load_sam(one, device="cpu")
    assert load_sam(two, device="cpu") is sam  # same content at another path: not read again
    assert model_cache_info().loads == loads + 1
    assert model_info(sam).checkpoint == str(one.resolve())  # the file that was read
    # the same path with other content is read again
    _save(one, seed=3)
    changed = load_sam(one, device="cpu")
    assert changed is not sam and model_cache_info().loads == loads + 2
    assert model_info(changed).xxh128 == pooch.file_hash(str(one), alg="xxh128")
    assert not torch.equal(changed.mask_decoder.iou_token.weight, sam.mask_decoder.iou_token.weight)
    assert load_sam(two, device="cpu") is sam  # the old content is still the old model


def test_device_encoder_and_profile_are_part_of_the_key(tmp_path):
    path = _save(tmp_path / "w.pth", seed=2)
    fast = load_sam(path, device="cpu")
    stock = load_sam(path, device="cpu", fast_encoder=False)
    box = load_sam(path, device="cpu", profile=BOX_ONLY_MINMAX_PROFILE)
    assert len({id(fast), id(stock), id(box)}) == 3
    assert (model_info(fast).fast_encoder, model_info(stock).fast_encoder) == (True, False)
    assert model_profile(box) == BOX_ONLY_MINMAX_PROFILE and model_profile(fast) == SAM_PROFILE
    assert load_sam(path, device="cpu", fast_encoder=False) is stock


def test_a_changed_model_is_not_handed_out_again(tmp_path):
    path = _save(tmp_path / "w.pth", seed=2)
    sam = load_sam(path, device="cpu")
    original = sam.mask_decoder.iou_token.weight.clone()
    with torch.no_grad():
        sam.mask_decoder.iou_token.weight.add_(1)  # weights changed in place
    fresh = load_sam(path, device="cpu")
    assert fresh is not sam and torch.equal(fresh.mask_decoder.iou_token.weight, original)
    set_model_profile(fresh, BOX_ONLY_MINMAX_PROFILE)  # another profile
    again = load_sam(path, device="cpu")
    assert again is not fresh and model_profile(again) == SAM_PROFILE
    disable_fast_encoder(again)  # another encoder path
    assert load_sam(path, device="cpu") is not again


def test_two_threads_load_once(tmp_path):
    path = _save(tmp_path / "w.pth", seed=2)
    loads = model_cache_info().loads
    barrier = threading.Barrier(4)
    got = []

    def worker():
        barrier.wait()
        got.append(load_sam(path, device="cpu"))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(m is got[0] for m in got)
    assert model_cache_info().loads == loads + 1


def test_the_last_model_is_kept_the_one_before_is_let_go(tmp_path):
    first = _save(tmp_path / "a.pth", seed=2)
    second = _save(tmp_path / "b.pth", seed=3)
    ref = weakref.ref(load_sam(first, device="cpu"))
    gc.collect()
    assert ref() is not None  # nothing holds it but the cache: kept, the next call is free
    loads = model_cache_info().loads
    assert load_sam(first, device="cpu") is ref()
    assert model_cache_info().loads == loads
    load_sam(second, device="cpu")  # another model: the first one may go
    gc.collect()
    assert ref() is None
    clear_model_cache()
    assert model_cache_info().models == 0
    load_sam(second, device="cpu")
    assert model_cache_info().loads == loads + 2  # cleared: read again


def test_a_failed_load_stores_nothing_and_is_retried(tmp_path):
    key = ("test", "failing")
    calls = []

    def load():
        calls.append(1)
        raise OSError("disk gone")

    for _ in range(2):
        with pytest.raises(OSError, match="disk gone"):
            cached_model(key, load)
    assert len(calls) == 2


def test_info_agrees_with_what_load_sam_knows(tmp_path):
    """The facts that lived on the module as attributes, now read through model_info."""
    tiny = tiny_sam(seed=2)
    path = _save(tmp_path / "my model.pth", seed=2)
    sam = load_sam(path, device="cpu")
    info = model_info(sam)
    assert isinstance(info, ModelInfo)
    assert (info.name, info.arch, info.checkpoint, info.xxh128) == (
        "my model.pth", "custom", str(path.resolve()), pooch.file_hash(str(path), alg="xxh128")
    )
    assert model_source(sam) == ModelSource("my model.pth", "custom", str(path.resolve()), info.xxh128)
    assert (info.profile, info.fast_encoder) == (SAM_PROFILE, True)
    # the digest of the encoder's weights: the file's model and the model it was saved from agree
    assert info.weights_digest == weights_digest(tiny) == model_info(tiny).weights_digest
    assert not hasattr(sam, "samrefine_info") and not hasattr(sam, "samrefine_profile")
    assert not any(k.startswith(("samrefine", "_samrefine")) for k in vars(sam))


def test_a_model_built_in_code_gets_derived_facts():
    sam = tiny_sam(seed=2)
    info = model_info(sam)
    assert (info.name, info.arch, info.checkpoint, info.xxh128) == (None, "custom", None, None)
    assert (info.profile, info.fast_encoder) == (SAM_PROFILE, False)
    enable_fast_encoder(sam)
    set_model_profile(sam, BOX_ONLY_MINMAX_PROFILE)
    set_model_source(sam, ModelSource("mine", "custom"))
    info = model_info(sam)
    assert (info.name, info.profile, info.fast_encoder) == ("mine", BOX_ONLY_MINMAX_PROFILE, True)
    set_model_profile(sam, None)
    set_model_source(sam, None)
    assert model_info(sam).profile == SAM_PROFILE and model_info(sam).name is None


def test_weights_digest_follows_in_place_changes():
    sam = tiny_sam(seed=2)
    before, key = weights_digest(sam), model_key(sam)
    with torch.no_grad():
        sam.image_encoder.neck[0].weight.mul_(2)
    assert weights_digest(sam) != before and model_key(sam) != key
    with torch.no_grad():
        sam.image_encoder.neck[0].weight.div_(2)
    assert weights_digest(sam) == before and model_key(sam) == key
