"""SAMRefiner++ IoU adaption (SPEC section 4) on real dsb2018 crops with the tiny SAM."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from _data import DSB2018
from napari_samrefine import (
    AdaptorMismatchError,
    Cancelled,
    IoUAdaptor,
    adapt_iou_head,
    evaluate_selection,
    load_iou_adaptor,
)
from napari_samrefine.adaption.candidates import collect_candidates, plan_planes
from napari_samrefine.adaption.lora import LoRALinear
from napari_samrefine.adaption.selection import top1_correct
from napari_samrefine.adaption.training import ranking_loss
from napari_samrefine.engine.embedding import embed_image
from napari_samrefine.engine.preprocess import to_sam_rgb
from napari_samrefine.models.source import ModelSource, set_model_source
from napari_samrefine.testing import tiny_sam

TRAIN_IDS = ["00071198d059", "1db1cddf28e3", "35ca5f142a7d", "b560dba92fbf"]
HELD_OUT_IDS = ["98c5ead89cd0", "0e21d7b3eea8"]  # fluorescence, stained brightfield (RGB)


def _load(ids, crop=128):
    import tifffile
    from PIL import Image

    images, labels = [], []
    for i in ids:
        img = np.asarray(Image.open(DSB2018 / "images" / f"{i}.png"))[:crop, :crop]
        lab = tifffile.imread(DSB2018 / "labels" / f"{i}.tif")[:crop, :crop]
        images.append(img)
        labels.append(lab)
    return images, labels


@pytest.fixture(scope="module")
def train_set():
    return _load(TRAIN_IDS)


@pytest.fixture(scope="module")
def trained(train_set):
    """An adaptor trained for several passes, so that its up-projection is far from 0."""
    sam = tiny_sam()
    return adapt_iou_head(sam, *train_set, epochs=4)


def _decoder_inputs(sam, image, labels, seed=0):
    """Random prompts of every kind (points, boxes, mask inputs) for one image."""
    emb = embed_image(sam, to_sam_rgb(image))
    rng = np.random.default_rng(seed)
    s = sam.image_encoder.img_size
    n = 6
    xy = rng.uniform(0, s * 0.5, (n, 2, 2))
    boxes = np.sort(rng.uniform(0, s * 0.5, (n, 2, 2)), axis=1).reshape(n, 4)
    low = sam.prompt_encoder.mask_input_size[0]
    masks = rng.normal(0, 5, (n, 1, low, low))
    labels_ = rng.integers(0, 2, (n, 2))
    points = (torch.as_tensor(xy, dtype=torch.float32), torch.as_tensor(labels_))
    sparse, dense = sam.prompt_encoder(
        points=points,
        boxes=torch.as_tensor(boxes, dtype=torch.float32),
        masks=torch.as_tensor(masks, dtype=torch.float32),
    )
    return emb, sparse, dense


def _decode(sam, emb, sparse, dense):
    with torch.no_grad():
        return sam.mask_decoder(
            image_embeddings=emb.features,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )


# ----------------------------------------------------------------------------- loss and LoRA


def test_ranking_loss_by_hand():
    scores = torch.tensor([[0.5, 0.4, 0.6], [0.1, 0.2, 0.3], [0.3, 0.3, 0.0]])
    targets = torch.tensor([[0.9, 0.1, 0.2], [0.5, 0.5, 0.1], [0.2, 0.2, 0.2]])
    loss = ranking_loss(scores, targets, margin=0.02)
    # row 0: positive 0; negatives 1 (hinge 0.02 - 0.1 -> 0) and 2 (0.02 + 0.1 = 0.12)
    # row 1: 0 and 1 tie for best, positive 0; only 2 is a negative: 0.02 - (0.1 - 0.3)
    # row 2: all equal: no negative, no loss
    np.testing.assert_allclose(loss.numpy(), [0.12, 0.22, 0.0], atol=1e-6)


def test_lora_starts_as_identity_and_wraps_only_the_last_iou_layer():
    sam = tiny_sam()
    adaptor = IoUAdaptor.untrained(sam)
    assert adaptor.rank == 4
    assert torch.count_nonzero(adaptor.up) == 0 and torch.count_nonzero(adaptor.down) > 0
    last = sam.mask_decoder.iou_prediction_head.layers[-1]
    assert adaptor.down.shape == (4, last.in_features)
    assert adaptor.up.shape == (last.out_features, 4)
    x = torch.randn(7, last.in_features)
    with adaptor.applied(sam) as layer:
        assert sam.mask_decoder.iou_prediction_head.layers[-1] is layer
        assert isinstance(layer, LoRALinear) and layer.base is last
        assert torch.equal(layer(x), last(x))
    assert sam.mask_decoder.iou_prediction_head.layers[-1] is last


# ----------------------------------------------------------------------------- training


def test_training_changes_only_the_lora_tensors(train_set):
    sam = tiny_sam()
    before = {k: v.clone() for k, v in sam.state_dict().items()}
    modules = list(sam.modules())
    flags = [p.requires_grad for p in sam.parameters()]
    initial = IoUAdaptor.untrained(sam)
    adaptor = adapt_iou_head(sam, *train_set)
    after = sam.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k  # bit-identical
    assert list(sam.modules()) == modules
    assert [p.requires_grad for p in sam.parameters()] == flags
    assert all(p.grad is None for p in sam.parameters())
    assert not sam.mask_decoder.iou_prediction_head.layers[-1]._forward_hooks
    assert not sam.training
    # the LoRA did train
    assert torch.count_nonzero(adaptor.up) > 0
    assert not torch.equal(adaptor.down, initial.down)
    meta = adaptor.metadata
    n = sum(len(np.unique(lab)) - 1 for lab in train_set[1])
    assert meta["n_objects"] == n and meta["n_images"] == len(TRAIN_IDS)
    assert meta["n_steps"] == int(np.ceil(n / 5)) and len(meta["loss_history"]) == meta["n_steps"]


def test_training_is_deterministic(train_set):
    a = adapt_iou_head(tiny_sam(), *train_set)
    b = adapt_iou_head(tiny_sam(), *train_set)
    c = adapt_iou_head(tiny_sam(), *train_set, seed=1)
    assert torch.equal(a.up, b.up) and torch.equal(a.down, b.down)
    assert not torch.equal(a.up, c.up)


def test_ranking_loss_decreases_on_the_training_set(train_set, trained):
    sam = tiny_sam()
    # recomputed independently of the training loop, from a fresh decode
    report = evaluate_selection(sam, *train_set, iou_adaptor=trained, prompts="box")
    targets = torch.as_tensor(report.coarse_iou)
    before = ranking_loss(torch.as_tensor(report.scores_before), targets).mean().item()
    after = ranking_loss(torch.as_tensor(report.scores_after), targets).mean().item()
    assert before > 0
    assert after < 0.8 * before
    np.testing.assert_allclose(before, trained.metadata["loss_before"], rtol=1e-5)
    np.testing.assert_allclose(after, trained.metadata["loss_after"], rtol=1e-4)
    history = trained.metadata["loss_history"]
    window = len(history) // 4
    assert np.mean(history[-window:]) < np.mean(history[:window])


def test_training_steps_are_sgd_with_momentum_on_the_ranking_loss(train_set):
    """Two optimiser steps of the default training, replayed by hand from the loss's gradient.

    One step per epoch (all objects accumulated): the LoRA moves against the
    gradient of the mean ranking loss with SPEC's learning rate 0.01, weight
    decay 5e-4 and momentum 0.9; the loss falls; the learning rate drops tenfold
    after a milestone.
    """
    from napari_samrefine.adaption.lora import lora_delta

    image, labels = train_set[0][2], train_set[1][2]
    cands = collect_candidates(tiny_sam(), plan_planes(image, labels), embedding_cache=None)
    n = len(cands.scores)
    targets = torch.as_tensor(cands.coarse_iou, dtype=torch.float32)

    def loss_and_gradient(down, up):
        down, up = down.clone().requires_grad_(True), up.clone().requires_grad_(True)
        scores = torch.as_tensor(cands.scores) + lora_delta(cands.hidden, down, up)[:, 1:]
        loss = ranking_loss(scores, targets).mean()
        loss.backward()
        return loss.item(), [down.grad, up.grad]

    lr, momentum, weight_decay = 0.01, 0.9, 5e-4
    start = IoUAdaptor.untrained(tiny_sam())
    p0 = [start.down, start.up]
    loss0, g0 = loss_and_gradient(*p0)
    buf1 = [g + weight_decay * p for g, p in zip(g0, p0, strict=True)]
    p1 = [p - lr * b for p, b in zip(p0, buf1, strict=True)]
    loss1, g1 = loss_and_gradient(*p1)
    assert loss1 < loss0  # a step along the gradient lowers the loss
    buf2 = [momentum * b + g + weight_decay * p for b, g, p in zip(buf1, g1, p1, strict=True)]
    for milestones, lr2 in (((60, 100), lr), ((1,), lr * 0.1)):
        p2 = [p - lr2 * b for p, b in zip(p1, buf2, strict=True)]
        options = {} if milestones == (60, 100) else dict(milestones=milestones)
        adaptor = adapt_iou_head(tiny_sam(), image, labels, accumulate=n, epochs=2,
                                 embedding_cache=None, **options)
        assert adaptor.metadata["n_steps"] == 2
        torch.testing.assert_close(adaptor.down, p2[0], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(adaptor.up, p2[1], rtol=1e-4, atol=1e-7)
        assert adaptor.metadata["loss_before"] == pytest.approx(loss0, rel=1e-5)
        assert adaptor.metadata["loss_history"][1] == pytest.approx(loss1, rel=1e-4)


def test_training_gradient_equals_backprop_through_the_decoder(train_set):
    """Training on the recorded IoU-head inputs is exact: compare with full backprop."""
    image, labels = train_set[0][2], train_set[1][2]
    sam = tiny_sam()
    adaptor = IoUAdaptor.untrained(sam)
    adaptor.up = torch.randn_like(adaptor.up) * 0.1  # so that down gets a gradient too
    planes = plan_planes(image, labels)
    cands = collect_candidates(sam, planes, embedding_cache=None)
    targets = torch.as_tensor(cands.coarse_iou, dtype=torch.float32)

    down = adaptor.down.clone().requires_grad_(True)
    up = adaptor.up.clone().requires_grad_(True)
    from napari_samrefine.adaption.lora import lora_delta

    scores = torch.as_tensor(cands.scores) + lora_delta(cands.hidden, down, up)[:, 1:]
    loss = ranking_loss(scores, targets).sum()
    assert loss > 0
    loss.backward()

    # the same loss through the whole decoder, with the LoRA plugged in
    emb = embed_image(sam, to_sam_rgb(image))
    sy, sx = emb.frame.scale
    boxes = np.stack([o.tight_box for o in planes[0].objects]) * np.array([sx, sy, sx, sy])
    with adaptor.applied(sam) as layer:
        sparse, dense = sam.prompt_encoder(
            points=None, boxes=torch.as_tensor(boxes, dtype=torch.float32), masks=None
        )
        _, iou = sam.mask_decoder(
            image_embeddings=emb.features,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        ranking_loss(iou, targets).sum().backward()
        full_down, full_up = layer.down.grad, layer.up.grad
    assert torch.count_nonzero(full_down) > 0
    torch.testing.assert_close(down.grad, full_down, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(up.grad, full_up, rtol=1e-4, atol=1e-6)


def test_progress_and_cancel(train_set):
    sam = tiny_sam()
    calls = []
    adapt_iou_head(sam, *train_set, progress=lambda d, t, m: calls.append((d, t, m)))
    done = [d for d, _, _ in calls]
    assert done == sorted(done) and done[0] == 0 and done[-1] == calls[-1][1]
    assert any("loss" in m for _, _, m in calls)

    before = {k: v.clone() for k, v in sam.state_dict().items()}

    def cancel_in_training(done, total, message):
        if "step" in message:
            raise Cancelled

    with pytest.raises(Cancelled):
        adapt_iou_head(sam, *train_set, progress=cancel_in_training)
    for k, v in sam.state_dict().items():
        assert torch.equal(v, before[k])
    last = sam.mask_decoder.iou_prediction_head.layers[-1]
    assert isinstance(last, torch.nn.Linear) and not last._forward_hooks


def test_bad_input_is_refused_with_a_clear_error(train_set):
    sam = tiny_sam()
    images, labels = train_set
    with pytest.raises(ValueError, match="same length"):
        adapt_iou_head(sam, images[:2], labels[:3])
    with pytest.raises(ValueError, match="does not match labels shape"):
        adapt_iou_head(sam, images[0][:64], labels[0])
    with pytest.raises(ValueError, match="integer"):
        adapt_iou_head(sam, images[0], labels[0].astype(float))
    with pytest.raises(ValueError, match="empty"):
        adapt_iou_head(sam, images[0], np.zeros_like(labels[0]))


def test_stacks_are_used_plane_by_plane(train_set):
    images, labels = train_set
    stack_img, stack_lab = np.stack(images[:2]), np.stack(labels[:2])
    a = adapt_iou_head(tiny_sam(), stack_img, stack_lab)
    b = adapt_iou_head(tiny_sam(), images[:2], labels[:2])
    assert a.metadata["n_objects"] == b.metadata["n_objects"]
    assert torch.equal(a.up, b.up)


# ----------------------------------------------------------------------------- the adapted model


def test_adaptor_never_changes_the_masks(train_set, trained):
    sam = tiny_sam()
    emb, sparse, dense = _decoder_inputs(sam, train_set[0][1], train_set[1][1])
    masks0, iou0 = _decode(sam, emb, sparse, dense)
    with trained.applied(sam):
        masks1, iou1 = _decode(sam, emb, sparse, dense)
    assert torch.equal(masks0, masks1)
    assert not torch.allclose(iou0, iou1)  # only the scores change
    masks2, iou2 = _decode(sam, emb, sparse, dense)
    assert torch.equal(iou0, iou2) and torch.equal(masks0, masks2)


def test_applied_restores_the_model_after_an_error(trained):
    sam = tiny_sam()
    head = sam.mask_decoder.iou_prediction_head
    original = head.layers[-1]
    keys = list(sam.state_dict())
    with pytest.raises(KeyError):
        with trained.applied(sam):
            raise KeyError("boom")
    assert head.layers[-1] is original
    assert list(sam.state_dict()) == keys
    with trained.applied(sam):
        with pytest.raises(RuntimeError, match="adaptor is applied to this model"):
            with trained.applied(sam):
                pass
    assert head.layers[-1] is original


def test_a_wrong_base_model_is_refused(trained, train_set):
    with pytest.raises(AdaptorMismatchError, match="trained for"):
        with trained.applied(tiny_sam(seed=1)):
            pass
    with pytest.raises(AdaptorMismatchError, match="IoU head of 32 -> 4"):
        with trained.applied(tiny_sam(prompt_dim=16)):
            pass
    with pytest.raises(AdaptorMismatchError):
        evaluate_selection(tiny_sam(seed=1), *train_set, iou_adaptor=trained, prompts="box")


def test_checkpoint_hash_identifies_loaded_models(train_set):
    sam = tiny_sam()
    set_model_source(sam, ModelSource(name="vit_b_lm", arch="vit_b", xxh128="abc"))
    adaptor = adapt_iou_head(sam, train_set[0][0], train_set[1][0])
    assert adaptor.metadata["base_model"] == "vit_b_lm"
    assert adaptor.metadata["checkpoint_hash"] == "abc"
    other = tiny_sam()
    set_model_source(other, ModelSource(name="vit_b", arch="vit_b", xxh128="def"))
    with pytest.raises(AdaptorMismatchError, match="'vit_b_lm'.*'vit_b'"):
        adaptor.check_model(other)
    same = tiny_sam(seed=5)  # the hash decides when both sides know it
    set_model_source(same, ModelSource(name="vit_b_lm", arch="custom", xxh128="abc"))
    adaptor.check_model(same)


# ----------------------------------------------------------------------------- files


def test_save_load_round_trips_the_selection(tmp_path, train_set, trained):
    path = trained.save(tmp_path / "adaptor.pt")
    assert path.stat().st_size < 20_000
    loaded = load_iou_adaptor(path)
    assert torch.equal(loaded.down, trained.down) and torch.equal(loaded.up, trained.up)
    for key, value in trained.metadata.items():
        if isinstance(value, float) and np.isnan(value):
            assert np.isnan(loaded.metadata[key])
        else:
            assert loaded.metadata[key] == value, key
    held_out = _load(HELD_OUT_IDS)
    sam = tiny_sam()
    a = evaluate_selection(sam, *held_out, iou_adaptor=trained, prompts="box")
    b = evaluate_selection(sam, *held_out, iou_adaptor=loaded, prompts="box")
    assert np.array_equal(a.scores_after, b.scores_after)
    assert not np.array_equal(a.scores_after, a.scores_before)
    # the decoder with the loaded adaptor plugged in gives the same scores
    emb, sparse, dense = _decoder_inputs(sam, held_out[0][0], held_out[1][0])
    with trained.applied(sam):
        _, s1 = _decode(sam, emb, sparse, dense)
    with loaded.applied(sam):
        _, s2 = _decode(sam, emb, sparse, dense)
    assert torch.equal(s1, s2)


def _payload(adaptor):
    return {
        "format": "napari-samrefine/iou-adaptor",
        "format_version": 1,
        "lora_down": adaptor.down.clone(),
        "lora_up": adaptor.up.clone(),
        "metadata": dict(adaptor.metadata),
    }


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_tampered_files_are_refused(tmp_path, trained):
    good = _payload(trained)
    torch.save(good, tmp_path / "good.pt")
    load_iou_adaptor(tmp_path / "good.pt")

    cases = {
        "extra_key": {**good, "extra": torch.zeros(3)},
        "wrong_shape": {**good, "lora_up": torch.zeros(4, 5)},
        "shape_vs_meta": {**good, "metadata": {**good["metadata"], "rank": 3}},
        "extra_meta": {**good, "metadata": {**good["metadata"], "note": "hi"}},
        "meta_type": {**good, "metadata": {**good["metadata"], "n_steps": "many"}},
        "nan": {**good, "lora_down": torch.full_like(good["lora_down"], float("nan"))},
        "dtype": {**good, "lora_up": good["lora_up"].double()},
        "format": {**good, "format": "something-else"},
        "not_a_dict": [good["lora_down"], good["lora_up"]],
    }
    for name, payload in cases.items():
        torch.save(payload, tmp_path / f"{name}.pt")
        with pytest.raises(ValueError, match="not a valid napari-samrefine IoU adaptor"):
            load_iou_adaptor(tmp_path / f"{name}.pt")

    # a pickled object that would run code when unpickled is never executed
    exploit = _Exploit()
    exploit.target = str(tmp_path / "pwned")
    torch.save({**good, "metadata": {**good["metadata"], "created": exploit}}, tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(exploit, f)
    for name in ("evil.pt", "evil.pkl"):
        with pytest.raises(ValueError, match="cannot be read safely"):
            load_iou_adaptor(tmp_path / name)
    assert not (tmp_path / "pwned").exists()

    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(ValueError):
        load_iou_adaptor(tmp_path / "noise.pt")
    with pytest.raises(FileNotFoundError):
        load_iou_adaptor(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- evaluation


def test_top1_correct_counts_ties_as_right():
    scores = np.array([[0.9, 0.1, 0.2], [0.1, 0.9, 0.2], [0.5, 0.5, 0.1]])
    targets = np.array([[0.8, 0.1, 0.1], [0.8, 0.1, 0.1], [0.3, 0.3, 0.9]])
    assert top1_correct(scores, targets).tolist() == [True, False, False]
    assert top1_correct(np.array([[0.1, 0.9, 0.0]]), np.array([[0.5, 0.5, 0.1]])).tolist() == [True]


def test_candidate_ious_equal_the_full_frame_computation(train_set):
    """The box-bounded IoU of each candidate equals SAM's full-frame postprocess_masks."""
    image, labels = train_set[0][2], train_set[1][2]
    gt = labels.copy()
    coarse = labels.copy()
    coarse[::7] = 0  # a damaged coarse mask; the ground truth stays intact
    sam = tiny_sam()
    report = evaluate_selection(sam, image, coarse, gt, prompts="box", embedding_cache=None)
    emb = embed_image(sam, to_sam_rgb(image))
    planes = plan_planes(image, coarse)
    sy, sx = emb.frame.scale
    boxes = np.stack([o.tight_box for o in planes[0].objects]) * np.array([sx, sy, sx, sy])
    sparse, dense = sam.prompt_encoder(
        points=None, boxes=torch.as_tensor(boxes, dtype=torch.float32), masks=None
    )
    low, scores = _decode(sam, emb, sparse, dense)
    full = sam.postprocess_masks(low, emb.frame.input_size, labels.shape) > 0
    # candidates are decoded by the lean decoder: segment-anything's to float rounding
    np.testing.assert_allclose(report.scores_before, scores.numpy(), rtol=0, atol=1e-5)
    checked = 0
    for i, obj in enumerate(planes[0].objects):
        c = coarse == obj.label_id
        g = gt == obj.label_id
        for k in range(3):
            m = full[i, k].numpy()
            expect_c = (m & c).sum() / (m | c).sum()
            expect_g = (m & g).sum() / (m | g).sum()
            # interpolation rounding may flip a pixel or two at the threshold
            assert abs(report.coarse_iou[i, k] - expect_c) < 0.02
            assert abs(report.ground_truth_iou[i, k] - expect_g) < 0.02
            checked += 1
    assert checked >= 9
    assert not np.array_equal(report.coarse_iou, report.ground_truth_iou)
    s = report.summary()
    assert s["objects"] == len(planes[0].objects)
    assert 0 <= s["top1_coarse_before"] <= 1 and np.isnan(s["top1_coarse_after"])
    assert len(report.table()) == s["objects"]


def test_evaluation_with_refine_prompts_scores_refines_candidates(trained):
    """With refine's prompts, the scores are the decoder's for SAMRefiner's first-iteration prompts."""
    from napari_samrefine.labels.objects import objects_from_labels
    from napari_samrefine.samrefiner.decode import decode_prompts
    from napari_samrefine.samrefiner.prompts import excavate_object

    held_out = _load(HELD_OUT_IDS)
    sam = tiny_sam()
    report = evaluate_selection(sam, *held_out, ground_truth=held_out[1], iou_adaptor=trained)
    s = report.summary()
    assert s["prompts"] == "refine" and s["objects"] > 10
    assert "with the adaptor" in str(report)
    image, labels = held_out[0][0], held_out[1][0]
    emb = embed_image(sam, to_sam_rgb(image))
    prompts = [excavate_object(o, frame=emb.frame, embedding=emb) for o in objects_from_labels(labels)]
    first = report.pair == 0
    assert report.label_id[first].tolist() == [p.label_id for p in prompts]
    plain = decode_prompts(sam, emb, prompts, all_candidates=True)
    adapted = decode_prompts(sam, emb, prompts, all_candidates=True, iou_adaptor=trained)
    np.testing.assert_allclose(report.scores_before[first], plain.scores, atol=1e-5)
    np.testing.assert_allclose(report.scores_after[first], adapted.scores, atol=1e-5)
    assert not np.allclose(plain.scores, adapted.scores, atol=1e-3)  # the adaptor rescored
    # the accuracies count the objects whose highest score is the best candidate
    chosen = np.argmax(report.scores_after, axis=1)
    best = report.coarse_iou[np.arange(len(chosen)), chosen] == report.coarse_iou.max(axis=1)
    assert s["top1_coarse_after"] == pytest.approx(best.mean())


# ----------------------------------------------------------------------------- refine and CLI


def test_refine_selects_candidates_with_the_adapted_head(tmp_path, train_set, trained):
    from napari_samrefine import refine
    from napari_samrefine.labels.objects import objects_from_labels
    from napari_samrefine.samrefiner.decode import decode_prompts
    from napari_samrefine.samrefiner.prompts import excavate_object

    sam = tiny_sam()
    image, labels = train_set[0][2], train_set[1][2]
    loaded = load_iou_adaptor(trained.save(tmp_path / "a.pt"))
    r1 = refine(image, labels, sam, iou_adaptor=trained, iterations=2)
    r2 = refine(image, labels, sam, iou_adaptor=loaded, iterations=2)
    assert np.array_equal(r1.labels, r2.labels)
    assert [o.predicted_iou for o in r1.objects] == [o.predicted_iou for o in r2.objects]

    # an adaptor that strongly prefers the third candidate makes the refiner choose it
    forced = IoUAdaptor.untrained(sam)
    forced.down = forced.down.abs()
    forced.up = torch.zeros_like(forced.up)
    forced.up[3] = 100.0  # output 3 of the IoU head = multimask candidate 2
    emb = embed_image(sam, to_sam_rgb(image))
    prompts = [excavate_object(o, frame=emb.frame, embedding=emb) for o in objects_from_labels(labels)]
    plain = decode_prompts(sam, emb, prompts)
    chosen = decode_prompts(sam, emb, prompts, iou_adaptor=forced)
    assert (chosen.index == 2).all() and not (plain.index == 2).all()
    assert sam.mask_decoder.iou_prediction_head.layers[-1].__class__ is torch.nn.Linear


def _write_pairs(folder: Path, images, labels, names):
    import tifffile
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for img, lab, name in zip(images, labels, names, strict=True):
        Image.fromarray(img).save(folder / "images" / f"{name}.png")
        tifffile.imwrite(folder / "labels" / f"{name}.tif", lab)


def test_cli_adapt_end_to_end(tmp_path, train_set, capsys):
    from napari_samrefine.cli import main

    ckpt = tmp_path / "tiny.pth"
    torch.save(tiny_sam().state_dict(), ckpt)
    _write_pairs(tmp_path / "train", *train_set, TRAIN_IDS)
    held_images, held_labels = _load(HELD_OUT_IDS)
    _write_pairs(tmp_path / "held", held_images, held_labels, HELD_OUT_IDS)
    out = tmp_path / "out" / "adaptor.pt"
    rc = main([
        "adapt", str(tmp_path / "train" / "images"), "--labels", str(tmp_path / "train" / "labels"),
        "-o", str(out), "--checkpoint", str(ckpt), "--device", "cpu",
        "--eval-images", str(tmp_path / "held" / "images"),
        "--eval-labels", str(tmp_path / "held" / "labels"),
        "--eval-ground-truth", str(tmp_path / "held" / "labels"),
    ])
    text = capsys.readouterr().out
    assert rc == 0
    adaptor = load_iou_adaptor(out)
    meta = adaptor.metadata
    assert meta["base_model"] == "tiny.pth" and meta["architecture"] == "custom"
    assert len(meta["checkpoint_hash"]) == 32
    assert meta["n_images"] == len(TRAIN_IDS)
    assert "Saved the IoU adaptor" in text and "vs coarse-IoU argmax" in text
    assert "vs ground truth" in text
    # the same training as the library call
    expected = adapt_iou_head(tiny_sam(), *train_set)
    torch.testing.assert_close(adaptor.up, expected.up)

    # files in the same order work too; the refine command uses the adaptor
    img = tmp_path / "train" / "images" / f"{TRAIN_IDS[2]}.png"
    lab = tmp_path / "train" / "labels" / f"{TRAIN_IDS[2]}.tif"
    rc = main(["refine", str(img), str(lab), "-o", str(tmp_path / "refined.tif"),
               "--checkpoint", str(ckpt), "--device", "cpu", "--adaptor", str(out),
               "--iterations", "1"])
    assert rc == 0 and (tmp_path / "refined.tif").is_file()

    # another base model is refused with a clear message
    other = tmp_path / "other.pth"
    torch.save(tiny_sam(seed=3).state_dict(), other)
    rc = main(["refine", str(img), str(lab), "-o", str(tmp_path / "refined2.tif"),
               "--checkpoint", str(other), "--device", "cpu", "--adaptor", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "trained for 'tiny.pth'" in err

    # mismatched inputs
    rc = main(["adapt", str(img), "--labels", str(lab), str(lab), "-o", str(out),
               "--checkpoint", str(ckpt)])
    assert rc == 2 and "1 images but 2 label files" in capsys.readouterr().err
