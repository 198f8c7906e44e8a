"""The fast encoder path: same embeddings as the stock encoder, reversible, keyed in caches."""

from __future__ import annotations

import copy
import pickle
from functools import partial

import numpy as np
import pytest
import torch
from segment_anything.modeling.image_encoder import Attention

from napari_samrefine.engine.embedding import EmbeddingCache, image_key
from napari_samrefine.models import fast_encoder
from napari_samrefine.models.fast_encoder import (
    FAST_ENCODER_DEFAULTS,
    disable_fast_encoder,
    enable_fast_encoder,
    fast_encoder_key,
    fast_encoder_state,
)
from napari_samrefine.models.loading import load_sam
from napari_samrefine.testing import tiny_sam, tiny_tinyvit_sam

ATOL = 1e-4  # embeddings of magnitude ~4; float32 rounding differences are ~1e-6


def _input(sam, seed: int = 0) -> torch.Tensor:
    size = sam.image_encoder.img_size
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _encode(sam, x: torch.Tensor) -> torch.Tensor:
    return sam.image_encoder(x)


def _tinyvit(layout: str):
    pytest.importorskip("mobile_sam")
    return tiny_tinyvit_sam(layout=layout)


MODELS = {
    # 16 x 16 grid, window 8: a windowed block and a global block, random rel-pos tables
    "vit": lambda: tiny_sam(),
    # 14 x 14 grid, window 5: windows padded; two windowed blocks and a global one
    "vit-padded": lambda: tiny_sam(image_size=224, window_size=5, encoder_depth=3, encoder_heads=4),
    "tinyvit-mobile_sam": lambda: _tinyvit("mobile_sam"),
    "tinyvit-lite_medsam": lambda: _tinyvit("lite_medsam"),
}


@pytest.mark.float_sensitive
@pytest.mark.parametrize("name", MODELS)
def test_sdpa_equals_stock(name):
    sam = MODELS[name]()
    x = _input(sam)
    stock = _encode(sam, x)
    assert enable_fast_encoder(sam) == {"sdpa": True}
    fast = _encode(sam, x)
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast, stock, atol=ATOL, rtol=0)
    attention = [m for m in sam.image_encoder.modules() if fast_encoder._fast_forward(m)]
    assert attention and all("forward" in m.__dict__ for m in attention)  # the other path ran


@pytest.mark.float_sensitive
def test_global_attention_in_head_chunks(monkeypatch):
    sam = MODELS["vit-padded"]()
    x = _input(sam)
    stock = _encode(sam, x)
    enable_fast_encoder(sam)
    whole = _encode(sam, x)
    monkeypatch.setattr(fast_encoder, "_MASK_BYTES", 1)  # one head's mask at a time
    torch.testing.assert_close(_encode(sam, x), whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(_encode(sam, x), stock, atol=ATOL, rtol=0)


def test_attention_without_rel_pos():
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4, use_rel_pos=False).eval()
    x = torch.randn(3, 5, 6, 32)
    with torch.no_grad():
        stock = attn(x)
        attn.forward = partial(fast_encoder._sam_attention_forward, attn)
        torch.testing.assert_close(attn(x), stock, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["vit", "tinyvit-lite_medsam"])
def test_enable_then_disable_restores_stock(name):
    sam = MODELS[name]()
    x = _input(sam)
    stock = _encode(sam, x)
    enable_fast_encoder(sam)
    assert fast_encoder_key(sam) == "sdpa"
    assert any("forward" in m.__dict__ for m in sam.image_encoder.modules())
    disable_fast_encoder(sam)
    assert not any("forward" in m.__dict__ for m in sam.image_encoder.modules())
    assert fast_encoder_state(sam) == dict.fromkeys(FAST_ENCODER_DEFAULTS, False)
    assert fast_encoder_key(sam) == ""
    assert torch.equal(_encode(sam, x), stock)
    disable_fast_encoder(sam)  # twice is harmless


def test_enable_replaces_earlier_options():
    sam = tiny_sam()
    enable_fast_encoder(sam)
    assert enable_fast_encoder(sam, sdpa=False) == {"sdpa": False}
    assert not any("forward" in m.__dict__ for m in sam.image_encoder.modules())


def test_fast_model_survives_copy_and_pickle():
    sam = tiny_sam()
    x = _input(sam)
    enable_fast_encoder(sam)
    fast = _encode(sam, x)
    for clone in (copy.deepcopy(sam), pickle.loads(pickle.dumps(sam))):
        assert fast_encoder_key(clone) == "sdpa"
        torch.testing.assert_close(_encode(clone, x), fast, atol=0, rtol=0)
        disable_fast_encoder(clone)  # the clone's modules, not the original's
    assert fast_encoder_key(sam) == "sdpa"


def test_load_sam_applies_the_defaults(checkpoint):
    sam = load_sam(checkpoint, device="cpu")
    assert fast_encoder_state(sam) == FAST_ENCODER_DEFAULTS
    stock = load_sam(checkpoint, device="cpu", fast_encoder=False)
    assert fast_encoder_key(stock) == ""
    x = _input(sam)
    torch.testing.assert_close(_encode(sam, x), _encode(stock, x), atol=ATOL, rtol=0)


def test_cache_key_follows_the_encoder_path():
    sam = tiny_sam()
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    stock_key = image_key(rgb, sam)
    enable_fast_encoder(sam)
    sdpa_key = image_key(rgb, sam)
    assert sdpa_key != stock_key
    disable_fast_encoder(sam)
    assert image_key(rgb, sam) == stock_key

    cache = EmbeddingCache()
    stock = cache.get(sam, rgb)
    enable_fast_encoder(sam)
    fast = cache.get(sam, rgb)
    assert (cache.misses, cache.hits) == (2, 0)
    assert fast.key != stock.key
    torch.testing.assert_close(fast.features, stock.features, atol=ATOL, rtol=0)
    assert cache.get(sam, rgb) is fast
