"""Low-rank adaptation (LoRA) of one linear layer, as SAMRefiner++ puts on SAM's IoU head.

``LoRALinear(base)`` computes ``base(x) + scale * (x @ down.T) @ up.T``: the frozen
layer plus a rank-``r`` update. The up-projection starts at zero, so a fresh
adaptor leaves the layer's output unchanged; only ``down`` and ``up`` are trained.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LoRALinear", "init_lora", "lora_delta"]


def init_lora(
    in_features: int, out_features: int, rank: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial LoRA tensors: ``down`` (rank, in) uniform, ``up`` (out, rank) zero.

    ``down`` is drawn as ``nn.Linear`` draws its weights (Kaiming uniform with
    ``a = sqrt(5)``, i.e. U(-1/sqrt(in), 1/sqrt(in))), from ``generator`` so that a
    seed fixes it without touching torch's global random state.

    Parameters
    ----------
    in_features, out_features : int
        Shape of the adapted layer.
    rank : int
        Rank of the update (at least 1).
    generator : torch.Generator, optional
        Source of randomness.

    Returns
    -------
    down, up : torch.Tensor
        float32 tensors on the CPU.
    """
    if rank < 1:
        raise ValueError(f"The LoRA rank must be at least 1, got {rank}.")
    bound = 1.0 / math.sqrt(in_features)
    down = (torch.rand(rank, in_features, generator=generator) * 2.0 - 1.0) * bound
    up = torch.zeros(out_features, rank)
    return down, up


def lora_delta(
    x: torch.Tensor, down: torch.Tensor, up: torch.Tensor, scale: float = 1.0
) -> torch.Tensor:
    """The low-rank update ``scale * (x @ down.T) @ up.T`` that LoRA adds to a layer's output."""
    return scale * ((x @ down.T) @ up.T)


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update.

    Parameters
    ----------
    base : torch.nn.Linear
        The layer to adapt; it is kept as is (its parameters are not copied,
        not modified, and their ``requires_grad`` is left alone).
    down : torch.Tensor
        (rank, in_features) down-projection A.
    up : torch.Tensor
        (out_features, rank) up-projection B.
    scale : float
        Factor of the update (LoRA's alpha / rank).
    """

    def __init__(self, base: nn.Linear, down: torch.Tensor, up: torch.Tensor, scale: float = 1.0):
        super().__init__()
        if down.shape[1] != base.in_features or up.shape[0] != base.out_features:
            raise ValueError(
                f"LoRA tensors {tuple(down.shape)} / {tuple(up.shape)} do not fit a linear layer "
                f"of {base.in_features} -> {base.out_features} features."
            )
        if down.shape[0] != up.shape[1]:
            raise ValueError(f"LoRA ranks differ: down {tuple(down.shape)}, up {tuple(up.shape)}.")
        self.base = base
        w = base.weight
        self.down = nn.Parameter(down.detach().to(device=w.device, dtype=w.dtype).clone())
        self.up = nn.Parameter(up.detach().to(device=w.device, dtype=w.dtype).clone())
        self.scale = float(scale)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + lora_delta(x, self.down, self.up, self.scale)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scale={self.scale}"
