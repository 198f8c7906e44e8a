"""The command line end to end on real files, with a tiny checkpoint built by the test."""

import argparse
import re
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_samrefine import load_sam, refine
from napari_samrefine.cli import HelpFormatter, build_parser, main


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
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("cells.png: ") and line.endswith(f"-> {out}")
    assert " objects refined" in line and not re.search(r"[{}\[\]]", line)  # words, not a dict


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


@pytest.fixture()
def loaded(checkpoint):
    """The model the command line loads from ``checkpoint`` (fast encoder included)."""
    return load_sam(checkpoint, device="cpu")


def _refined_by_cli(tmp_path, image, labels, checkpoint, *flags) -> np.ndarray:
    """Write the pair as TIFFs, run ``refine`` with ``flags`` and read the result."""
    img, lab, out = tmp_path / "image.tif", tmp_path / "labels.tif", tmp_path / "out.tif"
    tifffile.imwrite(img, image, photometric="minisblack")
    tifffile.imwrite(lab, labels, photometric="minisblack")
    assert main(["refine", str(img), str(lab), "-o", str(out), "--checkpoint", str(checkpoint),
                 "--iterations", "1", "--overwrite", *flags]) == 0
    return tifffile.imread(out)


def test_tile_and_halo_give_the_library_result(tmp_path, dsb_pair, checkpoint, loaded):
    image, labels = dsb_pair
    labels = labels.astype(np.uint16)
    for flags, kwargs in ((["--tile", "128", "--halo", "8"], dict(tile=128, halo=8)),
                          (["--tile", "none"], dict(tile=None))):
        expected = refine(image, labels, loaded, iterations=1, **kwargs).labels
        np.testing.assert_array_equal(_refined_by_cli(tmp_path, image, labels, checkpoint, *flags),
                                      expected)


def test_planes_and_percentiles_give_the_library_result(tmp_path, stardist_stack, checkpoint, loaded):
    image, labels = (a[:, :64, :64].copy() for a in stardist_stack)
    labels = labels.astype(np.uint16)
    expected = refine(image, labels, loaded, iterations=1, planes=[0, 2], percentiles=(2.0, 98.0)).labels
    got = _refined_by_cli(tmp_path, image, labels, checkpoint,
                          "--planes", "0,2", "--percentiles", "2", "98")
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got[[1, 3]], labels[[1, 3]])  # the other planes stay coarse


def test_channel_axis_gives_the_library_result(tmp_path, stained_pair, checkpoint, loaded):
    image, labels = stained_pair
    channels_first = np.moveaxis(image, -1, 0).copy()
    labels = labels.astype(np.uint16)
    expected = refine(channels_first, labels, loaded, iterations=1, channel_axis=0).labels
    got = _refined_by_cli(tmp_path, channels_first, labels, checkpoint, "--channel-axis", "0")
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "flags, text",
    [(["--tile", "big"], "--tile must be"), (["--tile", "16"], "tile must be None, 'auto'"),
     (["--tile", "128", "--halo", "64"], "halo must be"), (["--planes", "0,-1"], "--planes must be"),
     (["--percentiles", "90", "10"], "percentiles must be two numbers 0 <= low < high <= 100")],
)
def test_image_option_errors_are_one_line(tmp_path, pair, capsys, flags, text):
    img, lab = pair
    rc = main(["refine", str(img), str(lab), "-o", str(tmp_path / "o.tif"),
               "--model", "no_such_model", *flags])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and text in err and len(err.splitlines()) == 1


def _subcommands() -> dict:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ["refine", "models", "adapt", "benchmark", "judge"])
def test_help_of_every_subcommand_shows_defaults(command):
    parser = _subcommands()[command]
    text = " ".join(parser.format_help().split())
    assert "(default: None)" not in text
    for action in parser._actions:
        takes_value = action.option_strings and action.nargs != 0 and not action.required
        if takes_value and action.help is not argparse.SUPPRESS:
            shown = HelpFormatter(command)._get_help_string(action)
            assert "default" in shown.lower(), f"{command} {action.option_strings}: {shown!r}"
    expected = {"refine": ["--iterations ITERATIONS cascade iterations; default: the model's measured",
                           "(default: tile/8)", "(default: 1.0 99.8)", "(default: auto)"],
                "judge": ["(default: 3)", "(default: 0.02)", "(default: hm)", "(default: sam)"],
                "adapt": ["(default: 1)"], "benchmark": ["(default: 0.75 0.85)"], "models": []}
    for piece in expected[command]:
        assert piece in text


@pytest.fixture()
def noted_checkpoint(tmp_path):
    """A tiny SAM file registered with a profile that carries an adaptor note (as LiteMedSAM's)."""
    from dataclasses import replace

    import pooch
    import torch

    from napari_samrefine.models.profile import SAM_PROFILE
    from napari_samrefine.models.registry import register_model, unregister_model
    from napari_samrefine.testing import tiny_sam

    path = tmp_path / "noted.pth"
    torch.save(tiny_sam(seed=11).state_dict(), path)
    note = "IoU adaptors measured worse for this model: mean IoU 0.64 -> 0.61."
    profile = replace(SAM_PROFILE, defaults=replace(SAM_PROFILE.defaults, adaptor_note=note))
    register_model("noted_tiny_test", "https://example.org/noted.pth",
                   pooch.file_hash(str(path), alg="xxh128"), "custom", profile=profile)
    yield path, note
    unregister_model("noted_tiny_test")


def test_adapt_warns_with_the_model_profiles_adaptor_note(tmp_path, pair, checkpoint, noted_checkpoint,
                                                          capsys):
    img, lab = pair
    path, note = noted_checkpoint
    rc = main(["adapt", str(img), "--labels", str(lab), "-o", str(tmp_path / "a.pt"),
               "--checkpoint", str(path), "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0 and "Saved the IoU adaptor" in out.out
    assert f"warning: {note}" in out.err
    # a model whose profile has no note: no warning
    rc = main(["adapt", str(img), "--labels", str(lab), "-o", str(tmp_path / "b.pt"),
               "--checkpoint", str(checkpoint), "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0 and "Saved the IoU adaptor" in out.out
    assert "warning" not in out.err.lower()
