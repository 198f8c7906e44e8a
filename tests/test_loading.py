"""load_sam: checkpoint formats, architecture inference, safety, errors, devices."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

import numpy as np
import pooch
import pytest
import torch
from segment_anything import SamPredictor, build_sam_vit_b, build_sam_vit_h, build_sam_vit_l

from napari_samrefine.models.architecture import build_sam, infer_sam_config
from napari_samrefine.models.checkpoint import read_sam_state_dict
from napari_samrefine.models.device import available_devices, resolve_device
from napari_samrefine.models.download import CACHE_ENV
from napari_samrefine.models.info import model_info
from napari_samrefine.models.loading import CheckpointError, load_sam
from napari_samrefine.models.profile import SAM_PROFILE
from napari_samrefine.models.registry import register_model, unregister_model
from napari_samrefine.testing import tiny_sam


@pytest.fixture(scope="module")
def tiny():
    return tiny_sam(seed=3)


@pytest.fixture
def plain_file(tiny, tmp_path):
    """Meta's layout: a plain state dict, under a name that says nothing."""
    path = tmp_path / "my weights.bin"
    torch.save(tiny.state_dict(), path)
    return path


@pytest.fixture
def micro_sam_file(tiny, tmp_path):
    """micro-sam's layout: 'model_state' with 'sam.' keys, plus a non-tensor object."""
    path = tmp_path / "vit_b.pt"
    state = {"sam." + k: v for k, v in tiny.state_dict().items()}
    torch.save({"model_state": state, "config": argparse.Namespace(model_type="vit_t")}, path)
    return path


@pytest.fixture
def entries(tmp_path, monkeypatch):
    """Register test models whose only copy is a hand-copied file in the cache (offline)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv(CACHE_ENV, str(cache))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with socket.socket() as s:  # a URL nothing answers: every download attempt fails
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/model.pt"
    names = []

    def add(name, source: Path, arch="custom", copy=True):
        entry = register_model(name, url, _hash(source), arch, "test", overwrite=True)
        names.append(name)
        if copy:
            (cache / entry.filename).write_bytes(source.read_bytes())
        return entry

    yield add
    for name in names:
        unregister_model(name)


def _hash(path: Path) -> str:
    return pooch.file_hash(str(path), alg="xxh128")


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].to(sa[k].device)) for k in sa)


def test_local_plain_state_dict_loads_the_same_model(tiny, plain_file):
    sam = load_sam(plain_file, device="cpu", fast_encoder=False)  # stock encoder: bit for bit
    assert not sam.training
    assert _same_weights(sam, tiny)
    # the decoder's attention heads are invisible in the weights: same outputs prove the rule
    image = np.random.default_rng(0).integers(0, 255, (90, 130, 3), dtype=np.uint8)
    outputs = []
    for model in (tiny, sam):
        predictor = SamPredictor(model)
        predictor.set_image(image)
        outputs.append(predictor.predict(box=np.array([10, 5, 80, 60]), return_logits=True))
    for a, b in zip(*outputs, strict=True):
        np.testing.assert_array_equal(a, b)
    info = model_info(sam)
    assert (info.name, info.arch, info.checkpoint, info.xxh128) == (
        "my weights.bin", "custom", str(plain_file.resolve()), _hash(plain_file)
    )
    assert (info.profile, info.fast_encoder) == (SAM_PROFILE, False)
    assert model_info(load_sam(str(plain_file), device="cpu")).arch == "custom"


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        dict(image_size=128, patch_size=8, encoder_depth=3, window_size=4, prompt_dim=16),
        dict(encoder_dim=48, encoder_heads=3, window_size=16, prompt_dim=64),  # window = grid
    ],
)
def test_config_inference_round_trips_tiny_models(kwargs):
    sam = tiny_sam(**kwargs)
    config = infer_sam_config(sam.state_dict())
    assert config.image_size == sam.image_encoder.img_size
    assert config.encoder_depth == len(sam.image_encoder.blocks)
    assert config.encoder_heads == sam.image_encoder.blocks[0].attn.num_heads
    rebuilt = build_sam(config, sam.state_dict())
    assert _same_weights(rebuilt, sam)
    assert [b.window_size for b in rebuilt.image_encoder.blocks] == [
        b.window_size if b.window_size != config.image_size // config.patch_size else 0
        for b in sam.image_encoder.blocks
    ]


@pytest.mark.parametrize(
    ("build", "arch", "heads", "global_blocks"),
    [
        (build_sam_vit_b, "vit_b", 12, (2, 5, 8, 11)),
        (build_sam_vit_l, "vit_l", 16, (5, 11, 17, 23)),
        (build_sam_vit_h, "vit_h", 16, (7, 15, 23, 31)),
    ],
)
def test_config_inference_names_meta_architectures(build, arch, heads, global_blocks):
    with torch.device("meta"):  # shapes only, no memory
        state = build().state_dict()
    config = infer_sam_config(state)
    assert (config.arch, config.encoder_heads, config.global_attn_indexes) == (
        arch,
        heads,
        global_blocks,
    )
    assert (config.image_size, config.window_size, config.prompt_dim) == (1024, 14, 256)
    assert (config.decoder_heads, config.decoder_mlp_dim, config.mask_in_chans) == (8, 2048, 16)


def test_micro_sam_format_needs_opt_in_when_unregistered(tiny, micro_sam_file):
    with pytest.raises(CheckpointError, match="allow_unsafe_pickle=True") as info:
        load_sam(micro_sam_file, device="cpu")
    assert "argparse.Namespace" in str(info.value)
    sam = load_sam(micro_sam_file, device="cpu", allow_unsafe_pickle=True)
    assert _same_weights(sam, tiny)
    assert model_info(sam).name == "vit_b.pt"


def test_micro_sam_format_from_registry_is_trusted(tiny, micro_sam_file, entries):
    entries("test_lm", micro_sam_file)
    sam = load_sam("test_lm", device="cpu", progressbar=False)
    assert _same_weights(sam, tiny)
    info = model_info(sam)
    assert (info.name, info.xxh128) == ("test_lm", _hash(micro_sam_file))
    assert Path(info.checkpoint).parent == Path(os.environ[CACHE_ENV]).resolve()
    # the same file by path: its hash is registered, so no opt-in is needed either
    assert model_info(load_sam(micro_sam_file, device="cpu")).name == "test_lm"


def test_wrapped_state_dict_with_prefixes(tiny, tmp_path):
    path = tmp_path / "lightning.ckpt"
    state = {"module.sam." + k: v for k, v in tiny.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, path)
    assert _same_weights(load_sam(path, device="cpu"), tiny)


def test_missing_file(tmp_path):
    for missing in (tmp_path / "nope.pth", str(tmp_path / "nope.pth"), "nope.pth"):
        with pytest.raises(FileNotFoundError, match="nope.pth"):
            load_sam(missing, device="cpu")
    with pytest.raises(FileNotFoundError, match="folder"):
        load_sam(tmp_path, device="cpu")


def test_unknown_name():
    with pytest.raises(ValueError, match="vit_b_lm") as info:
        load_sam("vit_q", device="cpu")
    assert "local checkpoint" in str(info.value)


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_file_gives_a_clear_error(tiny, tmp_path, legacy):
    path = tmp_path / "cut.pth"
    torch.save(tiny.state_dict(), path, _use_new_zipfile_serialization=not legacy)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupted"):
        load_sam(path, device="cpu")
    with pytest.raises(CheckpointError, match="truncated, corrupted"):  # even with the opt-in
        load_sam(path, device="cpu", allow_unsafe_pickle=True)


def test_random_bytes_give_a_clear_error(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(CheckpointError, match="truncated, corrupted"):
        load_sam(path, device="cpu")


def test_a_state_dict_that_is_not_sam(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, path)
    with pytest.raises(CheckpointError, match="not a SAM checkpoint.*conv1.weight"):
        load_sam(path, device="cpu")
    path2 = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path2)
    with pytest.raises(CheckpointError, match="Tensor, not a SAM state dict"):
        load_sam(path2, device="cpu")


def test_sam_with_a_missing_tensor(tiny, tmp_path):
    path = tmp_path / "partial.pth"
    state = tiny.state_dict()
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing: mask_decoder\.iou_token\.weight"):
        load_sam(path, device="cpu")


def test_wrong_architecture_for_a_registry_name(plain_file, entries):
    entries("test_vit_b", plain_file, arch="vit_b")
    with pytest.raises(CheckpointError, match="holds a custom SAM.*'test_vit_b' is a vit_b"):
        load_sam("test_vit_b", device="cpu", progressbar=False)
    # the same check for a local file given for a registry name
    with pytest.raises(CheckpointError, match="'vit_b_lm' is a vit_b"):
        load_sam("vit_b_lm", checkpoint=plain_file, device="cpu")


def test_checkpoint_argument(tiny, plain_file, entries):
    entries("test_custom", plain_file, copy=False)  # not in the cache: the local file is used
    sam = load_sam("test_custom", checkpoint=plain_file, device="cpu")
    assert _same_weights(sam, tiny)
    assert model_info(sam).name == "test_custom"
    with pytest.raises(ValueError, match="registry name"):
        load_sam(plain_file, checkpoint=plain_file, device="cpu")
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_sam("test_custom", checkpoint=plain_file.parent / "absent.pth", device="cpu")


def test_read_sam_state_dict_trusted_flag(tiny, micro_sam_file):
    with pytest.raises(CheckpointError, match="hash matches no registered model"):
        read_sam_state_dict(micro_sam_file)
    state = read_sam_state_dict(micro_sam_file, trusted=True)
    assert state.keys() == tiny.state_dict().keys()


def test_devices():
    devices = available_devices()
    assert devices[-1] == "cpu"
    assert resolve_device("auto") == torch.device(devices[0])
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    absent = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ValueError, match="not available.*Available: .*cpu") as info:
        resolve_device(absent)
    assert absent in str(info.value)
    with pytest.raises(ValueError, match="not a device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            resolve_device("cuda")


def test_unavailable_device_fails_before_any_download(plain_file, entries):
    entries("test_offline", plain_file, copy=False)  # a download would fail
    with pytest.raises(ValueError, match="not available"):
        load_sam("test_offline", device=f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_load_onto_cuda(tiny, plain_file):
    sam = load_sam(plain_file, device="cuda")
    assert all(p.device.type == "cuda" for p in sam.parameters())
    assert sam.pixel_mean.device.type == "cuda"
    assert _same_weights(sam, tiny)
