"""``napari-samrefine judge`` end to end on DSB2018 files, with a tiny checkpoint file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image
from scipy import ndimage

from _data import DSB2018
from napari_samrefine import judge_refinement
from napari_samrefine.cli import main

SUPPORT = "1db1cddf28e3"  # another DSB2018 fluorescence image, 9 nuclei


@pytest.fixture()
def files(tmp_path, dsb_pair):
    """The image, coarse labels, refined labels (each object dilated by one pixel) and a support pair."""
    image, coarse = dsb_pair
    refined = ndimage.grey_dilation(coarse, size=3)
    refined[coarse > 0] = coarse[coarse > 0]  # grow into the background only, keep every id
    paths = {
        "image": tmp_path / "cells.png",
        "coarse": tmp_path / "coarse.tif",
        "refined": tmp_path / "refined.tif",
        "support_image": DSB2018 / "images" / f"{SUPPORT}.png",
        "support_labels": DSB2018 / "labels" / f"{SUPPORT}.tif",
    }
    Image.fromarray(image).save(paths["image"])
    tifffile.imwrite(paths["coarse"], coarse.astype(np.uint16))
    tifffile.imwrite(paths["refined"], refined.astype(np.uint16))
    return paths


def _argv(files, output, checkpoint, *extra) -> list[str]:
    return [
        "judge", str(files["image"]), str(files["coarse"]), str(files["refined"]),
        "--support-image", str(files["support_image"]),
        "--support-labels", str(files["support_labels"]),
        "-o", str(output), "--checkpoint", str(checkpoint), *extra,
    ]


def test_judge_writes_the_library_result_and_a_table(tmp_path, files, checkpoint, sam, capsys):
    out, csv = tmp_path / "out" / "accepted.tif", tmp_path / "verdicts.csv"
    assert main(_argv(files, out, checkpoint, "--table", str(csv), "--k", "2", "--tau", "0.03")) == 0
    expected = judge_refinement(
        np.asarray(Image.open(files["image"])), tifffile.imread(files["coarse"]),
        tifffile.imread(files["refined"]), [np.asarray(Image.open(files["support_image"]))],
        [tifffile.imread(files["support_labels"])], sam=sam, k=2, tau=0.03,
    )
    accepted = tifffile.imread(out)
    assert accepted.dtype == np.uint16
    np.testing.assert_array_equal(accepted, expected.accepted)
    table = pd.read_csv(csv)
    n_objects = len(np.unique(tifffile.imread(files["coarse"]))) - 1
    assert len(table) == n_objects and sorted(table["label_id"]) == sorted(expected.verdicts)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    counts = expected.table()["verdict"].value_counts()
    unjudged = counts.get("could not judge", 0)  # named only when some object's predictions all missed
    assert line == (
        f"cells.png: {n_objects} objects judged: {counts.get('improved', 0)} improved, "
        f"{counts.get('degraded', 0)} degraded, {counts.get('uncertain', 0)} uncertain"
        + (f", {unjudged} could not judge" if unjudged else "") + f" -> {out}"
    )


def test_judge_refuses_to_overwrite_an_input_or_an_existing_output(tmp_path, files, checkpoint, capsys):
    before = files["refined"].read_bytes()
    for output in (files["refined"], files["coarse"]):
        rc = main(_argv(files, output, checkpoint, "--overwrite"))
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and str(output.name) in err
    assert files["refined"].read_bytes() == before
    existing = tmp_path / "exists.tif"
    existing.write_bytes(b"keep")
    assert main(_argv(files, existing, checkpoint)) == 2
    assert "--overwrite" in capsys.readouterr().err and existing.read_bytes() == b"keep"
    rc = main(_argv(files, tmp_path / "a.tif", checkpoint, "--table", str(files["coarse"])))
    assert rc == 2 and files["coarse"].exists()


@pytest.mark.parametrize(
    "extra, text",
    [(["--k", "0"], "--k must be"), (["--labels", "3,x"], "--labels must be"),
     (["--support-labels", "a.tif", "b.tif"], "2 support label files")],
)
def test_judge_option_errors_are_one_line(tmp_path, files, checkpoint, capsys, extra, text):
    rc = main(_argv(files, tmp_path / "a.tif", checkpoint, *extra))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and text in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a.tif").exists()
