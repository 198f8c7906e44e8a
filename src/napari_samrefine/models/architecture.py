"""SAM architectures read off a state dict, and built: ViT (SAM, micro-sam) and TinyViT encoders.

The architecture of a checkpoint (encoder kind and size, image size, prompt
encoder and mask decoder widths) is inferred from tensor shapes by
:func:`infer_sam_config`, so Meta's ViT-B/L/H, micro-sam's fine-tuned models,
MobileSAM's and LiteMedSAM's TinyViT models and small test models all load
through one path without a model-type argument. :func:`build_sam` assembles a
segment-anything ``Sam`` of that architecture.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from napari_samrefine.models.state_dict import (
    CheckpointError,
    DecoderConfig,
    count_blocks,
    infer_decoder_config,
    tensor,
)
from napari_samrefine.models.tinyvit import (
    TinyViTConfig,
    build_tinyvit_encoder,
    infer_tinyvit_config,
    is_tinyvit_state,
    without_classifier,
)

__all__ = [
    "CheckpointError",
    "DecoderConfig",
    "SamConfig",
    "build_sam",
    "infer_decoder_config",
    "infer_sam_config",
]

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

# (encoder width, depth, heads) of Meta's published encoders
SAM_ARCHITECTURES = {"vit_b": (768, 12, 12), "vit_l": (1024, 24, 16), "vit_h": (1280, 32, 16)}


@dataclass(frozen=True)
class SamConfig(DecoderConfig):
    """A SAM with segment-anything's ViT image encoder (SAM, micro-sam, small test models).

    Attributes
    ----------
    image_size, patch_size : int
        Square encoder input and ViT patch size; the embedding grid is their ratio.
    encoder_dim, encoder_depth, encoder_heads, encoder_mlp_dim : int
        Width, number of blocks, attention heads and MLP width of the ViT.
    window_size : int
        Window of the windowed-attention blocks (0: every block is global).
    global_attn_indexes : tuple of int
        Blocks with global attention.
    qkv_bias : bool
        Whether the attention projections have a bias.

    The prompt encoder and mask decoder fields are :class:`DecoderConfig`'s.
    """

    image_size: int
    patch_size: int
    encoder_dim: int
    encoder_depth: int
    encoder_heads: int
    encoder_mlp_dim: int
    window_size: int
    global_attn_indexes: tuple[int, ...]
    qkv_bias: bool

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid."""
        return self.image_size // self.patch_size

    @property
    def arch(self) -> str:
        """``"vit_b"``, ``"vit_l"`` or ``"vit_h"`` for Meta's encoder sizes, else ``"custom"``."""
        key = (self.encoder_dim, self.encoder_depth, self.encoder_heads)
        return next((name for name, dims in SAM_ARCHITECTURES.items() if dims == key), "custom")


def infer_sam_config(state_dict: Mapping[str, torch.Tensor]) -> SamConfig | TinyViTConfig:
    """Read a SAM architecture off the tensor shapes of a state dict.

    A ViT encoder (``patch_embed.proj``): width and patch size come from
    ``patch_embed.proj.weight``, the image size from the ``pos_embed`` grid
    times the patch size, the depth from the number of blocks, the head width
    from ``rel_pos_h`` (heads = width / head width), and the window size and
    global-attention blocks from ``rel_pos_h``'s length: ``2 * window - 1``
    for windowed blocks, ``2 * grid - 1`` for global ones. A TinyViT encoder
    (``patch_embed.seq``, MobileSAM and LiteMedSAM): see
    :func:`~napari_samrefine.models.tinyvit.infer_tinyvit_config`. The decoder:
    see :func:`~napari_samrefine.models.state_dict.infer_decoder_config`. LayerNorm epsilons and pixel statistics
    are SAM's.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
        Keys as in segment-anything's ``Sam.state_dict()``.

    Returns
    -------
    SamConfig or TinyViTConfig

    Raises
    ------
    CheckpointError
        If the state dict lacks a tensor the inference needs or is inconsistent.

    Examples
    --------
    >>> from napari_samrefine.testing import tiny_sam
    >>> config = infer_sam_config(tiny_sam().state_dict())
    >>> config.image_size, config.encoder_dim, config.global_attn_indexes, config.arch
    (256, 64, (1,), 'custom')
    """
    if is_tinyvit_state(state_dict):
        return infer_tinyvit_config(state_dict, infer_decoder_config(state_dict))

    def get(key: str) -> torch.Tensor:
        return tensor(state_dict, key)

    enc = "image_encoder."
    proj = get(enc + "patch_embed.proj.weight")  # (dim, 3, p, p)
    encoder_dim, patch_size = int(proj.shape[0]), int(proj.shape[-1])
    grid = int(get(enc + "pos_embed").shape[1])
    depth = count_blocks(state_dict, enc + "blocks")
    if depth == 0:
        raise CheckpointError("Not a SAM checkpoint: the image encoder has no blocks.")
    head_dim = int(get(enc + "blocks.0.attn.rel_pos_h").shape[1])
    if encoder_dim % head_dim:
        raise CheckpointError(
            f"Inconsistent encoder: width {encoder_dim} is not a multiple of the head width {head_dim}."
        )
    windows, global_blocks = set(), []
    for i in range(depth):
        size = (int(get(f"{enc}blocks.{i}.attn.rel_pos_h").shape[0]) + 1) // 2
        if size == grid:
            global_blocks.append(i)
        else:
            windows.add(size)
    if len(windows) > 1:
        raise CheckpointError(f"Encoder blocks use different attention windows {sorted(windows)}.")
    window = windows.pop() if windows else 0
    decoder = infer_decoder_config(state_dict)
    if int(get(enc + "neck.0.weight").shape[0]) != decoder["prompt_dim"]:
        raise CheckpointError("Inconsistent model: the encoder neck and the decoder widths differ.")
    return SamConfig(
        image_size=grid * patch_size,
        patch_size=patch_size,
        encoder_dim=encoder_dim,
        encoder_depth=depth,
        encoder_heads=encoder_dim // head_dim,
        encoder_mlp_dim=int(get(enc + "blocks.0.mlp.lin1.weight").shape[0]),
        window_size=window,
        global_attn_indexes=tuple(global_blocks) if window else (),
        qkv_bias=enc + "blocks.0.attn.qkv.bias" in state_dict,
        **decoder,
    )


def _image_encoder(config: SamConfig | TinyViTConfig) -> torch.nn.Module:
    if not isinstance(config, SamConfig):
        return build_tinyvit_encoder(config)
    return ImageEncoderViT(
        img_size=config.image_size,
        patch_size=config.patch_size,
        embed_dim=config.encoder_dim,
        depth=config.encoder_depth,
        num_heads=config.encoder_heads,
        # segment-anything builds int(dim * ratio) MLP channels: aim half a channel up
        mlp_ratio=(config.encoder_mlp_dim + 0.5) / config.encoder_dim,
        out_chans=config.prompt_dim,
        qkv_bias=config.qkv_bias,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=config.window_size,
        global_attn_indexes=config.global_attn_indexes,
    )


def _build(config: SamConfig | TinyViTConfig) -> Sam:
    grid = config.embedding_size
    return Sam(
        image_encoder=_image_encoder(config),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_heads,
                attention_downsample_rate=config.decoder_downsample_rate,
            ),
            transformer_dim=config.prompt_dim,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )


def build_sam(
    config: SamConfig | TinyViTConfig, state_dict: Mapping[str, torch.Tensor] | None = None
) -> Sam:
    """Build a segment-anything ``Sam`` of ``config``, with the weights of ``state_dict``.

    Parameters
    ----------
    config : SamConfig or TinyViTConfig
        Architecture, e.g. from :func:`infer_sam_config`.
    state_dict : mapping, optional
        Weights, loaded strictly (every tensor, no extra one, same shapes);
        floating-point tensors become float32. Without it the weights are random.

    Returns
    -------
    segment_anything.modeling.Sam
        On the CPU, in evaluation mode.

    Raises
    ------
    CheckpointError
        If the state dict does not fit the architecture.
    """
    if state_dict is None:
        return _build(config).eval()
    # ViT: no random initialisation, no second copy of the weights. TinyViT keeps
    # buffers outside its state dict (attention offsets), so it is built for real.
    meta = isinstance(config, SamConfig)
    if not meta:
        state_dict = without_classifier(state_dict)
    with torch.device("meta") if meta else contextlib.nullcontext():
        sam = _build(config)
    expected = sam.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = [
            f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if keys
        ]
        raise CheckpointError(
            "The weights do not fit the SAM architecture inferred from them ("
            + "; ".join(parts)
            + "). The file is not a segment-anything SAM checkpoint or holds a modified model."
        )
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    sam.load_state_dict(weights, strict=True, assign=meta)
    # the only buffers outside the state dict (persistent=False)
    sam.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), False)
    sam.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), False)
    left = [n for n, t in [*sam.named_parameters(), *sam.named_buffers()] if t.is_meta]
    if left:  # a segment-anything version with other non-persistent buffers
        raise RuntimeError(f"Tensors left unset after loading: {left}")
    # eval() after loading: TinyViT's attention caches its biases when it enters eval mode
    return sam.eval()
