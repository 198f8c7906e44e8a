"""Teaching the image encoder too: low-rank adaptors in its attention (``lora_rank``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_samrefine import refine
from napari_samrefine.engine.embedding import embed_image, encoder_input, model_key
from napari_samrefine.models.fast_encoder import enable_fast_encoder
from napari_samrefine.models.finetune_file import (
    FinetuneFile,
    apply_finetune,
    read_finetune_file,
    taught_weights,
    write_finetune_file,
)
from napari_samrefine.models.loading import load_sam
from napari_samrefine.models.lora import LoRALinear, adapted_encoder, lora_targets
from napari_samrefine.models.profile import (
    BOX_ONLY_MINMAX_PROFILE,
    model_profile,
    set_model_profile,
)
from napari_samrefine.teach.examples import teaching_examples
from napari_samrefine.teach.finetune import TeachOptions, finetune
from napari_samrefine.teach.losses import refine_loss
from napari_samrefine.teach.steps import decode_example, window_batches, window_features
from napari_samrefine.teach.student import student_of
from napari_samrefine.teach.views import teaching_views
from napari_samrefine.testing import tiny_sam, tiny_tinyvit_sam

LORA = TeachOptions(epochs=1, kinds=("defects", "eroded"), batch_size=8, lora_rank=2)


@pytest.fixture(scope="module")
def pair(dsb_pair):
    """A 96 x 96 crop of a DSB2018 image with its labels (renumbered from 1)."""
    from skimage.segmentation import relabel_sequential

    image, labels = dsb_pair
    return image[:96, :96].copy(), relabel_sequential(labels[:96, :96].astype(np.int32))[0]


@pytest.mark.parametrize("make", [tiny_sam, lambda: tiny_tinyvit_sam(layout="lite_medsam")],
                         ids=["vit", "tinyvit"])
def test_an_adapted_encoder_starts_as_its_base_over_the_same_weights(make, pair):
    sam = make()
    enable_fast_encoder(sam)
    before = {k: v.clone() for k, v in sam.state_dict().items()}
    rgb = np.repeat(pair[0][..., None], 3, axis=-1)
    base = embed_image(sam, rgb).features
    adapted = adapted_encoder(sam.image_encoder, rank=2)
    names = lora_targets(sam.image_encoder)
    assert names and all(isinstance(adapted.get_submodule(n), LoRALinear) for n in names)
    for n in names:  # the base layer is shared, not copied
        assert adapted.get_submodule(n).base.weight is sam.image_encoder.get_submodule(n).weight
    with torch.no_grad():
        start = adapted(encoder_input(sam, rgb)[0])
    assert torch.equal(start, base)  # B = 0: exactly the base's embedding
    assert all(torch.equal(before[k], v) for k, v in sam.state_dict().items())
    assert all(isinstance(m, torch.nn.Linear) for n, m in sam.image_encoder.named_modules() if n in names)


def _tinyvit_fast():
    sam = tiny_tinyvit_sam(layout="lite_medsam")
    enable_fast_encoder(sam)  # as load_sam gives it: gradients go through the fused attention
    return sam


@pytest.mark.parametrize("make", [tiny_sam, _tinyvit_fast], ids=["vit", "tinyvit"])
def test_a_few_steps_teach_the_adaptors_and_leave_the_base_as_it_was(pair, make):
    sam = make()
    image, labels = pair
    views = teaching_views([image], [labels], sam, kinds=("defects",))
    examples = teaching_examples(views[:1], sam, prompts=("box", "mask"), augment=(0,))
    flags = {n: p.requires_grad for n, p in sam.named_parameters()}
    encoder = {k: v.clone() for k, v in sam.image_encoder.state_dict().items()}
    with student_of(sam, lora_rank=2) as (student, params):
        assert student.image_encoder is not sam.image_encoder
        assert not any(p.requires_grad for p in sam.image_encoder.parameters())  # frozen meanwhile
        adaptors = [p for n, p in student.named_parameters() if n.endswith(".lora_b")]
        assert adaptors and all(any(p is q for q in params) for p in adaptors)
        opt = torch.optim.AdamW(params, lr=1e-3)
        losses = []
        for _ in range(12):
            opt.zero_grad()
            step = window_batches(examples, 64, np.random.default_rng(0))[0]
            (e, rows), = step.items()
            low, iou = decode_example(student, examples[e], rows, features=window_features(student, examples[e]))
            loss = refine_loss(low, iou, examples[e].targets[torch.as_tensor(rows)])
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        assert losses[-1] < 0.9 * losses[0]
        assert any(p.abs().max() > 0 for p in adaptors)  # the encoder was taught
    assert {n: p.requires_grad for n, p in sam.named_parameters()} == flags
    assert all(torch.equal(encoder[k], v) for k, v in sam.image_encoder.state_dict().items())


def test_the_student_encodes_each_window_as_its_base_does(pair):
    """The student keeps its base's profile (LiteMedSAM's min-max input): untaught adaptors
    give exactly the embeddings the examples were mined with."""
    sam = _tinyvit_fast()
    set_model_profile(sam, BOX_ONLY_MINMAX_PROFILE)
    image, labels = pair
    views = teaching_views([image], [labels], sam, kinds=("eroded",))
    ex = teaching_examples(views[:1], sam, prompts=("box",), augment=(0,))[0]
    with student_of(sam, lora_rank=2) as (student, _), torch.no_grad():
        assert model_profile(student) == model_profile(sam)
        assert torch.equal(window_features(student.eval(), ex), ex.embedding.features)


def test_window_batches_keep_each_step_on_one_window(pair, sam):
    image, labels = pair
    views = teaching_views([image], [labels], sam, kinds=("defects", "eroded"))
    examples = teaching_examples(views, sam, prompts=("box",), augment=(0, 1))
    steps = window_batches(examples, 4, np.random.default_rng(0))
    assert all(len({examples[e].embedding.key for e in step}) == 1 for step in steps)
    assert all(sum(map(len, step.values())) <= 4 for step in steps)
    seen = sorted((e, r) for step in steps for e, rows in step.items() for r in rows)
    assert seen == [(e, r) for e, ex in enumerate(examples) for r in range(len(ex))]


def test_a_taught_file_with_adaptors_round_trips_and_reproduces_masks(pair, checkpoint, tmp_path):
    base = load_sam(checkpoint, device="cpu")
    image, labels = pair
    taught = finetune([image], [labels], base, out=tmp_path / "lora.pt", options=LORA)
    meta = read_finetune_file(taught.path)
    adaptors = [k for k in meta.weights if k.startswith("image_encoder.")]
    assert adaptors and all(k.endswith((".lora_a", ".lora_b")) for k in adaptors)
    assert meta.metadata["options"]["lora_rank"] == 2
    loaded = load_sam(checkpoint, device="cpu", finetune=taught.path)
    assert loaded.image_encoder is not base.image_encoder
    assert model_key(loaded) != model_key(base)  # its embeddings are its own, in every cache
    for k in adaptors:
        assert torch.equal(loaded.state_dict()[k], meta.weights[k])
    a = refine(image, labels, taught.model, scale=None)
    b = refine(image, labels, loaded, scale=None)
    assert np.array_equal(a.labels, b.labels)
    assert [o.predicted_iou for o in a.objects] == [o.predicted_iou for o in b.objects]


def test_a_taught_file_with_adaptors_is_refused_when_they_do_not_fit(pair, sam, tmp_path):
    image, labels = pair
    taught = finetune([image], [labels], sam, options=LORA)
    weights = taught_weights(taught.model)
    assert any(k.endswith(".lora_b") for k in weights)
    no_rank = dict(taught.metadata, options={**taught.metadata["options"], "lora_rank": None})
    with pytest.raises(ValueError, match="adaptors but its options give rank None"):
        apply_finetune(sam, FinetuneFile(weights, no_rank))
    fewer = {k: v for k, v in weights.items() if ".blocks.0." not in k}
    with pytest.raises(ValueError, match="do not fit the base model"):
        apply_finetune(sam, FinetuneFile(fewer, taught.metadata))
    path = write_finetune_file(weights, taught.metadata, tmp_path / "ok.pt")
    assert set(read_finetune_file(path).weights) == set(weights)


def test_lora_options_are_checked():
    with pytest.raises(ValueError, match="lora_rank must be 0"):
        TeachOptions(lora_rank=-1)
    assert dataclasses.asdict(TeachOptions())["lora_rank"] == 0  # off by default
