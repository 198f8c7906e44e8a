"""A tiny random-weight SAM for tests, examples and plumbing checks.

The model has the architecture of segment-anything's ``Sam`` (ViT image
encoder, prompt encoder, two-way-transformer mask decoder) at a few hundred
thousand parameters. Its masks mean nothing; it exercises every code path of
the package in milliseconds on a CPU.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from segment_anything.modeling import Sam

from napari_samrefine.models.architecture import SamConfig, build_sam

__all__ = ["tiny_sam", "tiny_tinyvit_sam"]


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
    mask_in_chans: int = 4,
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
    mask_in_chans : int
        Width of the prompt encoder's mask downscaling. Its first layer has
        ``mask_in_chans // 4`` channels and is normalised across them, so with
        the default 4 (one channel) what a mask prompt holds has no effect on
        the output (only whether there is one does): pass 16 where a test needs
        the mask prompt's content to matter.

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
    config = SamConfig(
        prompt_dim=prompt_dim, mask_in_chans=mask_in_chans, decoder_depth=2, decoder_mlp_dim=2 * prompt_dim,
        decoder_heads=2, decoder_downsample_rate=2, num_multimask_outputs=3, iou_head_depth=3,
        iou_head_hidden_dim=prompt_dim, image_size=image_size, patch_size=patch_size,
        encoder_dim=encoder_dim, encoder_depth=encoder_depth, encoder_heads=encoder_heads,
        encoder_mlp_dim=2 * encoder_dim, window_size=window_size,
        global_attn_indexes=(encoder_depth - 1,), qkv_bias=True,
    )
    with _seeded(seed):
        sam = build_sam(config)  # the loader's builder: what a checkpoint of it loads into
        _randomise(sam, "rel_pos")
    return sam.eval()


@contextmanager
def _seeded(seed: int):
    """Seed torch's global generator inside the block and restore its state after it."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def _randomise(sam, name_part: str) -> None:
    # segment-anything and TinyViT zero-initialise their position tables and biases;
    # random values make every parameter matter in tests.
    with torch.no_grad():
        for name, p in sam.named_parameters():
            if name_part in name:
                p.normal_(0.0, 0.02)


def tiny_tinyvit_sam(seed: int = 0, *, layout: str = "mobile_sam") -> Sam:
    """Build a small random-weight SAM with a TinyViT encoder (MobileSAM's ``TinyViT``).

    TinyViT-SAMs always have a 64 x 64 embedding and a 256-channel neck, so
    this model is small in width and depth, not in grid: about 1.2 M
    parameters, one encoder pass in tens of milliseconds on a CPU.

    Parameters
    ----------
    seed : int
        Seed of the random weights.
    layout : {"mobile_sam", "lite_medsam"}
        MobileSAM's layout (1024 px input, stride 16) or LiteMedSAM's (256 px
        input, stride 4).

    Returns
    -------
    segment_anything.modeling.Sam
        In evaluation mode; needs the ``tinyvit`` extra (``mobile_sam``).

    Examples
    --------
    >>> sam = tiny_tinyvit_sam(layout="lite_medsam")  # doctest: +SKIP
    >>> sam.image_encoder.img_size, sam.prompt_encoder.image_embedding_size  # doctest: +SKIP
    (256, (64, 64))
    """
    from napari_samrefine.models.tinyvit import TinyViTConfig

    if layout not in ("mobile_sam", "lite_medsam"):
        raise ValueError(f"layout must be 'mobile_sam' or 'lite_medsam', got {layout!r}")
    stride = 4 if layout == "mobile_sam" else 1
    config = TinyViTConfig(
        prompt_dim=256, mask_in_chans=4, decoder_depth=1, decoder_mlp_dim=64, decoder_heads=8,
        decoder_downsample_rate=2, num_multimask_outputs=3, iou_head_depth=3,
        iou_head_hidden_dim=32, image_size=64 * 4 * stride, patch_stride=stride,
        embed_dims=(16, 32, 40, 320), depths=(1, 1, 1, 1), num_heads=(0, 2, 2, 4),
        window_sizes=(0, 7, 7, 7), mlp_ratio=2.0, mbconv_expand_ratio=2.0, local_conv_size=3,
    )
    with _seeded(seed):
        sam = build_sam(config)
        _randomise(sam, "attention_biases")
    return sam.eval()
