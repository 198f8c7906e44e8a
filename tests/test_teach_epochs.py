"""The teaching loop: the best epoch is kept, patience and the time limit stop it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_samrefine.models.finetune_file import taught_weights
from napari_samrefine.teach.epochs import teach_epochs
from napari_samrefine.teach.examples import teaching_examples
from napari_samrefine.teach.finetune import TeachOptions
from napari_samrefine.teach.student import student_of
from napari_samrefine.teach.views import teaching_views

OPTS = TeachOptions(epochs=4, batch_size=8, lr=1e-2, patience=4)


@pytest.fixture(scope="module")
def lesson_data(dsb_pair, sam):
    """Training examples from a DSB2018 image, validation from a 96 x 96 crop of it."""
    from skimage.segmentation import relabel_sequential

    image, labels = dsb_pair
    crop = relabel_sequential(labels[120:216, 100:196].astype(np.int32))[0]
    out = []
    for im, lab in ((image, labels), (image[120:216, 100:196], crop)):
        views = teaching_views([im], [lab], sam, kinds=("eroded",))
        out.append(teaching_examples(views, sam, prompts=("box", "mask"), augment=(0,)))
    return out


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_best_epoch_is_kept(lesson_data, sam):
    """The lesson holds the weights the student had at its best validated epoch."""
    train, val = lesson_data
    seen = []
    with student_of(sam) as (student, params):
        seen.append(taught_weights(student))  # epoch 0, the untaught student
        lesson = teach_epochs(student, params, train, val, OPTS, np.random.default_rng(0),
                              log=lambda line: seen.append(taught_weights(student)))
    ious = [h["val_iou"] for h in lesson.history]
    assert [h["epoch"] for h in lesson.history] == list(range(OPTS.epochs + 1))
    assert lesson.best_epoch == int(np.argmax(ious)) and lesson.best_iou == max(ious)
    assert _same(lesson.weights, seen[1 + lesson.best_epoch])  # seen[1] is logged at epoch 0 too
    assert not _same(seen[1], seen[-1])  # it did learn


def test_patience_stops_when_validation_does_not_improve(lesson_data, sam):
    """An optimiser that changes nothing never improves validation: teaching stops
    after ``patience`` epochs and keeps the untaught weights (epoch 0)."""
    train, val = lesson_data
    opts = dataclasses.replace(OPTS, epochs=6, patience=2)
    with student_of(sam) as (student, _):
        before = taught_weights(student)
        idle = [torch.nn.Parameter(torch.zeros(1))]  # no gradient reaches it
        lesson = teach_epochs(student, idle, train, val, opts, np.random.default_rng(0))
    assert [h["epoch"] for h in lesson.history] == [0, 1, 2]
    assert lesson.best_epoch == 0 and _same(lesson.weights, before)
    assert len({h["val_iou"] for h in lesson.history}) == 1


def test_the_time_limit_ends_the_epoch_under_way(lesson_data, sam):
    """Past ``max_minutes`` the step under way is the epoch's last; that epoch is
    validated and teaching ends."""
    train, val = lesson_data
    steps = []
    opts = dataclasses.replace(OPTS, max_minutes=1e-9)
    with student_of(sam) as (student, params):
        lesson = teach_epochs(student, params, train, val, opts, np.random.default_rng(0),
                              progress=lambda d, t, m: steps.append(m))
    assert sum(map(len, train)) > opts.batch_size  # an epoch has several steps
    assert [h["epoch"] for h in lesson.history] == [0, 1] and len(steps) == 1
    with pytest.raises(ValueError, match="max_minutes must be more than 0"):
        TeachOptions(max_minutes=0)
