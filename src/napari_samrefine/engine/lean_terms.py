"""Per-image terms of :class:`~napari_samrefine.engine.lean_decoder.LeanMaskDecoder`.

The mask prompt's encoder as matrix products on 2 x 2 patches (its convolutions
have stride = kernel), and the first decoder layer's image-side projections
with their rank-r corrections for mask prompts; plus small tensor helpers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "supports_lean_decoder",
    "dense_prompt",
    "first_layer_terms",
    "activate_",
    "split_heads",
    "autocasting",
]


def supports_lean_decoder(sam) -> bool:
    """Whether ``sam``'s prompt encoder and mask decoder have segment-anything's layout."""
    from segment_anything.modeling.mask_decoder import MaskDecoder
    from segment_anything.modeling.transformer import TwoWayTransformer

    dec = getattr(sam, "mask_decoder", None)
    if type(dec) is not MaskDecoder or type(dec.transformer) is not TwoWayTransformer:
        return False
    up = dec.output_upscaling
    down = sam.prompt_encoder.mask_downscaling
    convs_ok = (
        len(up) == 5
        and all(isinstance(up[i], nn.ConvTranspose2d) for i in (0, 3))
        and len(down) == 7
        and all(isinstance(down[i], nn.Conv2d) for i in (0, 3, 6))
    )
    if not convs_ok:
        return False
    for conv in (up[0], up[3], down[0], down[3]):
        if tuple(conv.kernel_size) != (2, 2) or tuple(conv.stride) != (2, 2) or conv.padding != (0, 0):
            return False
    return tuple(down[6].kernel_size) == (1, 1)


def activate_(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, computed in place for GELU (the activation of segment-anything's decoder)."""
    if type(module) is nn.GELU:
        return torch.ops.aten.gelu_(x, approximate=module.approximate)
    return module(x)


def split_heads(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """(internal, C) projection weight as (heads, d, C)."""
    return weight.reshape(heads, weight.shape[0] // heads, weight.shape[1])


def autocasting(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` ("cpu", "cuda", ...) in this thread."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        if device_type == "cuda":
            return torch.is_autocast_enabled()
        return torch.is_autocast_cpu_enabled()


def _per_head_t(x: torch.Tensor, attn) -> torch.Tensor:
    """(HW, internal) projection as (H, d, HW)."""
    h = attn.num_heads
    return x.reshape(-1, h, attn.internal_dim // h).permute(1, 2, 0).contiguous()


def dense_prompt(
    pe, masks: torch.Tensor | None, image: torch.Tensor, grid: tuple[int, int], n: int
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The mask prompt's features before the last 1 x 1 convolution, and the decoder's ``src``.

    The dense prompt embedding is ``z @ W^T + b`` with ``z`` (n, HW, r) the
    input of the mask encoder's last 1 x 1 convolution (r = 16 for SAM), so
    it has rank r per prompt; ``z`` is None without a mask prompt (the
    embedding is then one vector). ``pe`` is the model's prompt encoder,
    ``image`` the (HW, C) image tokens on the grid ``grid``.
    """
    if masks is None:
        no_mask = pe.no_mask_embed.weight.reshape(1, 1, -1).to(image.dtype)
        return None, (image[None] + no_mask).expand(n, -1, -1).contiguous()
    down = pe.mask_downscaling
    gh, gw = grid
    hw = gh * gw
    x = masks.to(image.dtype).reshape(n, gh, 2, 2, gw, 2, 2)
    # rows (n, gy, gx, ay, ax), columns (by, bx): the 2 x 2 patches of both convolutions
    x = x.permute(0, 1, 4, 2, 5, 3, 6).reshape(n * hw * 4, 4)
    conv = down[0]
    x = F.linear(x, conv.weight.reshape(conv.out_channels, 4), conv.bias)
    x = down[2](F.layer_norm(x, (x.shape[-1],), down[1].weight, down[1].bias, down[1].eps))
    conv = down[3]
    w = conv.weight.permute(0, 2, 3, 1).reshape(conv.out_channels, -1)
    x = F.linear(x.reshape(n * hw, -1), w, conv.bias)
    z = down[5](F.layer_norm(x, (x.shape[-1],), down[4].weight, down[4].bias, down[4].eps))
    conv = down[6]
    keys = F.linear(z, conv.weight[:, :, 0, 0], conv.bias).reshape(n, hw, -1)
    return z.reshape(n, hw, -1), keys.add_(image)


def first_layer_terms(sam, image: torch.Tensor, pos: torch.Tensor, with_mask: bool) -> dict:
    """Image-side projections of the first layer's attentions (computed once per image).

    In the first layer the image tokens are ``base + z @ W^T`` for every
    prompt, with ``base`` the image embedding plus the mask encoder's output
    bias (or SAM's "no mask" embedding) and ``z`` of rank r (see
    :func:`dense_prompt`). So the first token-to-image attention's keys and values
    and the first image-to-token attention's queries are per-image
    projections of ``base`` plus rank-r corrections: no per-prompt
    ``HW x C`` product is needed until the first residual update.
    """
    pe_enc = sam.prompt_encoder
    layer = sam.mask_decoder.transformer.layers[0]
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    last = pe_enc.mask_downscaling[6]
    if with_mask:
        base = image + last.bias.to(image.dtype)
    else:
        base = image + pe_enc.no_mask_embed.weight[0].to(image.dtype)
    with torch.no_grad():
        terms = {
            # (H, d, HW): keys of the token-to-image attention, positional encoding included
            "k": _per_head_t(F.linear(base + pos, t2i.k_proj.weight, t2i.k_proj.bias), t2i),
            # (H, HW, d): its values without the bias (the weights of a softmax sum to 1)
            "v": _per_head_t(F.linear(base, t2i.v_proj.weight), t2i).transpose(1, 2).contiguous(),
            # (H, d, HW): queries of the image-to-token attention
            "q": _per_head_t(F.linear(base + pos, i2t.q_proj.weight, i2t.q_proj.bias), i2t),
        }
        if with_mask:
            w = last.weight[:, :, 0, 0].to(image.dtype)  # (C, r)
            h = t2i.num_heads
            terms["kz"] = split_heads(t2i.k_proj.weight @ w, h)  # (H, d, r)
            terms["vz"] = split_heads(t2i.v_proj.weight @ w, h)
            terms["qz"] = split_heads(i2t.q_proj.weight @ w, i2t.num_heads)
    return terms
