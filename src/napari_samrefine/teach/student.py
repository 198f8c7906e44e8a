"""The student: the copy of the base model that teaching trains.

The student is a copy of the base model's prompt encoder and mask decoder
(trained) over the base's image encoder, which is shared and frozen, so every
embedding stays the base's. With ``lora_rank`` the student's image encoder is
instead an adapted copy (:func:`~napari_samrefine.models.lora.adapted_encoder`)
that shares the base's weights and trains only its low-rank adaptors.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

from napari_samrefine.models.lora import LORA_SUFFIXES, adapted_encoder
from napari_samrefine.models.profile import model_profile, set_model_profile

__all__ = ["student_of"]


@contextmanager
def student_of(sam, lora_rank: int = 0, lora_scale: float = 1.0) -> Iterator[tuple[object, list]]:
    """A trainable copy of ``sam`` and the parameters to train, for the ``with`` block.

    While the block runs, the base's image-encoder weights (shared with the
    student) do not require gradients; their flags are restored afterwards, so
    ``sam`` leaves as it came.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        The base model.
    lora_rank : int
        0: the image encoder is frozen; r >= 1: adaptors of rank r in its attention.
    lora_scale : float
        Factor of the adaptors' update.

    Yields
    ------
    (student, parameters)
        The copy, and its trained parameters (prompt encoder, mask decoder, adaptors).
    """
    encoder = sam.image_encoder
    flags = [(p, p.requires_grad) for p in encoder.parameters()]
    student = copy.deepcopy(sam, memo={id(encoder): encoder})
    set_model_profile(student, model_profile(sam))  # kept beside the model, not in it: a copy lacks it
    if lora_rank:
        student.image_encoder = adapted_encoder(encoder, lora_rank, lora_scale)
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        params = [p for n, p in student.named_parameters()
                  if not n.startswith("image_encoder.") or n.endswith(LORA_SUFFIXES)]
        yield student, params
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)

