"""SAM's mask decoder for many prompts on one image, with less memory traffic.

segment-anything's ``MaskDecoder.predict_masks`` copies the image embedding and
its positional encoding once per prompt (``repeat_interleave``), projects all
``h * w`` image tokens to queries, keys and values in every attention layer,
and computes the masks of all four mask tokens. :class:`LeanMaskDecoder`
computes the same function with the same weights, reorganised:

- image-side projections of the positional encoding are computed once per
  image; the per-prompt part of every token-to-image attention uses
  ``(q W_k) keys^T`` and ``(A keys) W_v^T`` (the projection moved to the few
  tokens), and every image-to-token attention uses ``keys (W_q^T k)`` and
  ``A (v W_o^T)``, so no per-prompt ``h * w x C`` projection is written;
- the image embedding is never copied per prompt before the first layer adds
  the dense prompt embedding; tensors stay channels-last (no transposes);
- the mask prompt's downscaling convolutions (all of stride = kernel) run as
  matrix products on channels-last patches;
- the candidate is chosen from the IoU head first, and only its mask goes
  through the hypernetwork product.

Results equal segment-anything's decoder to float rounding (the tests compare
them); the selection rule is ``argmax`` of the multimask IoU predictions, ties to
the lowest index, as :func:`~napari_samrefine.samrefiner.decode.decode_prompts`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LeanMaskDecoder", "supports_lean_decoder"]


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


def _activate_(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, computed in place for GELU (the activation of segment-anything's decoder)."""
    if type(module) is nn.GELU:
        return torch.ops.aten.gelu_(x, approximate=module.approximate)
    return module(x)


def _heads(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """(internal, C) projection weight as (heads, d, C)."""
    return weight.reshape(heads, weight.shape[0] // heads, weight.shape[1])


class LeanMaskDecoder:
    """segment-anything's mask decoder bound to one image embedding.

    Build it once per image (it precomputes the image-side positional terms of
    every attention layer) and call :meth:`decode` for chunks of prompts.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        The model; its modules are used as they are at call time (an IoU-head
        adaptor applied later is honoured).
    features : torch.Tensor
        (1, C, h, w) image embedding.
    """

    def __init__(self, sam, features: torch.Tensor):
        if not supports_lean_decoder(sam):
            raise TypeError("This model's decoder is not segment-anything's MaskDecoder layout.")
        self.sam = sam
        dec = sam.mask_decoder
        tr = dec.transformer
        _, c, gh, gw = features.shape
        self.grid = (gh, gw)
        self.dim = c
        with torch.no_grad():
            self.image = features[0].reshape(c, gh * gw).T.contiguous()  # (HW, C)
            pe = sam.prompt_encoder.get_dense_pe().to(features.dtype)
            pe = pe[0].reshape(c, gh * gw).T.contiguous()
            # token-to-image attentions: pe @ W_k^T + b_k per head, as (H, d, HW)
            t2i = [layer.cross_attn_token_to_image for layer in tr.layers]
            t2i.append(tr.final_attn_token_to_image)
            self._t2i_pe = [
                F.linear(pe, a.k_proj.weight, a.k_proj.bias)
                .reshape(-1, a.num_heads, a.internal_dim // a.num_heads)
                .permute(1, 2, 0)
                .contiguous()
                for a in t2i
            ]
            # image-to-token attentions: pe @ W_q^T + b_q per head, as (H, d, HW)
            self._i2t_pe = [
                F.linear(pe, a.q_proj.weight, a.q_proj.bias)
                .reshape(-1, a.num_heads, a.internal_dim // a.num_heads)
                .permute(1, 2, 0)
                .contiguous()
                for a in (layer.cross_attn_image_to_token for layer in tr.layers)
            ]

    # ------------------------------------------------------------------ prompts

    def dense_keys(self, masks: torch.Tensor | None, n: int) -> torch.Tensor:
        """(n, HW, C) image tokens plus the dense prompt embedding (the decoder's ``src``).

        Parameters
        ----------
        masks : torch.Tensor or None
            (n, 1, 4h, 4w) mask prompts, or None (SAM's "no mask" embedding).
        n : int
            Number of prompts.
        """
        pe = self.sam.prompt_encoder
        if masks is None:
            no_mask = pe.no_mask_embed.weight.reshape(1, 1, -1).to(self.image.dtype)
            return (self.image[None] + no_mask).expand(n, -1, -1).contiguous()
        down = pe.mask_downscaling
        gh, gw = self.grid
        hw = gh * gw
        x = masks.to(self.image.dtype).reshape(n, gh, 2, 2, gw, 2, 2)
        # rows (n, gy, gx, ay, ax), columns (by, bx): the 2 x 2 patches of both convolutions
        x = x.permute(0, 1, 4, 2, 5, 3, 6).reshape(n * hw * 4, 4)
        conv = down[0]
        x = F.linear(x, conv.weight.reshape(conv.out_channels, 4), conv.bias)
        x = down[2](F.layer_norm(x, (x.shape[-1],), down[1].weight, down[1].bias, down[1].eps))
        conv = down[3]
        w = conv.weight.permute(0, 2, 3, 1).reshape(conv.out_channels, -1)
        x = F.linear(x.reshape(n * hw, -1), w, conv.bias)
        x = down[5](F.layer_norm(x, (x.shape[-1],), down[4].weight, down[4].bias, down[4].eps))
        conv = down[6]
        keys = F.linear(x, conv.weight[:, :, 0, 0], conv.bias).reshape(n, hw, -1)
        return keys.add_(self.image)

    # --------------------------------------------------------------- attention

    def _token_to_image(self, attn, q_in, keys, pe_t):
        n, t, _ = q_in.shape
        h = attn.num_heads
        d = attn.internal_dim // h
        q = attn.q_proj(q_in).mul_(1.0 / math.sqrt(d)).reshape(n, t, h, d)
        qb = torch.einsum("nthd,hdc->nhtc", q, _heads(attn.k_proj.weight, h)).reshape(n, h * t, -1)
        scores = torch.bmm(qb, keys.transpose(1, 2))  # (n, H*T, HW)
        pe_part = torch.bmm(q.permute(2, 0, 1, 3).reshape(h, n * t, d), pe_t)  # (H, n*T, HW)
        scores.view(n, h, t, -1).add_(pe_part.view(h, n, t, -1).transpose(0, 1))
        a = torch.softmax(scores, dim=-1)
        ak = torch.bmm(a, keys).reshape(n, h, t, -1)  # (n, H, T, C)
        out = torch.einsum("nhtc,hdc->nthd", ak, _heads(attn.v_proj.weight, h))
        out = out.reshape(n, t, h * d) + attn.v_proj.bias
        return attn.out_proj(out)

    def _image_to_token(self, attn, keys, k_in, v_in, pe_q, norm):
        """Image-to-token attention, residual and norm; overwrites ``keys``."""
        n, t, _ = k_in.shape
        h = attn.num_heads
        d = attn.internal_dim // h
        kt = attn.k_proj(k_in).mul_(1.0 / math.sqrt(d)).reshape(n, t, h, d)
        kb = torch.einsum("nthd,hdc->nhtc", kt, _heads(attn.q_proj.weight, h)).reshape(n, h * t, -1)
        # scores laid out (n, H, T, HW): the softmax over the few tokens then runs on
        # long contiguous rows
        scores = torch.bmm(kb, keys.transpose(1, 2))
        pe_part = torch.bmm(kt.permute(2, 0, 1, 3).reshape(h, n * t, d), pe_q)  # (H, n*T, HW)
        scores = scores.view(n, h, t, -1)
        scores.add_(pe_part.view(h, n, t, -1).transpose(0, 1))
        a = torch.softmax(scores, dim=2).view(n, h * t, -1)
        vt = attn.v_proj(v_in).reshape(n, t, h, d)
        wo = attn.out_proj.weight.reshape(-1, h, d)  # (C, H, d)
        # each head's attention weights sum to 1, so the output bias is spread over the heads
        vb = torch.einsum("nthd,chd->nhtc", vt, wo) + attn.out_proj.bias / h
        a, vb = a.transpose(1, 2), vb.reshape(n, h * t, -1)
        if a.dtype == vb.dtype == keys.dtype:
            keys = keys.baddbmm_(a, vb)
        else:  # mixed precision (autocast)
            keys = torch.baddbmm(keys, a, vb)
        return F.layer_norm(keys, (keys.shape[-1],), norm.weight, norm.bias, norm.eps)

    # ------------------------------------------------------------------ decode

    def transformer(self, sparse: torch.Tensor, keys: torch.Tensor):
        """segment-anything's ``TwoWayTransformer`` on (n, T_sparse, C) prompts and (n, HW, C) keys.

        Returns the output tokens (n, 1 + M + T_sparse, C) and the image tokens (n, HW, C).
        """
        dec = self.sam.mask_decoder
        tr = dec.transformer
        n = sparse.shape[0]
        out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens[None].expand(n, -1, -1).to(sparse.dtype), sparse], dim=1)
        queries = tokens
        for i, layer in enumerate(tr.layers):
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(q=queries, k=queries, v=queries)
            else:
                q = queries + tokens
                queries = queries + layer.self_attn(q=q, k=q, v=queries)
            queries = layer.norm1(queries)
            attn = self._token_to_image(
                layer.cross_attn_token_to_image, queries + tokens, keys, self._t2i_pe[i]
            )
            queries = layer.norm2(queries + attn)
            queries = layer.norm3(queries + layer.mlp(queries))
            keys = self._image_to_token(
                layer.cross_attn_image_to_token, keys, queries + tokens, queries,
                self._i2t_pe[i], layer.norm4,
            )
        attn = self._token_to_image(tr.final_attn_token_to_image, queries + tokens, keys, self._t2i_pe[-1])
        queries = tr.norm_final_attn(queries + attn)
        return queries, keys

    def upscaled_mask(self, keys: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Low-res mask logits (n, 4h, 4w) of one hypernetwork vector (n, C/8) per prompt."""
        up = self.sam.mask_decoder.output_upscaling
        n, hw, c = keys.shape
        gh, gw = self.grid
        conv = up[0]  # (C, C/4, 2, 2), stride 2: one (C -> 4 * C/4) map per grid cell
        w = conv.weight.permute(0, 2, 3, 1).reshape(c, -1)
        x = torch.addmm(conv.bias.repeat(4), keys.reshape(n * hw, c), w)
        x = x.view(n * hw * 4, -1)
        x = _activate_(up[2], F.layer_norm(x, (x.shape[-1],), up[1].weight, up[1].bias, up[1].eps))
        conv = up[3]
        w = conv.weight.permute(0, 2, 3, 1).reshape(conv.in_channels, -1)
        x = _activate_(up[4], torch.addmm(conv.bias.repeat(4), x, w))
        m = torch.bmm(x.view(n, hw * 16, -1), hyper[:, :, None])  # (n, HW*16, 1)
        # rows (gy, gx, dy1, dx1, dy2, dx2) -> pixel (4 gy + 2 dy1 + dy2, 4 gx + 2 dx1 + dx2)
        m = m.view(n, gh, gw, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6)
        return m.reshape(n, 4 * gh, 4 * gw)

    @torch.no_grad()
    def decode(
        self,
        sparse: torch.Tensor,
        masks: torch.Tensor | None,
        *,
        multimask: bool = True,
        upscale_chunk: int = 8,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode n prompts and keep the best multimask candidate (or the single mask).

        Parameters
        ----------
        sparse : torch.Tensor
            (n, T, C) sparse prompt embeddings (``sam.prompt_encoder``'s).
        masks : torch.Tensor or None
            (n, 1, 4h, 4w) mask prompts (not yet embedded), or None.
        multimask : bool
            True: ``multimask_output=True`` and the candidate of the highest
            predicted IoU. False: ``multimask_output=False``, the single-mask output.
        upscale_chunk : int
            Prompts upscaled together (bounds the largest intermediate,
            about 12 MB per prompt for ViT-B).

        Returns
        -------
        lowres : torch.Tensor
            (n, 4h, 4w) logits of the chosen candidate.
        iou : torch.Tensor
            (n, M) predicted IoUs of the M multimask candidates, or (n, 1) of the single mask.
        best : torch.Tensor
            (n,) index of the chosen candidate (highest IoU, ties to the lowest); 0
            for the single mask.
        """
        dec = self.sam.mask_decoder
        n = sparse.shape[0]
        keys = self.dense_keys(masks, n)
        queries, keys = self.transformer(sparse, keys)
        tokens = range(1, dec.num_mask_tokens) if multimask else range(1)
        iou = dec.iou_prediction_head(queries[:, 0])[:, tokens.start : tokens.stop]
        best = torch.argmax(iou, dim=1)
        hyper = torch.stack(
            [dec.output_hypernetworks_mlps[j](queries[:, 1 + j]) for j in tokens], dim=1
        )[torch.arange(n, device=best.device), best]
        lows = [
            self.upscaled_mask(keys[s : s + upscale_chunk], hyper[s : s + upscale_chunk])
            for s in range(0, n, upscale_chunk)
        ]
        return torch.cat(lows), iou, best
