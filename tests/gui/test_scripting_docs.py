"""Every Python example of docs/scripting.md runs, in order, on a viewer with the nuclei sample.

The page's examples run in napari's console after its setup block (the first
block, under "## Setup"), which loads a real model. This test runs every
other block in the page's order, in one namespace that holds what the setup
block defines: ``napari``, ``np``, ``nsr``, ``viewer`` (a viewer with the
nuclei sample) and ``sam``, here a tiny SAM with random weights
(:func:`napari_samrefine.testing.tiny_sam`, the ``sam`` fixture), so the page
runs in seconds without a download. The text of the page is never edited.
"""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

import napari
import numpy as np
import pytest

import napari_samrefine as nsr
import napari_samrefine.testing  # noqa: F401  the model code, before any viewer (see test_no_crash.py)
from napari_samrefine.quality.review import review_table

pytestmark = pytest.mark.gui

DOC = Path(__file__).resolve().parents[2] / "docs" / "scripting.md"
SETUP = "Setup"


def python_blocks(text: str) -> list[tuple[str, str]]:
    """Every ```python block of a Markdown page, in order, with the heading (##) it is under."""
    blocks, heading = [], ""
    for part in re.split(r"(```python\n.*?```)", text, flags=re.S):
        if part.startswith("```python\n"):
            blocks.append((heading, part[len("```python\n"):-3]))
        else:
            headings = re.findall(r"^## (.+)$", part, re.M)
            heading = headings[-1] if headings else heading
    return blocks


def _assigned(code: str) -> set[str]:
    """The names a block of code defines (imports and assignments)."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def test_every_python_block_of_the_scripting_page_runs(make_napari_viewer, sam, tmp_path, monkeypatch):
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert [h for h, _ in blocks][:1] == [SETUP], "the page's first Python block is its setup"
    assert len(blocks) >= 8
    monkeypatch.chdir(tmp_path)  # the examples save files in the working folder
    viewer = make_napari_viewer()
    viewer.open_sample("napari-samrefine", "nuclei")
    coarse = viewer.layers["nuclei coarse"].data.copy()
    space = {"napari": napari, "np": np, "nsr": nsr, "viewer": viewer, "sam": sam}
    # the names the setup block defines are exactly the ones this test provides
    assert _assigned(blocks[0][1]) == set(space)
    for n, (heading, code) in enumerate(blocks[1:], start=2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # size warnings of a random model's masks
            exec(compile(code, f"{DOC.name}, Python block {n} ({heading})", "exec"), space)

    # what the examples did, checked on the layers
    refined = viewer.layers["nuclei coarse refined"]
    np.testing.assert_array_equal(viewer.layers["nuclei coarse"].data, coarse)  # in place, then undone
    stack = space["stack"].data
    np.testing.assert_array_equal(stack[1], coarse)  # plane 1 was not in planes=[0, 2]
    assert not np.array_equal(stack[0], coarse)
    assert {"points", "boxes", "gaussian"} <= set(space["layers"])
    worst, label_id = space["worst"], space["label_id"]
    decided = refined.features.set_index("label_id")["decision"]
    assert decided[label_id] == "re-refined"
    assert set(refined.metadata["samrefine_edited_prompts"]) == {(None, label_id)}
    assert (decided != "").sum() == 3
    np.testing.assert_array_equal(space["reviewed"] == worst[0], coarse == worst[0])
    np.testing.assert_array_equal(space["resumed"], space["reviewed"])  # decisions saved and read back
    assert (tmp_path / "decisions.csv").is_file()
    again, first = space["again"].labels, space["result"].labels  # given prompts: that object only
    changed = again != first
    assert changed.any() and not (changed & (again != label_id) & (first != label_id)).any()
    assert set(space["judged"]) == {"verdicts", "accepted"}
    assert (tmp_path / "verdicts.csv").is_file() and (tmp_path / "nuclei_adaptor.pt").is_file()
    assert space["adapted"] in viewer.layers


def test_the_page_lists_a_script_face_for_every_widget():
    text = DOC.read_text(encoding="utf-8")
    code = "\n".join(c for _, c in python_blocks(text))
    for name in ("refine_layers", "excavate_layers", "decide_objects", "rerefine_object",
                 "judge_layers", "adapt_layers"):
        assert f"nsr.{name}(" in code, f"docs/scripting.md has no example of {name}"
        assert callable(getattr(nsr, name))


def test_the_review_decisions_on_arrays_match_those_on_layers(make_napari_viewer, sam):
    """decide_objects reverts exactly as apply_decisions does, as one undo step."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-samrefine", "nuclei")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refined = nsr.refine_layers(viewer, "nuclei", "nuclei coarse", sam, iterations=1)
    from napari_samrefine.quality.review import apply_decisions

    before = refined.data.copy()
    coarse = viewer.layers["nuclei coarse"].data
    worst = review_table(refined.features)["label_id"][:3].tolist()
    decisions = {worst[0]: "reverted", worst[1]: "reverted", worst[2]: "accepted"}
    with pytest.raises(ValueError, match=r"objects \[999\] are not in"):
        nsr.decide_objects(viewer, refined, "nuclei coarse", {**decisions, 999: "reverted"})
    with pytest.raises(ValueError, match="must be one of"):
        nsr.decide_objects(viewer, refined, "nuclei coarse", {worst[0]: "revert"})
    np.testing.assert_array_equal(refined.data, before)  # a refused call changes nothing
    assert "decision" not in refined.features or (refined.features["decision"] == "").all()
    queue = nsr.decide_objects(viewer, refined, "nuclei coarse", decisions)
    np.testing.assert_array_equal(refined.data, apply_decisions(before, coarse, decisions))
    assert queue.set_index("label_id")["decision"][worst].tolist() == ["reverted", "reverted", "accepted"]
    table = refined.metadata["samrefine_table"].set_index("label_id")["decision"]
    assert table[worst].tolist() == ["reverted", "reverted", "accepted"]
    refined.undo()  # both reverts: one step
    np.testing.assert_array_equal(refined.data, before)
    refined.redo()
    np.testing.assert_array_equal(refined.data, apply_decisions(before, coarse, decisions))
