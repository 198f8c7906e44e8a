"""``refine(..., support=)``: the JFS verdict column, on real DSB2018 crops with the tiny SAM."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage as ndi

from _data import DSB2018
from napari_samrefine import judge_refinement, refine
from napari_samrefine.cli import main
from napari_samrefine.engine.embedding import EmbeddingCache

VERDICTS = {"improved", "degraded", "uncertain", "could not judge"}


def load(name: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(Image.open(DSB2018 / "images" / f"{name}.png"))[:size, :size]
    labels = tifffile.imread(DSB2018 / "labels" / f"{name}.tif")[:size, :size]
    return (image if image.ndim == 2 else image[..., 0]), labels.astype(np.uint16)


def coarsened(labels: np.ndarray) -> np.ndarray:
    """Every object dilated by 2 px (ids kept; a pixel claimed twice goes to the larger id)."""
    grown = ndi.grey_dilation(labels, size=5)
    return np.where(labels > 0, labels, grown).astype(labels.dtype)


@pytest.fixture(scope="module")
def query():
    return load("35ca5f142a7d", 128)  # 16 nuclei; 1, 11, 32 and 48 lie inside the crop


@pytest.fixture(scope="module")
def support():
    return load("98c5ead89cd0", 96)


IDS = [1, 11, 32, 48]


@pytest.mark.parametrize("keep", ["refined", "better"])
def test_the_column_is_judge_refinement_on_the_result(sam, query, support, keep):
    image, truth = query
    coarse = coarsened(truth)
    before = coarse.copy()
    kw = dict(iterations=1, label_ids=IDS, keep=keep, embedding_cache=EmbeddingCache())
    plain = refine(image, coarse, sam, **kw)
    judged = refine(image, coarse, sam, support=support, **kw)
    np.testing.assert_array_equal(coarse, before)  # the input is not modified
    # a column only: the masks and every other column are those refine gives without support
    np.testing.assert_array_equal(judged.labels, plain.labels)
    table, plain_table = judged.table(), plain.table()
    assert list(table.columns)[-1] == "jfs_verdict"
    assert (plain_table["jfs_verdict"] == "").all()
    others = [c for c in table.columns if c != "jfs_verdict"]
    assert table[others].equals(plain_table[others])

    direct = judge_refinement(
        image, coarse, judged.labels, *support, sam=sam, label_ids=IDS,
        embedding_cache=EmbeddingCache(),
    )  # fmt: skip
    by_id = dict(zip(table["label_id"], table["jfs_verdict"], strict=True))
    assert {i: by_id[i] for i in IDS} == direct.verdicts
    assert set(direct.verdicts.values()) <= VERDICTS
    skipped = table[~table["label_id"].isin(IDS)]
    assert len(skipped) == 12 and (skipped["status"] == "skipped").all()
    assert (skipped["jfs_verdict"] == "").all()
    # an object kept coarse is judged on its coarse mask: the same mask, "uncertain"
    kept = table[table["status"] == "kept-coarse"]
    assert len(kept) == (len(IDS) if keep == "better" else 0)  # the tiny SAM's masks stray
    assert (kept["jfs_verdict"] == "uncertain").all()


def test_a_list_of_pairs(sam, query, support):
    image, truth = query
    coarse = coarsened(truth)
    pairs = [support, (image[:64, :64], truth[:64, :64])]
    result = refine(image, coarse, sam, iterations=1, label_ids=[11, 32], support=pairs)
    direct = judge_refinement(
        image, coarse, result.labels, [p[0] for p in pairs], [p[1] for p in pairs], sam=sam,
        label_ids=[11, 32],
    )  # fmt: skip
    table = result.table().set_index("label_id")
    assert {i: table.loc[i, "jfs_verdict"] for i in (11, 32)} == direct.verdicts


def test_refusals_name_the_limitation(sam, query, support, tmp_path):
    image, truth = query
    coarse = coarsened(truth)
    with pytest.raises(ValueError, match="2D labels only"):
        refine(np.stack([image] * 2), np.stack([coarse] * 2), sam, support=support)
    with pytest.raises(ValueError, match="mode='instance'"):
        refine(image, coarse, sam, mode="semantic", support=support)
    with pytest.raises(ValueError, match="in memory"):
        refine(image, coarse, sam, support=support, out=tmp_path / "out.zarr")
    lazy = np.memmap(tmp_path / "labels.raw", dtype=coarse.dtype, mode="w+", shape=coarse.shape)
    lazy[:] = coarse
    with pytest.raises(ValueError, match="in memory"):
        refine(image, lazy, sam, support=support)
    with pytest.raises(ValueError, match="binary='one'"):
        refine(image, (coarse > 0).astype(np.uint8) * 255, sam, support=support)
    with pytest.raises(ValueError, match=r"\(image, labels\) pair"):
        refine(image, coarse, sam, support=[support[0]])
    with pytest.raises(ValueError, match="hold no object"):
        refine(image, coarse, sam, support=(support[0], np.zeros_like(support[1])))
    with pytest.raises(ValueError, match="Support pair 0"):
        refine(image, coarse, sam, support=(support[0][:50], support[1]))
    assert not (tmp_path / "out.zarr").exists()


def test_cli_support_column_and_folder_refusal(tmp_path, sam, query, support, checkpoint, capsys):
    from napari_samrefine import load_sam

    image, truth = query
    coarse = coarsened(truth)
    paths = {}
    for name, array in (("image", image), ("labels", coarse), ("s_image", support[0]),
                        ("s_labels", support[1])):  # fmt: skip
        paths[name] = tmp_path / "in" / f"{name}.tif"
        paths[name].parent.mkdir(exist_ok=True)
        tifffile.imwrite(paths[name], array, photometric="minisblack")
    out = tmp_path / "out.tif"
    flags = ["--checkpoint", str(checkpoint), "--iterations", "1", "--keep", "refined"]
    assert main(["refine", str(paths["image"]), str(paths["labels"]), "-o", str(out), "--table",
                 "--support", str(paths["s_image"]), str(paths["s_labels"]), *flags]) == 0
    table = __import__("pandas").read_csv(out.with_suffix(".csv"), keep_default_na=False)
    expected = refine(image, coarse, load_sam(checkpoint, device="cpu"), iterations=1,
                      keep="refined", support=support).table()
    assert list(table["jfs_verdict"]) == list(expected["jfs_verdict"])
    assert set(table["jfs_verdict"]) <= VERDICTS
    # folders: refused before any work, with the reason
    rc = main(["refine", str(tmp_path / "in"), str(tmp_path / "in"), "-o", str(tmp_path / "o"),
               "--support", str(paths["s_image"]), str(paths["s_labels"]), *flags])
    assert rc != 0 and "--support is for single-file input" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
