"""The few-shot segmentation (FSS) interface that JFS runs in reverse (SPEC section 5).

JFS asks an FSS model: "given the query image and one of its masks as the
example, where is that kind of object in the support image?" Any object with a
``predict(query_image, query_mask, support_image)`` method returning a
foreground probability map over the support image is a backend. Two backends
live in their own modules (:mod:`.fss_sam`, PerSAM-style on the loaded SAM, and
:mod:`.fss_seggpt`, SegGPT); this module holds the protocol and
:class:`MaskTransferFSS`, a training-free shape-prior baseline whose prediction
is known in closed form.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["FewShotSegmenter", "MaskTransferFSS", "check_prediction"]


@runtime_checkable
class FewShotSegmenter(Protocol):
    """What JFS needs from a few-shot segmentation model.

    The names follow JFS, not the FSS literature: the *query* image and mask
    are the example (FSS's support set) and the *support* image is where the
    object is searched (FSS's query).
    """

    def predict(
        self, query_image: np.ndarray, query_mask: np.ndarray, support_image: np.ndarray
    ) -> np.ndarray:
        """Foreground probability over ``support_image`` of objects like ``query_mask``.

        Parameters
        ----------
        query_image : numpy.ndarray
            uint8 (h, w, 3) crop of the query image.
        query_mask : numpy.ndarray
            bool (h, w) mask of one object in that crop (never empty).
        support_image : numpy.ndarray
            uint8 (hs, ws, 3) crop of a support image.

        Returns
        -------
        numpy.ndarray
            float (hs, ws) probabilities in [0, 1]; the support mask prediction
            (SMP) is ``probability > 0.5``.
        """
        ...


class MaskTransferFSS:
    """Shape-prior FSS: the query mask, resized onto the support crop.

    JFS crops query and support around their objects with the same relative
    context, so the query mask laid over the support crop is a prediction of
    where the support object lies, assuming the two objects share shape and
    placement. It ignores the images altogether, which makes its prediction
    known in closed form: a controlled backend for checking the JFS logic, and
    a baseline any image-based backend should beat.

    Examples
    --------
    >>> fss = MaskTransferFSS()
    >>> mask = np.zeros((4, 4), bool); mask[1:3, 1:3] = True
    >>> rgb = np.zeros((4, 4, 3), np.uint8)
    >>> bool((fss.predict(rgb, mask, rgb) > 0.5).sum() == 4)
    True
    """

    def predict(
        self, query_image: np.ndarray, query_mask: np.ndarray, support_image: np.ndarray
    ) -> np.ndarray:
        """Bilinear resize (``align_corners=False``) of ``query_mask`` to the support crop's size."""
        mask = np.asarray(query_mask, dtype=np.float32)
        size = tuple(np.asarray(support_image).shape[:2])
        if mask.shape == size:
            return mask
        out = F.interpolate(
            torch.from_numpy(mask)[None, None], size=size, mode="bilinear", align_corners=False
        )
        return out[0, 0].numpy()


def check_prediction(prob: np.ndarray, support_shape: tuple[int, int], backend) -> np.ndarray:
    """Validate a backend's output: a finite (hs, ws) map in [0, 1], returned as float32."""
    prob = np.asarray(prob, dtype=np.float32)
    if prob.shape != tuple(support_shape):
        raise ValueError(
            f"The FSS backend {type(backend).__name__} returned a map of shape {prob.shape} "
            f"for a support crop of shape {tuple(support_shape)}: predict() must return one "
            "probability per support pixel."
        )
    if not np.isfinite(prob).all() or prob.min() < 0 or prob.max() > 1:
        raise ValueError(
            f"The FSS backend {type(backend).__name__} returned values outside [0, 1] (or "
            "NaN): predict() must return foreground probabilities, not logits."
        )
    return prob
