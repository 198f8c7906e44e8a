"""A tiny random-weight SAM for tests, examples and plumbing checks.

The model has the architecture of segment-anything's ``Sam`` (ViT image
encoder, prompt encoder, two-way-transformer mask decoder) at a few hundred
thousand parameters. Its masks mean nothing; it exercises every code path of
the package in milliseconds on a CPU.
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

__all__ = ["tiny_sam"]


def tiny_sam(
    seed: int = 0,
    *,
    image_size: int = 256,
    patch_size: int = 16,
    encoder_dim: int = 64,
    encoder_depth: int = 2,
    encoder_heads: int = 2,
    window_size: int = 8,
    prompt_dim: int = 32,
) -> Sam:
    """Build a tiny random-weight SAM in evaluation mode.

    Parameters
    ----------
    seed : int
        Seed of the random weights: the same seed gives the same model.
    image_size : int
        Square input size of the image encoder (a multiple of ``patch_size``).
    patch_size : int
        Patch size of the ViT; the embedding grid is ``image_size // patch_size``.
    encoder_dim, encoder_depth, encoder_heads, window_size : int
        Width, number of blocks, attention heads and window of the ViT; the last
        block uses global attention.
    prompt_dim : int
        Width of the prompt encoder, the encoder neck and the mask decoder
        (at least 8).

    Returns
    -------
    segment_anything.modeling.Sam
        About 220k parameters with the defaults; low-res masks are
        ``4 * image_size // patch_size`` pixels square.

    Examples
    --------
    >>> from napari_samrefine.testing import tiny_sam
    >>> sam = tiny_sam()
    >>> sam.image_encoder.img_size
    256
    """
    if image_size % patch_size:
        raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
    grid = image_size // patch_size
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=image_size,
                patch_size=patch_size,
                embed_dim=encoder_dim,
                depth=encoder_depth,
                num_heads=encoder_heads,
                mlp_ratio=2.0,
                out_chans=prompt_dim,
                qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                window_size=window_size,
                global_attn_indexes=(encoder_depth - 1,),
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=prompt_dim,
                image_embedding_size=(grid, grid),
                input_image_size=(image_size, image_size),
                mask_in_chans=4,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(
                    depth=2, embedding_dim=prompt_dim, mlp_dim=2 * prompt_dim, num_heads=2
                ),
                transformer_dim=prompt_dim,
                iou_head_depth=3,
                iou_head_hidden_dim=prompt_dim,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
        # segment-anything zero-initialises the relative position tables; give them
        # random values so that every parameter matters in tests.
        with torch.no_grad():
            for name, p in sam.named_parameters():
                if "rel_pos" in name:
                    p.normal_(0.0, 0.02)
    finally:
        torch.random.set_rng_state(generator_state)
    return sam.eval()
