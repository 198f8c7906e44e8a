"""Issue 12: the user's files survive every run and every mistake.

Writes are atomic (a failed write leaves the old file as it was; two writers at
once never mix); an output that names an input file or folder is refused before
any work; an existing output needs --overwrite (for folder input it counts as done
and is skipped); two inputs with one name in a folder are an error. Every test
compares the user's files byte for byte.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image

from napari_samrefine import IoUAdaptor, load_iou_adaptor
from napari_samrefine.cli import main
from napari_samrefine.io import write_labels

NO_MODEL = ["--model", "no_such_model"]  # a run that got as far as the model fails on this


@pytest.fixture()
def pair(tmp_path, dsb_pair):
    """cells.tif image and cells.tif labels in two folders (same name, as users keep them)."""
    image, labels = dsb_pair
    img = tmp_path / "images" / "cells.tif"
    lab = tmp_path / "coarse" / "cells.tif"
    img.parent.mkdir()
    lab.parent.mkdir()
    tifffile.imwrite(img, image)
    tifffile.imwrite(lab, labels.astype(np.uint16))
    return img, lab


def snapshot(*folders: Path) -> dict[Path, bytes]:
    """Every file under the folders with its bytes."""
    return {p: p.read_bytes() for f in folders for p in sorted(Path(f).rglob("*")) if p.is_file()}


def refuse(argv, capsys, *text) -> str:
    """Run the CLI, expect a one-line error holding every ``text``; return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for t in text:
        assert t in err, err
    return err


# -- atomic writes ----------------------------------------------------------------------------


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "refined.tif"
    good = np.arange(20, dtype=np.uint16).reshape(4, 5)
    write_labels(out, good)
    before = snapshot(tmp_path)
    with pytest.raises(KeyError):  # tifffile cannot encode object arrays: fails mid-write
        write_labels(out, np.array([[object()]]))
    assert snapshot(tmp_path) == before
    np.testing.assert_array_equal(tifffile.imread(out), good)


def test_a_process_killed_between_write_and_rename_leaves_the_old_file(tmp_path):
    """SIGKILL after the new labels were written to the temporary file, before the rename."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "refined.tif"
    good = np.arange(20, dtype=np.uint16).reshape(4, 5)
    write_labels(out, good)
    original = out.read_bytes()
    script = (
        "import os, signal, numpy as np, tifffile\n"
        "from napari_samrefine.io import atomic_path\n"
        f"with atomic_path({str(out)!r}) as tmp:\n"
        "    tifffile.imwrite(tmp, np.full((4, 5), 7, np.uint16))\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    assert out.read_bytes() == original  # the old file, bit for bit
    leftovers = [p.name for p in tmp_path.iterdir() if p != out]
    assert all(name.startswith(".refined.tif.") and name.endswith(".part") for name in leftovers)


def test_a_disk_cache_write_killed_before_the_rename_leaves_the_old_entry(tmp_path, sam):
    """SIGKILL after a new embedding was written to the temporary file, before the rename."""
    import signal
    import subprocess
    import sys

    from napari_samrefine.engine.disk_cache import DiskEmbeddingCache
    from napari_samrefine.engine.embedding import embed_image
    from napari_samrefine.engine.embedding_file import read_embedding_file

    emb = embed_image(sam, np.random.default_rng(0).integers(0, 256, (64, 48, 3), np.uint8))
    disk = DiskEmbeddingCache(tmp_path)
    assert disk.write(emb.key, emb.features, emb.frame)
    (entry,) = tmp_path.iterdir()
    original, f = entry.read_bytes(), emb.frame
    script = (  # the same key, other features; the process dies where os.replace would run
        "import os, signal, torch\n"
        "from napari_samrefine.engine.disk_cache import DiskEmbeddingCache\n"
        "from napari_samrefine.engine.frame import SamFrame\n"
        "os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"frame = SamFrame({f.original_size!r}, {f.image_size}, {f.lowres_size}, {f.embedding_size})\n"
        f"DiskEmbeddingCache({str(tmp_path)!r}).write({emb.key!r}, torch.zeros(1, 8, 4, 4), frame)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    assert entry.read_bytes() == original  # the old entry, bit for bit
    leftovers = [p.name for p in tmp_path.iterdir() if p != entry]
    assert len(leftovers) == 1 and leftovers[0].startswith(f".{entry.name}.")
    assert leftovers[0].endswith(".part")
    written, _ = read_embedding_file(tmp_path / leftovers[0], emb.key)  # whole, never renamed
    assert torch.equal(written, torch.zeros(1, 8, 4, 4))
    fresh = DiskEmbeddingCache(tmp_path)
    assert fresh.info().entries == 1 and torch.equal(fresh.read(emb.key)[0], emb.features)


def test_a_failed_disk_cache_write_leaves_the_old_entry_and_no_temporary(tmp_path, sam):
    from napari_samrefine.engine.disk_cache import DiskEmbeddingCache
    from napari_samrefine.engine.embedding import embed_image
    from napari_samrefine.engine.frame import SamFrame

    emb = embed_image(sam, np.random.default_rng(1).integers(0, 256, (64, 48, 3), np.uint8))
    disk = DiskEmbeddingCache(tmp_path)
    assert disk.write(emb.key, emb.features, emb.frame)
    before = snapshot(tmp_path)
    # a frame whose sizes cannot be stored: the file fails while it is being written
    broken = SamFrame(original_size=(object(), 48), image_size=64, lowres_size=16, embedding_size=4)
    with pytest.warns(UserWarning, match="cannot be stored"):
        assert not DiskEmbeddingCache(tmp_path).write(emb.key, torch.zeros(1, 8, 4, 4), broken)
    assert snapshot(tmp_path) == before
    assert torch.equal(DiskEmbeddingCache(tmp_path).read(emb.key)[0], emb.features)


def test_written_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    out = write_labels(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_two_threads_saving_adaptors_never_collide(tmp_path, sam):
    a, b = IoUAdaptor.untrained(sam, seed=1), IoUAdaptor.untrained(sam, seed=2)
    assert not torch.equal(a.down, b.down)
    shared = tmp_path / "adaptor.pt"
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def save(adaptor, path, rounds=30):
        try:
            barrier.wait()
            for _ in range(rounds):
                adaptor.save(path)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            errors.append(err)

    jobs = [  # two adaptors to one path; one adaptor to two paths of one folder
        (a, shared), (b, shared), (a, tmp_path / "one.pt"), (a, tmp_path / "two.pt"),
    ]
    threads = [threading.Thread(target=save, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adaptor.pt", "one.pt", "two.pt"]
    loaded = load_iou_adaptor(shared)
    assert torch.equal(loaded.down, a.down) or torch.equal(loaded.down, b.down)
    for name in ("one.pt", "two.pt"):
        assert torch.equal(load_iou_adaptor(tmp_path / name).down, a.down)


# -- refine: outputs that would destroy inputs ----------------------------------------------


@pytest.mark.parametrize("target", ["labels", "image"])
def test_output_naming_an_input_file_is_refused(tmp_path, pair, checkpoint, capsys, target):
    img, lab = pair
    before = snapshot(tmp_path)
    named = {"labels": lab, "image": img}[target]
    # the same file under two spellings; --overwrite never allows replacing an input
    for out, flags in ((named, []), (named.parent / ".." / named.parent.name / named.name,
                                     ["--overwrite"])):
        refuse(["refine", str(img), str(lab), "-o", str(out), "--checkpoint", str(checkpoint),
                *flags], capsys, "Refusing to write", "input file", "-o")
    # refused before the model is looked up
    refuse(["refine", str(img), str(lab), "-o", str(named), *NO_MODEL], capsys, "input file")
    assert snapshot(tmp_path) == before


def test_output_that_is_a_link_to_the_labels_is_refused(tmp_path, pair, checkpoint, capsys):
    img, lab = pair
    (tmp_path / "link.tif").symlink_to(lab)
    os.link(lab, tmp_path / "hard.tif")
    before = snapshot(tmp_path)
    for out, flags in (("link.tif", []), ("hard.tif", []), ("link.tif", ["--overwrite"])):
        refuse(["refine", str(img), str(lab), "-o", str(tmp_path / out), "--checkpoint",
                str(checkpoint), *flags], capsys, "input file")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("target", ["labels", "image"])
def test_output_folder_that_is_an_input_folder_is_refused(tmp_path, pair, checkpoint, capsys,
                                                          target):
    img, lab = pair
    before = snapshot(tmp_path)
    folder = {"labels": lab.parent, "image": img.parent}[target]
    refuse(["refine", str(img.parent), str(lab.parent), "-o", str(folder), "--checkpoint",
            str(checkpoint)], capsys, "Refusing to write", "input folder")
    refuse(["refine", str(img.parent), str(lab.parent), "-o", str(folder / "." / ".."
           / folder.name), "--overwrite", *NO_MODEL], capsys, "input folder")
    assert snapshot(tmp_path) == before


def test_existing_outputs_need_overwrite(tmp_path, pair, checkpoint, capsys):
    img, lab = pair
    out = tmp_path / "out" / "refined.tif"
    out.parent.mkdir()
    out.write_bytes(b"my earlier result")
    before = snapshot(tmp_path)
    refuse(["refine", str(img), str(lab), "-o", str(out), *NO_MODEL], capsys,
           str(out), "already exists", "--overwrite")
    assert snapshot(tmp_path) == before
    # the table too: refined.csv exists although refined2.tif does not
    (out.parent / "refined2.csv").write_text("mine")
    before = snapshot(tmp_path)
    refuse(["refine", str(img), str(lab), "-o", str(out.parent / "refined2.tif"), "--table",
            *NO_MODEL], capsys, "refined2.csv", "--overwrite")
    assert snapshot(tmp_path) == before
    # with --overwrite the output is replaced (and only the output)
    inputs = snapshot(img.parent, lab.parent)
    assert main(["refine", str(img), str(lab), "-o", str(out), "--checkpoint", str(checkpoint),
                 "--iterations", "1", "--overwrite"]) == 0
    assert tifffile.imread(out).shape == tifffile.imread(lab).shape
    assert snapshot(img.parent, lab.parent) == inputs
    assert sorted(p.name for p in out.parent.iterdir()) == ["refined.tif", "refined2.csv"]


def test_folder_outputs_that_exist_are_skipped(tmp_path, pair, checkpoint, capsys):
    """Folder input is restartable: an existing output counts as done and is left alone."""
    img, lab = pair
    out = tmp_path / "results"
    out.mkdir()
    (out / "cells.tif").write_bytes(b"earlier")
    before = snapshot(tmp_path)
    assert main(["refine", str(img.parent), str(lab.parent), "-o", str(out), "--checkpoint",
                 str(checkpoint), "--iterations", "1"]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "--overwrite" in captured.err
    assert captured.out.strip().splitlines()[-1] == "0 files refined, 1 skipped (already done)."
    assert snapshot(tmp_path) == before
    # --overwrite refines it again
    assert main(["refine", str(img.parent), str(lab.parent), "-o", str(out), "--checkpoint",
                 str(checkpoint), "--iterations", "1", "--overwrite"]) == 0
    assert tifffile.imread(out / "cells.tif").shape == tifffile.imread(lab).shape


@pytest.mark.parametrize("folder", ["images", "coarse"])
def test_two_inputs_with_one_name_are_an_error(tmp_path, pair, checkpoint, capsys, folder):
    img, lab = pair
    clash = tmp_path / folder / "cells.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(clash)
    before = snapshot(tmp_path)
    refuse(["refine", str(img.parent), str(lab.parent), "-o", str(tmp_path / "out"),
            "--checkpoint", str(checkpoint)], capsys, "cells.png", "cells.tif", "two files")
    assert snapshot(tmp_path) == before


# -- adapt and benchmark ----------------------------------------------------------------------


def test_adapt_output_guards(tmp_path, pair, checkpoint, capsys):
    img, lab = pair
    existing = tmp_path / "adaptor.pt"
    existing.write_bytes(b"an adaptor I trained last week")
    before = snapshot(tmp_path)
    base = ["adapt", str(img), "--labels", str(lab)]
    refuse([*base, "-o", str(lab), *NO_MODEL], capsys, "input file")
    refuse([*base, "-o", str(checkpoint), "--checkpoint", str(checkpoint), "--overwrite"], capsys,
           "input file")
    refuse([*base, "-o", str(existing), *NO_MODEL], capsys, "adaptor.pt", "--overwrite")
    assert snapshot(tmp_path) == before


def test_benchmark_output_guards(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "stardist").mkdir(parents=True)
    rows = tmp_path / "rows.csv"
    rows.write_text("earlier rows")
    before = snapshot(tmp_path)
    base = ["benchmark", "--data", str(data), "--configs", "--baselines", "identity"]
    refuse([*base, "--output", str(data / "rows.csv")], capsys, "data folder", "--output")
    refuse([*base, "--output", str(rows)], capsys, "rows.csv", "--overwrite")
    assert snapshot(tmp_path) == before


def test_tables_are_written_whole(tmp_path):
    from napari_samrefine.io import write_table

    out = write_table(tmp_path / "t" / "rows.csv", pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
    assert out.read_text().splitlines() == ["a,b", "1,x", "2,y"]
    assert [p.name for p in out.parent.iterdir()] == ["rows.csv"]
