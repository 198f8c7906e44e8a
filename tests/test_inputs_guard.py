"""Issue 12: every label dtype a user passes works or is refused with a fix that works;
binary masks (bool, 0/1, 0/255 ...) are refined per connected component or as one object;
parameter errors are refused before any work. Real DSB2018 data and the tiny SAM.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi

import napari_samrefine as nsr
from napari_samrefine.samrefiner.summary import GrowthWarning

KW = dict(iterations=2, embedding_cache=None)
EIGHT = np.ones((3, 3), bool)


def components_of(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components, numbered in raster order (scipy, independent of the package)."""
    return ndi.label(mask, structure=EIGHT)


@pytest.fixture(scope="module")
def crop(dsb_pair):
    """A 96 x 96 crop: image, instance labels, and its foreground as a bool mask."""
    image, labels = dsb_pair
    image, labels = image[160:, 64:160].copy(), labels[160:, 64:160].copy()
    mask = labels > 0
    assert components_of(mask)[1] > 1  # several components
    return image, labels, mask


def _quiet(call):
    """Run ``call`` turning every warning into an error (asserts that none is issued), but
    the tiny random SAM's GrowthWarning (its masks spread over the background)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", GrowthWarning)
        return call()


# -- binary masks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, value",
    [(np.bool_, True), (np.uint8, 1), (np.uint8, 255), (np.uint16, 65535), (np.int32, 1),
     (np.int8, 127), (np.uint64, np.iinfo(np.uint64).max)],
)
def test_binary_mask_is_refined_per_component_and_written_back_as_its_value(
    sam, crop, dtype, value
):
    image, _, mask = crop
    coarse = np.where(mask, dtype(value), dtype(0)).astype(dtype)
    before = coarse.copy()
    with pytest.warns(UserWarning, match=r"connected components .* binary='one'") as record:
        result = nsr.refine(image, coarse, sam, **KW)
    components, n = components_of(mask)
    notes = [str(w.message) for w in record if "connected components" in str(w.message)]
    assert len(notes) == 1 and f"its {n} connected components" in notes[0]
    # the same as refining the components as an instance label image ...
    expected = nsr.refine(image, components, sam, **KW)
    assert result.labels.dtype == coarse.dtype
    np.testing.assert_array_equal(result.labels, np.where(expected.labels > 0, coarse.max(), 0))
    # ... with one record per component, and the input untouched, bit for bit
    assert [o.label_id for o in result.objects] == list(range(1, n + 1))
    assert result.labels.tobytes() != coarse.tobytes()  # something was refined
    assert coarse.tobytes() == before.tobytes()


@pytest.mark.parametrize("dtype, value", [(np.bool_, True), (np.uint8, 255)])
def test_binary_one_refines_the_whole_mask_as_one_object(sam, crop, dtype, value):
    image, _, mask = crop
    coarse = np.where(mask, dtype(value), dtype(0)).astype(dtype)
    result = _quiet(lambda: nsr.refine(image, coarse, sam, binary="one", **KW))
    assert len(result.objects) == 1 and result.objects[0].label_id == int(value)
    assert result.labels.dtype == coarse.dtype
    assert set(np.unique(result.labels)) <= {0, value}
    expected = nsr.refine(image, mask.astype(np.uint8), sam, binary="one", **KW)
    np.testing.assert_array_equal(result.labels != 0, expected.labels != 0)


def test_a_connected_mask_is_one_object_with_its_value_and_no_warning(sam, crop):
    image, labels, _ = crop
    one = np.where(labels == labels.max(), 7, 0).astype(np.uint16)  # one nucleus, id 7
    result = _quiet(lambda: nsr.refine(image, one, sam, label_ids=[7], **KW))
    assert [(o.label_id, o.status) for o in result.objects] == [(7, "ok")]
    assert set(np.unique(result.labels)) <= {0, 7}


def test_binary_stack_and_semantic_mode(sam, crop):
    image, _, mask = crop
    stack = np.stack([mask, np.zeros_like(mask), mask[::-1]])
    with pytest.warns(UserWarning, match="counted per plane"):
        result = nsr.refine(np.stack([image, image, image[::-1]]), stack, sam, **KW)
    assert result.labels.dtype == np.bool_ and not result.labels[1].any()
    assert {o.plane for o in result.objects} == {0, 2}
    # semantic mode: the mask is one class; split-then-merge handles its components
    sem = _quiet(lambda: nsr.refine(image, mask, sam, mode="semantic", **KW))
    assert sem.labels.dtype == np.bool_ and {o.label_id for o in sem.objects} == {1}


def test_binary_foreground_detects_two_valued_images():
    from napari_samrefine.labels.binary import binary_foreground

    assert binary_foreground(np.array([[0, 3], [3, 3]], np.int16)) == 3
    assert binary_foreground(np.array([[False, False]])) is True
    assert binary_foreground(np.array([[0, 3], [4, 0]], np.uint8)) is None
    assert binary_foreground(np.array([[5, 5], [5, 5]], np.uint8)) is None  # no background
    assert binary_foreground(np.array([[1, 2], [1, 2]], np.uint8)) is None


def test_excavate_prompts_takes_binary_masks(crop):
    _, _, mask = crop
    coarse = mask.astype(np.uint8) * 255
    n = components_of(mask)[1]
    with pytest.warns(UserWarning, match=f"its {n} connected components"):
        prompts = nsr.excavate_prompts(coarse, image_size=64, lowres_size=16)
    assert [p.label_id for p in prompts] == list(range(1, n + 1))
    (whole,) = _quiet(lambda: nsr.excavate_prompts(coarse, binary="one", image_size=64,
                                                   lowres_size=16))
    assert whole.label_id == 255
    with pytest.raises(ValueError, match="binary must be 'components' or 'one'"):
        nsr.excavate_prompts(coarse, binary="split")


# -- every dtype a Labels layer takes ---------------------------------------------------------

INTEGER_TYPES = [np.int8, np.int16, np.int32, np.int64,
                 np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.mark.parametrize("dtype", INTEGER_TYPES)
def test_every_integer_dtype_keeps_dtype_and_ids(sam, crop, dtype):
    image, labels, _ = crop
    ids = np.unique(labels)[1:]
    # ids up to the dtype's maximum (hashed or huge ids as some tools write them)
    top = np.iinfo(dtype).max
    mapping = np.zeros(labels.max() + 1, np.uint64)
    mapping[ids] = top - np.arange(len(ids), dtype=np.uint64)
    coarse = mapping[labels].astype(dtype)
    before = coarse.copy()
    result = _quiet(lambda: nsr.refine(image, coarse, sam, **KW))
    assert result.labels.dtype == coarse.dtype
    assert set(np.unique(result.labels)) <= set(np.unique(coarse))
    assert sorted(o.label_id for o in result.objects) == sorted(int(v) for v in mapping[ids])
    assert coarse.tobytes() == before.tobytes()


def _suggested(message: str) -> list[str]:
    """The Python expressions a message tells the user to apply to ``labels``."""
    found = re.findall(r"labels\.[a-z]+\([^)]*\)|labels > [0-9]+(?:\.[0-9]+)?", message)
    assert found, message
    return found


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_labels_error_names_a_fix_that_works(sam, crop, dtype):
    image, labels, mask = crop
    rng = np.random.default_rng(0)
    probability = np.where(mask, rng.uniform(0.6, 1, mask.shape), rng.uniform(0, 0.4, mask.shape))
    for coarse, fix in ((labels.astype(dtype), "astype"), (probability.astype(dtype), ">")):
        with pytest.raises(ValueError, match="must hold integers") as err:
            nsr.refine(image, coarse, sam, **KW)
        message = str(err.value)
        assert "\n" not in message
        (expression,) = _suggested(message)
        assert fix in expression
        fixed = eval(expression, {"np": np, "labels": coarse})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the binary mask's note
            result = nsr.refine(image, fixed, sam, **KW)
        assert result.labels.shape == labels.shape and result.labels.dtype == fixed.dtype


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64])
def test_negative_labels_error_names_fixes_that_work(sam, crop, dtype):
    image, labels, _ = crop
    coarse = labels.astype(dtype)
    coarse[:4, :4] = -1  # e.g. an "ignore" value
    with pytest.raises(ValueError, match="negative") as err:
        nsr.refine(image, coarse, sam, **KW)
    message = str(err.value)
    assert "\n" not in message
    for expression in _suggested(message):
        fixed = eval(expression, {"np": np, "labels": coarse})
        result = _quiet(lambda fixed=fixed: nsr.refine(image, fixed, sam, **KW))
        assert result.labels.dtype == fixed.dtype


# -- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value, text",
    [
        ("batch_size", 0, "batch_size must be a whole number >= 1"),
        ("batch_size", 2.5, "batch_size must be a whole number >= 1"),
        ("iterations", 0, "iterations must be a whole number >= 1"),
        ("strength", -1.0, "strength must be a positive number"),
        ("gamma", float("nan"), "gamma must be a positive number"),
        ("tile", 8, "tile must be None, 'auto' or a whole number of pixels >= 32"),
        ("halo", -1, "halo must be None or a whole number of pixels >= 0"),
        ("convergence", 2.0, r"convergence must be in \[0, 1\] or None"),
        ("convergence", -0.5, r"convergence must be in \[0, 1\] or None"),
        ("cebox", 1.5, r"cebox must be 'auto', None or a fraction in \[0, 1\]"),
        ("binary", "split", "binary must be 'components' or 'one'"),
    ],
)
def test_parameter_errors_come_before_any_work(crop, option, value, text):
    image, labels, _ = crop
    # the model name does not exist: the parameter must be refused before it is looked up
    with pytest.raises(ValueError, match=text):
        nsr.refine(image, labels, sam="no_such_model", **{option: value})


def test_halo_must_be_less_than_half_the_tile(crop):
    image, labels, _ = crop
    with pytest.raises(ValueError, match="halo"):
        nsr.refine(image, labels, sam="no_such_model", tile=64, halo=32)
