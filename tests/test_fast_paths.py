"""The fast paths compute what the simple paths compute (issue 6); no timings here."""

import numpy as np
import pytest
import torch

import napari_samrefine as nsr
from _cascade_steps import state_output, step_cascade
from napari_samrefine import IoUAdaptor
from napari_samrefine.engine.embedding import EmbeddingCache, embed_image
from napari_samrefine.engine.lean_decoder import LeanMaskDecoder, supports_lean_decoder
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.labels.objects import objects_from_labels
from napari_samrefine.samrefiner.cascade import PromptSettings, run_cascade
from napari_samrefine.samrefiner.decode import (
    PromptSwitches,
    decode_batch,
    decode_prompts,
    prompt_tensors,
)
from napari_samrefine.samrefiner.prompts import excavate_object, excavate_prompts
from napari_samrefine.testing import tiny_sam


@pytest.fixture(scope="module")
def scene(sam, dsb_pair):
    image, labels = dsb_pair
    emb = embed_image(sam, to_sam_rgb(image))
    objects = objects_from_labels(labels)[:10]
    prompts = [excavate_object(o, frame=emb.frame, embedding=emb) for o in objects]
    return emb, objects, prompts


SWITCHES = [
    PromptSwitches(),
    PromptSwitches(mask=False),
    PromptSwitches(points=False),
    PromptSwitches(box=False),
    PromptSwitches(negative_point=False),
    PromptSwitches(points=False, box=False),  # mask prompt only: no sparse tokens
]


@pytest.mark.float_sensitive
@pytest.mark.parametrize("switches", SWITCHES, ids=str)
def test_lean_decoder_equals_segment_anything_decoder(sam, scene, switches):
    emb, _, prompts = scene
    ref = decode_prompts(sam, emb, prompts, switches, batch_size=4, decoder="reference")
    lean = decode_prompts(sam, emb, prompts, switches, batch_size=4, decoder="lean")
    np.testing.assert_array_equal(lean.index, ref.index)
    np.testing.assert_allclose(lean.iou, ref.iou, rtol=0, atol=1e-5)
    torch.testing.assert_close(lean.lowres, ref.lowres, rtol=0, atol=1e-5)
    assert lean.lowres.abs().max() > 1e-3  # logits that mean something to compare


@pytest.mark.float_sensitive
def test_lean_decoder_all_candidates_and_other_sizes(dsb_pair):
    """Another geometry (128 px input, 8 x 8 grid, width 16): IoUs of all 3 candidates match."""
    sam = tiny_sam(seed=3, image_size=128, patch_size=16, prompt_dim=16)
    assert supports_lean_decoder(sam)
    image, labels = dsb_pair
    emb = embed_image(sam, to_sam_rgb(image[:100, :140]))
    objects = objects_from_labels(labels[:100, :140])[:5]
    prompts = [excavate_object(o, frame=emb.frame, embedding=emb) for o in objects]
    points, boxes, masks = prompt_tensors(prompts, emb, PromptSwitches(), torch.device("cpu"))
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=masks)
        low, iou = sam.mask_decoder(emb.features, sam.prompt_encoder.get_dense_pe(), sparse, dense, True)
        lean = LeanMaskDecoder(sam, emb.features)
        lean_low, lean_iou, best = lean.decode(sparse, masks, chunk=2)
        all_low, all_iou, all_best = lean.decode(sparse, masks, chunk=3, all_candidates=True)
    torch.testing.assert_close(lean_iou, iou, rtol=0, atol=1e-5)
    assert torch.equal(best, iou.argmax(1))
    torch.testing.assert_close(lean_low, low[torch.arange(len(best)), best], rtol=0, atol=1e-5)
    assert lean_low.shape[-2:] == (32, 32)
    # every candidate (IoU adaption's candidates), and the chunking changes nothing
    assert all_low.shape == low.shape and torch.equal(all_best, best)
    torch.testing.assert_close(all_low, low, rtol=0, atol=1e-5)
    torch.testing.assert_close(all_iou, lean_iou, rtol=0, atol=1e-6)


@pytest.mark.float_sensitive
@pytest.mark.parametrize("decoder", ["lean", "reference"])
def test_decode_batch_gives_every_candidate_like_segment_anything(sam, scene, decoder):
    """decode_batch (the one prompt-to-decoder path): prompts of the original frame, 3 candidates."""
    emb, objects, _ = scene
    boxes = np.stack([o.tight_box for o in objects])
    decoded = decode_batch(sam, emb, boxes=boxes, batch_size=3, decoder=decoder, all_candidates=True)
    sy, sx = emb.frame.scale
    scaled = torch.as_tensor(boxes * np.array([sx, sy, sx, sy]), dtype=torch.float32)
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(points=None, boxes=scaled, masks=None)
        low, iou = sam.mask_decoder(emb.features, sam.prompt_encoder.get_dense_pe(), sparse, dense, True)
    assert decoded.lowres.shape == low.shape and decoded.scores.shape == iou.shape
    torch.testing.assert_close(decoded.lowres, low, rtol=0, atol=1e-5)
    np.testing.assert_allclose(decoded.scores, iou.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(decoded.index, iou.argmax(1).numpy())
    np.testing.assert_allclose(decoded.iou, iou.max(1).values.numpy(), rtol=0, atol=1e-5)


@pytest.mark.float_sensitive
def test_lean_decoder_honours_an_iou_adaptor(sam, scene):
    emb, _, prompts = scene
    forced = IoUAdaptor.untrained(sam)
    forced.down = forced.down.abs()
    forced.up = torch.zeros_like(forced.up)
    forced.up[3] = 100.0  # output 3 of the IoU head = multimask candidate 2
    ref = decode_prompts(sam, emb, prompts, iou_adaptor=forced, decoder="reference")
    lean = decode_prompts(sam, emb, prompts, iou_adaptor=forced)
    assert (lean.index == 2).all()
    np.testing.assert_array_equal(lean.index, ref.index)
    torch.testing.assert_close(lean.lowres, ref.lowres, rtol=0, atol=1e-5)


@pytest.mark.float_sensitive
def test_cascade_lean_equals_reference(sam, scene):
    """Each cascade iteration with the lean decoder equals segment-anything's from the same
    masks: logits within float32 rounding, masks equal except at ties (``_cascade_steps``);
    comparing whole cascades would compare how far rounding ties grow, which depends on the CPU."""
    emb, objects, _ = scene
    shape = objects[0].image_shape

    def reference(masks):
        states = run_cascade(sam, emb, masks, PromptSettings(), iterations=1, convergence=None,
                             batch_size=4, decoder="reference")
        return [state_output(s, shape) for s in states]

    stepped = step_cascade(sam, emb, objects, PromptSettings(), reference, iterations=3,
                           convergence=None, batch_size=4)
    assert stepped.iterations == [3] * len(objects)
    assert all(s.status == "ok" for s in stepped.states)
    # the comparison decides nearly every pixel: ties excuse at most 1% of them
    assert stepped.counts["undecided"] <= stepped.counts["mask"] // 100
    with pytest.raises(ValueError, match="decoder"):
        run_cascade(sam, emb, objects, decoder="fast")
    with pytest.raises(ValueError, match="decoder"):
        decode_prompts(sam, emb, scene[2][:1], decoder="fast")


def test_one_encoder_pass_across_excavation_and_refinement(sam, dsb_pair, encoder_passes):
    """Issue 6.5: excavation, refinement (any options) and re-runs share one encoder pass."""
    image, labels = dsb_pair
    cache = EmbeddingCache()
    calls = encoder_passes
    emb = cache.get(sam, to_sam_rgb(image))
    prompts = excavate_prompts(labels, emb)
    assert calls.n == 1 and len(prompts) == 27
    nsr.refine(image, labels, sam, iterations=2, embedding_cache=cache)
    nsr.refine(image, labels, sam, iterations=1, cebox=None, use_mask=False, embedding_cache=cache)
    nsr.refine(image.copy(), labels, sam, mode="semantic", iterations=1, embedding_cache=cache)
    assert excavate_prompts(labels, cache.get(sam, to_sam_rgb(image)))[3].box.tolist() == (
        prompts[3].box.tolist()
    )
    assert calls.n == 1 and cache.misses == 1


def test_convergence_saves_decoder_passes_and_reports_them(sam, dsb_pair):
    image, labels = dsb_pair
    full = nsr.refine(image, labels, sam, iterations=5, convergence=None).table()
    assert (full["iterations"] == 5).all()
    # a threshold every change meets: each object stops after its first pass
    early = nsr.refine(image, labels, sam, iterations=5, convergence=0.0).table()
    assert (early["iterations"] == 1).all()


@pytest.mark.parametrize("shape", [(1200, 1100), (300, 777), (100, 60), (17, 1500)])
def test_cebox_cosine_equals_upsampling_every_channel(shape):
    """FeatureGrid.cosine (banded blends, either axis first, in column blocks) equals upsampling
    all channels, then normalising."""
    import torch.nn.functional as F

    from napari_samrefine.engine.embedding import ImageEmbedding
    from napari_samrefine.engine.frame import SamFrame
    from napari_samrefine.samrefiner.cebox import FeatureGrid

    g = torch.Generator().manual_seed(0)
    frame = SamFrame(shape)
    grid = FeatureGrid.from_embedding(ImageEmbedding(torch.randn(1, 16, 64, 64, generator=g), frame, "r"))
    full = F.interpolate(torch.from_numpy(grid.features).double()[None], size=shape, mode="bilinear",
                         align_corners=False)[0]
    full = full / full.norm(dim=0, keepdim=True)
    rng = np.random.default_rng(1)
    query = rng.normal(size=16)
    query /= np.linalg.norm(query)
    for long in (3, 40, 700):
        for thin in (1, 4, 10, 300):
            h, w = min(long, shape[0]), min(thin, shape[1])
            if rng.random() < 0.5:
                h, w = min(thin, shape[0]), min(long, shape[1])
            y, x = rng.integers(0, shape[0] - h + 1), rng.integers(0, shape[1] - w + 1)
            rows, cols = slice(y, y + h), slice(x, x + w)
            expected = np.tensordot(query, full[:, rows, cols].numpy(), axes=1)
            # (the frame's interpolation weights are float32, hence 1e-7 and not 1e-12)
            np.testing.assert_allclose(grid.cosine(query, rows, cols), expected, atol=1e-7)


def test_chosen_logits_crop_upsamples_like_the_full_low_res_map():
    from napari_samrefine.engine.frame import SamFrame
    from napari_samrefine.samrefiner.cascade import ChosenLogits

    rng = np.random.default_rng(0)
    for shape in [(1000, 700), (90, 130)]:
        frame = SamFrame(shape, image_size=256, lowres_size=64, embedding_size=16)
        low = rng.normal(size=(64, 64)).astype(np.float32) - 2.5
        region = frame.lowres_extent(low > 0)
        chosen = ChosenLogits.crop(frame, low, region)
        assert chosen.values.size < low.size
        np.testing.assert_allclose(chosen.upsample(), frame.lowres_to_original(low, region), atol=1e-5)
        full = frame.lowres_to_original(low)
        y0, x0, y1, x1 = region
        outside = np.ones(shape, bool)
        outside[y0:y1, x0:x1] = False
        assert not (full[outside] > 0).any()  # the region holds every positive logit
