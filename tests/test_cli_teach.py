"""``napari-samrefine finetune`` and ``refine --finetune`` end to end, with a tiny checkpoint."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import tifffile
import torch
from skimage.segmentation import relabel_sequential

from napari_samrefine import refine
from napari_samrefine.cli import main
from napari_samrefine.models.cache import model_cache_info
from napari_samrefine.models.finetune_file import base_identity, read_finetune_file
from napari_samrefine.models.loading import load_sam
from napari_samrefine.testing import tiny_sam

QUICK = ["--epochs", "1", "--augment", "0", "5", "--kinds", "defects", "eroded", "--device", "cpu"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, dsb_pair, sam):
    """Two 96 x 96 DSB crops with their labels as TIFF files, and the tiny SAM as a checkpoint."""
    folder = tmp_path_factory.mktemp("teach")
    image, labels = dsb_pair
    pairs = []
    for k, (y, x) in enumerate(((0, 0), (120, 100))):
        img, lab = folder / "images" / f"c{k}.tif", folder / "labels" / f"c{k}.tif"
        img.parent.mkdir(exist_ok=True)
        lab.parent.mkdir(exist_ok=True)
        tifffile.imwrite(img, image[y:y + 96, x:x + 96])
        tifffile.imwrite(lab, relabel_sequential(labels[y:y + 96, x:x + 96].astype(np.int32))[0])
        pairs.append((img, lab))
    base = folder / "base model.pth"
    torch.save(sam.state_dict(), base)
    return folder, pairs, base


@pytest.fixture(scope="module")
def taught(files):
    """The file ``napari-samrefine finetune`` wrote on both pairs, and what the run printed."""
    folder, pairs, base = files
    out = folder / "taught" / "my cells.pt"
    before = [(i.read_bytes(), lab.read_bytes()) for i, lab in pairs]
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:  # capsys is one test's: stdout is taken here
        mp.setattr(sys, "stdout", printed)
        rc = main(["finetune", *(str(i) for i, _ in pairs), "--labels", *(str(b) for _, b in pairs),
                   "--checkpoint", str(base), "--out", str(out), *QUICK])
    assert rc == 0
    assert [(i.read_bytes(), lab.read_bytes()) for i, lab in pairs] == before  # inputs untouched
    text = printed.getvalue()
    return out, [line for line in text.splitlines() if line.startswith("epoch")], text


def test_finetune_writes_the_file_and_prints_each_epoch(files, taught):
    _, pairs, base = files
    out, lines, printed = taught
    assert [line.split(":")[0] for line in lines] == ["epoch 0", "epoch 1"]
    assert "validation IoU" in lines[1] and "loss" in lines[1]
    assert f"Saved the taught model to {out}" in printed and f"--finetune {out}" in printed
    meta = read_finetune_file(out).metadata
    assert meta["base_model"] == "base model.pth"
    assert meta["base_identity"] == base_identity(load_sam(base, device="cpu"))
    assert meta["options"]["epochs"] == 1 and meta["options"]["augment"] == [0, 5]
    assert meta["options"]["kinds"] == ["defects", "eroded"]
    assert len(meta["images"]) + len(meta["options"]["validation_images"]) == len(pairs)
    assert not list(out.parent.glob("*.tmp*"))  # written atomically: no leftover


def test_refine_with_finetune_uses_the_taught_model(files, taught, tmp_path, capsys):
    folder, pairs, base = files
    out = taught[0]
    img, lab = pairs[1]
    result = tmp_path / "refined.tif"
    rc = main(["refine", str(img), str(lab), "-o", str(result), "--checkpoint", str(base),
               "--finetune", str(out), "--device", "cpu", "--scale", "none"])
    assert rc == 0, capsys.readouterr().err
    model = load_sam(base, device="cpu", finetune=out)
    expected = refine(tifffile.imread(img), tifffile.imread(lab), model, scale=None)
    assert np.array_equal(tifffile.imread(result), expected.labels)
    # folder input: each file is refined by the taught model too
    folder_out = tmp_path / "folder"
    rc = main(["refine", str(img.parent), str(lab.parent), "-o", str(folder_out), "--workers", "0",
               "--checkpoint", str(base), "--finetune", str(out), "--device", "cpu", "--scale", "none"])
    assert rc == 0, capsys.readouterr().err
    assert np.array_equal(tifffile.imread(folder_out / lab.name), expected.labels)


def test_a_file_taught_from_another_base_is_refused_before_loading(files, taught, tmp_path, capsys):
    folder, pairs, _ = files
    other = tmp_path / "other.pth"
    torch.save(tiny_sam(seed=1).state_dict(), other)
    img, lab = pairs[0]
    result = tmp_path / "refined.tif"
    loads = model_cache_info().loads
    rc = main(["refine", str(img), str(lab), "-o", str(result), "--checkpoint", str(other),
               "--finetune", str(taught[0]), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "was taught from 'base model.pth'" in err and "other.pth" in err and "--checkpoint" in err
    assert model_cache_info().loads == loads and not result.exists()
    # a file that is not a taught model's is refused in one line too
    rc = main(["refine", str(img), str(lab), "-o", str(result), "--checkpoint", str(other),
               "--finetune", str(other), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "not a valid napari-samrefine taught-model" in err


@pytest.mark.parametrize(
    ("change", "text"),
    [(["--augment", "9"], "--augment must be"),
     (["--max-minutes", "0"], "--max-minutes must be more than 0"),
     (["--validation", "1"], "validation must be a fraction"),
     (["--epochs", "0"], "epochs, batch_size and patience must be at least 1"),
     (["--channel", "red"], "--channel must be an integer"),
     (["--lora-rank", "-1"], "lora_rank must be 0 (off) or more")],
)
def test_bad_options_are_one_line_errors_before_any_model_loads(files, tmp_path, capsys, change, text):
    _, pairs, base = files
    out = tmp_path / "t.pt"
    loads = model_cache_info().loads
    rc = main(["finetune", str(pairs[0][0]), "--labels", str(pairs[0][1]), "--checkpoint", str(base),
               "-o", str(out), *QUICK, *change])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and text in err, err
    assert model_cache_info().loads == loads and not out.exists()


def test_bad_inputs_name_the_file(files, tmp_path, capsys):
    _, pairs, base = files
    (img, lab), (img1, _) = pairs
    empty = tmp_path / "empty.tif"
    tifffile.imwrite(empty, np.zeros((96, 96), np.int32))
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.ones((50, 96), np.int32))
    out = tmp_path / "t.pt"
    loads = model_cache_info().loads
    for args, text in (
        ([str(img), "--labels", str(empty)], "empty.tif holds no object"),
        ([str(img), "--labels", str(small)], "labels of its own height and width"),
        ([str(img), str(img1), "--labels", str(lab)], "2 images but 1 label files"),
        ([str(img), "--labels", str(tmp_path / "missing.tif")], "missing.tif"),
    ):
        rc = main(["finetune", *args, "--checkpoint", str(base), "-o", str(out), *QUICK])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and text in err, err
    assert model_cache_info().loads == loads and not out.exists()
    # the output is never an input, and an existing one needs --overwrite
    rc = main(["finetune", str(img), "--labels", str(lab), "--checkpoint", str(base), "-o", str(lab),
               *QUICK])
    assert rc == 2 and lab.stat().st_size > 0 and "input" in capsys.readouterr().err
    out.write_bytes(b"mine")
    rc = main(["finetune", str(img), "--labels", str(lab), "--checkpoint", str(base), "-o", str(out),
               *QUICK])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"mine"


def test_lora_rank_teaches_encoder_adaptors_that_refine_uses(files, tmp_path, capsys):
    _, pairs, base = files
    (img, lab), _ = pairs
    out = tmp_path / "adapted.pt"
    rc = main(["finetune", str(img), "--labels", str(lab), "--checkpoint", str(base), "-o", str(out),
               *QUICK, "--lora-rank", "2"])
    assert rc == 0, capsys.readouterr().err
    saved = read_finetune_file(out)
    assert saved.metadata["options"]["lora_rank"] == 2
    assert any(k.startswith("image_encoder.") and k.endswith(".lora_a") for k in saved.weights)
    result = tmp_path / "refined.tif"
    rc = main(["refine", str(img), str(lab), "-o", str(result), "--checkpoint", str(base),
               "--finetune", str(out), "--device", "cpu", "--scale", "none"])
    assert rc == 0, capsys.readouterr().err
    model = load_sam(base, device="cpu", finetune=out)
    assert model.image_encoder is not load_sam(base, device="cpu").image_encoder
    expected = refine(tifffile.imread(img), tifffile.imread(lab), model, scale=None)
    assert np.array_equal(tifffile.imread(result), expected.labels)
