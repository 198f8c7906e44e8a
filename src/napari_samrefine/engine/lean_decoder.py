"""SAM's mask decoder for many prompts on one image, with less memory traffic.

segment-anything's ``MaskDecoder.predict_masks`` copies the image embedding and
its positional encoding once per prompt (``repeat_interleave``), projects all
``h * w`` image tokens to queries, keys and values in every attention layer,
and computes the masks of all four mask tokens. :class:`LeanMaskDecoder`
computes the same function with the same weights, reorganised:

- image-side projections of the positional encoding are computed once per
  image; in the first layer, where the image tokens are the image embedding
  plus a dense prompt embedding of rank 16 (the mask encoder ends in a 1 x 1
  convolution from 16 channels), the attention scores and the token-to-image
  values are per-image projections plus rank-16 corrections; elsewhere the
  per-prompt part of every token-to-image attention uses
  ``(q W_k) keys^T`` and ``(A keys) W_v^T`` (the projection moved to the few
  tokens), and every image-to-token attention uses ``keys (W_q^T k)`` and
  ``A (v W_o^T)``, so no per-prompt ``h * w x C`` projection is written;
- the image embedding is never copied per prompt before the first layer adds
  the dense prompt embedding; tensors stay channels-last (no transposes);
- the mask prompt's downscaling convolutions (all of stride = kernel) run as
  matrix products on channels-last patches;
- the candidate is chosen from the IoU head first, and only its mask goes
  through the hypernetwork product;
- the token-side operations run once for all prompts of a call, the
  image-side ones a chunk of prompts at a time (:meth:`LeanMaskDecoder.decode`'s
  ``chunk``), so each chunk's image tokens and upscaling intermediates stay in
  cache while few operations (each a synchronisation of torch's threads) run.

Results equal segment-anything's decoder to float rounding (the tests compare
them); the selection rule is ``argmax`` of the multimask IoU predictions, ties to
the lowest index, as :func:`~napari_samrefine.samrefiner.decode.decode_prompts`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from napari_samrefine.engine.lean_terms import (
    activate_,
    autocasting,
    dense_prompt,
    first_layer_terms,
    split_heads,
    supports_lean_decoder,
)

__all__ = ["LeanMaskDecoder", "supports_lean_decoder"]


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
            self._pe = pe
            self._first: dict = {}
            self._workspace: dict[str, torch.Tensor] = {}
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
        return self._dense(masks, n)[1]

    def _dense(self, masks: torch.Tensor | None, n: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The mask prompt's rank-r features and :meth:`dense_keys` (see :func:`dense_prompt`)."""
        return dense_prompt(self.sam.prompt_encoder, masks, self.image, self.grid, n)

    def _first_layer_terms(self, with_mask: bool) -> dict:
        """Image-side projections of the first layer's attentions, once per image (:func:`first_layer_terms`)."""
        key = "mask" if with_mask else "none"
        if key not in self._first:
            self._first[key] = first_layer_terms(self.sam, self.image, self._pe, with_mask)
        return self._first[key]

    # --------------------------------------------------------------- attention

    def _token_to_image(self, attn, q_in, keys, pe_t, spans):
        """Token-to-image attention; ``keys`` holds one (m, HW, C) tensor per span of prompts."""
        n, t, _ = q_in.shape
        h = attn.num_heads
        d = attn.internal_dim // h
        q = attn.q_proj(q_in).mul_(1.0 / math.sqrt(d)).reshape(n, t, h, d)
        qb = torch.einsum("nthd,hdc->nhtc", q, split_heads(attn.k_proj.weight, h)).reshape(n, h * t, -1)
        q_heads = q.permute(2, 0, 1, 3)  # (H, n, T, d)
        aks = []
        for (a0, a1), k in zip(spans, keys, strict=True):
            m = a1 - a0
            scores = torch.bmm(qb[a0:a1], k.transpose(1, 2))  # (m, H*T, HW)
            pe_part = torch.bmm(q_heads[:, a0:a1].reshape(h, m * t, d), pe_t)  # (H, m*T, HW)
            scores.view(m, h, t, -1).add_(pe_part.view(h, m, t, -1).transpose(0, 1))
            a = torch.softmax(scores, dim=-1)
            aks.append(torch.bmm(a, k))  # (m, H*T, C)
        ak = torch.cat(aks).view(n, h, t, -1)
        out = torch.einsum("nhtc,hdc->nthd", ak, split_heads(attn.v_proj.weight, h))
        out = out.reshape(n, t, h * d) + attn.v_proj.bias
        return attn.out_proj(out)

    def _token_to_image_first(self, attn, q_in, zs, terms, spans):
        """The first layer's token-to-image attention, from per-image terms (see
        :meth:`_first_layer_terms`) and the rank-r mask features ``zs`` (one per span; None
        without a mask prompt)."""
        n, t, _ = q_in.shape
        h = attn.num_heads
        d = attn.internal_dim // h
        q = attn.q_proj(q_in).mul_(1.0 / math.sqrt(d)).reshape(n, t, h, d)
        q_heads = q.permute(2, 0, 1, 3)  # (H, n, T, d)
        with_mask = zs[0] is not None
        if with_mask:
            qz = torch.einsum("nthd,hdr->nhtr", q, terms["kz"]).reshape(n, h * t, -1)
        outs, azs = [], []
        for (a0, a1), z in zip(spans, zs, strict=True):
            m = a1 - a0
            scores = torch.bmm(q_heads[:, a0:a1].reshape(h, m * t, d), terms["k"])  # (H, m*T, HW)
            if with_mask:
                low_rank = torch.bmm(qz[a0:a1], z.transpose(1, 2))  # (m, H*T, HW)
                scores.view(h, m, t, -1).add_(low_rank.view(m, h, t, -1).transpose(0, 1))
            a = torch.softmax(scores, dim=-1)
            outs.append(torch.bmm(a, terms["v"]).view(h, m, t, d))
            if with_mask:
                an = a.view(h, m, t, -1).transpose(0, 1).reshape(m, h * t, -1)
                azs.append(torch.bmm(an, z))  # (m, H*T, r)
        out = torch.cat(outs, dim=1).permute(1, 2, 0, 3)  # (n, T, H, d)
        if with_mask:
            az = torch.cat(azs).view(n, h, t, -1)
            out = out + torch.einsum("nhtr,hdr->nthd", az, terms["vz"])
        out = out.reshape(n, t, h * d) + attn.v_proj.bias
        return attn.out_proj(out)

    def _image_to_token(self, attn, keys, k_in, v_in, pe_q, norm, spans, first=None):
        """Image-to-token attention, residual and norm of each span's keys (overwritten).

        ``first``: (zs, terms) of the first layer, whose scores come from per-image
        terms (:meth:`_first_layer_terms`) instead of ``keys``.
        """
        n, t, _ = k_in.shape
        h = attn.num_heads
        d = attn.internal_dim // h
        kt = attn.k_proj(k_in).mul_(1.0 / math.sqrt(d)).reshape(n, t, h, d)
        kt_heads = kt.permute(2, 0, 1, 3)  # (H, n, T, d)
        if first is None:
            kb = torch.einsum("nthd,hdc->nhtc", kt, split_heads(attn.q_proj.weight, h)).reshape(n, h * t, -1)
            zs, image_terms = [None] * len(spans), pe_q
        else:
            zs, terms = first
            image_terms = terms["q"]  # image and positional terms
            if zs[0] is not None:
                kb = torch.einsum("nthd,hdr->nhtr", kt, terms["qz"]).reshape(n, h * t, -1)
        vt = attn.v_proj(v_in).reshape(n, t, h, d)
        wo = attn.out_proj.weight.reshape(-1, h, d)  # (C, H, d)
        # each head's attention weights sum to 1, so the output bias is spread over the heads
        vb = (torch.einsum("nthd,chd->nhtc", vt, wo) + attn.out_proj.bias / h).reshape(n, h * t, -1)
        out = []
        for (a0, a1), k, z in zip(spans, keys, zs, strict=True):
            m = a1 - a0
            image_part = torch.bmm(kt_heads[:, a0:a1].reshape(h, m * t, d), image_terms)
            image_part = image_part.view(h, m, t, -1).transpose(0, 1)  # (m, H, T, HW)
            # scores laid out (m, H, T, HW): the softmax over the few tokens then runs on
            # long contiguous rows
            if first is None:
                scores = torch.bmm(kb[a0:a1], k.transpose(1, 2)).view(m, h, t, -1).add_(image_part)
            elif z is None:
                scores = image_part.contiguous()
            else:
                scores = torch.bmm(kb[a0:a1], z.transpose(1, 2)).view(m, h, t, -1).add_(image_part)
            a = torch.softmax(scores, dim=2).view(m, h * t, -1).transpose(1, 2)
            if a.dtype == vb.dtype == k.dtype:
                k = k.baddbmm_(a, vb[a0:a1])
            else:  # mixed precision (autocast)
                k = torch.baddbmm(k, a, vb[a0:a1])
            out.append(F.layer_norm(k, (k.shape[-1],), norm.weight, norm.bias, norm.eps))
        return out

    # ------------------------------------------------------------------ decode

    def transformer(self, sparse: torch.Tensor, keys, spans=None, first=None):
        """segment-anything's ``TwoWayTransformer`` on (n, T_sparse, C) prompts and their image tokens.

        Token-side operations run on all n prompts at once; image-side ones span by
        span of prompts (``keys`` holds one (m, HW, C) tensor per span of ``spans``,
        half-open ranges of prompts; a single tensor and None: one span).
        ``first``: (zs, terms) to compute the first layer's attention scores and
        token-to-image values from per-image terms and each span's rank-r mask
        features (:meth:`_first_layer_terms`); None computes them from ``keys``.

        Returns the output tokens (n, 1 + M + T_sparse, C) and the image tokens, one
        (m, HW, C) tensor per span (a tensor if ``keys`` was one).
        """
        dec = self.sam.mask_decoder
        tr = dec.transformer
        n = sparse.shape[0]
        single = torch.is_tensor(keys)
        if single:
            keys, spans = [keys], [(0, n)]
            first = None if first is None else ([first[0]], first[1])
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
            shortcut = first if i == 0 else None
            if shortcut is None:
                attn = self._token_to_image(
                    layer.cross_attn_token_to_image, queries + tokens, keys, self._t2i_pe[i], spans
                )
            else:
                attn = self._token_to_image_first(
                    layer.cross_attn_token_to_image, queries + tokens, *shortcut, spans
                )
            queries = layer.norm2(queries + attn)
            queries = layer.norm3(queries + layer.mlp(queries))
            keys = self._image_to_token(
                layer.cross_attn_image_to_token, keys, queries + tokens, queries,
                self._i2t_pe[i], layer.norm4, spans, first=shortcut,
            )
        attn = self._token_to_image(
            tr.final_attn_token_to_image, queries + tokens, keys, self._t2i_pe[-1], spans
        )
        queries = tr.norm_final_attn(queries + attn)
        return queries, (keys[0] if single else keys)

    def _buffer(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A reusable output tensor for the upscaling's largest intermediates.

        They are tens of MB per chunk of prompts; allocating them afresh for every
        chunk costs a page fault per 4 kB (the allocator returns such blocks to
        the system), reusing them does not. Kept while this decoder (one image) is.
        """
        numel = math.prod(shape)
        buf = self._workspace.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._workspace[name] = buf
        return buf[:numel].view(shape)

    def _addmm(self, name: str, bias: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``torch.addmm(bias, x, w)`` into a reused buffer (a fresh tensor under autocast)."""
        if autocasting(x.device.type) or not x.dtype == w.dtype == bias.dtype:
            return torch.addmm(bias, x, w)
        return torch.addmm(bias, x, w, out=self._buffer(name, (x.shape[0], w.shape[1]), x))

    def upscaled_mask(self, keys: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Low-res mask logits of hypernetwork vectors.

        Parameters
        ----------
        keys : torch.Tensor
            (n, HW, C) image tokens from :meth:`transformer`.
        hyper : torch.Tensor
            (n, C/8): one hypernetwork vector per prompt, or (n, M, C/8): M per prompt.

        Returns
        -------
        torch.Tensor
            (n, 4h, 4w), or (n, M, 4h, 4w) for (n, M, C/8) vectors.
        """
        up = self.sam.mask_decoder.output_upscaling
        n, hw, c = keys.shape
        gh, gw = self.grid
        conv = up[0]  # (C, C/4, 2, 2), stride 2: one (C -> 4 * C/4) map per grid cell
        w = conv.weight.permute(0, 2, 3, 1).reshape(c, -1)
        x = self._addmm("upscale1", conv.bias.repeat(4), keys.reshape(n * hw, c), w)
        x = x.view(n * hw * 4, -1)
        x = activate_(up[2], F.layer_norm(x, (x.shape[-1],), up[1].weight, up[1].bias, up[1].eps))
        conv = up[3]
        w = conv.weight.permute(0, 2, 3, 1).reshape(conv.in_channels, -1)
        x = activate_(up[4], self._addmm("upscale2", conv.bias.repeat(4), x, w))
        x = x.view(n, hw * 16, -1)
        if hyper.dim() == 2:
            m = torch.bmm(x, hyper[:, :, None])  # (n, HW*16, 1)
            # rows (gy, gx, dy1, dx1, dy2, dx2) -> pixel (4 gy + 2 dy1 + dy2, 4 gx + 2 dx1 + dx2)
            m = m.view(n, gh, gw, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6)
            return m.reshape(n, 4 * gh, 4 * gw)
        k = hyper.shape[1]
        m = torch.bmm(x, hyper.transpose(1, 2))  # (n, HW*16, M)
        m = m.view(n, gh, gw, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return m.reshape(n, k, 4 * gh, 4 * gw)

    @torch.no_grad()
    def decode(
        self,
        sparse: torch.Tensor,
        masks: torch.Tensor | None,
        *,
        multimask: bool = True,
        chunk: int = 16,
        all_candidates: bool = False,
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
        chunk : int
            Prompts whose image-side operations run together. Each prompt is
            computed on its own, so this changes no result. The token-side
            operations (small) run once for all n prompts, the image-side ones
            (4 MB of image tokens per prompt for ViT-B, about 12 MB while
            upscaling) chunk by chunk: small chunks stay in cache, large ones
            make fewer operations, each of which costs a synchronisation of
            torch's threads (expensive on a machine whose cores are busy).
        all_candidates : bool
            Upscale every candidate's mask, not only the chosen one's (the
            upscaling network runs once either way; only the last product is
            per candidate).

        Returns
        -------
        lowres : torch.Tensor
            (n, 4h, 4w) logits of the chosen candidate; (n, M, 4h, 4w) of every
            candidate with ``all_candidates``.
        iou : torch.Tensor
            (n, M) predicted IoUs of the M multimask candidates, or (n, 1) of the single mask.
        best : torch.Tensor
            (n,) index of the chosen candidate (highest IoU, ties to the lowest); 0
            for the single mask.
        """
        dec = self.sam.mask_decoder
        n = sparse.shape[0]
        spans = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
        dense = [self._dense(None if masks is None else masks[a:b], b - a) for a, b in spans]
        zs, keys = [z for z, _ in dense], [k for _, k in dense]
        del dense
        first = (zs, self._first_layer_terms(masks is not None))
        queries, keys = self.transformer(sparse, keys, spans, first=first)
        tokens = range(1, dec.num_mask_tokens) if multimask else range(1)
        iou = dec.iou_prediction_head(queries[:, 0])[:, tokens.start : tokens.stop]
        best = torch.argmax(iou, dim=1)
        hyper = torch.stack(
            [dec.output_hypernetworks_mlps[j](queries[:, 1 + j]) for j in tokens], dim=1
        )
        if not all_candidates:
            hyper = hyper[torch.arange(n, device=best.device), best]
        lows = []
        for (a0, a1), k in zip(spans, keys, strict=True):
            lows.append(self.upscaled_mask(k, hyper[a0:a1]))
        return torch.cat(lows), iou, best
