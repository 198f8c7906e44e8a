"""Weight-free baselines: they must visibly fix an over-grown mask of a clear object."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_samrefine import Cancelled
from napari_samrefine.evaluation.baselines import refine_classical
from napari_samrefine.evaluation.metrics import iou


@pytest.fixture(scope="module")
def scene():
    """Two bright disks on a noisy dark background; coarse masks dilated by 4 px."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    truth = np.zeros((96, 96), np.uint16)
    truth[(yy - 30) ** 2 + (xx - 30) ** 2 <= 12**2] = 3
    truth[(yy - 62) ** 2 + (xx - 64) ** 2 <= 10**2] = 8
    image = np.where(truth > 0, 180.0, 40.0) + rng.normal(0, 12, truth.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    coarse = np.zeros_like(truth)
    for lid in (3, 8):
        coarse[ndi.binary_dilation(truth == lid, iterations=4)] = lid
    return image, truth, coarse


@pytest.mark.parametrize("method", ["random_walker", "chan_vese"])
def test_classical_refiner_fixes_a_dilated_mask(scene, method):
    image, truth, coarse = scene
    before = coarse.copy()
    refined = refine_classical(image, coarse, method)
    assert np.array_equal(coarse, before)
    assert refined.dtype == coarse.dtype and refined.shape == coarse.shape
    for lid in (3, 8):
        old = iou(coarse == lid, truth == lid)
        new = iou(refined == lid, truth == lid)
        assert old < 0.65 and new > 0.9, (lid, old, new)


def test_rgb_and_uint16_images(scene):
    image, truth, coarse = scene
    rgb = np.stack([image, image // 2, image], axis=-1)
    wide = image.astype(np.uint16) * 200
    for img in (rgb, wide):
        refined = refine_classical(img, coarse, "random_walker")
        assert iou(refined == 3, truth == 3) > 0.9


def test_identity_is_a_copy(scene):
    image, _, coarse = scene
    out = refine_classical(image, coarse, "identity")
    assert np.array_equal(out, coarse) and out is not coarse


def test_label_ids_leave_the_others_alone(scene):
    image, truth, coarse = scene
    out = refine_classical(image, coarse, "random_walker", label_ids=[8])
    assert np.array_equal(out == 3, coarse == 3)
    assert iou(out == 8, truth == 8) > 0.9


def test_touching_objects_do_not_overlap():
    # one bright square split into two objects whose coarse masks overlap the other's half
    image = np.full((40, 40), 30, np.uint8)
    image[10:30, 10:30] = 200
    coarse = np.zeros((40, 40), np.uint8)
    coarse[8:32, 8:21] = 1
    coarse[8:32, 21:32] = 2
    out = refine_classical(image, coarse, "random_walker", radius=2)
    assert set(np.unique(out)) == {0, 1, 2}
    assert iou(out > 0, image > 100) > 0.9


def test_progress_and_cancel(scene):
    image, _, coarse = scene
    calls = []
    refine_classical(image, coarse, progress=lambda d, t, m: calls.append((d, t)))
    assert calls[0] == (0, 2) and calls[-1] == (2, 2)

    def cancel(done, total, message):
        raise Cancelled

    with pytest.raises(Cancelled):
        refine_classical(image, coarse, progress=cancel)


def test_bad_input_is_explained(scene):
    image, _, coarse = scene
    with pytest.raises(ValueError, match="Unknown method"):
        refine_classical(image, coarse, "watershed")
    with pytest.raises(ValueError, match="differ in size"):
        refine_classical(image[:50], coarse)
    with pytest.raises(ValueError, match="must hold integers"):
        refine_classical(image, coarse.astype(float))
    with pytest.raises(ValueError, match="must be a 2D image"):
        refine_classical(image, coarse[None])
