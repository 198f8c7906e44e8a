"""The disk tier of the embedding cache: reuse across caches and processes, limit, damage, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import napari_samrefine as nsr
from napari_samrefine.cli import main
from napari_samrefine.engine.disk_cache import (
    DiskEmbeddingCache,
    clear_embedding_cache,
    embedding_cache_info,
)
from napari_samrefine.engine.disk_cache_policy import LIMIT_ENV, embedding_cache_limit
from napari_samrefine.engine.embedding import EmbeddingCache, default_cache, embed_image, image_key
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.models.registry import get_model
from napari_samrefine.testing import tiny_sam


class Passes:
    """Counts image encoder passes with a forward pre-hook (the real encoder runs)."""

    def __init__(self, model):
        self.n = 0
        self._handle = model.image_encoder.register_forward_pre_hook(self._count)

    def _count(self, *args):
        self.n += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def _rgb(seed: int, shape=(96, 80)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.zarr.zip"))


@pytest.fixture(scope="module")
def scene(dsb_pair):
    """Four DSB images side by side (512 x 512): four 256 px tiles and more for the tiny SAM."""
    image, labels = dsb_pair
    big = np.block([[image, image[:, ::-1]], [image[::-1], image[::-1, ::-1]]])
    parts, offset = [], 0
    for part in (labels, labels[:, ::-1], labels[::-1], labels[::-1, ::-1]):
        parts.append(np.where(part > 0, part.astype(np.int32) + offset, 0))
        offset += int(part.max())
    return big, np.block([[parts[0], parts[1]], [parts[2], parts[3]]])


def test_a_new_cache_reads_every_tile_from_disk_and_gives_the_same_labels(sam, scene, tmp_path):
    image, labels = scene
    folder = tmp_path / "embeddings"
    first = EmbeddingCache(disk=folder)
    with Passes(sam) as passes:
        a = nsr.refine(image, labels, sam, iterations=1, tile=256, embedding_cache=first)
    n_tiles = passes.n
    assert n_tiles > 1 and first.misses == n_tiles and first.disk_hits == 0
    assert len(_files(folder)) == n_tiles
    second = EmbeddingCache(disk=folder)  # empty memory, same folder: a new session
    with Passes(sam) as passes:
        b = nsr.refine(image, labels, sam, iterations=1, tile=256, embedding_cache=second)
    assert passes.n == 0
    assert (second.misses, second.disk_hits, second.hits) == (0, n_tiles, 0)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_a_disk_hit_is_bit_identical_to_a_fresh_embedding(sam, tmp_path):
    rgb = _rgb(0)
    EmbeddingCache(disk=tmp_path).get(sam, rgb)
    cache = EmbeddingCache(disk=tmp_path)
    hit = cache.get(sam, rgb)
    fresh = embed_image(sam, rgb)
    assert cache.disk_hits == 1 and cache.misses == 0
    assert torch.equal(hit.features, fresh.features) and hit.features.dtype == fresh.features.dtype
    assert hit.features.device == fresh.features.device
    assert hit.frame == fresh.frame and hit.key == fresh.key
    assert cache.get(sam, rgb) is hit and cache.hits == 1  # then from memory


def test_the_default_cache_writes_where_the_environment_says_at_first_use(sam, cache):
    image = _rgb(7, (64, 64))[..., 0]
    labels = np.zeros((64, 64), np.int32)
    labels[20:40, 10:30] = 1
    assert not (cache / "embeddings").exists()  # folder set after import, read at use
    disk_hits, misses = default_cache.disk_hits, default_cache.misses
    nsr.refine(image, labels, sam, iterations=1)  # embedding_cache defaults to default_cache
    assert default_cache.misses == misses + 1 and default_cache.disk_hits == disk_hits
    assert len(_files(cache / "embeddings")) == 1
    assert embedding_cache_info().entries == 1


SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch, xxhash
    from napari_samrefine.engine.embedding import default_cache
    from napari_samrefine.testing import tiny_sam

    torch.set_num_threads(1)
    sam = tiny_sam(seed=0)
    passes = []
    sam.image_encoder.register_forward_pre_hook(lambda *a: passes.append(1))
    rgb = np.random.default_rng(3).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    emb = default_cache.get(sam, rgb)
    features = emb.features.contiguous().numpy()
    print(json.dumps({
        "passes": len(passes), "disk_hits": default_cache.disk_hits,
        "misses": default_cache.misses, "features": xxhash.xxh3_128(features.data).hexdigest(),
    }))
    """
)


def test_embeddings_survive_a_restart(tmp_path):
    env = {**os.environ, "NAPARI_SAMREFINE_CACHE": str(tmp_path / "cache")}
    env.pop(LIMIT_ENV, None)
    runs = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300,
        )
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert (runs[0]["passes"], runs[0]["misses"], runs[0]["disk_hits"]) == (1, 1, 0)
    assert (runs[1]["passes"], runs[1]["misses"], runs[1]["disk_hits"]) == (0, 0, 1)
    assert runs[0]["features"] == runs[1]["features"]
    assert len(_files(tmp_path / "cache" / "embeddings")) == 1


def test_another_model_never_reads_the_first_ones_embeddings(sam, tmp_path):
    rgb = _rgb(1)
    EmbeddingCache(disk=tmp_path).get(sam, rgb)
    other = tiny_sam(seed=1)
    cache = EmbeddingCache(disk=tmp_path)
    with Passes(other) as passes:
        emb = cache.get(other, rgb)
    assert passes.n == 1 and cache.disk_hits == 0 and cache.misses == 1
    assert not torch.equal(emb.features, embed_image(sam, rgb).features)
    assert len(_files(tmp_path)) == 2
    # the same weights in another object are the same model: a disk hit
    twin = tiny_sam(seed=0)
    cache = EmbeddingCache(disk=tmp_path)
    with Passes(twin) as passes:
        cache.get(twin, rgb)
    assert passes.n == 0 and cache.disk_hits == 1
    # weights changed in place: a new model
    with torch.no_grad():
        next(twin.image_encoder.parameters()).add_(1e-3)
    with Passes(twin) as passes:
        cache.get(twin, rgb)
    assert passes.n == 1 and cache.misses == 1


def _entry_size(sam, folder: Path) -> int:
    probe = DiskEmbeddingCache(folder / "probe")
    EmbeddingCache(disk=probe).get(sam, _rgb(100))
    return probe.info().bytes


def test_the_size_limit_drops_the_least_recently_used(sam, tmp_path):
    size = _entry_size(sam, tmp_path)
    disk = DiskEmbeddingCache(tmp_path / "lru", limit_gb=2.5 * size / 1e9)
    a, b, c = _rgb(10), _rgb(11), _rgb(12)
    EmbeddingCache(disk=disk).get(sam, a)
    time.sleep(0.05)  # file times are a few ms coarse
    EmbeddingCache(disk=disk).get(sam, b)
    time.sleep(0.05)
    reader = EmbeddingCache(disk=disk)
    reader.get(sam, a)  # a disk hit refreshes a: b is now the least recently used
    assert reader.disk_hits == 1
    time.sleep(0.05)
    EmbeddingCache(disk=disk).get(sam, c)
    kept = {p.name.removesuffix(".zarr.zip") for p in _files(disk.folder)}
    assert kept == {image_key(a, sam), image_key(c, sam)}
    info = disk.info()
    assert info.entries == 2 and info.bytes <= info.limit


def test_limit_zero_turns_the_disk_tier_off_and_the_environment_sets_it(sam, tmp_path, monkeypatch):
    off = EmbeddingCache(disk=DiskEmbeddingCache(tmp_path, limit_gb=0))
    off.get(sam, _rgb(20))
    assert off.misses == 1 and not _files(tmp_path)
    monkeypatch.setenv(LIMIT_ENV, "0")
    env_off = EmbeddingCache(disk=tmp_path)
    env_off.get(sam, _rgb(21))
    assert not _files(tmp_path)
    monkeypatch.setenv(LIMIT_ENV, "0.5")
    assert embedding_cache_limit() == 500_000_000
    monkeypatch.setenv(LIMIT_ENV, "lots")
    with pytest.raises(ValueError, match=f"{LIMIT_ENV}.*'lots'"):
        EmbeddingCache(disk=tmp_path).get(sam, _rgb(22))
    with pytest.raises(ValueError, match="limit_gb must be a size in GB >= 0"):
        DiskEmbeddingCache(tmp_path, limit_gb=-1)
    with pytest.raises(TypeError, match="disk must be"):
        EmbeddingCache(disk=3)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _scribble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(range(64))  # inside the features, same size
    path.write_bytes(bytes(data))


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a zip file at all")


@pytest.mark.parametrize("damage", [_truncate, _scribble, _garbage])
def test_a_damaged_entry_is_a_miss_that_recomputes(sam, tmp_path, damage):
    rgb = _rgb(30)
    fresh = EmbeddingCache(disk=tmp_path).get(sam, rgb)
    (path,) = _files(tmp_path)
    damage(path)
    cache = EmbeddingCache(disk=tmp_path)
    with Passes(sam) as passes:
        emb = cache.get(sam, rgb)
    assert passes.n == 1 and cache.misses == 1 and cache.disk_hits == 0
    assert torch.equal(emb.features, fresh.features)
    again = EmbeddingCache(disk=tmp_path)  # rewritten whole
    assert torch.equal(again.get(sam, rgb).features, fresh.features) and again.disk_hits == 1


def test_temporary_files_are_never_read_and_stale_ones_go(sam, tmp_path):
    rgb = _rgb(40)
    key = image_key(rgb, sam)
    # what a writer killed mid-write leaves (and what versions before the shared writer left)
    half = tmp_path / f".{key}.zarr.zip.0123456789abcdef.part"
    older = tmp_path / f".tmp-0123-{key}.zarr.zip"
    other = tmp_path / ".notes.txt.0123456789abcdef.part"  # not the cache's: it stays
    for path in (half, older, other):
        path.write_bytes(b"PK\x03\x04 half")
    cache = EmbeddingCache(disk=tmp_path)
    cache.get(sam, rgb)
    assert cache.misses == 1 and cache.disk_hits == 0
    assert DiskEmbeddingCache(tmp_path).info().entries == 1 and half.exists() and older.exists()
    entry = DiskEmbeddingCache(tmp_path).path(key)
    size = entry.stat().st_size
    assert DiskEmbeddingCache(tmp_path).clear() == (1, size) and not entry.exists()
    assert half.exists() and older.exists()  # a write in progress is not cleared
    old = time.time() - 7200
    for path in (half, older, other):
        os.utime(path, (old, old))
    DiskEmbeddingCache(tmp_path).entries()
    assert not half.exists() and not older.exists() and other.exists()


def test_threads_writing_one_key_leave_one_whole_entry(sam, tmp_path):
    rgb = _rgb(50)
    emb = embed_image(sam, rgb)
    disk = DiskEmbeddingCache(tmp_path)
    errors, reads = [], []

    def write():
        try:
            for _ in range(5):
                assert disk.write(emb.key, emb.features, emb.frame)
        except Exception as err:  # reported below
            errors.append(err)

    def read():
        for _ in range(10):
            found = disk.read(emb.key)
            reads.append(found is None or torch.equal(found[0], emb.features))

    threads = [threading.Thread(target=f) for f in (write, write, write, read, read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(reads)
    assert [p.name for p in tmp_path.iterdir()] == [f"{emb.key}.zarr.zip"]
    assert torch.equal(disk.read(emb.key)[0], emb.features)


def test_an_unwritable_folder_warns_once_and_refinement_goes_on(sam, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    cache = EmbeddingCache(disk=blocker / "embeddings")
    with pytest.warns(UserWarning, match="cannot be stored in .*NAPARI_SAMREFINE_CACHE"):
        emb = cache.get(sam, _rgb(60))
    assert torch.equal(emb.features, embed_image(sam, _rgb(60)).features)


def test_cache_info_and_clear_on_the_command_line(sam, cache, capsys):
    EmbeddingCache(disk=True).get(sam, _rgb(70))
    EmbeddingCache(disk=True).get(sam, _rgb(71))
    folder = cache / "embeddings"
    (folder / "notes.txt").write_text("mine")  # not the package's: never deleted
    checkpoint = cache / get_model("vit_b").filename
    checkpoint.write_bytes(b"weights")

    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert str(folder) in out and "entries: 2" in out and "limit: 2.0 GB" in out
    assert "vit_b" not in out
    assert main(["cache", "info", "--models"]) == 0
    out = capsys.readouterr().out
    assert "model checkpoints: 1" in out and str(checkpoint) in out

    assert main(["cache", "clear"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("removed 2 embeddings") and str(folder) in out
    assert not _files(folder) and (folder / "notes.txt").exists() and checkpoint.exists()
    assert main(["cache", "clear", "--models"]) == 0
    out = capsys.readouterr().out
    assert "removed 0 embeddings" in out and "removed model vit_b" in out
    assert not checkpoint.exists()


def test_clear_embedding_cache_in_python(sam, cache):
    EmbeddingCache(disk=True).get(sam, _rgb(80))
    n, size = nsr.clear_embedding_cache()
    assert n == 1 and size > 0
    assert clear_embedding_cache() == (0, 0) and embedding_cache_info().entries == 0


def test_a_bad_limit_is_an_error_on_the_command_line(cache, monkeypatch, capsys):
    monkeypatch.setenv(LIMIT_ENV, "-2")
    assert main(["cache", "info"]) == 2
    assert LIMIT_ENV in capsys.readouterr().err


def test_embeddings_of_another_image_size_or_tile_have_their_own_key(sam):
    rgb = _rgb(90, (64, 64))
    keys = {image_key(rgb, sam), image_key(np.ascontiguousarray(rgb[:32]), sam),
            image_key(np.ascontiguousarray(rgb[32:]), sam),
            image_key(rgb.reshape(32, 128, 3), sam)}
    assert len(keys) == 4
    assert image_key(to_sam_rgb(rgb[..., 0]), sam) != image_key(rgb, sam)


def test_bfloat16_features_are_stored_bit_for_bit(sam, tmp_path):
    emb = embed_image(sam, _rgb(95))
    features = emb.features.to(torch.bfloat16)
    disk = DiskEmbeddingCache(tmp_path)
    assert disk.write(emb.key, features, emb.frame)
    found, frame = disk.read(emb.key)
    assert found.dtype == torch.bfloat16 and torch.equal(found, features) and frame == emb.frame
