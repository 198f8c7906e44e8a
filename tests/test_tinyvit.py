"""TinyViT models (MobileSAM, micro-sam vit_t, LiteMedSAM layout): loading and every pipeline path."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest
import torch

import napari_samrefine as nsr
from napari_samrefine.engine.embedding import EmbeddingCache, embed_image
from napari_samrefine.engine.frame import SamFrame
from napari_samrefine.models.architecture import infer_sam_config
from napari_samrefine.models.info import model_info
from napari_samrefine.models.loading import load_sam
from napari_samrefine.models.profile import BOX_ONLY_MINMAX_PROFILE, SAM_PROFILE, set_model_profile
from napari_samrefine.models.tinyvit import TinyViTConfig
from napari_samrefine.testing import tiny_tinyvit_sam

pytest.importorskip("mobile_sam", reason="TinyViT needs the tinyvit extra (mobilesam-mirror)")


@pytest.fixture(scope="module")
def lite():
    """A random TinyViT-SAM in LiteMedSAM's layout: 256 px input, 64 x 64 embedding (stride 4)."""
    return tiny_tinyvit_sam(seed=1, layout="lite_medsam")


@pytest.fixture(scope="module")
def mobile():
    """A random TinyViT-SAM in MobileSAM's layout: 1024 px input, 64 x 64 embedding (stride 16)."""
    return tiny_tinyvit_sam(seed=2, layout="mobile_sam")


def blobs(shape=(200, 240), seed=0):
    """A grey image of bright discs and coarse labels that cover them roughly."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = rng.normal(20, 4, shape)
    labels = np.zeros(shape, np.uint16)
    centres = [(0.25, 0.25, 14), (0.6, 0.7, 18), (0.75, 0.25, 10), (0.3, 0.75, 9)]
    for i, (fy, fx, r) in enumerate(centres, 1):
        cy, cx = int(fy * shape[0]), int(fx * shape[1])
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        image[disc] += 150
        labels[(yy - cy - 2) ** 2 + (xx - cx + 1) ** 2 <= (r + 2) ** 2] = i
    return np.clip(image, 0, 255).astype(np.uint8), labels


def test_config_inferred_from_the_weights(lite, mobile):
    for sam, size, stride in ((lite, 256, 1), (mobile, 1024, 4)):
        config = infer_sam_config(sam.state_dict())
        assert isinstance(config, TinyViTConfig)
        assert (config.image_size, config.patch_stride, config.embedding_size) == (size, stride, 64)
        assert config.embed_dims == (16, 32, 40, 320) and config.depths == (1, 1, 1, 1)
        assert config.num_heads[1:] == (2, 2, 4) and config.window_sizes[1:] == (7, 7, 7)
        assert config.arch == "custom"
        assert sam.image_encoder.img_size == size


def test_mobile_sam_file_loads_without_a_model_type(tmp_path):
    """A random MobileSAM of mobile_sam's own builder, saved as its files are (classifier included)."""
    from mobile_sam import build_sam_vit_t

    torch.manual_seed(0)
    reference = build_sam_vit_t().eval()
    path = tmp_path / "weights"
    torch.save(reference.state_dict(), path)
    sam = load_sam(str(path), device="cpu", fast_encoder=False)  # stock, bit for bit
    assert model_info(sam).arch == "vit_t"
    assert nsr.models.profile.model_profile(sam) == SAM_PROFILE
    x = torch.rand(1, 3, 1024, 1024)
    with torch.no_grad():
        np.testing.assert_array_equal(sam.image_encoder(x), reference.image_encoder(x))


def test_micro_sam_tinyvit_format(lite, tmp_path):
    """micro-sam's layout: 'model_state' with 'sam.' keys and a non-tensor object."""
    path = tmp_path / "vit_t.pt"
    state = {"sam." + k: v for k, v in lite.state_dict().items()}
    torch.save({"model_state": state, "config": argparse.Namespace(model_type="vit_t")}, path)
    sam = load_sam(path, device="cpu", allow_unsafe_pickle=True, fast_encoder=False)
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        np.testing.assert_array_equal(sam.image_encoder(x), lite.image_encoder(x))
    assert model_info(sam).arch == "custom"


def test_missing_tinyvit_code_names_the_extra(lite, tmp_path, monkeypatch):
    path = tmp_path / "lite.pth"
    torch.save(lite.state_dict(), path)
    monkeypatch.setitem(sys.modules, "mobile_sam", None)
    monkeypatch.setitem(sys.modules, "mobile_sam.modeling", None)
    with pytest.raises(ModuleNotFoundError, match=r"napari-samrefine\[tinyvit\]"):
        load_sam(path, device="cpu")


def test_registry_lists_the_tinyvit_models():
    for name in ("vit_t", "vit_t_lm", "vit_t_em_organelles"):
        entry = nsr.models.registry.get_model(name)
        assert entry.arch == "vit_t" and entry.needs_download and entry.profile == SAM_PROFILE
    assert nsr.models.registry.get_model("vit_t").filename == "vit_t_mobile_sam.pt"


def test_embedding_grid_and_frame_of_a_stride_four_model(lite):
    rgb = np.dstack([blobs()[0]] * 3)
    emb = embed_image(lite, rgb)
    assert emb.features.shape == (1, 256, 64, 64)
    frame = emb.frame
    assert (frame.image_size, frame.embedding_size, frame.lowres_size) == (256, 64, 256)
    assert frame == SamFrame((200, 240), 256, 256, 64)
    assert frame.valid_embedding_size == (54, 64)  # 200 px -> 213 of 256 -> 53.3 cells


def test_minmax_profile_normalises_per_image(lite):
    """Under the min-max profile, an image and its contrast-scaled copy give the same embedding."""
    rgb = np.dstack([blobs()[0]] * 3)
    low = (rgb // 2 + 10).astype(np.uint8)  # affine map: min-max undoes it (to resize rounding)
    set_model_profile(lite, BOX_ONLY_MINMAX_PROFILE)
    try:
        a = embed_image(lite, rgb).features
        b = embed_image(lite, low).features
    finally:
        set_model_profile(lite, None)
    c = embed_image(lite, low).features  # SAM's mean/std: the contrast matters
    assert torch.allclose(a, b, atol=0.05 * a.abs().max())
    assert not torch.allclose(a, c, atol=0.05 * a.abs().max())


@pytest.mark.parametrize("which", ["lite", "mobile"])
def test_refine_with_cebox_and_every_prompt(which, request):
    sam = request.getfixturevalue(which)
    image, coarse = blobs()
    result = nsr.refine(image, coarse, sam, iterations=2, embedding_cache=EmbeddingCache())
    assert result.labels.shape == coarse.shape and result.labels.dtype == coarse.dtype
    assert [o.label_id for o in result.objects] == [1, 2, 3, 4]
    assert all(o.status in ("ok", "empty-output") for o in result.objects)
    assert all(p is not None and p.mask_input is None for p in result.prompts)
    # CEBox ran on the stride-4 grid: boxes are at least the tight ones
    for p in result.prompts:
        assert np.all(p.box[:2] <= p.tight_box[:2]) and np.all(p.box[2:] >= p.tight_box[2:])


def test_tiling_with_a_256_pixel_model(lite):
    """An image over twice the model's 256 px input is tiled: several encoder passes, one per tile."""
    image, coarse = blobs((600, 560), seed=3)
    calls = []
    hook = lite.image_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        tiled = nsr.refine(image, coarse, lite, iterations=1, tile="auto", embedding_cache=None)
    finally:
        hook.remove()
    assert len(calls) > 1
    assert set(np.unique(tiled.labels)) <= set(np.unique(coarse))
    assert [o.status for o in tiled.objects].count("ok") >= 1


def test_box_only_profile_decodes_the_single_mask(lite):
    """Under LiteMedSAM's profile: box prompt only, single-mask output (candidate 0)."""
    from napari_samrefine.samrefiner.cascade import PromptSettings

    set_model_profile(lite, BOX_ONLY_MINMAX_PROFILE)
    try:
        settings = PromptSettings.for_model(lite)
        assert (settings.switches.points, settings.switches.box, settings.switches.mask) == (
            False, True, False
        )
        image, coarse = blobs()
        rgb = np.dstack([image] * 3)
        emb = embed_image(lite, rgb)
        prompts = [settings.excavate(o, emb) for o in nsr.labels.objects.objects_from_labels(coarse)]
        from napari_samrefine.samrefiner.decode import decode_prompts

        single = decode_prompts(lite, emb, prompts, settings.switches)
        assert np.all(single.index == 0)
        # the same prompts through segment-anything's own decoder, multimask_output=False
        ref = decode_prompts(lite, emb, prompts, settings.switches, decoder="reference")
        torch.testing.assert_close(single.lowres, ref.lowres, atol=2e-4, rtol=1e-4)
        multi = decode_prompts(lite, emb, prompts, settings.switches, multimask=True)
        assert not torch.allclose(single.lowres, multi.lowres)
    finally:
        set_model_profile(lite, None)


def test_forcing_an_untrained_prompt_warns_and_is_used(lite):
    image, coarse = blobs()
    set_model_profile(lite, BOX_ONLY_MINMAX_PROFILE)
    try:
        with pytest.warns(UserWarning, match="not trained with points and mask prompts"):
            forced = nsr.refine(image, coarse, lite, iterations=1, use_points=True, use_mask=True,
                                keep="refined")
        plain = nsr.refine(image, coarse, lite, iterations=1, keep="refined")
    finally:
        set_model_profile(lite, None)
    assert forced.prompts[0].points is not None
    assert not np.array_equal(forced.labels, plain.labels)


def test_judge_with_a_tinyvit_model(lite):
    image, coarse = blobs()
    refined = nsr.refine(image, coarse, lite, iterations=1).labels
    support_image, support_labels = blobs(seed=5)
    for masking in ("fm", "im", "hm"):
        verdicts = nsr.judge_refinement(
            image, coarse, refined, support_image, support_labels, sam=lite, masking=masking, k=1
        )
        table = verdicts.table()
        assert len(table) == 4 and set(table["verdict"]) <= {"improved", "degraded", "uncertain", "could not judge"}


def test_adaption_with_a_tinyvit_model(lite):
    """The IoU head of a TinyViT model adapts like a ViT's: the LoRA tensors train, nothing else."""
    images, coarses = zip(*(blobs(seed=s) for s in range(4)), strict=True)
    weights = {k: v.clone() for k, v in lite.state_dict().items()}
    adaptor = nsr.adapt_iou_head(lite, list(images), list(coarses), embedding_cache=None)
    assert len(adaptor.metadata["loss_history"]) == 4  # 16 objects, 5 per step
    assert adaptor.up.abs().sum() > 0  # zero-initialised, so it learned
    assert all(torch.equal(v, lite.state_dict()[k]) for k, v in weights.items())
    result = nsr.refine(images[0], coarses[0], lite, iterations=1, iou_adaptor=adaptor)
    assert result.labels.shape == coarses[0].shape
