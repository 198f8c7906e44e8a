"""PerSAM-style few-shot segmentation on the already loaded SAM (training-free; SPEC section 5).

Steps for one (query image, query mask) -> support image prediction:

1. target prototype t: the query's SAM features under the mask (FM, IM or HM,
   :mod:`.masking`), coverage-weighted mean, L2-normalised;
2. location map: cosine similarity of t with every (L2-normalised) feature of
   the support image, upsampled to the support's frame; positive point at the
   argmax, negative point at the argmin (first in row-major order on ties);
3. SAM's prompt encoder and mask decoder on the support's embedding with those
   two points (single-mask output), then two cascaded refinements as in
   PerSAM: add the previous low-res logits as mask prompt; then also the box
   of the previous mask. Each refinement asks for three candidates and keeps
   the one with the highest predicted IoU (lowest index on ties).

Models trained without points or mask prompts (their profile,
:func:`~napari_samrefine.models.profile.model_profile`; LiteMedSAM takes boxes
only) get only the prompts they know: the first box is that of the connected
region around the location map's maximum where the similarity exceeds the
midpoint between its maximum and its mean, the refinement uses the box of
the previous mask, and each call gives the single-mask output when the
profile says the IoU head cannot rank candidates.

PerSAM's target-guided attention and target-semantic prompting are not used
(they change SAM's decoder; the spec lists them as optional).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi

from napari_samrefine.engine.embedding import EmbeddingCache, ImageEmbedding, default_cache
from napari_samrefine.judge.masking import MASKING_MODES, masked_features, masked_prototype
from napari_samrefine.models.profile import model_profile
from napari_samrefine.samrefiner.decode import decode_batch, lean_decoder

__all__ = ["PerSamFSS", "location_map", "similar_region_box"]


def similar_region_box(sim: np.ndarray) -> np.ndarray:
    """Inclusive (x1, y1, x2, y2) box of the region around a location map's maximum.

    The region is the connected component (8-connectivity) holding the argmax
    of the pixels whose similarity is at least the midpoint of the map's
    maximum and mean: the box prompt for models trained on boxes only.
    """
    peak = np.unravel_index(int(np.argmax(sim)), sim.shape)
    regions, _ = ndi.label(sim >= (sim.max() + sim.mean()) / 2, structure=np.ones((3, 3)))
    ys, xs = np.nonzero(regions == regions[peak])
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=float)


def location_map(prototype: np.ndarray, support: ImageEmbedding) -> np.ndarray:
    """Cosine similarity of a prototype (C,) with every support feature, in the support's frame.

    Returns
    -------
    numpy.ndarray
        float32 (H, W) map over the support image's original frame (the valid
        embedding grid upsampled bilinearly, as segment-anything upsamples).
    """
    feats = support.valid_features()
    norms = np.linalg.norm(feats, axis=0, keepdims=True)
    unit = feats / np.maximum(norms, 1e-12)
    sim = np.tensordot(np.asarray(prototype, dtype=np.float32), unit, axes=(0, 0))
    frame = support.frame
    return (frame.from_embedding_rows @ sim @ frame.from_embedding_cols.T).astype(np.float32)


class PerSamFSS:
    """Few-shot segmentation with a plain SAM, after PerSAM (Zhang et al.).

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        The loaded model (any size; sizes are read off it).
    masking : {"hm", "fm", "im"}
        How the query's features are restricted to the mask (:mod:`.masking`).
    cache : EmbeddingCache, optional
        Embedding cache (default: the package-wide one). A query crop is encoded
        once for all its masks, a support crop once for every query object.

    Examples
    --------
    >>> from napari_samrefine.testing import tiny_sam
    >>> fss = PerSamFSS(tiny_sam(), masking="fm")
    >>> rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    >>> mask = np.zeros((64, 64), bool); mask[20:40, 20:40] = True
    >>> fss.predict(rgb, mask, rgb).shape
    (64, 64)
    """

    def __init__(self, sam, masking: str = "hm", cache: EmbeddingCache | None = None):
        masking = str(masking).lower()
        if masking not in MASKING_MODES:
            raise ValueError(f"masking={masking!r} is not one of {MASKING_MODES} (FM, IM, HM).")
        self.sam = sam
        self.masking = masking
        self.cache = default_cache if cache is None else cache
        self.last_points: np.ndarray | None = None

    def predict(
        self, query_image: np.ndarray, query_mask: np.ndarray, support_image: np.ndarray
    ) -> np.ndarray:
        """Foreground probability (sigmoid of SAM's logits) over ``support_image``; see the module doc."""
        return 1.0 / (1.0 + np.exp(-self.predict_logits(query_image, query_mask, support_image)))

    @torch.no_grad()
    def predict_logits(
        self, query_image: np.ndarray, query_mask: np.ndarray, support_image: np.ndarray
    ) -> np.ndarray:
        """SAM's final mask logits over ``support_image`` (float32, support's original frame)."""
        feats, coverage = masked_features(
            self.sam, query_image, query_mask, self.masking, cache=self.cache
        )
        prototype = masked_prototype(feats, coverage)
        support = self.cache.get(self.sam, support_image)
        sim = location_map(prototype, support)
        pos = np.unravel_index(int(np.argmax(sim)), sim.shape)
        neg = np.unravel_index(int(np.argmin(sim)), sim.shape)
        # (x, y) = (column, row), as SAM's prompts
        self.last_points = np.array([[pos[1], pos[0]], [neg[1], neg[0]]], dtype=np.float64)
        points = (self.last_points, np.array([1, 0]))

        profile = model_profile(self.sam)
        if not profile.trained_with("points"):
            points = None
        box = None if profile.trained_with("points") else similar_region_box(sim)
        use_mask = profile.trained_with("mask")
        multimask = profile.multimask
        decoder = lean_decoder(self.sam, support) or "reference"  # once for the three calls
        logits, _ = self._decode(support, points, box=box, multimask=False, decoder=decoder)
        if use_mask:
            logits, _ = self._decode(
                support, points, box=box, mask_input=logits, multimask=multimask, decoder=decoder
            )
        full = support.frame.lowres_to_original(logits)
        ys, xs = np.nonzero(full > 0)
        if ys.size:
            box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], float)
        mask_input = logits if use_mask else None
        logits, _ = self._decode(
            support, points, box=box, mask_input=mask_input, multimask=multimask, decoder=decoder
        )
        return support.frame.lowres_to_original(logits)

    def _decode(
        self,
        support: ImageEmbedding,
        points: tuple[np.ndarray, np.ndarray] | None,
        box: np.ndarray | None = None,
        mask_input: torch.Tensor | None = None,
        multimask: bool = True,
        decoder="lean",
    ) -> tuple[torch.Tensor, float]:
        """One prompt-encoder + mask-decoder call; the best candidate's (L, L) low-res logits.

        Goes through :func:`~napari_samrefine.samrefiner.decode.decode_batch`, the
        package's one prompt-to-decoder path (prompts scaled to SAM's frame there).
        """
        decoded = decode_batch(
            self.sam,
            support,
            points=None if points is None else np.asarray(points[0])[None],
            point_labels=None if points is None else np.asarray(points[1])[None],
            boxes=None if box is None else np.asarray(box)[None],
            masks=None if mask_input is None else mask_input[None],
            multimask=multimask,
            decoder=decoder,
        )
        return decoded.lowres[0], float(decoded.iou[0])
