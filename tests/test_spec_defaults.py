"""Every default that SPEC.md states as a number (or a named choice), pinned.

Each default is written ONCE below, as a constant with the SPEC section that
states it. The tests then check it at its one source in the code: refine's
options (:class:`~napari_samrefine.RefineOptions`, which reads the paper's values
from ``samrefiner/defaults.py``), and the signatures of the public functions
that hold their own; and, where it is cheap, the behaviour when the argument is
not passed. Changing a default therefore fails a test here, and the SPEC (and
docs/deviations.md) must change with it. That refine, the command line and the
widgets show RefineOptions' defaults is tested in tests/test_refine_options.py
and tests/gui/test_first_screen.py.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from scipy import ndimage

import napari_samrefine as nsr
from napari_samrefine.adaption.training import ranking_loss
from napari_samrefine.cli import build_parser
from napari_samrefine.engine import preprocess
from napari_samrefine.evaluation.defects import synthesize_coarse_labels
from napari_samrefine.evaluation.metrics import boundary_iou, object_ious
from napari_samrefine.judge.fss_sam import PerSamFSS
from napari_samrefine.models.profile import SAM_PROFILE
from napari_samrefine.pipeline.options import DEFAULTS
from napari_samrefine.samrefiner import defaults
from napari_samrefine.samrefiner.cebox import SIMILARITY_THRESHOLD

# ---------------------------------------------------------------------------
# The defaults, each once
# ---------------------------------------------------------------------------
# SPEC Notation: SAM frame 1024 x 1024, low-res frame 256 x 256 (published models;
# used by excavate_prompts only when no embedding gives the model's own sizes)
SAM_IMAGE_SIZE = 1024
SAM_LOWRES_SIZE = 256
# SPEC 1 (refinement pipeline): cascade iterations T = 5 (the reference code's default)
ITERATIONS = 5
# SPEC 2 (Gaussian mask prompt): amplitude w = 15 (the paper's; the reference code passes 30)
STRENGTH = 15.0
# SPEC 2 (Gaussian mask prompt): G = exp(-(D+ - max D+)^2 / max(|M| / gamma, 1)), gamma = 4
GAMMA = 4.0
# SPEC 2 (negative point): one negative point when the box holds background (switchable)
NEGATIVE_POINT = True
# SPEC 2 (CEBox): on by default in instance mode, lambda = 0.1
CEBOX_LAMBDA = 0.1
# SPEC 2 (CEBox): a pixel is similar when cosine(query, feature) > 0.5
CEBOX_SIMILARITY = 0.5
# SPEC 3 (split-then-merge): drop components under 5 pixels
STM_MIN_SIZE = 5
# SPEC 3 (split-then-merge): merge threshold mu = 0.5
STM_MU = 0.5
# SPEC 4 (IoU adaption): LoRA rank 4
LORA_RANK = 4
# SPEC 4 (IoU adaption): ranking margin m = 0.02
RANKING_MARGIN = 0.02
# SPEC 4 (IoU adaption): SGD learning rate 0.01
LEARNING_RATE = 0.01
# SPEC 4 (IoU adaption): SGD momentum 0.9
MOMENTUM = 0.9
# SPEC 4 (IoU adaption): SGD weight decay 5e-4
WEIGHT_DECAY = 5e-4
# SPEC 4 (IoU adaption): gradient accumulated over 5 samples
ACCUMULATE = 5
# SPEC 4 (IoU adaption): lr x 0.1 after optimizer steps 60 and 100
LR_MILESTONES = (60, 100)
LR_DECAY = 0.1  # behaviour: tests/test_adaption.py replays the training steps by hand
# SPEC 4 (IoU adaption): one epoch
EPOCHS = 1
# SPEC 4 (IoU adaption): seed 0
SEED = 0
# SPEC 5 (JFS verdicts): margin tau = 0.02
TAU = 0.02
# SPEC 5 (JFS verdicts): uncertain when IoU(Mc, Mr) >= 0.95
SIMILAR_IOU = 0.95
# SPEC 5 (FSS backends): "sam" is the default backend
JFS_BACKEND = "sam"
# SPEC 5 (feature masking for t): default HM
JFS_MASKING = "hm"
# SPEC 5 (crops): context of at least one object size ...
JFS_CONTEXT = 1.0
# SPEC 5 (crops): ... and at least 32 px
JFS_MIN_CONTEXT = 32
# SPEC 6 (microscopy input): percentile contrast stretch 1 %, 99.8 %
PERCENTILES = (1.0, 99.8)
# SPEC 7 (coarse masks): IoU with the truth in [0.75, 0.85]
COARSE_IOU_RANGE = (0.75, 0.85)
# SPEC 7 (coarse masks): boundary band of about 6 px
BAND_WIDTH = 6.0
# SPEC 7 (coarse masks): zones boundary / interior / background chosen with p = 0.65, 0.25, 0.10
ZONE_PROBABILITIES = (0.65, 0.25, 0.10)
# SPEC 7 (coarse masks): at most 10 defects per attempt
MAX_DEFECTS = 10
# SPEC 7 (metrics): boundary IoU dilation 2 % of the image diagonal
BOUNDARY_DILATION = 0.02

# ---------------------------------------------------------------------------
# refine's options: the paper's values, in one place
# ---------------------------------------------------------------------------
def test_the_papers_values_are_refines_defaults():
    # the one source of each (refine, the cascade, prompts, CLI and widgets read it)
    assert defaults.ITERATIONS == ITERATIONS
    assert defaults.STRENGTH == STRENGTH
    assert defaults.GAMMA == GAMMA
    assert defaults.CEBOX_LAMBDA == CEBOX_LAMBDA
    assert defaults.NEGATIVE_POINT is NEGATIVE_POINT
    assert preprocess.PERCENTILES == PERCENTILES
    # ... and the options object starts from them
    # iterations: the model's measured default; SAM's is the paper's T
    assert DEFAULTS.iterations is None and SAM_PROFILE.defaults.iterations == ITERATIONS
    assert DEFAULTS.strength == STRENGTH
    assert DEFAULTS.gamma == GAMMA
    assert DEFAULTS.percentiles == PERCENTILES
    # SPEC 2 (CEBox): "on by default in instance mode" -> "auto" resolves to lambda
    assert DEFAULTS.mode == "instance" and DEFAULTS.cebox == "auto"
    assert DEFAULTS.cebox_lambda == CEBOX_LAMBDA
    # None = what the model was trained with (all four prompt kinds for SAM: the paper's)
    assert DEFAULTS.use_negative_point is None


# ---------------------------------------------------------------------------
# Signatures of the public functions that hold their own defaults
# ---------------------------------------------------------------------------
SIGNATURE_DEFAULTS = [
    (nsr.excavate_prompts, "image_size", SAM_IMAGE_SIZE),
    (nsr.excavate_prompts, "lowres_size", SAM_LOWRES_SIZE),
    (nsr.evaluate_selection, "strength", STRENGTH),
    (nsr.evaluate_selection, "gamma", GAMMA),
    (nsr.evaluate_selection, "cebox", CEBOX_LAMBDA),
    (nsr.split_then_merge, "min_size", STM_MIN_SIZE),
    (nsr.split_then_merge, "mu", STM_MU),
    (nsr.adapt_iou_head, "rank", LORA_RANK),
    (nsr.adapt_iou_head, "margin", RANKING_MARGIN),
    (ranking_loss, "margin", RANKING_MARGIN),
    (nsr.adapt_iou_head, "lr", LEARNING_RATE),
    (nsr.adapt_iou_head, "momentum", MOMENTUM),
    (nsr.adapt_iou_head, "weight_decay", WEIGHT_DECAY),
    (nsr.adapt_iou_head, "accumulate", ACCUMULATE),
    (nsr.adapt_iou_head, "milestones", LR_MILESTONES),
    (nsr.adapt_iou_head, "epochs", EPOCHS),
    (nsr.adapt_iou_head, "seed", SEED),
    (nsr.judge_refinement, "tau", TAU),
    (nsr.judge_refinement, "similar_iou", SIMILAR_IOU),
    (nsr.judge_refinement, "backend", JFS_BACKEND),
    (nsr.judge_refinement, "masking", JFS_MASKING),
    (PerSamFSS, "masking", JFS_MASKING),
    (nsr.judge_refinement, "context", JFS_CONTEXT),
    (nsr.judge_refinement, "min_context", JFS_MIN_CONTEXT),
    (nsr.adapt_iou_head, "percentiles", PERCENTILES),
    (nsr.evaluate_selection, "percentiles", PERCENTILES),
    (synthesize_coarse_labels, "iou_range", COARSE_IOU_RANGE),
    (synthesize_coarse_labels, "band_width", BAND_WIDTH),
    (synthesize_coarse_labels, "zone_probabilities", ZONE_PROBABILITIES),
    (synthesize_coarse_labels, "max_defects", MAX_DEFECTS),
    (boundary_iou, "dilation_ratio", BOUNDARY_DILATION),
    (object_ious, "dilation_ratio", BOUNDARY_DILATION),
]


@pytest.mark.parametrize(
    ("function", "name", "expected"),
    SIGNATURE_DEFAULTS,
    ids=[f"{f.__name__}-{n}" for f, n, _ in SIGNATURE_DEFAULTS],
)
def test_signature_default(function, name, expected):
    default = inspect.signature(function).parameters[name].default
    if isinstance(expected, tuple):
        default = tuple(default)
    assert default == expected, f"{function.__name__}({name}=...) default changed"


def test_cebox_similarity_threshold():
    assert SIMILARITY_THRESHOLD == CEBOX_SIMILARITY


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------
def _parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_cli_judge_defaults():
    args = _parse(
        "judge", "image.tif", "coarse.tif", "refined.tif",
        "--support-image", "s.tif", "--support-labels", "l.tif", "-o", "out.tif",
    )  # fmt: skip
    assert args.tau == TAU
    assert args.backend == JFS_BACKEND
    assert args.masking == JFS_MASKING


def test_cli_adapt_defaults():
    args = _parse("adapt", "image.tif", "--labels", "labels.tif", "-o", "adaptor.pt")
    assert args.epochs == EPOCHS
    assert args.seed == SEED


def test_cli_benchmark_defaults():
    args = _parse("benchmark", "--data", "data")
    assert tuple(args.iou_range) == COARSE_IOU_RANGE


# ---------------------------------------------------------------------------
# Behaviour when the argument is not passed
# ---------------------------------------------------------------------------
def test_to_sam_rgb_stretches_between_the_default_percentiles():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, (40, 50)).astype(np.uint16)
    image[0, :5] = 65535  # outliers above the upper percentile
    lo, hi = np.percentile(image.astype(np.float64), PERCENTILES)
    expected = np.round(np.clip((image - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    out = nsr.to_sam_rgb(image)
    np.testing.assert_array_equal(out, np.repeat(expected[..., None], 3, axis=-1))
    # the percentiles matter: a min-max stretch gives another image
    assert not np.array_equal(out, nsr.to_sam_rgb(image, percentiles=(0.0, 100.0)))


@pytest.fixture(scope="module")
def l_shape():
    labels = np.zeros((48, 48), np.uint16)
    labels[8:36, 8:18] = 3
    labels[26:36, 8:38] = 3
    return labels


def test_excavated_prompts_use_the_default_strength_gamma_and_negative_point(l_shape):
    (p,) = nsr.excavate_prompts(l_shape, image_size=64, lowres_size=16)
    # mask prompt amplitude w: background and padding hold -w, the object at most +w
    assert p.strength == STRENGTH and not p.expanded
    assert p.mask_input.min() == -STRENGTH and 0 < p.mask_input.max() <= STRENGTH
    # the Gaussian map with gamma: D+ is the exact distance to the background
    # (the object does not touch the image border)
    mask = l_shape == 3
    dist = ndimage.distance_transform_edt(mask)
    g = np.where(mask, np.exp(-((dist - dist.max()) ** 2) / max(mask.sum() / GAMMA, 1)), 0)
    r, c = p.offset
    h, w = p.gaussian.shape
    np.testing.assert_allclose(p.gaussian, g[r : r + h, c : c + w], rtol=1e-5, atol=1e-6)
    # the L's box holds background, so there is a negative point
    np.testing.assert_array_equal(p.point_labels, [1, 0])


def test_refine_default_cebox_is_the_instance_mode_lambda(sam):
    from importlib.resources import files

    import tifffile
    from PIL import Image

    data = files("napari_samrefine") / "data"
    image = np.asarray(Image.open(data / "nuclei.png"))[:128, :128]
    labels = tifffile.imread(data / "nuclei_coarse.tif")[:128, :128]
    kw = dict(sam=sam, iterations=1, embedding_cache=nsr.EmbeddingCache())

    def boxes(result):
        return [None if p is None else p.box.tolist() for p in result.prompts]

    default = boxes(nsr.refine(image, labels, **kw))
    assert default == boxes(nsr.refine(image, labels, cebox=CEBOX_LAMBDA, **kw))
    assert default != boxes(nsr.refine(image, labels, cebox=None, **kw))  # CEBox expanded some


class _Oracle:
    """A few-shot segmenter that knows the support object (its red pixels are 255).

    For the refined mask it predicts the support object exactly (E2 = 1); for the
    coarse mask (recognised by its area) it misses ``missing`` of its pixels, so
    E1 = 1 - missing / area and delta = missing / area.
    """

    def __init__(self, coarse_area: int, missing: int):
        self.coarse_area, self.missing = coarse_area, missing

    def predict(self, query_image, query_mask, support_image):
        truth = support_image[..., 0] == 255
        pred = truth.astype(np.float32)
        if int(query_mask.sum()) == self.coarse_area:
            pred.flat[np.flatnonzero(truth)[: self.missing]] = 0
        return pred


def _judge_case(extra_pixels: int, missing: int) -> tuple[str, str]:
    """One 20 x 20 object; the refinement adds ``extra_pixels``; returns (verdict, reason)."""
    rgb = np.zeros((128, 128, 3), np.uint8)
    rgb[50:70, 50:70, 0] = 255
    coarse = np.zeros((128, 128), np.uint16)
    coarse[50:70, 50:70] = 1
    refined = coarse.copy()
    rows, extra = divmod(extra_pixels, 20)
    refined[70 : 70 + rows, 50:70] = 1
    refined[70 + rows, 50 : 50 + extra] = 1
    result = nsr.judge_refinement(rgb, coarse, refined, rgb, coarse, backend=_Oracle(400, missing))
    row = result.table().set_index("label_id").loc[1]
    return row["verdict"], row["reason"]


def test_judge_default_tau():
    # IoU(Mc, Mr) = 400 / 440, not similar; delta = 9 / 400 = 0.0225 > tau > 7 / 400
    assert _judge_case(40, 9) == ("improved", "")
    assert _judge_case(40, 7) == ("uncertain", "below-tau")


def test_judge_default_similar_iou():
    # delta = 0.1 > tau; IoU(Mc, Mr) = 400 / 421 = 0.9501 >= 0.95 > 400 / 422 = 0.9479
    assert _judge_case(21, 40) == ("uncertain", "similar-masks")
    assert _judge_case(22, 40) == ("improved", "")
