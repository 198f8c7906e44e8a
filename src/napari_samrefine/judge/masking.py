"""Feature, input and hybrid masking (FM / IM / HM, Moon et al., ECCV 2022) on SAM features.

A few-shot model must describe "the object under this mask" from an image's
features. The HM paper compares three ways:

* FM, feature masking: the image's features times the mask, downsampled to
  the feature grid as the fraction of each cell the mask covers. Cheap, but
  each cell's feature also saw the object's surroundings.
* IM, input masking: the image with every pixel outside the mask set to the
  encoder's pixel mean (zero after normalisation), encoded again. The features
  see only the object, at the cost of one encoder pass per mask. They are taken
  under the mask like FM's (times the cell coverage): the image was masked, its
  features were not, and the features of cells outside the mask describe the
  fill, not the object.
* HM, hybrid masking: FM where FM is positive, IM elsewhere, element-wise; IM
  fills in what FM zeroed or suppressed. The HM paper's features are ReLU
  outputs, where "not positive" means "zeroed by the mask"; SAM's features are
  signed, so this rule also replaces the negative values inside the mask. (IM
  only outside the mask would change nothing here: cells outside the mask
  weigh 0 in every map, so they never count in :func:`masked_prototype`.)

Every masked map therefore carries the mask's coverage exactly once, and the
target prototype is the map's sum over cells divided by the total coverage:
the coverage-weighted mean of the (FM: image's, IM: masked image's, HM:
element-wise hybrid) features under the mask.

For models normalised by min-max (LiteMedSAM), IM's masked-out pixels take the
image's minimum, which the model's normalisation maps to zero.

All maps are (C, gh, gw) over the valid (unpadded) embedding grid of the image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from napari_samrefine.engine.embedding import EmbeddingCache, default_cache
from napari_samrefine.engine.frame import SamFrame
from napari_samrefine.models.profile import model_profile

__all__ = [
    "MASKING_MODES",
    "mask_coverage",
    "feature_masking",
    "input_masked_image",
    "hybrid_masking",
    "masked_features",
    "masked_prototype",
    "pixel_fill",
]

MASKING_MODES = ("fm", "im", "hm")


def mask_coverage(mask: np.ndarray, frame: SamFrame) -> np.ndarray:
    """Fraction of each valid embedding cell that ``mask`` covers.

    The mask goes through SAM's own geometry: bilinear resize to the resized
    image size (antialiased, so thin masks keep their mass when shrunk), zero
    padding to the square input frame, then the mean over each cell's
    ``image_size / embedding_size`` pixels.

    Parameters
    ----------
    mask : numpy.ndarray
        bool (H, W) in the image's original frame.
    frame : SamFrame
        The image's frame (``ImageEmbedding.frame``).

    Returns
    -------
    numpy.ndarray
        float32 (gh, gw) in [0, 1].
    """
    mask = np.asarray(mask)
    if mask.shape != frame.original_size:
        raise ValueError(
            f"The mask has shape {mask.shape} but the image has {frame.original_size}: "
            "pass the mask of this image."
        )
    (nh, nw), s = frame.input_size, frame.image_size
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    resized = F.interpolate(m, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    padded = F.pad(resized, (0, s - nw, 0, s - nh))
    cell = s // frame.embedding_size
    coverage = F.avg_pool2d(padded, cell)[0, 0]
    gh, gw = frame.valid_embedding_size
    return coverage[:gh, :gw].clamp(0.0, 1.0).numpy()


def feature_masking(features: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """FM: features (C, gh, gw) times the mask's cell coverage (gh, gw)."""
    return np.asarray(features, dtype=np.float32) * np.asarray(coverage, dtype=np.float32)[None]


def pixel_fill(sam, rgb: np.ndarray | None = None) -> np.ndarray:
    """The uint8 RGB value IM gives to masked-out pixels: zero after the model's normalisation.

    SAM's pixel mean for models normalised by mean and standard deviation; the
    image's minimum (``rgb`` needed) for models normalised by min-max.
    """
    if model_profile(sam).normalization == "minmax":
        if rgb is None:
            raise ValueError("pixel_fill needs the image for a model normalised by min-max.")
        return np.full(3, np.asarray(rgb).min(), dtype=np.uint8)
    mean = sam.pixel_mean.detach().flatten().cpu().numpy()
    return np.clip(np.round(mean), 0, 255).astype(np.uint8)


def input_masked_image(rgb: np.ndarray, mask: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """IM's input: a copy of ``rgb`` (H, W, 3) with pixels outside ``mask`` set to ``fill``."""
    out = np.array(rgb, dtype=np.uint8, copy=True)
    out[~np.asarray(mask, dtype=bool)] = fill
    return out


def hybrid_masking(fm: np.ndarray, im: np.ndarray) -> np.ndarray:
    """HM: FM where FM > 0, IM elsewhere (element-wise)."""
    return np.where(fm > 0, fm, im).astype(np.float32)


def masked_features(
    sam,
    rgb: np.ndarray,
    mask: np.ndarray,
    mode: str = "hm",
    cache: EmbeddingCache | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The masked feature map of one object under FM, IM or HM.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        The model whose encoder gives the features.
    rgb : numpy.ndarray
        uint8 (H, W, 3) image (a crop around the object).
    mask : numpy.ndarray
        bool (H, W) object mask, not empty.
    mode : {"fm", "im", "hm"}
        Masking mode.
    cache : EmbeddingCache, optional
        Where embeddings are looked up and stored (default: the package-wide
        cache). The image's embedding is shared by every mask of it; IM costs one
        extra encoder pass per distinct mask.

    Returns
    -------
    features : numpy.ndarray
        float32 (C, gh, gw) masked feature map; it carries the coverage once
        (every mode: the features times the coverage, cell by cell).
    coverage : numpy.ndarray
        float32 (gh, gw) fraction of each cell covered by the mask.
    """
    mode = str(mode).lower()
    if mode not in MASKING_MODES:
        raise ValueError(f"masking={mode!r} is not one of {MASKING_MODES} (FM, IM, HM).")
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("The mask is empty: there is no object to describe.")
    cache = default_cache if cache is None else cache
    image = cache.get(sam, rgb)
    coverage = mask_coverage(mask, image.frame)
    if mode in ("fm", "hm"):
        fm = feature_masking(image.valid_features(), coverage)
        if mode == "fm":
            return fm, coverage
    im_raw = cache.get(sam, input_masked_image(rgb, mask, pixel_fill(sam, rgb))).valid_features()
    im = feature_masking(im_raw, coverage)
    if mode == "im":
        return im, coverage
    return hybrid_masking(fm, im), coverage


def masked_prototype(features: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """Target prototype t: the coverage-weighted mean of the features under the mask, L2-normalised.

    The masked map already carries the coverage (FM: ``coverage * features``), so
    t = sum over cells of the map / sum(coverage): each cell counts once with
    its coverage, not with its coverage squared.

    Parameters
    ----------
    features : numpy.ndarray
        (C, gh, gw) masked feature map (:func:`masked_features`), i.e. already
        multiplied by ``coverage``; cells outside the mask are 0.
    coverage : numpy.ndarray
        (gh, gw) coverage the map was masked with; its sum is the mean's
        denominator.

    Returns
    -------
    numpy.ndarray
        float32 (C,) unit vector (all zeros if the weighted mean is zero).
    """
    features = np.asarray(features, dtype=np.float64)
    w = np.asarray(coverage, dtype=np.float64)
    if features.shape[1:] != w.shape:
        raise ValueError(
            f"The feature map has cells {features.shape[1:]} but the coverage {w.shape}: "
            "pass the coverage the map was masked with."
        )
    total = w.sum()
    if total <= 0:
        raise ValueError("The mask covers no feature cell: there is no object to describe.")
    t = features.sum(axis=(1, 2)) / total
    norm = np.linalg.norm(t)
    return (t / norm if norm > 0 else t).astype(np.float32)
