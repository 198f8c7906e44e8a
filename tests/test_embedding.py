import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from napari_samrefine.engine.embedding import EmbeddingCache, embed_image
from napari_samrefine.engine.preprocess import to_sam_rgb


@pytest.mark.float_sensitive
def test_embedding_equals_sam_predictor(sam, dsb_pair):
    rgb = to_sam_rgb(dsb_pair[0][:100, :70])
    emb = embed_image(sam, rgb)
    predictor = SamPredictor(sam)
    predictor.set_image(rgb)
    torch.testing.assert_close(emb.features, predictor.features)
    assert emb.frame.original_size == (100, 70)
    assert emb.frame.input_size == predictor.input_size


def test_cache_encodes_once_per_image_and_model(sam, dsb_pair):
    from napari_samrefine.testing import tiny_sam

    cache = EmbeddingCache(max_items=2)
    rgb = to_sam_rgb(dsb_pair[0])
    a = cache.get(sam, rgb)
    b = cache.get(sam, rgb.copy())
    assert a is b and cache.misses == 1 and cache.hits == 1
    other = tiny_sam(seed=1)
    c = cache.get(other, rgb)
    assert c is not a and not torch.equal(c.features, a.features)
    changed = rgb.copy()
    changed[0, 0] ^= 1
    cache.get(sam, changed)
    assert cache.misses == 3 and len(cache) == 2  # bounded: the oldest entry was dropped
    assert np.array_equal(rgb, to_sam_rgb(dsb_pair[0]))


def test_model_key_follows_the_weights_not_the_object(sam):
    from napari_samrefine.engine.embedding import model_key
    from napari_samrefine.models.profile import BOX_ONLY_MINMAX_PROFILE, set_model_profile
    from napari_samrefine.testing import tiny_sam

    twin = tiny_sam(seed=0)
    assert model_key(twin) == model_key(sam) != model_key(tiny_sam(seed=1))
    with torch.no_grad():
        twin.image_encoder.neck[0].weight.mul_(2)  # in place: same tensor, new values
    assert model_key(twin) != model_key(sam)
    twin.load_state_dict(sam.state_dict())
    assert model_key(twin) == model_key(sam)
    set_model_profile(twin, BOX_ONLY_MINMAX_PROFILE)  # another normalisation, another embedding
    assert model_key(twin) != model_key(sam)
    decoder_only = tiny_sam(seed=0)
    with torch.no_grad():
        decoder_only.mask_decoder.iou_prediction_head.layers[0].weight.add_(1)
    assert model_key(decoder_only) == model_key(sam)  # the decoder does not change embeddings
