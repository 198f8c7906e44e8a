"""What a SAM state dict says, shared by every architecture: tensors, numbered blocks, the decoder.

Every SAM-family model (ViT or TinyViT image encoder) has segment-anything's
prompt encoder and mask decoder; :func:`infer_decoder_config` reads their
widths off the weights. :func:`tensor` and :func:`count_blocks` are the two
ways the architectures (:mod:`~napari_samrefine.models.architecture`,
:mod:`~napari_samrefine.models.tinyvit`) read a state dict.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

__all__ = [
    "CheckpointError",
    "DecoderConfig",
    "count_blocks",
    "infer_decoder_config",
    "tensor",
]


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: unreadable, not SAM, unsafe, or not the expected model."""


@dataclass(frozen=True)
class DecoderConfig:
    """The prompt encoder and mask decoder of a SAM-family model (any image encoder).

    Attributes
    ----------
    prompt_dim : int
        Width of the encoder neck, the prompt encoder and the mask decoder.
    mask_in_chans : int
        Hidden channels of the mask-prompt encoder.
    decoder_depth, decoder_mlp_dim, decoder_heads, decoder_downsample_rate : int
        Two-way transformer of the mask decoder. The heads are not visible in the
        weights: see :func:`infer_decoder_config`.
    num_multimask_outputs, iou_head_depth, iou_head_hidden_dim : int
        Mask decoder outputs and IoU prediction head.
    """

    prompt_dim: int
    mask_in_chans: int
    decoder_depth: int
    decoder_mlp_dim: int
    decoder_heads: int
    decoder_downsample_rate: int
    num_multimask_outputs: int
    iou_head_depth: int
    iou_head_hidden_dim: int


def count_blocks(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of consecutive numbered submodules ``prefix.0``, ``prefix.1``, ... in a state dict.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
    prefix : str
        E.g. ``"image_encoder.blocks"``.

    Returns
    -------
    int
        0 when ``prefix.0`` is absent; a gap ends the count.
    """
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    indexes = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    n = 0
    while n in indexes:
        n += 1
    return n


def tensor(state_dict: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    """The tensor ``key`` of a state dict.

    Raises
    ------
    CheckpointError
        If it is missing, naming it.
    """
    try:
        return state_dict[key]
    except KeyError:
        raise CheckpointError(
            f"Not a SAM checkpoint that segment-anything can build: tensor {key!r} is missing."
        ) from None


def _decoder_heads(dim: int, internal_dim: int) -> int:
    # SAM's decoder is 256 wide with 8 heads; tiny_sam's (narrower) have 2. Fall back
    # to fewer heads where that number does not divide the attention widths.
    heads = 8 if dim >= 256 else 2
    while heads > 1 and (dim % heads or internal_dim % heads):
        heads //= 2
    return heads


def infer_decoder_config(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Prompt encoder and mask decoder fields (:class:`DecoderConfig`) read off a state dict.

    The decoder's attention heads leave no trace in the weights; the rule is
    SAM's 8 heads for decoders 256 or more channels wide and 2 heads for
    narrower ones (as in :func:`napari_samrefine.testing.tiny_sam`), halved
    until they divide the attention widths.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
        Keys as in segment-anything's ``Sam.state_dict()``.

    Returns
    -------
    dict
        The fields of :class:`DecoderConfig`.

    Raises
    ------
    CheckpointError
        If a decoder tensor is missing.
    """
    prompt_dim = int(tensor(state_dict, "mask_decoder.transformer.norm_final_attn.weight").shape[0])
    dec = "mask_decoder.transformer."
    internal_dim = int(tensor(state_dict, dec + "final_attn_token_to_image.q_proj.weight").shape[0])
    iou = "mask_decoder.iou_prediction_head.layers"
    return dict(
        prompt_dim=prompt_dim,
        mask_in_chans=int(tensor(state_dict, "prompt_encoder.mask_downscaling.3.weight").shape[0]),
        decoder_depth=count_blocks(state_dict, dec + "layers"),
        decoder_mlp_dim=int(tensor(state_dict, dec + "layers.0.mlp.lin1.weight").shape[0]),
        decoder_heads=_decoder_heads(prompt_dim, internal_dim),
        decoder_downsample_rate=max(prompt_dim // max(internal_dim, 1), 1),
        num_multimask_outputs=int(tensor(state_dict, "mask_decoder.mask_tokens.weight").shape[0]) - 1,
        iou_head_depth=count_blocks(state_dict, iou),
        iou_head_hidden_dim=int(tensor(state_dict, iou + ".0.weight").shape[0]),
    )
