"""What :func:`~napari_samrefine.refine` returns: refined labels and one record per object."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from napari_samrefine.samrefiner.prompts import ObjectPrompts

__all__ = ["ObjectResult", "RefineResult", "Plane", "SIGNAL_COLUMNS"]

Plane = int | tuple[int, ...] | None
"""A plane of the labels: None for 2D, the index for a 3D stack, (t, z) for 4D."""

SIGNAL_COLUMNS = ("iou_coarse", "stability", "edge_contrast")
"""The fields of :class:`ObjectResult` that hold label-free quality estimates
(:mod:`napari_samrefine.quality.signals`; ``predicted_iou`` is one too)."""


@dataclass(frozen=True)
class ObjectResult:
    """What happened to one object (or one STM group in semantic mode).

    Attributes
    ----------
    label_id : int
        Object id (instance mode) or class id (semantic mode).
    plane : int, tuple or None
        The plane: None for 2D labels, its index in a 3D stack, (t, z) in a 4D one.
    status : str
        "ok"; "kept-previous" (SAM's mask came out empty at a later cascade
        iteration: the previous iteration's mask is kept); "empty-input" (the
        requested id is not in the labels); "empty-output" (SAM's mask came out
        empty at the first iteration: the coarse mask is kept); "kept-coarse"
        (``keep="better"``: the refined mask agreed too little with the coarse
        one, so the coarse mask is kept; ``refined_area`` is the rejected
        mask's); "skipped"
        (present in the labels but not selected with ``label_ids``; kept as is);
        "specks" (semantic mode: every component of the class is under STM's
        minimum size, so there is nothing to refine; kept as is);
        "too-large-for-tile" (lazy input only: the object fits no tile and the
        whole plane is too large to refine downscaled; kept as is).
    predicted_iou : float
        SAM's predicted IoU of the chosen candidate in the last iteration.
    iterations : int
        Decoder passes the object went through.
    coarse_area, refined_area : int
        Pixels before and after (refined_area before overlap resolution).
    group : int
        Index of the STM group within its class (semantic mode), else 0.
    iou_coarse, stability, edge_contrast : float
        Label-free estimates of the refinement's quality
        (:mod:`napari_samrefine.quality.signals`), of the mask SAM refined (for
        "kept-coarse", the rejected one): its IoU with the coarse mask, SAM's
        stability score (IoU of the mask at logits +1 and -1) and the image's
        edge contrast on its boundary minus on the coarse boundary. NaN for
        objects that were not refined ("skipped", "empty-input", "specks",
        "too-large-for-tile"); for "empty-output" the coarse mask stands for
        the refined one (IoU 1, no stability).
    scale : float
        The zoom the object was refined at: pixels of the model's input per
        pixel of the image (``refine``'s ``scale``; below 1 where the image or
        tile was shrunk to the model's input). NaN for objects not refined.
    jfs_verdict : str
        With ``refine(..., support=...)``: the JFS judge's verdict on the mask
        ``refine`` returned for the object (after the keep policy, so a
        "kept-coarse" object is judged on its coarse mask and comes out
        "uncertain"): "improved", "degraded", "uncertain" or "could not judge". "" without
        support, and for objects not refined. A column only: it does not
        change which mask is kept.
    """

    label_id: int
    plane: Plane
    status: str
    predicted_iou: float
    iterations: int
    coarse_area: int
    refined_area: int
    group: int = 0
    iou_coarse: float = float("nan")
    stability: float = float("nan")
    edge_contrast: float = float("nan")
    scale: float = float("nan")
    jfs_verdict: str = ""


@dataclass
class RefineResult:
    """Result of :func:`~napari_samrefine.refine`.

    Attributes
    ----------
    labels : numpy.ndarray or array
        Refined labels, same shape and dtype as the input, ids preserved: a
        numpy array, or the ``out=`` array (e.g. a zarr array) when one was given.
    objects : list of ObjectResult
        One record per object (per group in semantic mode).
    prompts : list of ObjectPrompts or None
        The prompts of each object's last iteration, aligned with ``objects``
        (None for objects that were not refined). ``mask_input`` is dropped to
        save memory (256 kB per object for the published models);
        :func:`~napari_samrefine.excavate_prompts` recomputes it. Each holds
        arrays the size of its object's box (the Gaussian map), never of the image.
    mode : str
        "instance" or "semantic".
    """

    labels: np.ndarray
    objects: list[ObjectResult] = field(default_factory=list)
    prompts: list[ObjectPrompts | None] = field(default_factory=list)
    mode: str = "instance"

    def table(self):
        """Per-object records as a pandas DataFrame (one row per object)."""
        import pandas as pd

        columns = list(ObjectResult.__dataclass_fields__)
        return pd.DataFrame([asdict(o) for o in self.objects], columns=columns)
