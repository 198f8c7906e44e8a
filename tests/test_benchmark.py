"""The quality benchmark end to end: synthesis, refine() with the tiny SAM, baselines, tables, CLI."""

import pandas as pd
import pytest

import napari_samrefine as nsr
from _data import DATA
from napari_samrefine import Cancelled
from napari_samrefine.cli import main
from napari_samrefine.evaluation.benchmark import (
    CONFIGURATIONS,
    BenchmarkPair,
    load_pairs,
    run_benchmark,
    summarize,
    to_markdown,
)
from napari_samrefine.evaluation.defects import synthesize_coarse_labels
from napari_samrefine.evaluation.metrics import iou, object_ious


@pytest.fixture(scope="module")
def small_pair(dsb_pair):
    """A 64 x 64 crop of the fluorescence image with a handful of nuclei."""
    image, labels = dsb_pair
    return BenchmarkPair("dsb2018", "crop", image[180:244, 60:124].copy(), labels[180:244, 60:124].copy())


def test_baselines_only_scores_against_the_truth(small_pair):
    df = run_benchmark([small_pair], configurations=None, baselines=["identity", "random_walker"])
    assert df["method"].tolist() == ["identity", "random_walker"]
    coarse = synthesize_coarse_labels(small_pair.image, small_pair.labels, seed=0)
    expected = object_ious(coarse.labels, small_pair.labels)
    ident = df.iloc[0]
    assert ident["n_objects"] == len(coarse.label_ids) >= 3
    assert ident["coarse_iou"] == pytest.approx(expected.iou.mean())
    assert ident["refined_iou"] == ident["coarse_iou"]
    assert ident["refined_biou"] == pytest.approx(expected.boundary_iou.mean())
    assert 0.75 <= ident["coarse_iou"] <= 0.85
    rw = df.iloc[1]
    assert rw["coarse_iou"] == ident["coarse_iou"] and rw["refined_iou"] != rw["coarse_iou"]
    assert (df["time_image_s"] >= 0).all()


def test_refine_configurations_score_what_refine_gives(small_pair, sam):
    """Each row scores refine() with its configuration's options on the synthesized coarse labels."""
    calls = []
    names = ["point+box+mask+CEBox", "box", "semantic STM"]
    df = run_benchmark(
        [small_pair],
        sam=sam,
        configurations=names,
        baselines=["identity"],
        refine_kwargs=dict(iterations=1),
        progress=lambda d, t, m: calls.append((d, t)),
    )
    assert df["method"].tolist() == [*names, "identity"]
    assert df["kind"].tolist() == ["SAMRefiner"] * 3 + ["baseline"]
    truth = small_pair.labels
    coarse = synthesize_coarse_labels(small_pair.image, truth, seed=0).labels
    for name, row in zip(names, df.itertuples(), strict=False):
        options = {**CONFIGURATIONS[name], "iterations": 1}
        if name == "semantic STM":  # one class, the whole foreground, scored as foreground
            refined = nsr.refine(small_pair.image, (coarse > 0).astype(coarse.dtype), sam, **options).labels
            assert row.refined_iou == pytest.approx(iou(refined > 0, truth > 0))
            assert row.coarse_iou == row.coarse_miou == pytest.approx(iou(coarse > 0, truth > 0))
        else:
            refined = nsr.refine(small_pair.image, coarse, sam, **options).labels
            scores = object_ious(refined, truth)
            assert row.refined_iou == pytest.approx(scores.iou.mean())
            assert row.refined_biou == pytest.approx(scores.boundary_iou.mean())
        assert row.refined_miou == pytest.approx(iou(refined > 0, truth > 0))
    # the options matter: the two instance configurations refine differently
    assert df["refined_iou"][0] != df["refined_iou"][1]
    assert calls[0] == (0, 4) and calls[-1] == (4, 4)


def test_cancel_stops_the_benchmark(small_pair):
    def cancel(done, total, message):
        if done == 1:
            raise Cancelled

    with pytest.raises(Cancelled):
        run_benchmark([small_pair], configurations=None, baselines=["identity", "random_walker"],
                      progress=cancel)


def test_bad_arguments_are_explained(small_pair):
    with pytest.raises(ValueError, match="Unknown configurations"):
        run_benchmark([small_pair], sam=None, configurations=["everything"])
    with pytest.raises(ValueError, match="need a model"):
        run_benchmark([small_pair], configurations=["box"])
    with pytest.raises(ValueError, match="Unknown baselines"):
        run_benchmark([small_pair], configurations=None, baselines=["magic"])


def test_summary_weights_objects_and_prints_markdown():
    df = pd.DataFrame(dict(
        dataset=["d", "d"], image=["a", "b"], method=["m", "m"], kind=["baseline"] * 2,
        n_objects=[1, 3], coarse_in_window=[1.0, 1.0],
        coarse_iou=[0.8, 0.8], refined_iou=[1.0, 0.6], coarse_biou=[0.5, 0.5], refined_biou=[0.2, 0.6],
        coarse_miou=[0.7, 0.9], refined_miou=[0.6, 1.0], time_image_s=[1.0, 3.0], time_object_ms=[0, 0],
    ))
    s = summarize(df).iloc[0]
    assert s["objects"] == 4 and s["images"] == 2
    assert s["refined_iou"] == pytest.approx((1.0 + 3 * 0.6) / 4)
    assert s["refined_biou"] == pytest.approx(0.5)
    assert s["refined_miou"] == pytest.approx(0.8)
    assert s["time_image_s"] == pytest.approx(2.0)
    assert s["time_object_ms"] == pytest.approx(1000.0)
    table = to_markdown(summarize(df)).splitlines()
    assert table[0].startswith("| dataset | method | images | objects |")
    assert table[1].startswith("|---|") and "| d | m | 2 | 4 | 0.800 | 0.700 |" in table[2]


def test_load_pairs_reads_dsb2018_and_stardist_folders():
    pairs = load_pairs(DATA, max_images=1, include_3d=True)
    datasets = [p.dataset for p in pairs]
    assert datasets[:2] == ["dsb2018", "stardist"] and "stardist-3d" in datasets
    assert all(p.labels.ndim == 2 and p.image.shape[:2] == p.labels.shape for p in pairs)
    with pytest.raises(ValueError, match="Unknown data sets"):
        load_pairs(DATA, ["coco"])
    with pytest.raises(FileNotFoundError, match="dsb2018"):
        load_pairs(DATA / "nowhere", ["dsb2018"])


def test_cli_benchmark_baselines(tmp_path, capsys):
    out = tmp_path / "rows.csv"
    rc = main(["benchmark", "--data", str(DATA), "--datasets", "stardist", "--max-images", "1",
               "--configs", "--baselines", "identity", "--output", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| stardist | identity | 1 | 125 |" in printed
    rows = pd.read_csv(out)
    assert rows["image"].tolist() == ["img2d"] and 0.75 <= rows["coarse_iou"][0] <= 0.85
