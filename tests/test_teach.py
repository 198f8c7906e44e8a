"""Teaching SAM to refine (issue 22): data, losses, training, the taught file, its loading."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_samrefine import refine
from napari_samrefine._progress import Cancelled
from napari_samrefine.models.finetune_file import (
    apply_finetune,
    base_identity,
    read_finetune_file,
    write_finetune_file,
)
from napari_samrefine.models.loading import load_sam
from napari_samrefine.models.profile import (
    BOX_ONLY_MINMAX_PROFILE,
    model_profile,
    set_model_profile,
)
from napari_samrefine.teach.examples import teaching_examples, turn
from napari_samrefine.teach.finetune import TeachOptions, _hash_pair, finetune
from napari_samrefine.teach.losses import refine_loss
from napari_samrefine.teach.steps import decode_example
from napari_samrefine.teach.views import coarse_targets, teaching_views
from napari_samrefine.testing import tiny_sam

QUICK = TeachOptions(epochs=2, augment=(0, 5), kinds=("defects", "eroded"), batch_size=8)


@pytest.fixture(scope="module")
def pairs(dsb_pair):
    """Two 96 x 96 crops of a DSB2018 image with their labels (renumbered from 1)."""
    from skimage.segmentation import relabel_sequential

    image, labels = dsb_pair
    out = []
    for y, x in ((0, 0), (120, 100)):
        lab = relabel_sequential(labels[y:y + 96, x:x + 96].astype(np.int32))[0]
        out.append((image[y:y + 96, x:x + 96].copy(), lab))
    return out


def test_coarse_targets_follow_overlap():
    truth = np.zeros((10, 20), np.int32)
    truth[1:5, 1:5], truth[1:5, 6:10], truth[6:9, 12:18] = 1, 2, 3
    coarse = np.zeros_like(truth)
    coarse[1:5, 1:10] = 7  # objects 1 and 2 merged
    coarse[8:10, 12:14] = 9  # a sliver of object 3 (less than half of it)
    assert coarse_targets(coarse, truth) == {7: [1, 2], 9: [3]}


def test_views_are_the_windows_refine_uses(pairs):
    """With LiteMedSAM's object scale, views are the windows of ``scale="auto"``, and each
    object's target is its true mask inside the window."""
    sam = tiny_sam(seed=0)
    set_model_profile(sam, BOX_ONLY_MINMAX_PROFILE)
    image, labels = pairs[0]
    views = teaching_views([image], [labels], sam, kinds=("eroded",))
    sides = {v.rgb.shape[0] for v in views}
    assert sides <= {96} | {round(sam.image_encoder.img_size / 2 ** (k / 2)) for k in range(0, 3)}
    for v in views:
        assert v.rgb.dtype == np.uint8 and v.coarse.shape == v.rgb.shape[:2] == v.targets.shape[1:]
        assert set(np.unique(v.coarse)) - {0} == set(v.ids)
        for i, t in zip(v.ids, v.targets, strict=True):
            assert t[v.coarse == i].mean() > 0.5  # the eroded object lies in its truth


def test_examples_turn_prompts_with_the_window(pairs):
    """A turned view's box is the turned box; targets live in the low-res frame."""
    sam = tiny_sam(seed=0)
    profile = model_profile(sam)
    set_model_profile(sam, dataclasses.replace(
        profile, defaults=dataclasses.replace(profile.defaults, cebox=None)))  # tight boxes
    image, labels = pairs[0]
    views = teaching_views([image], [labels], sam, kinds=("eroded",))
    plain, turned = teaching_examples(views[:1], sam, prompts=("box",), augment=(0, 1))
    lowres = plain.embedding.frame.lowres_size
    assert plain.targets.shape[1:] == (lowres, lowres) and plain.prompts["masks"] is None
    assert len(plain) == len(turned) == len(views[0].ids)
    w = 96
    x0, y0, x1, y1 = plain.prompts["boxes"][0].tolist()
    # one quarter turn (numpy's rot90): column x, row y -> column y, row W - 1 - x
    assert turned.prompts["boxes"][0].tolist() == [y0, w - 1 - x1, y1, w - 1 - x0]
    assert np.array_equal(turn(np.arange(6).reshape(2, 3), 1), np.rot90(np.arange(6).reshape(2, 3)))


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(pairs, sam):
    image, labels = pairs[0]
    views = teaching_views([image], [labels], sam, kinds=("defects",))
    ex = teaching_examples(views[:1], sam, prompts=("box", "mask"), augment=(0,))[0]
    student = tiny_sam(seed=0)
    params = [p for n, p in student.named_parameters() if not n.startswith("image_encoder.")]
    opt = torch.optim.AdamW(params, lr=1e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        low, iou = decode_example(student, ex)
        loss = refine_loss(low, iou, ex.targets)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0]


def test_finetune_file_round_trips_and_reproduces_masks(pairs, sam, tmp_path):
    images = [p[0] for p in pairs]
    labels = [p[1] for p in pairs]
    before = [(i.copy(), lab.copy()) for i, lab in zip(images, labels, strict=True)]
    state = {k: v.clone() for k, v in sam.state_dict().items()}
    taught = finetune(images, labels, sam, out=tmp_path / "taught.pt", options=QUICK)
    # nothing the caller gave is modified: images, labels, the base model
    for (i0, l0), i1, l1 in zip(before, images, labels, strict=True):
        assert np.array_equal(i0, i1) and np.array_equal(l0, l1)
    assert all(torch.equal(state[k], v) for k, v in sam.state_dict().items())
    assert taught.path.is_file() and [h["epoch"] for h in taught.history][:2] == [0, 1]
    meta = read_finetune_file(taught.path).metadata
    assert meta["base_identity"] == base_identity(sam) and meta["prompts"] == ["box", "mask"]
    assert len(meta["images"]) == 1 and len(meta["options"]["validation_images"]) == 1
    # the taught model shares the base's encoder and is another decoder
    assert taught.model.image_encoder is sam.image_encoder
    assert model_profile(taught.model).prompts == ("box", "mask")
    again = apply_finetune(sam, taught.path)
    coarse = labels[0]
    a = refine(images[0], coarse, taught.model, scale=None)
    b = refine(images[0], coarse, again, scale=None)
    assert np.array_equal(a.labels, b.labels)
    for sa, sb in zip(a.objects, b.objects, strict=True):
        assert sa.predicted_iou == sb.predicted_iou


def test_load_sam_applies_a_taught_file_and_refuses_another_base(pairs, checkpoint, tmp_path):
    base = load_sam(checkpoint, device="cpu")
    image, labels = pairs[0]
    taught = finetune([image], [labels], base, out=tmp_path / "t.pt",
                      options=dataclasses.replace(QUICK, epochs=1))
    loaded = load_sam(checkpoint, device="cpu", finetune=taught.path)
    assert loaded is load_sam(checkpoint, device="cpu", finetune=taught.path)  # cached
    assert loaded is not base and loaded.image_encoder is base.image_encoder
    for k, v in read_finetune_file(taught.path).weights.items():
        assert torch.equal(loaded.state_dict()[k], v)
    # a taught model's identity is its base's, whether it came from a file or from memory
    in_memory = finetune([image], [labels], base, options=dataclasses.replace(QUICK, epochs=1))
    assert base_identity(in_memory.model) == base_identity(loaded) == base_identity(base)
    other = tiny_sam(seed=1)
    with pytest.raises(ValueError, match="taught from .*my model.pth.*load_sam"):
        apply_finetune(other, taught.path)


def test_cancel_leaves_no_file(pairs, sam, tmp_path):
    calls = []

    def progress(done, total, message):
        calls.append(message)
        if "epoch 1" in message:
            raise Cancelled

    image, labels = pairs[0]
    with pytest.raises(Cancelled):
        finetune([image], [labels], sam, out=tmp_path / "t.pt", options=QUICK, progress=progress)
    assert list(tmp_path.iterdir()) == [] and any("encoding" in m for m in calls)


def test_tampered_or_foreign_files_are_refused(pairs, sam, tmp_path):
    image, labels = pairs[0]
    taught = finetune([image], [labels], sam, options=dataclasses.replace(QUICK, epochs=1))
    weights = {k: v for k, v in sam.state_dict().items() if k.startswith("mask_decoder.")}
    path = write_finetune_file(weights, taught.metadata, tmp_path / "ok.pt")
    assert read_finetune_file(path).weights.keys() == weights.keys()
    with pytest.raises(ValueError, match="only prompt-encoder, mask-decoder and adaptor"):
        write_finetune_file({"image_encoder.x": torch.zeros(1)}, taught.metadata, tmp_path / "x.pt")
    torch.save({"format": "napari-samrefine/finetune", "format_version": 1,
                "weights": {"image_encoder.patch_embed.proj.weight": torch.zeros(1)},
                "metadata": "{}"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a valid napari-samrefine taught-model file"):
        read_finetune_file(tmp_path / "bad.pt")
    torch.save(sam.state_dict(), tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="unexpected content"):
        read_finetune_file(tmp_path / "checkpoint.pt")
    with pytest.raises(FileNotFoundError):
        read_finetune_file(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    ("images", "labels", "text"),
    [([], [], "pairs of images and labels"),
     ([np.zeros((8, 8))], [np.zeros((8, 8), np.int32)], "holds no object"),
     ([np.zeros((8, 8))], [np.ones((9, 8), np.int32)], "labels of its own height and width"),
     ([np.zeros((8, 8))], [np.ones((8, 8))], "astype")],
)
def test_bad_input_is_refused_with_the_fix(sam, images, labels, text):
    with pytest.raises(ValueError, match=text):
        finetune(images, labels, sam)


def test_each_window_is_encoded_once_per_turn_and_refine_reuses_them(pairs, sam, encoder_passes):
    """Teaching encodes each distinct window once per turn (the coarse-mask kinds share
    it), a second lesson on the same cache encodes nothing, and neither does refining
    a training image with the taught model (same encoder, same windows)."""
    from napari_samrefine.engine.embedding import EmbeddingCache

    images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    opts = dataclasses.replace(QUICK, epochs=1, kinds=("defects", "eroded", "dilated"))
    cache = EmbeddingCache(max_items=1000)
    taught = finetune(images, labels, sam, options=opts, embedding_cache=cache)
    train, val = taught.metadata["images"], taught.metadata["options"]["validation_images"]
    assert len(train) == len(val) == 1
    t = next(i for i in range(2) if _hash_pair(images[i], labels[i]) == train[0])

    def windows(i: int, kinds, seeds) -> int:
        views = teaching_views([images[i]], [labels[i]], sam, kinds=kinds, seeds=seeds)
        assert len(views) > len({v.rgb.tobytes() for v in views})  # kinds share windows
        return len({v.rgb.tobytes() for v in views})

    expected = (windows(t, opts.kinds, opts.seeds) * len(opts.augment)
                + windows(1 - t, opts.kinds, (0,)))
    assert encoder_passes.n == expected > 2
    finetune(images, labels, sam, options=opts, embedding_cache=cache)
    refine(images[t], labels[t], taught.model, embedding_cache=cache)
    assert encoder_passes.n == expected
