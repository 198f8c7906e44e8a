"""The losses SAM was trained with: focal and dice on the masks, mean squared error on the IoU head.

Segment Anything weighs focal to dice 20 : 1 and adds the squared error between
the IoU head's prediction and the IoU the mask really has.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["FOCAL_WEIGHT", "focal_loss", "dice_loss", "mask_iou", "refine_loss"]

FOCAL_WEIGHT = 20.0


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss of each mask, averaged over its pixels: (n,) from (n, H, W)."""
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    weight = alpha * targets + (1 - alpha) * (1 - targets)
    return (weight * ce * (1 - p_t) ** gamma).flatten(1).mean(1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - soft dice of each mask: (n,) from (n, H, W)."""
    p = torch.sigmoid(logits).flatten(1)
    t = targets.flatten(1)
    return 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of each mask ``logits > 0`` with ``targets > 0.5`` (1 where both are empty): (n,)."""
    a = (logits > 0).flatten(1)
    b = (targets > 0.5).flatten(1)
    inter = (a & b).sum(1).float()
    union = (a | b).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def refine_loss(logits: torch.Tensor, iou_pred: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """SAM's loss summed over the masks: 20 focal + dice + (predicted IoU - IoU) ** 2.

    Parameters
    ----------
    logits : torch.Tensor
        (n, H, W) mask logits.
    iou_pred : torch.Tensor
        (n,) the IoU head's predictions.
    targets : torch.Tensor
        (n, H, W) 0/1 true masks.
    """
    iou = mask_iou(logits.detach(), targets)
    per_mask = FOCAL_WEIGHT * focal_loss(logits, targets) + dice_loss(logits, targets)
    return (per_mask + (iou_pred - iou) ** 2).sum()
