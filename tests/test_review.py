"""Review decisions without napari: the queue worst first, reverting one object by id."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import napari_samrefine as nsr
from napari_samrefine.quality.review import apply_decisions, revert_edit, review_table


def _table(**columns):
    base = {"label_id": [3, 1, 2, 4], "plane": [None] * 4, "status": ["ok", "kept-coarse", "ok", "skipped"],
            "iou_coarse": [0.9, 0.2, np.nan, np.nan], "coarse_area": [10, 20, 30, 40],
            "refined_area": [12, 5, 30, 40]}
    base.update(columns)
    return pd.DataFrame(base)


def test_the_queue_is_worst_first_objects_without_an_estimate_last_and_skipped_left_out():
    rows = review_table(_table())
    assert rows["label_id"].tolist() == [1, 3, 2]
    assert rows["area_ratio"].tolist() == pytest.approx([0.25, 1.2, 1.0])
    assert (rows["decision"] == "").all()
    assert review_table(_table(), order="id")["label_id"].tolist() == [1, 2, 3]
    resumed = review_table(_table(decision=["accepted", np.nan, "", ""]))
    assert resumed.set_index("label_id")["decision"].to_dict() == {1: "", 2: "", 3: "accepted"}
    with pytest.raises(ValueError, match="unknown decisions"):
        review_table(_table(decision=["maybe", "", "", ""]))
    with pytest.raises(ValueError, match="no \\['status'\\] column"):
        review_table(pd.DataFrame({"label_id": [1]}))


def test_reverting_gives_the_coarse_mask_exactly_in_its_plane_and_nothing_else(sam, dsb_pair):
    image, labels = dsb_pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = nsr.refine(image, labels, sam, iterations=1, embedding_cache=None)
    refined, kept = result.labels, result.labels.copy()
    worst = review_table(result.table())["label_id"][:3].tolist()
    out = apply_decisions(refined, labels, {worst[0]: "reverted", worst[1]: "accepted"})
    np.testing.assert_array_equal(refined, kept)  # inputs untouched
    np.testing.assert_array_equal(out == worst[0], labels == worst[0])
    changed = out != refined
    assert changed.any() and not (changed & (refined != worst[0]) & (labels != worst[0])).any()
    # in a stack, only the object's plane
    stack, coarse = np.stack([refined, refined]), np.stack([labels, labels])
    indices, values = revert_edit(stack, coarse, worst[0], plane=1)
    assert (indices[0] == 1).all()
    stack[indices] = values
    np.testing.assert_array_equal(stack[1], out)
    np.testing.assert_array_equal(stack[0], refined)
    with pytest.raises(ValueError, match="need a plane"):
        revert_edit(stack, coarse, worst[0])
    with pytest.raises(ValueError, match="differ in shape"):
        revert_edit(refined, labels[:10], worst[0])
    with pytest.raises(ValueError, match="must be one of"):
        apply_decisions(refined, labels, {worst[0]: "revert"})


def test_the_decision_history_follows_undo_and_redo_of_the_pixels():
    from napari_samrefine.quality.review import DecisionHistory

    refined, coarse, edited = (np.zeros((4, 4), bool) for _ in range(3))
    refined[:2] = True
    coarse[:3] = True
    edited[1:] = True
    history = DecisionHistory()
    key = (None, 7)
    assert key not in history
    history.record(key, "reverted", coarse, "")
    history.record(key, "re-refined", edited, "reverted")
    assert key in history
    assert history.decision(key, edited) == "re-refined"
    assert history.decision(key, coarse) == "reverted"  # the re-refinement undone
    assert history.decision(key, refined) == ""  # and the revert: the decision before both
    history.record(key, "accepted", edited, "re-refined")
    assert history.decision(key, edited) == "accepted"
    with pytest.raises(ValueError, match="must be one of"):
        history.record(key, "kept", edited, "")
