"""A review's decisions as a CSV table, without napari: written, read back, merged, checked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_samrefine.quality.review import (
    REVIEW_COLUMNS,
    apply_decisions,
    review_table,
    sort_review,
)
from napari_samrefine.quality.review_file import (
    decisions_by_key,
    merge_decisions,
    read_decisions,
    write_decisions,
)


def _table(planes=None):
    n = 4
    return pd.DataFrame({
        "label_id": [3, 1, 2, 4], "plane": planes or [None] * n, "status": ["ok"] * n,
        "iou_coarse": [0.9, 0.2, np.nan, 0.5], "predicted_iou": [0.7, 0.8, 0.9, np.nan],
        "stability": [0.95, 0.5, 0.6, 0.7], "edge_contrast": [1.5, np.nan, 0.25, 2.0],
        "coarse_area": [10, 20, 30, 40], "refined_area": [12, 5, 30, 40],
    })  # fmt: skip


def test_the_review_shows_the_estimates_and_sorts_by_any_column_missing_values_last():
    rows = review_table(_table())
    assert tuple(rows.columns) == REVIEW_COLUMNS
    by_id = rows.set_index("label_id")
    assert by_id.loc[3, ["predicted_iou", "stability", "edge_contrast"]].tolist() == [0.7, 0.95, 1.5]
    assert rows["label_id"].tolist() == [1, 4, 3, 2]  # worst first, no estimate last
    assert sort_review(rows, "predicted_iou")["label_id"].tolist() == [3, 1, 2, 4]
    assert sort_review(rows, "predicted_iou", ascending=False)["label_id"].tolist() == [2, 1, 3, 4]
    assert sort_review(rows, "edge_contrast", ascending=False)["label_id"].tolist() == [4, 3, 2, 1]
    assert sort_review(rows, "label_id", ascending=False)["label_id"].tolist() == [4, 3, 2, 1]
    assert review_table(_table(), order="stability")["label_id"].tolist() == [1, 2, 4, 3]
    with pytest.raises(ValueError, match="no column 'size' to sort by"):
        sort_review(rows, "size")
    no_estimates = review_table(_table().drop(columns=["predicted_iou", "stability"]))
    assert no_estimates[["predicted_iou", "stability"]].isna().all().all()


@pytest.mark.parametrize("planes", [None, [0, 1, 1, 2], [(0, 1), (1, 0), (1, 0), (0, 0)]],
                         ids=["2d", "stack", "4d"])
def test_decisions_written_and_read_back_are_the_same_by_id_and_plane(tmp_path, planes):
    rows = review_table(_table(planes))
    rows.loc[rows["label_id"] == 1, "decision"] = "reverted"
    rows.loc[rows["label_id"] == 4, "decision"] = "accepted"
    path = write_decisions(tmp_path / "out" / "review.csv", rows, layer_name="cells refined")
    assert sorted(p.name for p in path.parent.iterdir()) == ["review.csv"]  # no temporary file left
    table = read_decisions(path)
    assert table["label_id"].tolist() == rows["label_id"].tolist()
    assert table["plane"].tolist() == rows["plane"].tolist()
    assert table["decision"].tolist() == rows["decision"].tolist()
    assert set(table["layer"]) == {"cells refined"}
    # merged into a fresh review of the same layer: the decisions come back, the rest is unchanged
    fresh = review_table(_table(planes))
    merged = merge_decisions(fresh, table)
    pd.testing.assert_frame_equal(merged.drop(columns="decision"), fresh.drop(columns="decision"))
    assert merged.set_index("label_id")["decision"].to_dict() == {1: "reverted", 2: "", 3: "", 4: "accepted"}
    assert not (fresh["decision"] != "").any()  # the input is not modified
    # labels opened without their table: the file's rows are the review
    from napari_samrefine.quality.review_file import review_rows

    back = review_rows(table)
    pd.testing.assert_frame_equal(back, rows, rtol=1e-5)


def test_a_read_table_applies_to_arrays_as_the_widget_does(tmp_path):
    coarse = np.array([[1, 1, 0], [0, 2, 2]])
    refined = np.array([[1, 1, 1], [0, 1, 2]])
    table = pd.DataFrame({"label_id": [1, 2], "plane": ["", ""], "decision": ["reverted", "reverted"]})
    table.to_csv(tmp_path / "by hand.csv", index=False)
    decisions = decisions_by_key(read_decisions(tmp_path / "by hand.csv"))
    assert decisions == {(None, 1): "reverted", (None, 2): "reverted"}
    np.testing.assert_array_equal(apply_decisions(refined, coarse, decisions), coarse)


def _write(tmp_path, text: str):
    path = tmp_path / "decisions.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "message"), [
    ("label_id,decision\n1,accepted\n", r"no \['plane'\] column"),
    ("label_id,plane,decision\n1,,maybe\n", r"unknown decisions \['maybe'\]"),
    ("label_id,plane,decision\n1.5,,accepted\n", r"label_id '1.5' \(row 2\) is not an object id"),
    ("label_id,plane,decision\n0,,accepted\n", "is not an object id"),
    ("label_id,plane,decision\n1,x,accepted\n", "a plane is not an index"),
    ("label_id,plane,decision\n1,2,accepted\n1,2,reverted\n", "lists object 1 of plane 2 twice"),
    ("", "is not a CSV table"),
])  # fmt: skip
def test_a_bad_decisions_table_is_refused_naming_the_problem(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_decisions(_write(tmp_path, text))


def test_a_table_of_another_layer_or_a_missing_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such decisions table"):
        read_decisions(tmp_path / "none.csv")
    rows = review_table(_table())
    other = read_decisions(_write(tmp_path, "label_id,plane,decision,layer\n1,,reverted,a\n9,,reverted,a\n"))
    with pytest.raises(ValueError, match=r"decisions.csv lists objects that 'b' has not: 9\. "
                                         r"It was saved from 'a'\."):
        merge_decisions(rows, other, "decisions.csv", "'b'")
    stack = read_decisions(_write(tmp_path, "label_id,plane,decision\n1,0,reverted\n"))
    with pytest.raises(ValueError, match=r"has not: 1 \(plane 0\)"):
        merge_decisions(rows, stack)  # a stack's table for a 2D layer


def test_edited_prompts_saved_with_the_decisions_refine_the_same(tmp_path, sam, dsb_pair):
    import dataclasses
    import warnings

    import napari_samrefine as nsr
    from napari_samrefine.quality.review_file import saved_prompts

    image, coarse = dsb_pair
    label = int(np.unique(coarse)[5])
    (mined,) = nsr.excavate_prompts(coarse, label_ids=[label], cebox=None)
    x1, y1, x2, y2 = (int(v) for v in mined.box)
    edited = dataclasses.replace(mined, points=np.array([[x1 + 0.5, y1 + 1.0], [x2 + 2.0, y2 + 2.5]]),
                                 point_labels=np.array([1, 0]), box=np.array([x1, y1, x2 + 3, y2 + 1]))
    rows = review_table(pd.DataFrame({"label_id": np.unique(coarse)[1:], "status": "ok"}))
    rows.loc[rows["label_id"] == label, "decision"] = "re-refined"
    path = write_decisions(tmp_path / "d.csv", rows, prompts={(None, label): edited})
    table = read_decisions(path)
    mine = table[table["label_id"] == label].iloc[0]
    assert (mine["prompt_box"], mine["prompt_strength"]) == (f"{x1} {y1} {x2 + 3} {y2 + 1}", f"{mined.strength:g}")
    assert (table.loc[table["label_id"] != label, "prompt_box"] == "").all()
    saved = saved_prompts(table, coarse)
    assert list(saved) == [(None, label)]
    back = saved[(None, label)]
    np.testing.assert_array_equal(back.points, edited.points)
    np.testing.assert_array_equal(back.point_labels, edited.point_labels)
    np.testing.assert_array_equal(back.box, edited.box)
    assert back.strength == edited.strength and back.expanded
    np.testing.assert_array_equal(back.gaussian, mined.gaussian)  # the mined mask prompt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = [nsr.refine(image, coarse, sam, label_ids=[label], prompts={label: p}, iterations=1,
                            embedding_cache=None).labels for p in (edited, back)]
    np.testing.assert_array_equal(again[0], again[1])
    assert saved_prompts(read_decisions(write_decisions(tmp_path / "none.csv", rows)), coarse) == {}
    bad = table.copy()
    bad.loc[bad["label_id"] == label, "prompt_box"] = "1 2 3"
    with pytest.raises(ValueError, match="is not x1 y1 x2 y2"):
        saved_prompts(bad, coarse)
