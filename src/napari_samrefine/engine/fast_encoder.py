"""A faster image encoder with the same weights: fused attention (and options).

:func:`enable_fast_encoder` changes how one model instance computes its image
encoder, not which weights it uses; :func:`disable_fast_encoder` undoes it.
Only attributes of that model change (the ``forward`` of its attention modules
and encoder, the layout of its convolution weights); segment-anything and
MobileSAM are not patched. Options:

- ``sdpa``: segment-anything's ViT attention (windowed and global blocks) and
  MobileSAM's TinyViT attention (MobileSAM, micro-sam's ``vit_t``, LiteMedSAM)
  run through :func:`torch.nn.functional.scaled_dot_product_attention`. The ViT's
  decomposed relative position bias (computed as ``add_decomposed_rel_pos``
  does) and TinyViT's attention biases are its float ``attn_mask``. Float32
  embeddings equal the stock ones to rounding (~1e-5); the ViT's global blocks
  build their mask a few heads at a time, so a ViT-B pass at 1024 px peaks at
  +0.33 GB instead of +2.45 GB.
- ``bf16``: the encoder runs under bfloat16 autocast, output cast to float32.
- ``channels_last``: channels-last convolution weights and input.

What is enabled is recorded on the model (``sam.samrefine_fast_encoder``);
:func:`fast_encoder_key` names it in embedding cache keys.
:func:`~napari_samrefine.models.loading.load_sam` applies
:data:`FAST_ENCODER_DEFAULTS` unless given ``fast_encoder=False``.
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

FAST_ENCODER_DEFAULTS: dict[str, bool] = {"sdpa": True, "bf16": False, "channels_last": False}
"""What :func:`~napari_samrefine.models.loading.load_sam` enables, from
``benchmarks/encoder_speed.py`` on a 2-core CPU (docs/benchmarks.md). ``sdpa``: the
stock masks (per-object IoU >= 0.9999) on random ViT-B, random MobileSAM and the
real LiteMedSAM; ViT-B 1.4-1.6x faster with 2 GB less peak memory. ``bf16``:
fails (IoU down to 0), no faster. ``channels_last``: the stock masks, no gain on
ViT-B (two convolutions) and a small, unsteady one on TinyViT: off."""

_STATE = "samrefine_fast_encoder"
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


def _conv_layout(encoder: torch.nn.Module, layout: torch.memory_format) -> None:
    """Store the weights of the encoder's 2D convolutions (only) in ``layout``."""
    for module in encoder.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.to(memory_format=layout)


def _encoder_forward(
    self: torch.nn.Module, x: torch.Tensor, *, bf16: bool, channels_last: bool
) -> torch.Tensor:
    """The encoder's own forward with a channels-last input and/or under bf16 autocast."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if not bf16:
        return type(self).forward(self, x)
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        out = type(self).forward(self, x)
    return out.float()


def enable_fast_encoder(
    sam: torch.nn.Module, sdpa: bool = True, bf16: bool = False, channels_last: bool = False
) -> dict[str, bool]:
    """Make one model's image encoder faster, with the same weights.

    Options earlier enabled on ``sam`` are undone first, so the result is
    exactly what this call asks for.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        The model; only its ``image_encoder`` changes.
    sdpa, bf16, channels_last : bool
        Fused attention, bfloat16 autocast, channels-last convolutions (see the
        module's description).

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
    {'sdpa': True, 'bf16': False, 'channels_last': False}
    >>> fast_encoder_key(sam)
    'sdpa'
    >>> disable_fast_encoder(sam); fast_encoder_key(sam)
    ''
    """
    disable_fast_encoder(sam)
    encoder = sam.image_encoder
    applied = {"sdpa": False, "bf16": bool(bf16), "channels_last": bool(channels_last)}
    if sdpa:
        for module in encoder.modules():
            fast = _fast_forward(module)
            if fast is not None:
                module.forward = partial(fast, module)
                applied["sdpa"] = True
    if channels_last:
        _conv_layout(encoder, torch.channels_last)
    if bf16 or channels_last:
        encoder.forward = partial(_encoder_forward, encoder, bf16=bool(bf16), channels_last=bool(channels_last))
    setattr(sam, _STATE, applied)
    return dict(applied)


def disable_fast_encoder(sam: torch.nn.Module) -> None:
    """Undo :func:`enable_fast_encoder`: the stock encoder forward and weight layout.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        The model; a model without fast options is left as it is.
    """
    encoder = sam.image_encoder
    for module in encoder.modules():
        forward = module.__dict__.get("forward")
        if isinstance(forward, partial) and forward.func in (*_FAST_FORWARDS, _encoder_forward):
            del module.forward
    if fast_encoder_state(sam)["channels_last"]:
        _conv_layout(encoder, torch.contiguous_format)
    if _STATE in sam.__dict__:
        delattr(sam, _STATE)


def fast_encoder_state(sam: torch.nn.Module) -> dict[str, bool]:
    """The options enabled on a model: ``sdpa``, ``bf16``, ``channels_last`` to bool."""
    state = getattr(sam, _STATE, None) or {}
    return {name: bool(state.get(name, False)) for name in FAST_ENCODER_DEFAULTS}


def fast_encoder_key(sam: torch.nn.Module) -> str:
    """The enabled options as a short string, for embedding cache keys.

    Every option can change the embedding (SDPA by float rounding), so each one
    enabled is named; the stock encoder gives ``""``.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam

    Returns
    -------
    str
        E.g. ``"sdpa"``, ``"sdpa+bf16"`` or ``""``.
    """
    return "+".join(name for name, on in fast_encoder_state(sam).items() if on)
