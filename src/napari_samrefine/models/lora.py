"""Low-rank adaptors (LoRA) in the image encoder's attention.

SAM's ViTs and TinyViT compute the queries, keys and values of each attention
block with one linear layer, ``attn.qkv``. A low-rank adaptor adds a trainable
update of rank r to it: ``qkv(x) + scale * B(A(x))``, with ``A`` (r x in) and
``B`` (out x r). ``B`` starts at zero, so an adapted encoder starts as its base.

:func:`adapted_encoder` makes the adapted encoder as a copy of the base's
modules that shares the base's weights (the base model is never changed, and
an adapted ViT-H costs the adaptors' memory, not a second encoder). Teaching
(:func:`~napari_samrefine.teach.finetune.finetune` with ``lora_rank``) trains
``A`` and ``B``; a taught file holds them under their ``state_dict`` names
(``image_encoder.<block>.attn.qkv.lora_a`` and ``.lora_b``).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LORA_SUFFIXES", "LoRALinear", "adapted_encoder", "is_lora_weight", "lora_targets"]

LORA_SUFFIXES = (".lora_a", ".lora_b")
"""How the adaptors' tensors end in a ``state_dict``."""

_TARGET = "attn.qkv"


class LoRALinear(nn.Module):
    """A linear layer with a low-rank update: ``base(x) + scale * x A^T B^T``.

    Parameters
    ----------
    base : torch.nn.Linear
        The layer adapted; it is kept (not copied) and not trained.
    rank : int
        Rank r of the update.
    scale : float
        Factor of the update (LoRA's alpha / r).
    """

    def __init__(self, base: nn.Linear, rank: int, scale: float = 1.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        self.base = base
        self.scale = float(scale)
        like = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, **like))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, **like))

    @property
    def rank(self) -> int:
        """The rank r of the update."""
        return self.lora_a.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale


def lora_targets(encoder: nn.Module) -> list[str]:
    """Names (in ``encoder``) of the attention layers an adaptor is put on: every ``attn.qkv`` linear."""
    return [name for name, m in encoder.named_modules()
            if (name == _TARGET or name.endswith("." + _TARGET)) and isinstance(m, nn.Linear)]


def is_lora_weight(name: str) -> bool:
    """Whether a model ``state_dict`` name is an image-encoder adaptor's tensor."""
    return name.startswith("image_encoder.") and name.endswith(LORA_SUFFIXES)


def adapted_encoder(encoder: nn.Module, rank: int, scale: float = 1.0) -> nn.Module:
    """A copy of ``encoder`` with an adaptor of rank ``rank`` on every attention block.

    The copy shares ``encoder``'s parameters and buffers (nothing of the base
    is copied or changed); only the adaptors are new, with ``B = 0``, so the
    copy computes what ``encoder`` computes until they are trained.

    Parameters
    ----------
    encoder : torch.nn.Module
        SAM's ``image_encoder`` (ViT or TinyViT).
    rank : int
        Rank of each adaptor (at least 1).
    scale : float
        Factor of each update.

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    ValueError
        If the encoder has no ``attn.qkv`` linear layer to adapt.
    """
    targets = lora_targets(encoder)
    if not targets:
        raise ValueError(f"{type(encoder).__name__} has no attention layer (attn.qkv) to put an adaptor on; "
                         "teach it without lora_rank.")
    shared = {id(t): t for t in (*encoder.parameters(), *encoder.buffers())}
    out = copy.deepcopy(encoder, memo=shared)
    for name in targets:
        parent, _, leaf = name.rpartition(".")
        holder = out.get_submodule(parent) if parent else out
        setattr(holder, leaf, LoRALinear(getattr(holder, leaf), rank, scale))
    return out
