"""A faster image encoder with the same weights: fused attention.

:func:`enable_fast_encoder` changes how one model instance computes its image
encoder, not which weights it uses; :func:`disable_fast_encoder` undoes it.
Only the ``forward`` of that model's attention modules changes; segment-anything
and MobileSAM are not patched. segment-anything's ViT attention (windowed and
global blocks) and MobileSAM's TinyViT attention (MobileSAM, micro-sam's
``vit_t``, LiteMedSAM) run through
:func:`torch.nn.functional.scaled_dot_product_attention` (``sdpa``). The ViT's
decomposed relative position bias (computed as ``add_decomposed_rel_pos``
does) and TinyViT's attention biases are its float ``attn_mask``. Float32
embeddings equal the stock ones to rounding (~1e-5); the ViT's global blocks
build their mask a few heads at a time, so a ViT-B pass at 1024 px peaks at
+0.33 GB instead of +2.45 GB.

Whether it is enabled is read off the model itself (:func:`fast_encoder_state`),
so it survives ``copy.deepcopy`` and pickling; :func:`fast_encoder_key` names it
in embedding cache keys. :func:`~napari_samrefine.models.loading.load_sam`
applies :data:`FAST_ENCODER_DEFAULTS` unless given ``fast_encoder=False``.

bfloat16 autocast and channels-last convolutions were options here once; they
were removed because they failed the agreement bar (docs/benchmarks.md).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention as SamAttention
from segment_anything.modeling.image_encoder import get_rel_pos

__all__ = [
    "FAST_ENCODER_DEFAULTS",
    "disable_fast_encoder",
    "enable_fast_encoder",
    "fast_encoder_key",
    "fast_encoder_state",
    "rel_pos_bias",
]

FAST_ENCODER_DEFAULTS: dict[str, bool] = {"sdpa": True}
"""What :func:`~napari_samrefine.models.loading.load_sam` enables, from
``benchmarks/encoder_speed.py`` on a 2-core CPU (docs/benchmarks.md). ``sdpa``: the
stock masks (per-object IoU >= 0.9999) on random ViT-B, random MobileSAM and the
real LiteMedSAM; ViT-B 1.4-1.6x faster with 2 GB less peak memory."""

_TINYVIT_MODULE = "mobile_sam.modeling.tiny_vit_sam"
_MASK_BYTES = 64 * 2**20  # largest attention mask built at once (one ViT-B global head)


def rel_pos_bias(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """The terms ``add_decomposed_rel_pos`` adds to ViT attention logits, as one mask.

    Parameters
    ----------
    q : torch.Tensor
        (B, h * w, C) queries (unscaled, as segment-anything passes them).
    rel_pos_h, rel_pos_w : torch.Tensor
        The attention module's relative position tables, (2h - 1, C) and (2w - 1, C).
    size : tuple of int
        (h, w), the token grid.

    Returns
    -------
    torch.Tensor
        (B, h * w, h * w) bias to add to ``q k^T * scale``.
    """
    h, w = size
    r_q = q.reshape(q.shape[0], h, w, q.shape[-1])
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(h, h, rel_pos_h))
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(w, w, rel_pos_w))
    return (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(q.shape[0], h * w, h * w)


def _sam_attention_forward(self: SamAttention, x: torch.Tensor) -> torch.Tensor:
    """``segment_anything...Attention.forward`` through SDPA, the rel-pos bias as mask."""
    B, H, W, _ = x.shape
    n, heads = H * W, self.num_heads
    q, k, v = self.qkv(x).reshape(B, n, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    if not self.use_rel_pos:
        x = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(x.permute(0, 2, 1, 3).reshape(B, H, W, -1))
    # a global block's mask is heads x 64 MB (ViT-B at 1024 px): build it a few heads at a time
    step = max(1, _MASK_BYTES // (B * n * n * 4))
    out = []
    for i in range(0, heads, step):
        qi = q[:, i : i + step]
        bias = rel_pos_bias(qi.reshape(-1, n, qi.shape[-1]), self.rel_pos_h, self.rel_pos_w, (H, W))
        mask = bias.view(B, qi.shape[1], n, n).to(q.dtype)
        out.append(
            F.scaled_dot_product_attention(
                qi, k[:, i : i + step], v[:, i : i + step], attn_mask=mask, scale=self.scale
            )
        )
    x = out[0] if len(out) == 1 else torch.cat(out, dim=1)
    return self.proj(x.permute(0, 2, 1, 3).reshape(B, H, W, -1))


def _tinyvit_attention_forward(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """MobileSAM's ``tiny_vit_sam.Attention.forward`` through SDPA, its biases as mask."""
    B, N, _ = x.shape
    qkv = self.qkv(self.norm(x)).view(B, N, self.num_heads, -1)
    q, k, v = qkv.split([self.key_dim, self.key_dim, self.d], dim=3)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    bias = self.attention_biases[:, self.attention_bias_idxs] if self.training else self.ab
    # a 4D mask (broadcast over windows by stride 0): a 3D one takes a 3-4x slower kernel
    mask = bias.to(q.dtype).expand(B, -1, -1, -1)
    x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
    return self.proj(x.transpose(1, 2).reshape(B, N, self.dh))


_FAST_FORWARDS = (_sam_attention_forward, _tinyvit_attention_forward)


def _fast_forward(module: torch.nn.Module):
    if isinstance(module, SamAttention):
        return _sam_attention_forward
    cls = type(module)
    if cls.__module__ == _TINYVIT_MODULE and cls.__name__ == "Attention":
        return _tinyvit_attention_forward
    return None


def enable_fast_encoder(sam: torch.nn.Module, sdpa: bool = True) -> dict[str, bool]:
    """Make one model's image encoder faster, with the same weights.

    What was enabled on ``sam`` before is undone first, so the result is
    exactly what this call asks for.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        The model; only its ``image_encoder`` changes.
    sdpa : bool
        Fused attention (see the module's description); False restores the
        stock encoder.

    Returns
    -------
    dict of str to bool
        What was applied: ``sdpa`` is False for an encoder without any attention
        module this knows.

    Examples
    --------
    >>> from napari_samrefine.testing import tiny_sam
    >>> sam = tiny_sam()
    >>> enable_fast_encoder(sam)
    {'sdpa': True}
    >>> fast_encoder_key(sam)
    'sdpa'
    >>> disable_fast_encoder(sam); fast_encoder_key(sam)
    ''
    """
    disable_fast_encoder(sam)
    if sdpa:
        for module in sam.image_encoder.modules():
            fast = _fast_forward(module)
            if fast is not None:
                module.forward = partial(fast, module)
    return fast_encoder_state(sam)


def disable_fast_encoder(sam: torch.nn.Module) -> None:
    """Undo :func:`enable_fast_encoder`: the stock encoder forward.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        The model; a model without the fast encoder is left as it is.
    """
    for module in sam.image_encoder.modules():
        if _is_fast(module):
            del module.forward


def _is_fast(module: torch.nn.Module) -> bool:
    forward = module.__dict__.get("forward")
    return isinstance(forward, partial) and forward.func in _FAST_FORWARDS


def fast_encoder_state(sam: torch.nn.Module) -> dict[str, bool]:
    """What is enabled on a model, read off its modules: ``{"sdpa": bool}``."""
    return {"sdpa": any(_is_fast(m) for m in sam.image_encoder.modules())}


def fast_encoder_key(sam: torch.nn.Module) -> str:
    """What is enabled as a short string, for embedding cache keys.

    SDPA changes the embedding by float rounding, so it is named; the stock
    encoder gives ``""``.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam

    Returns
    -------
    str
        ``"sdpa"`` or ``""``.
    """
    return "+".join(name for name, on in fast_encoder_state(sam).items() if on)
