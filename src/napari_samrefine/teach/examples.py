"""Teaching examples: a view's embedding, the prompts refine mines in it, and the targets.

Each :class:`~.views.TeachingView` becomes one example per augmentation (the
eight turns and flips of the square, :data:`DIHEDRAL`): the turned window is
encoded once (through an :class:`~napari_samrefine.engine.embedding.EmbeddingCache`,
so embeddings are shared with refine and between teaching runs), the prompts
are mined from the turned coarse masks as refine mines them
(:func:`~napari_samrefine.samrefiner.prompts.excavate_prompts` with the
model's CEBox), and the targets are the turned true masks in SAM's low-res frame
(the frame the mask decoder answers in).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from napari_samrefine._progress import ProgressCallback, report
from napari_samrefine.engine.embedding import EmbeddingCache, ImageEmbedding
from napari_samrefine.models.profile import model_profile
from napari_samrefine.samrefiner.decode import PromptSwitches, prompt_arrays
from napari_samrefine.samrefiner.prompts import excavate_prompts
from napari_samrefine.teach.views import TeachingView

__all__ = ["DIHEDRAL", "TeachingExample", "switches_for", "turn", "teaching_examples"]

DIHEDRAL = tuple(range(8))
"""The augmentations: k % 4 quarter turns, then a left-right flip when k >= 4 (0: none)."""


def turn(a: np.ndarray, k: int) -> np.ndarray:
    """``a`` (rows and columns first) turned by ``k % 4`` quarter turns, flipped when ``k >= 4``."""
    out = np.rot90(a, k % 4, axes=(0, 1))
    return np.ascontiguousarray(out[:, ::-1] if k >= 4 else out)


@dataclass(frozen=True)
class TeachingExample:
    """One encoded view: what the decoder is given and what it should answer.

    Attributes
    ----------
    embedding : ImageEmbedding
        The turned window's embedding (features on the CPU) and frame.
    prompts : dict
        The objects' prompts as :func:`~napari_samrefine.samrefiner.decode.prompt_arrays`
        stacks them (original frame of the turned window): ``points``,
        ``point_labels``, ``boxes``, ``masks`` (None for a kind not given).
    targets : torch.Tensor
        (n, L, L) float32 0/1 true masks in the low-res frame.
    coarse : torch.Tensor
        (n, L, L) bool coarse masks in the low-res frame (the baseline of validation).
    image : int
        Index of the training image.
    window : numpy.ndarray
        The turned window (uint8 RGB) the embedding is of: what an adapted image
        encoder (``lora_rank``) encodes again at each step.
    turn : int
        The augmentation (:data:`DIHEDRAL`) of the window.
    """

    embedding: ImageEmbedding
    prompts: dict
    targets: torch.Tensor
    coarse: torch.Tensor
    image: int
    window: np.ndarray
    turn: int = 0

    def __len__(self) -> int:
        return len(self.targets)


def _lowres(frame, masks: np.ndarray) -> torch.Tensor:
    rows, cols = frame.to_lowres_rows, frame.to_lowres_cols
    return torch.from_numpy(np.stack([rows @ m.astype(np.float32) @ cols.T > 0.5 for m in masks]))


def switches_for(prompts: Sequence[str]) -> PromptSwitches:
    """The prompt switches of the prompt kinds ``prompts`` ("points", "box", "mask")."""
    return PromptSwitches(points="points" in prompts, box="box" in prompts, mask="mask" in prompts)


def teaching_examples(
    views: Sequence[TeachingView],
    sam,
    *,
    prompts: Sequence[str] = ("box", "mask"),
    augment: Sequence[int] = DIHEDRAL,
    cache: EmbeddingCache | None = None,
    progress: ProgressCallback | None = None,
) -> list[TeachingExample]:
    """Encode every view in every augmentation and mine its prompts as refine would.

    Parameters
    ----------
    views : sequence of TeachingView
    sam : segment_anything.modeling.Sam
        The model being taught (its image encoder is never changed).
    prompts : sequence of str
        The prompt kinds the taught model is given.
    augment : sequence of int
        Which of :data:`DIHEDRAL` to use (``(0,)``: none).
    cache : EmbeddingCache, optional
        Where embeddings are looked up and kept (e.g. with a disk tier).
    progress : callable, optional
        ``progress(done, total, message)``; raise ``Cancelled`` in it to stop.

    Returns
    -------
    list of TeachingExample
    """
    cache = cache if cache is not None else EmbeddingCache(max_items=1)
    switches = switches_for(prompts)
    cebox = model_profile(sam).defaults.cebox
    total = len(views) * len(augment)
    out = []
    for v, view in enumerate(views):
        for a, k in enumerate(augment):
            report(progress, v * len(augment) + a, total, "encoding the teaching windows")
            window = turn(view.rgb, k)
            emb = cache.get(sam, window)
            coarse = turn(view.coarse, k)
            mined = {p.label_id: p for p in excavate_prompts(
                coarse, emb, label_ids=view.ids, cebox=cebox, binary="one")}
            found = [i for i in view.ids if i in mined]
            if not found:
                continue
            rows = [view.ids.index(i) for i in found]
            targets = turn(np.moveaxis(view.targets[rows], 0, -1), k)
            frame = emb.frame
            out.append(TeachingExample(
                embedding=ImageEmbedding(emb.features.detach().to("cpu"), frame, emb.key),
                prompts=prompt_arrays([mined[i] for i in found], switches),
                targets=_lowres(frame, np.moveaxis(targets, -1, 0)).float(),
                coarse=_lowres(frame, np.stack([coarse == i for i in found])),
                image=view.image,
                window=window,
                turn=k,
            ))
    report(progress, total, total, "encoding the teaching windows")
    return out
