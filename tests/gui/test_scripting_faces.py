"""The script faces on layers: refine_layers takes refine's planes and reports to the activity dock;
excavate_layers draws excavate_prompts' prompts."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from napari.utils import progress

import napari_samrefine as nsr
import napari_samrefine.testing  # noqa: F401  the model code, before any viewer (see test_no_crash.py)
from napari_samrefine._napari.judge_roles import LayerRoles
from napari_samrefine._napari.prompt_layers import points_data

pytestmark = pytest.mark.gui


@pytest.fixture()
def stack_viewer(viewer):
    """The nuclei sample and a 3-plane stack of it ("stack", "stack coarse")."""
    coarse = viewer.layers["nuclei coarse"].data
    viewer.add_image(np.stack([viewer.layers["nuclei"].data] * 3), name="stack")
    viewer.add_labels(np.stack([coarse, np.zeros_like(coarse), coarse]), name="stack coarse")
    return viewer


def test_refine_layers_takes_the_planes_refine_takes(stack_viewer, sam):
    viewer = stack_viewer
    coarse = viewer.layers["stack coarse"].data.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = nsr.refine_layers(viewer, "stack", "stack coarse", sam, planes=[2], iterations=1)
        expected = nsr.refine(viewer.layers["stack"].data, coarse, sam, planes=[2], iterations=1)
    np.testing.assert_array_equal(layer.data, expected.labels)
    np.testing.assert_array_equal(layer.data[:2], coarse[:2])
    assert set(layer.metadata["samrefine_table"]["plane"]) == {2}
    np.testing.assert_array_equal(viewer.layers["stack coarse"].data, coarse)  # input untouched
    # the image it ran on is recorded as the refine widget records it: the judge's query image
    assert layer.metadata["samrefine"]["image"] == viewer.layers["stack"].unique_id
    roles = LayerRoles(viewer, None)
    assert roles.query_image(viewer.layers["stack"]) and not roles.query_image(viewer.layers["nuclei"])
    assert roles.coarse(viewer.layers["stack coarse"]) and not roles.coarse(viewer.layers["nuclei coarse"])
    # refine's own checks and words, before a model is loaded (a registry name: no download here)
    for planes in ([5], ["a"], 1.5, "3"):
        with pytest.raises(ValueError) as expected_error:
            nsr.refine(viewer.layers["stack"].data, coarse, sam, planes=planes)
        with pytest.raises(ValueError) as error:
            nsr.refine_layers(viewer, "stack", "stack coarse", "vit_b_lm", planes=planes)
        if planes != "3":
            assert str(error.value) == str(expected_error.value)
        else:  # a string is one of the widget's choices
            assert "planes must be one of" in str(error.value)
    with pytest.raises(ValueError, match="applies to 3D and 4D stacks"):
        nsr.refine_layers(viewer, "nuclei", "nuclei coarse", "vit_b_lm", planes=[1])


def test_refine_layers_reports_its_progress_in_the_activity_dock(viewer, sam):
    bars, values = [], []

    def recorder(bar):
        def record(event):
            values.append((event.value, bar.total))

        return record

    def added(event):
        for bar in event.added:
            bars.append(bar)
            bar.events.value.connect(recorder(bar))

    progress._all_instances.events.changed.connect(added)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nsr.refine_layers(viewer, "nuclei", "nuclei coarse", sam, iterations=1)
    finally:
        progress._all_instances.events.changed.disconnect(added)
    assert bars
    assert str(bars[0].desc).startswith("refining 'nuclei coarse'")
    assert len(values) > 2 and values[-1][0] == values[-1][1] > 0  # it got to its end
    assert not [b for b in bars if b in progress._all_instances]  # and left the dock


def test_excavate_layers_draws_the_prompts_excavate_prompts_mines(viewer, sam):
    coarse = viewer.layers["nuclei coarse"].data.copy()
    layers = nsr.excavate_layers(viewer, "nuclei coarse", label_ids=[3, 7])
    coords, features, _ = points_data(nsr.excavate_prompts(coarse, label_ids=[3, 7]))
    np.testing.assert_array_equal(layers["points"].data, coords)
    assert layers["points"].features["label_id"].tolist() == features["label_id"].tolist()
    assert set(layers["boxes"].features["label_id"]) == {3, 7}
    with pytest.raises(ValueError, match="label 999 is not in 'nuclei coarse'"):
        nsr.excavate_layers(viewer, "nuclei coarse", label_ids=[999])
    with pytest.raises(ValueError, match="CEBox needs the image and a model"):
        nsr.excavate_layers(viewer, "nuclei coarse", cebox=0.1)
    grown = nsr.excavate_layers(viewer, "nuclei coarse", "nuclei", sam, cebox=0.1, label_ids=[3, 7])
    assert grown["points"] is layers["points"]  # updated, not stacked
    with pytest.raises(ValueError, match="is 2D: leave plane=None"):
        nsr.excavate_layers(viewer, "nuclei coarse", plane=0)


def test_rerefine_object_changes_that_object_only_as_one_undo_step_without_an_encoder_pass(
    viewer, sam, encoder_passes
):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refined = nsr.refine_layers(viewer, "nuclei", "nuclei coarse", sam, iterations=1)
    before = refined.data.copy()
    points = nsr.excavate_layers(viewer, "nuclei coarse")["points"]
    label_id = 7
    moved = points.data.copy()
    positive = ((points.features["label_id"] == label_id) & (points.features["kind"] == "positive")).to_numpy()
    moved[positive] += (3.0, 1.0)
    points.data = moved
    passes = encoder_passes.n
    with pytest.raises(ValueError, match=r"objects \[999\] are not in"):
        nsr.rerefine_object(viewer, "nuclei", "nuclei coarse", refined, 999, sam)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prompts = nsr.rerefine_object(viewer, "nuclei", "nuclei coarse", refined, label_id, sam)
    assert encoder_passes.n == passes  # the embedding of refine_layers' run, cached
    np.testing.assert_allclose(prompts.points[prompts.point_labels == 1][:, ::-1], moved[positive])
    after = refined.data.copy()
    changed = after != before
    assert changed.any() and not (changed & (after != label_id) & (before != label_id)).any()
    assert refined.features.set_index("label_id")["decision"][label_id] == "re-refined"
    assert refined.metadata["samrefine_edited_prompts"][(None, label_id)] is prompts
    refined.undo()
    np.testing.assert_array_equal(refined.data, before)


def test_judge_and_adaption_faces_give_what_the_array_functions_give(viewer, sam, tmp_path):
    from napari_samrefine.adaption.training import adapt_iou_head
    from napari_samrefine.judge.jfs import judge_refinement

    image, coarse = viewer.layers["nuclei"].data, viewer.layers["nuclei coarse"].data.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refined = nsr.refine_layers(viewer, "nuclei", "nuclei coarse", sam, iterations=1)
        options = dict(k=1, label_ids=[3, 7])
        layers = nsr.judge_layers(viewer, "nuclei", "nuclei coarse", refined, ("nuclei", "nuclei coarse"),
                                  sam, **options)
        expected = judge_refinement(image, coarse, refined.data, [image], [coarse], sam=sam, **options)
    features = layers["accepted"].features
    assert features["label_id"].tolist() == list(range(len(features)))  # row i: label i
    table = features[features["verdict"] != ""]  # the judged objects; the other rows are empty
    assert table["label_id"].tolist() == [3, 7]
    assert table["verdict"].tolist() == expected.table()["verdict"].tolist()
    np.testing.assert_array_equal(layers["accepted"].data, expected.accepted)
    np.testing.assert_array_equal(layers["verdicts"].data, expected.verdict_image())
    with pytest.raises(ValueError, match="same layer"):
        nsr.judge_layers(viewer, "nuclei", refined, refined, ("nuclei", "nuclei coarse"), sam)
    path = tmp_path / "sub" / "adaptor.pt"
    adaptor = nsr.adapt_layers(viewer, [("nuclei", "nuclei coarse")], sam, output=path)
    again = adapt_iou_head(sam, [image], [coarse], epochs=1)
    assert adaptor.metadata["loss_history"] == again.metadata["loss_history"]
    assert nsr.load_iou_adaptor(path).metadata["loss_history"] == adaptor.metadata["loss_history"]
    with pytest.raises(ValueError, match="each pair is \\(image, labels\\)"):
        nsr.adapt_layers(viewer, ["nuclei"], sam)


def test_excavate_layers_on_a_stack_takes_the_plane_shown_or_the_one_given(stack_viewer):
    viewer = stack_viewer
    coarse = viewer.layers["stack coarse"].data
    viewer.dims.set_point(0, 2)
    shown = nsr.excavate_layers(viewer, "stack coarse", label_ids=[3])["points"].data.copy()
    coords, _, _ = points_data(nsr.excavate_prompts(coarse[2], label_ids=[3]), plane=2)
    np.testing.assert_array_equal(shown, coords)
    assert (shown[:, 0] == 2).all()
    given = nsr.excavate_layers(viewer, "stack coarse", label_ids=[3], plane=0)["points"].data
    assert (given[:, 0] == 0).all()
    with pytest.raises(ValueError, match="label 3 is not in plane 1"):
        nsr.excavate_layers(viewer, "stack coarse", label_ids=[3], plane=1)
    with pytest.raises(ValueError, match="plane 5 is not a plane of 'stack coarse'"):
        nsr.excavate_layers(viewer, "stack coarse", plane=5)


def test_decide_objects_on_a_stack_goes_by_plane_and_id(stack_viewer, sam):
    viewer = stack_viewer
    coarse = viewer.layers["stack coarse"].data.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refined = nsr.refine_layers(viewer, "stack", "stack coarse", sam, planes=[0, 2], iterations=1)
    before = refined.data.copy()
    with pytest.raises(ValueError, match=r"\(plane, label_id\) pairs"):
        nsr.decide_objects(viewer, refined, "stack coarse", {3: "reverted"})
    with pytest.raises(ValueError, match=r"objects \[\(1, 3\)\] are not in"):
        nsr.decide_objects(viewer, refined, "stack coarse", {(1, 3): "reverted"})
    queue = nsr.decide_objects(viewer, refined, "stack coarse", {(2, 3): "reverted", (0, 3): "accepted"})
    np.testing.assert_array_equal(refined.data[2] == 3, coarse[2] == 3)
    np.testing.assert_array_equal(refined.data[0], before[0])
    decided = {(p, i): d for p, i, d in queue[["plane", "label_id", "decision"]].itertuples(index=False) if d}
    assert decided == {(2, 3): "reverted", (0, 3): "accepted"}
    assert refined.features.set_index("label_id")["decision"][3] == "mixed"  # one row per label
