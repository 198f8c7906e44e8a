"""The SegGPT backend on a tiny random SegGPT saved to and reloaded from disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from _data import DSB2018

transformers = pytest.importorskip(
    "transformers", reason="the SegGPT backend needs the optional 'transformers' package (extra 'seggpt')"
)

from napari_samrefine import judge_refinement  # noqa: E402
from napari_samrefine.judge import FewShotSegmenter, SegGptFSS  # noqa: E402
from napari_samrefine.judge.fss_seggpt import load_seggpt  # noqa: E402


@pytest.fixture(scope="module")
def tiny_seggpt(tmp_path_factory) -> Path:
    """A ~20k-parameter random SegGPT (ENVIRONMENT.md) and a 16 x 16 processor in a folder."""
    config = transformers.SegGptConfig(
        image_size=(32, 16), patch_size=2, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, mlp_dim=64, merge_index=0, intermediate_hidden_state_indices=[1],
        pretrain_image_size=8, decoder_hidden_size=8, drop_path_rate=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("seggpt")
    transformers.SegGptForImageSegmentation(config).save_pretrained(folder)
    transformers.SegGptImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def crops():
    import tifffile
    from PIL import Image

    image = np.asarray(Image.open(DSB2018 / "images" / "35ca5f142a7d.png"))[:128, :128]
    labels = tifffile.imread(DSB2018 / "labels" / "35ca5f142a7d.tif")[:128, :128].astype(np.uint16)
    return (image if image.ndim == 2 else image[..., 0]), labels


def unnormalised(tensor, processor) -> np.ndarray:
    std = torch.tensor(processor.image_std).view(3, 1, 1)
    mean = torch.tensor(processor.image_mean).view(3, 1, 1)
    return (tensor[0] * std + mean).numpy()


def test_inputs_support_as_images_query_as_prompt_mask_with_one_label(tiny_seggpt):
    fss = SegGptFSS(str(tiny_seggpt))
    assert isinstance(fss, FewShotSegmenter)
    rng = np.random.default_rng(0)
    query = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    support = rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 4:20] = True
    inputs = fss.prepare(query, mask, support)
    ref = fss.processor(images=support, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(inputs["pixel_values"], ref)
    ref = fss.processor(images=query, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(inputs["prompt_pixel_values"], ref)
    # the mask arrives white on black (num_labels=1), at the processor's 16 x 16
    prompt = unnormalised(inputs["prompt_masks"], fss.processor)
    expected = np.zeros((16, 16))
    expected[4:12, 2:10] = 1.0
    np.testing.assert_allclose(prompt, np.broadcast_to(expected, (3, 16, 16)), atol=1e-5)
    # without num_labels the same 0/1 mask would be an almost black prompt
    bare = fss.processor(
        images=support, prompt_images=query, prompt_masks=mask.astype(np.int64), return_tensors="pt"
    )
    assert unnormalised(bare["prompt_masks"], fss.processor).max() < 0.01


def test_predict_is_a_probability_over_the_support(tiny_seggpt):
    fss = SegGptFSS(tiny_seggpt)  # a Path works too
    rng = np.random.default_rng(1)
    query = rng.integers(0, 255, (30, 20, 3), dtype=np.uint8)
    support = rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)
    mask = np.zeros((30, 20), bool)
    mask[5:25, 5:15] = True
    prob = fss.predict(query, mask, support)
    assert prob.shape == (50, 60) and prob.dtype == np.float32
    assert 0 <= prob.min() and prob.max() <= 1
    # one prompt per call, no ensembling: a prediction does not depend on other calls
    other = fss.predict(query, ~mask, support)
    np.testing.assert_array_equal(fss.predict(query, mask, support), prob)
    assert not np.array_equal(other, prob)  # the mask matters


def test_judge_with_seggpt(tiny_seggpt, crops):
    image, labels = crops
    coarse = labels.copy()
    coarse[(labels == 1) & ~ndi.binary_erosion(labels == 1, iterations=2)] = 0
    result = judge_refinement(
        image, coarse, labels, image, labels, backend=SegGptFSS(tiny_seggpt), k=2, label_ids=[1, 11]
    )
    table = result.table()
    assert list(table["label_id"]) == [1, 11] and (table["k"] == 2).all()
    assert table.set_index("label_id").loc[11, "reason"] == "similar-masks"  # unchanged
    np.testing.assert_allclose(table["delta"], table["e2"] - table["e1"])
    # by name, from a local folder
    by_name = judge_refinement(
        image, coarse, labels, image, labels, backend="seggpt", seggpt_model=str(tiny_seggpt),
        k=2, label_ids=[1, 11],
    )  # fmt: skip
    assert by_name.table().equals(table)


def test_missing_models_get_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(OSError, match="not in the local Hugging Face cache.*save_pretrained"):
        load_seggpt("napari-samrefine-tests/no-such-seggpt", local_files_only=True)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="downloads are off"):
        load_seggpt("napari-samrefine-tests/no-such-seggpt")
    with pytest.raises(OSError, match="not a SegGPT model folder"):
        load_seggpt(tmp_path)


def test_an_uncached_hub_id_fails_at_once_in_one_sentence(monkeypatch):
    import time

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    start = time.monotonic()
    with pytest.raises(OSError) as info:  # no network here: one short request, no retries
        SegGptFSS("napari-samrefine-tests/not-downloaded-seggpt")
    assert time.monotonic() - start < 15
    text = str(info.value)
    assert text.startswith("SegGPT model 'napari-samrefine-tests/not-downloaded-seggpt' is not in ")
    assert "save_pretrained" in text and ("network" in text or "check the path or id" in text)
    assert "\n" not in text and text.count(". ") == 0 and text.endswith(".")
    with pytest.raises(OSError, match="neither a folder here nor a valid hub id"):
        load_seggpt("no/such/folder/here")
