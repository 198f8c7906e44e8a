"""The command line end to end on real files, with a tiny checkpoint built by the test."""

import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_samrefine.cli import main


@pytest.fixture()
def pair(tmp_path, dsb_pair):
    image, labels = dsb_pair
    img = tmp_path / "in" / "cells.png"
    lab = tmp_path / "coarse" / "cells.tif"
    img.parent.mkdir()
    lab.parent.mkdir()
    Image.fromarray(image).save(img)
    tifffile.imwrite(lab, labels.astype(np.uint16))
    return img, lab


def test_refine_file_pair(tmp_path, pair, checkpoint, capsys):
    img, lab = pair
    out = tmp_path / "out" / "refined.tif"
    rc = main(["refine", str(img), str(lab), "-o", str(out), "--checkpoint", str(checkpoint),
               "--iterations", "2", "--table"])
    assert rc == 0
    refined = tifffile.imread(out)
    coarse = tifffile.imread(lab)
    assert refined.shape == coarse.shape and refined.dtype == coarse.dtype
    assert set(np.unique(refined)) <= set(np.unique(coarse))
    table = (out.with_suffix(".csv")).read_text().splitlines()
    assert table[0].startswith("label_id,plane,status") and len(table) == len(np.unique(coarse))
    assert "cells.png" in capsys.readouterr().out


def test_refine_folder_of_pairs_and_png_output(tmp_path, pair, checkpoint):
    img, lab = pair
    out_dir = tmp_path / "results"
    assert main(["refine", str(img.parent), str(lab.parent), "-o", str(out_dir),
                 "--checkpoint", str(checkpoint), "--iterations", "1", "--no-mask"]) == 0
    assert (out_dir / "cells.tif").exists()
    png = tmp_path / "r.png"
    assert main(["refine", str(img), str(lab), "-o", str(png), "--checkpoint", str(checkpoint),
                 "--iterations", "1"]) == 0
    assert np.asarray(Image.open(png)).dtype == np.uint16


def test_errors_are_messages_not_tracebacks(tmp_path, pair, checkpoint, capsys):
    img, lab = pair
    rc = main(["refine", str(img), str(tmp_path / "missing.tif"), "-o", str(tmp_path / "o.tif"),
               "--checkpoint", str(checkpoint)])
    assert rc == 2 and "missing.tif" in capsys.readouterr().err
    rc = main(["refine", str(img), str(lab), "-o", str(tmp_path / "o.tif"),
               "--model", "no_such_model"])
    assert rc == 2 and "no_such_model" in capsys.readouterr().err
    rc = main(["refine", str(img), str(lab), "-o", str(tmp_path / "o.jpg"),
               "--checkpoint", str(checkpoint)])
    assert rc == 2 and ".tif" in capsys.readouterr().err


def test_entry_point_is_installed():
    done = subprocess.run(
        [sys.executable, "-m", "napari_samrefine.cli", "refine", "--help"],
        capture_output=True, text=True, check=True,
    )
    assert "--checkpoint" in done.stdout and "--no-negative-point" in done.stdout and "--negative-point" in done.stdout


def test_models_lists_registry_and_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NAPARI_SAMREFINE_CACHE", str(tmp_path / "cache"))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "vit_b_lm" in out and "vit_h" in out and str(tmp_path / "cache") in out


def test_one_bit_png_labels_are_a_binary_mask(tmp_path, pair, checkpoint, capsys):
    """Issue 12: a 1-bit PNG is read as bool, refined per component, written as a mask."""
    img, lab = pair
    mask = tifffile.imread(lab) > 0
    one_bit = tmp_path / "mask.png"
    Image.fromarray(mask).convert("1").save(one_bit)
    assert Image.open(one_bit).mode == "1"
    before = one_bit.read_bytes()
    for out in (tmp_path / "refined.png", tmp_path / "refined2.tif"):
        rc = main(["refine", str(img), str(one_bit), "-o", str(out), "--checkpoint",
                   str(checkpoint), "--iterations", "1", "--table"])
        assert rc == 0
        refined = Image.open(out) if out.suffix == ".png" else None
        assert refined is None or refined.mode == "1"
        data = np.asarray(refined) if refined is not None else tifffile.imread(out)
        assert data.dtype == np.bool_ and data.shape == mask.shape and data.any()
        err = capsys.readouterr().err
        assert "note: The labels are a boolean mask" in err and "--binary one" in err
    n = len((tmp_path / "refined.csv").read_text().splitlines()) - 1
    assert n > 1  # one row per connected component
    rc = main(["refine", str(img), str(one_bit), "-o", str(tmp_path / "whole.png"),
               "--checkpoint", str(checkpoint), "--iterations", "1", "--binary", "one",
               "--table"])
    assert rc == 0 and "note:" not in capsys.readouterr().err
    assert len((tmp_path / "whole.csv").read_text().splitlines()) == 2  # one object
    assert one_bit.read_bytes() == before


@pytest.mark.parametrize(
    "flags, text",
    [(["--batch-size", "0"], "batch_size must be a whole number >= 1"),
     (["--iterations", "0"], "iterations must be a whole number >= 1"),
     (["--convergence", "1.5"], "convergence must be in [0, 1]"),
     (["--strength", "0"], "strength must be a positive number"),
     (["--cebox", "2"], "cebox must be 'auto', None or a fraction in [0, 1]")],
)
def test_parameter_errors_are_one_line_before_the_model_loads(tmp_path, pair, capsys, flags, text):
    img, lab = pair
    rc = main(["refine", str(img), str(lab), "-o", str(tmp_path / "o.tif"),
               "--model", "no_such_model", *flags])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and text in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.tif").exists()
