"""judge_refinement end to end on real DSB2018 crops: controlled FSS, tiny SAM, progress, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from _data import DSB2018
from napari_samrefine import Cancelled, judge_refinement
from napari_samrefine.engine.embedding import EmbeddingCache
from napari_samrefine.evaluation.metrics import iou
from napari_samrefine.judge import MaskTransferFSS
from napari_samrefine.judge.verdicts import accepted_labels


def load(name: str, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    import tifffile
    from PIL import Image

    image = np.asarray(Image.open(DSB2018 / "images" / f"{name}.png"))[:size, :size]
    labels = tifffile.imread(DSB2018 / "labels" / f"{name}.tif")[:size, :size]
    return (image if image.ndim == 2 else image[..., 0]), labels.astype(np.uint16)


@pytest.fixture(scope="module")
def query():
    # 16 nuclei; objects 1 (218 px), 11 (612), 32 (604), 48 (690) lie inside the crop
    return load("35ca5f142a7d")


def only(labels: np.ndarray, ids) -> np.ndarray:
    return np.where(np.isin(labels, list(ids)), labels, 0).astype(labels.dtype)


def eroded(labels: np.ndarray, lid: int, iterations: int = 2) -> np.ndarray:
    """``labels`` with object ``lid`` eroded: its box shrinks, so ``union(coarse, truth)`` is the truth's box."""
    out = labels.copy()
    keep = ndi.binary_erosion(labels == lid, iterations=iterations)
    out[(labels == lid) & ~keep] = 0
    return out


def test_controlled_fss_gives_exact_scores_and_sign(query):
    """Mask transfer onto an identical support window: E = IoU(mask, Ms) exactly."""
    image, truth = query
    coarse = eroded(truth, 11)
    support = only(truth, [11])  # Ms = the true object
    result = judge_refinement(
        image, coarse, truth, image, support, backend=MaskTransferFSS(), k=1, label_ids=[11]
    )
    (obj,) = result.objects
    expected_e1 = iou(coarse == 11, truth == 11)
    assert obj.verdict.e2 == 1.0 and obj.verdict.e1 == pytest.approx(expected_e1)
    assert (
        obj.verdict.delta == pytest.approx(1.0 - expected_e1) and obj.verdict.verdict == "improved"
    )
    assert obj.iou_coarse_refined == pytest.approx(expected_e1)
    np.testing.assert_array_equal(result.accepted, truth)  # only object 11 differed

    # swapping coarse and refined flips the sign and the verdict
    swapped = judge_refinement(
        image, truth, coarse, image, support, backend=MaskTransferFSS(), k=1, label_ids=[11]
    )
    (obj,) = swapped.objects
    assert (
        obj.verdict.delta == pytest.approx(expected_e1 - 1.0) and obj.verdict.verdict == "degraded"
    )
    np.testing.assert_array_equal(swapped.accepted, truth)  # the coarse is kept


def area_ratio(truth: np.ndarray, lid: int) -> float:
    """IoU of object ``lid`` eroded with the object itself: eroded area / area (by hand)."""
    return float((eroded(truth, lid) == lid).sum() / (truth == lid).sum())


def test_verdicts_statuses_and_accepted_labels(query):
    """Cases whose scores are known by hand: each support is the true object alone.

    Mask transfer onto an identical window predicts the support object exactly,
    so E = IoU(mask, true object): 1 for the true mask, the area ratio for an
    eroded one (it lies inside the object), 0 for a lost one.
    """
    image, truth = query
    coarse = eroded(truth, 1)  # refined = truth: improved
    refined = eroded(truth, 11)  # coarse = truth: degraded
    refined[truth == 48] = 0  # the refinement lost object 48
    ids = [1, 11, 32, 48]
    supports = [only(truth, [i]) for i in ids]  # one support pair per object
    inputs = [a.copy() for a in (image, coarse, refined, *supports)]
    result = judge_refinement(
        image, coarse, refined, [image] * 4, supports, backend="mask-transfer", k=1, label_ids=ids
    )
    assert [obj.scores[0].support_label for obj in result.objects] == ids  # each found itself
    table = result.table().set_index("label_id")
    r1, r11 = area_ratio(truth, 1), area_ratio(truth, 11)
    expected = {  # label: (e1, e2, delta, verdict, reason/status)
        1: (r1, 1.0, 1.0 - r1, "improved"),
        11: (1.0, r11, r11 - 1.0, "degraded"),
        32: (1.0, 1.0, 0.0, "uncertain"),
        48: (1.0, 0.0, -1.0, "degraded"),
    }
    for lid, (e1, e2, delta, verdict) in expected.items():
        row = table.loc[lid]
        assert (row["e1"], row["e2"], row["delta"]) == pytest.approx((e1, e2, delta)), lid
        assert row["verdict"] == verdict, lid
    assert table.loc[32, "reason"] == "similar-masks" and table.loc[32, "iou_coarse_refined"] == 1.0
    assert table.loc[48, "status"] == "empty-refined" and table.loc[48, "area_refined"] == 0
    # accepted: the refined object where improved, the coarse one elsewhere; here that is
    # the truth everywhere (1 from the refinement, 11 and 48 kept, 32 the same in both)
    np.testing.assert_array_equal(result.accepted, truth)
    vimg = result.verdict_image()
    assert set(np.unique(vimg[truth == 1])) == {1}
    assert set(np.unique(vimg[truth == 32])) == {3}
    for before, after in zip(inputs, (image, coarse, refined, *supports), strict=True):
        np.testing.assert_array_equal(before, after)  # inputs untouched


def test_k_shot_aggregation_needs_agreement(query):
    image, truth = query
    coarse = eroded(truth, 1)
    r = area_ratio(truth, 1)
    # two supports hold the true object, one the eroded (coarse) one
    pairs = [only(truth, [1]), only(truth, [1]), only(coarse, [1])]
    common = dict(backend=MaskTransferFSS(), label_ids=[1])
    result = judge_refinement(image, coarse, truth, [image] * 3, pairs, k=3, **common)
    per_support = result.support_table().set_index("pair")
    assert sorted(per_support.index) == [0, 1, 2]
    # the true object as support, same window: E1 = r, E2 = 1 exactly
    assert per_support.loc[[0, 1], "delta"].tolist() == pytest.approx([1 - r, 1 - r])
    # the eroded object as support (a smaller window, resized): the sign turns
    d2 = per_support.loc[2, "delta"]
    assert d2 < -0.02
    row = result.table().iloc[0]
    assert row["k"] == 3 and row["agreement"] == pytest.approx(2 / 3)
    assert row["delta"] == pytest.approx((2 * (1 - r) + d2) / 3)  # SPEC: the mean of the k deltas
    assert row["verdict"] == "improved"
    strict = judge_refinement(
        image, coarse, truth, [image] * 3, pairs, k=3, min_agreement=1.0, **common
    )
    assert tuple(strict.table().iloc[0][["verdict", "reason"]]) == ("uncertain", "disagreement")
    # one shot: the support closest in area to the (eroded) coarse object is pair 2
    one = judge_refinement(image, coarse, truth, [image] * 3, pairs, k=1, **common)
    assert list(one.support_table()["pair"]) == [2]
    assert one.table().iloc[0]["verdict"] == "degraded"
    assert one.table().iloc[0]["delta"] == pytest.approx(d2)


@pytest.mark.parametrize("masking", ["fm", "im", "hm"])
def test_sam_backend_end_to_end(sam, query, masking):
    image, truth = query
    s_image, s_labels = load("98c5ead89cd0", 96)
    coarse = eroded(eroded(truth, 1), 32, 1)
    ids = [1, 11, 32]
    cache = EmbeddingCache()
    calls = []
    result = judge_refinement(
        image, coarse, truth, s_image, s_labels, sam=sam, masking=masking, k=2, label_ids=ids,
        embedding_cache=cache, return_predictions=True,
        progress=lambda done, total, msg: calls.append((done, total)),
    )  # fmt: skip
    table = result.table()
    assert list(table["label_id"]) == ids and (table["k"] == 2).all()
    assert set(table["verdict"]) <= {"improved", "degraded", "uncertain"}
    np.testing.assert_allclose(table["delta"], table["e2"] - table["e1"])
    np.testing.assert_allclose(table["delta_soft"], table["e2_soft"] - table["e1_soft"])
    assert table.loc[table.label_id == 11, "reason"].item() == "similar-masks"
    np.testing.assert_array_equal(
        result.accepted, accepted_labels(coarse, truth, result.improved_ids)
    )
    assert calls[0] == (0, 6) and calls[-1] == (6, 6)
    assert [d for d, _ in calls] == list(range(7))
    # SMPs over the support image
    assert len(result.predictions) == 6
    smp1, smp2 = result.support_mask_predictions(0)
    assert smp1.shape == s_labels.shape and 0 <= smp1.min() and smp2.max() <= 1
    # every crop was encoded once; judging again costs no encoder pass
    misses = cache.misses
    again = judge_refinement(
        image, coarse, truth, s_image, s_labels, sam=sam, masking=masking, k=2, label_ids=ids,
        embedding_cache=cache,
    )  # fmt: skip
    assert cache.misses == misses
    assert again.table().equals(table)


def test_cancel_from_the_progress_callback(sam, query):
    image, truth = query
    coarse = eroded(truth, 1)
    before = coarse.copy()

    def cancel_on_second_call(done, total, message):
        if done >= 1:
            raise Cancelled

    with pytest.raises(Cancelled):
        judge_refinement(
            image, coarse, truth, image, truth, sam=sam, k=1, progress=cancel_on_second_call
        )
    np.testing.assert_array_equal(coarse, before)


def test_multichannel_and_empty_coarse(query):
    image, truth = query
    rgb = np.stack([image, image // 2, image], axis=-1)
    empty = np.zeros_like(truth)
    result = judge_refinement(rgb, empty, empty, rgb, truth, backend="mask-transfer")
    assert result.objects == [] and len(result.table()) == 0
    np.testing.assert_array_equal(result.accepted, empty)
    two = np.stack([image, image], axis=0)  # channel-first
    r2 = judge_refinement(
        two, eroded(truth, 1), truth, two, truth, backend="mask-transfer", k=1, label_ids=[1],
        channel=0, channel_axis=0,
    )  # fmt: skip
    assert len(r2.objects) == 1


class WrongShapeFSS:
    """A backend that forgets to map its prediction onto the support crop."""

    def predict(self, query_image, query_mask, support_image):
        return query_mask[:-1].astype(np.float32)


def test_bad_input_gets_clear_errors(query):
    image, truth = query
    coarse = eroded(truth, 1)
    kw = dict(backend="mask-transfer", k=1)
    with pytest.raises(ValueError, match="support labels hold no object"):
        judge_refinement(image, coarse, truth, image, np.zeros_like(truth), **kw)
    with pytest.raises(ValueError, match="Shapes differ"):
        judge_refinement(image, coarse, truth[:100], image, truth, **kw)
    with pytest.raises(ValueError, match="Shapes differ"):
        judge_refinement(image[:100], coarse, truth, image, truth, **kw)
    with pytest.raises(ValueError, match="Support pair 0"):
        judge_refinement(image, coarse, truth, image[:64], truth, **kw)
    with pytest.raises(ValueError, match=r"ids the coarse labels lack \(101, 103"):
        relabelled = np.where(truth > 0, truth + 100, 0).astype(truth.dtype)
        judge_refinement(image, coarse, relabelled, image, truth, **kw)
    with pytest.raises(ValueError, match="Got 2 support images and 1 support label"):
        judge_refinement(image, coarse, truth, [image, image], [truth], **kw)
    with pytest.raises(ValueError, match="both as single arrays or both as lists"):
        judge_refinement(image, coarse, truth, [image], truth, **kw)
    with pytest.raises(ValueError, match="must hold integers"):
        judge_refinement(image, coarse.astype(float), truth, image, truth, **kw)
    with pytest.raises(ValueError, match="pass one plane of a stack"):
        judge_refinement(image, coarse[None], truth[None], image, truth, **kw)
    with pytest.raises(ValueError, match="not objects of the coarse labels"):
        judge_refinement(image, coarse, truth, image, truth, label_ids=[9999], **kw)
    with pytest.raises(ValueError, match="k=0"):
        judge_refinement(image, coarse, truth, image, truth, backend="mask-transfer", k=0)
    with pytest.raises(ValueError, match="masking='xm'"):
        judge_refinement(image, coarse, truth, image, truth, masking="xm", **kw)
    with pytest.raises(ValueError, match="backend='persam'"):
        judge_refinement(image, coarse, truth, image, truth, backend="persam")
    with pytest.raises(TypeError, match="predict"):
        judge_refinement(image, coarse, truth, image, truth, backend=object())
    with pytest.raises(ValueError, match="returned a map of shape"):
        judge_refinement(image, coarse, truth, image, truth, backend=WrongShapeFSS(), label_ids=[1])
