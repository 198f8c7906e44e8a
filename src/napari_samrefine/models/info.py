"""Everything known about a model besides its weights, in one object: :func:`model_info`.

A loaded model is segment-anything's ``Sam`` module, unchanged: what the
package knows about it (where it came from, its profile, whether the fast
encoder runs, a digest of its encoder's weights) is kept beside it, in tables
with weak references to the models, and read through :func:`model_info`. Any
``Sam`` works, also one built in code: its facts are then derived (no source,
SAM's profile, the architecture read off its weights).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import xxhash

from napari_samrefine.models.architecture import infer_sam_config
from napari_samrefine.models.fast_encoder import fast_encoder_state
from napari_samrefine.models.profile import ModelProfile, model_profile
from napari_samrefine.models.source import model_source
from napari_samrefine.models.state_dict import CheckpointError

__all__ = ["ModelInfo", "model_info", "tensor_signature", "weights_digest"]


@dataclass(frozen=True)
class ModelInfo:
    """What is known about a SAM model: source, profile, encoder path, weights digest.

    Attributes
    ----------
    name : str or None
        Registry name (also for a file whose hash is registered), else the file
        name; None for a model built in code.
    arch : str
        ``"vit_b"``, ``"vit_l"``, ``"vit_h"``, ``"vit_t"``, ``"lite_medsam"`` or ``"custom"``.
    checkpoint : str or None
        Absolute path of the checkpoint file its weights were read from.
    xxh128 : str or None
        xxh128 hex digest of that file.
    profile : ModelProfile
        See :func:`~napari_samrefine.models.profile.model_profile`.
    fast_encoder : bool
        Whether the image encoder runs the fast path
        (:func:`~napari_samrefine.models.fast_encoder.enable_fast_encoder`).
    weights_digest : str
        xxh3-128 of the image encoder's weights and SAM's pixel statistics, as
        they are now (:func:`weights_digest`).
    """

    name: str | None
    arch: str
    checkpoint: str | None
    xxh128: str | None
    profile: ModelProfile
    fast_encoder: bool
    weights_digest: str


def model_info(sam) -> ModelInfo:
    """The facts about a model: what ``load_sam`` recorded, the rest derived from the model.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        A model from :func:`~napari_samrefine.models.loading.load_sam` or built in code.

    Returns
    -------
    ModelInfo

    Examples
    --------
    >>> from napari_samrefine.testing import tiny_sam
    >>> info = model_info(tiny_sam())
    >>> info.name, info.arch, info.fast_encoder, info.profile.prompts
    (None, 'custom', False, ('points', 'box', 'mask'))
    """
    source = model_source(sam)
    if source is not None:
        arch = source.arch
    else:
        try:
            arch = infer_sam_config(sam.state_dict()).arch
        except CheckpointError:  # a model of another layout (an adaptor plugged in, ...)
            arch = "custom"
    return ModelInfo(
        name=source.name if source else None,
        arch=arch,
        checkpoint=source.checkpoint if source else None,
        xxh128=source.xxh128 if source else None,
        profile=model_profile(sam),
        fast_encoder=fast_encoder_state(sam)["sdpa"],
        weights_digest=weights_digest(sam),
    )


def _version(t: torch.Tensor) -> int:
    try:
        return t._version  # bumped by every in-place change (optimizer steps, copy_, load_state_dict)
    except RuntimeError:  # an inference tensor keeps no version: its storage address stands in
        return -1


def tensor_signature(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> tuple:
    """What changes when a tensor is replaced, moved or changed in place; cheap to compute.

    Parameters
    ----------
    named_tensors : iterable of (str, torch.Tensor)
        E.g. ``module.named_parameters()``.

    Returns
    -------
    tuple
        Per tensor: name, identity, storage address, version counter, device,
        dtype and shape. Equal signatures mean unchanged tensors.
    """
    return tuple(
        (name, id(t), t.data_ptr(), _version(t), str(t.device), t.dtype, tuple(t.shape))
        for name, t in named_tensors
    )


def _encoder_tensors(sam):
    """The tensors an embedding depends on: the encoder's parameters and buffers, SAM's pixel statistics."""
    yield from sam.image_encoder.named_parameters(prefix="image_encoder")
    yield from sam.image_encoder.named_buffers(prefix="image_encoder")
    for name in ("pixel_mean", "pixel_std"):
        if isinstance(getattr(sam, name, None), torch.Tensor):
            yield name, getattr(sam, name)


_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def weights_digest(sam) -> str:
    """xxh3-128 of the image encoder's weights (names, dtypes, shapes, values) and pixel statistics.

    Kept beside the model and recomputed only when a weight tensor was
    replaced, moved or changed in place (:func:`tensor_signature`); hashing
    ViT-B's 360 MB takes about 0.04 s on a CPU.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam

    Returns
    -------
    str
        32 hexadecimal digits.
    """
    tensors = list(_encoder_tensors(sam))
    signature = tensor_signature(tensors)
    with _LOCK:
        cached = _DIGESTS.get(sam)
    if cached is not None and cached[0] == signature:
        return cached[1]
    h = xxhash.xxh3_128()
    for name, t in tensors:
        values = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{values.dtype}|{tuple(values.shape)}|".encode())
        h.update(values.reshape(-1).view(torch.uint8).numpy().data)
    digest = h.hexdigest()
    with _LOCK:
        _DIGESTS[sam] = (signature, digest)
    return digest
