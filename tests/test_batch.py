"""Many files (issue 11, item 4): ``refine_many`` and ``refine`` on folders, on dask.distributed.

A local cluster of two worker processes on 127.0.0.1 (one thread each) refines
a folder of real nuclei crops (PNG and TIFF images, TIFF labels) and one
corrupt file with the tiny SAM saved as a checkpoint: the files are the ones a
single process writes, finished files are skipped on a rerun, the corrupt
file is reported while the others are written, and each worker loads the
model once per batch.
"""

from __future__ import annotations

import logging
import shutil
import sys

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from _data import DSB2018
from napari_samrefine._progress import Cancelled
from napari_samrefine.batch import cluster
from napari_samrefine.batch import one_file as batch_file
from napari_samrefine.batch.many import batch_summary, refine_many
from napari_samrefine.cli import main
from napari_samrefine.io import find_pairs
from napari_samrefine.models.cache import model_cache_info

distributed = pytest.importorskip("distributed")

NAMES = ("00071198d059", "1db1cddf28e3", "35ca5f142a7d", "98c5ead89cd0")
OPTIONS = dict(device="cpu", iterations=2)


@pytest.fixture(scope="module")
def client():
    """A local cluster of two single-threaded worker processes on 127.0.0.1."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", processes=True,
        dashboard_address=":0", scheduler_kwargs={"dashboard": False}, silence_logs=logging.ERROR,
    ) as cluster, distributed.Client(cluster) as c:
        c.wait_for_workers(2)
        yield c


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, sam):
    """The session tiny SAM as a checkpoint file, which the workers load themselves."""
    path = tmp_path_factory.mktemp("model") / "tiny.pth"
    torch.save(sam.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """images/ (2 PNG, 2 TIFF; 128 px crops of DSB2018) and coarse/ (TIFF labels), plus a
    corrupt image (garbage bytes named like a PNG) with valid labels."""
    root = tmp_path_factory.mktemp("batch")
    images, labels = root / "images", root / "coarse"
    images.mkdir()
    labels.mkdir()
    for k, name in enumerate(NAMES):
        img = np.asarray(Image.open(DSB2018 / "images" / f"{name}.png"))[64:192, 64:192]
        lab = tifffile.imread(DSB2018 / "labels" / f"{name}.tif")[64:192, 64:192]
        assert lab.max() > 0
        if k % 2:
            tifffile.imwrite(images / f"{name}.tif", img)
        else:
            Image.fromarray(img).save(images / f"{name}.png")
        tifffile.imwrite(labels / f"{name}.tif", lab)
    (images / "zz_corrupt.png").write_bytes(b"\x89PNG this is not an image" * 20)
    shutil.copy(labels / f"{NAMES[0]}.tif", labels / "zz_corrupt.tif")
    return images, labels


@pytest.fixture(scope="module")
def single(folders, model_file, tmp_path_factory):
    """The reference: the folder refined in this process; (output folder, table)."""
    out = tmp_path_factory.mktemp("single") / "refined"
    table = refine_many(find_pairs(*folders), out, model_file, workers=1, **OPTIONS)
    return out, table


def _arrays(folder):
    return {p.name: tifffile.imread(p) for p in sorted(folder.glob("*.tif"))}


def test_single_process_table(single):
    out, table = single
    assert list(table.columns) == list(batch_file.RESULT_COLUMNS)
    assert list(table.status[:4]) == ["done"] * 4
    assert table.status[4].startswith("failed: UnidentifiedImageError") and "zz_corrupt" in table.status[4]
    assert (table.objects[:4] > 0).all() and set(table.worker) == {"in-process"}
    assert sorted(_arrays(out)) == [f"{n}.tif" for n in NAMES]  # nothing for the corrupt file
    assert not list(out.glob(".*"))  # no temporary file left behind
    assert batch_summary(table) == "4 files refined, 1 failed"


def test_cluster_writes_what_one_process_writes(client, folders, model_file, single, tmp_path):
    loads_before = {w: info.loads for w, info in client.run(model_cache_info).items()}
    out = tmp_path / "refined"
    seen = []
    table = refine_many(find_pairs(*folders), out, model_file, client=client,
                        progress=lambda done, total, message: seen.append((done, total, message)),
                        **OPTIONS)
    # the same files, identical arrays; the corrupt one reported, the others finished
    reference = _arrays(single[0])
    written = _arrays(out)
    assert sorted(written) == sorted(reference)
    for name, array in reference.items():
        assert written[name].dtype == array.dtype and np.array_equal(written[name], array), name
    assert list(table.status) == list(single[1].status)
    assert set(table.worker[:4]) <= set(client.scheduler_info()["workers"])
    # one model load per worker for the whole batch (some worker refined several files)
    loads_after = {w: info.loads for w, info in client.run(model_cache_info).items()}
    assert {w: loads_after[w] - loads_before[w] for w in loads_after} == dict.fromkeys(loads_after, 1)
    assert table.worker.value_counts().max() >= 2
    # progress: once at the start, then one line per file
    assert seen[0] == (0, 5, "") and [d for d, _, _ in seen] == [0, 1, 2, 3, 4, 5]
    assert any(m.startswith("zz_corrupt.png: failed: UnidentifiedImageError") for _, _, m in seen)
    assert any(m.startswith(f"{NAMES[0]}.png: ") and m.endswith(f"{NAMES[0]}.tif") for _, _, m in seen)

    # rerun: finished files are skipped (untouched), the failed one is tried again
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = refine_many(find_pairs(*folders), out, model_file, client=client, **OPTIONS)
    assert list(again.status[:4]) == ["skipped (already done)"] * 4
    assert again.status[4].startswith("failed: ")
    assert batch_summary(again) == "0 files refined, 4 skipped (already done), 1 failed"
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    # an interrupted run: the missing output alone is refined
    (out / f"{NAMES[1]}.tif").unlink()
    third = refine_many(find_pairs(*folders), out, model_file, client=client, **OPTIONS)
    assert list(third.status[:4]) == ["skipped (already done)", "done", *["skipped (already done)"] * 2]
    assert np.array_equal(tifffile.imread(out / f"{NAMES[1]}.tif"), reference[f"{NAMES[1]}.tif"])


def test_cli_folder_on_two_workers(folders, model_file, single, tmp_path, capsys):
    images, labels = folders
    out = tmp_path / "refined"
    rc = main(["refine", str(images), str(labels), "-o", str(out), "--checkpoint", str(model_file),
               "--device", "cpu", "--iterations", "2", "--workers", "2"])
    captured = capsys.readouterr()
    assert rc == 1  # a file failed
    assert captured.out.strip().splitlines()[-1] == "4 files refined, 1 failed: see the lines above."
    assert "zz_corrupt.png: failed: UnidentifiedImageError" in captured.err
    assert f"{NAMES[0]}.png: " in captured.out
    written, reference = _arrays(out), _arrays(single[0])
    assert sorted(written) == sorted(reference)
    assert all(np.array_equal(written[n], reference[n]) for n in reference)


def test_errors_before_any_work(folders, model_file, tmp_path, client):
    pairs = find_pairs(*folders)
    with pytest.raises(TypeError, match="iteratoins"):
        refine_many(pairs, tmp_path / "o", model_file, client=client, iteratoins=2)
    with pytest.raises(ValueError, match="iterations"):
        refine_many(pairs, tmp_path / "o", model_file, client=client, iterations=0)
    with pytest.raises(ValueError, match="input folder"):
        refine_many(pairs, folders[1], model_file, client=client)
    with pytest.raises(ValueError, match="no_such_model"):
        refine_many(pairs, tmp_path / "o", "no_such_model", workers=2)
    with pytest.raises(TypeError, match="loaded model"):
        refine_many(pairs, tmp_path / "o", object(), client=client)
    assert not (tmp_path / "o").exists()


def test_cancel_stops_the_batch(folders, model_file, tmp_path):
    def progress(done, total, message):
        if done == 1:
            raise Cancelled

    with pytest.raises(Cancelled):
        refine_many(find_pairs(*folders), tmp_path / "o", model_file, workers=1,
                    progress=progress, **OPTIONS)
    assert len(list((tmp_path / "o").iterdir())) == 1


def test_without_distributed(folders, model_file, tmp_path, monkeypatch, capsys, sam):
    monkeypatch.setattr(cluster, "distributed_available", lambda: False)
    assert cluster.default_workers(100, "cpu") == 1
    # a loaded model works in this process
    table = refine_many(find_pairs(*folders)[:1], tmp_path / "o", sam, **OPTIONS)
    assert list(table.status) == ["done"] and table.worker[0] == "in-process"
    # the command line names the extra when a cluster is asked for
    images, labels = folders
    for flags in (["--workers", "2"], ["--scheduler", "tcp://127.0.0.1:1"]):
        rc = main(["refine", str(images), str(labels), "-o", str(tmp_path / "cli"),
                   "--checkpoint", str(model_file), *flags])
        err = capsys.readouterr().err
        assert rc == 2 and 'pip install "napari-samrefine[distributed]"' in err, err
    monkeypatch.setitem(sys.modules, "distributed", None)  # not importable
    with pytest.raises(ModuleNotFoundError, match="distributed"):
        refine_many(find_pairs(*folders), tmp_path / "o2", model_file, workers=2, **OPTIONS)


def test_default_workers(monkeypatch):
    monkeypatch.setattr(cluster, "_cpu_count", lambda: 16)
    monkeypatch.setattr(cluster, "_memory_bytes", lambda: 24 * 2**30)
    assert cluster.default_workers(1, "cpu") == 1
    assert cluster.default_workers(3, "cpu") == 3
    assert cluster.default_workers(1000, "cpu") == 6  # 4 GiB each
    monkeypatch.setattr(cluster, "_memory_bytes", lambda: 256 * 2**30)
    assert cluster.default_workers(1000, "cpu") == 16
