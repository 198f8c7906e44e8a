"""TinyViT image encoders ("vit_t"): MobileSAM, micro-sam's vit_t models and LiteMedSAM.

The encoder is the ``TinyViT`` class of MobileSAM (package ``mobile_sam``,
distributed as ``mobilesam-mirror``; install the ``tinyvit`` extra). Two
layouts exist:

- MobileSAM's (``vit_t``, micro-sam's ``vit_t_lm`` and ``vit_t_em_organelles``):
  a 1024 px input, two stride-2 3 x 3 convolutions as patch embedding, a
  64 x 64 embedding (stride 16, as SAM's ViTs);
- LiteMedSAM's: a 256 px input, two 1 x 1 convolutions of stride 1 as patch
  embedding, and otherwise the same network: a 64 x 64 embedding of stride 4.

Both end in a 256-channel neck and a 64 x 64 grid, which ``TinyViT`` fixes in
its code. The layout, the stage widths, depths, heads and windows are read off
the weights, so a TinyViT checkpoint needs no model-type argument either.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from napari_samrefine.models.state_dict import CheckpointError, DecoderConfig, count_blocks, tensor

__all__ = [
    "TINYVIT_EXTRA",
    "TinyViTConfig",
    "build_tinyvit_encoder",
    "infer_tinyvit_config",
    "is_tinyvit_state",
]

TINYVIT_EXTRA = "pip install 'napari-samrefine[tinyvit]'  (or: pip install mobilesam-mirror timm)"
"""How to install the TinyViT encoder code; error messages quote it."""

EMBEDDING_SIZE = 64
"""Side of every TinyViT-SAM embedding grid (fixed in ``TinyViT.forward_features``)."""

NECK_CHANNELS = 256
"""Width of every TinyViT-SAM neck (fixed in ``TinyViT.__init__``)."""

# MobileSAM's merge layers keep the resolution when they widen to one of these
_STRIDE_ONE_WIDTHS = (320, 448, 576)
_MOBILE_SAM = ((64, 128, 160, 320), (2, 2, 6, 2), (4, 5, 10), (7, 14, 7))  # heads, windows: stages 1-3

_ENC = "image_encoder."
# the classifier of TinyViT's ImageNet pre-training: not used by SAM, kept by some files
_CLASSIFIER = (_ENC + "head.", _ENC + "norm_head.")


@dataclass(frozen=True)
class TinyViTConfig(DecoderConfig):
    """A SAM with a TinyViT image encoder.

    Attributes
    ----------
    image_size : int
        Square encoder input (1024 for MobileSAM's layout, 256 for LiteMedSAM's).
    patch_stride : int
        Stride of the patch embedding: 4 (two stride-2 3 x 3 convolutions) or 1
        (two 1 x 1 convolutions, LiteMedSAM).
    embed_dims, depths, num_heads, window_sizes : tuple of int
        Per stage: width, blocks, attention heads, attention window (the first
        stage is convolutional: its heads and window are 0).
    mlp_ratio, mbconv_expand_ratio : float
        MLP width of the attention stages and expansion of the convolution stage,
        relative to the stage width.
    local_conv_size : int
        Kernel of the depthwise convolution in each attention block.

    The prompt encoder and mask decoder fields are :class:`DecoderConfig`'s.
    """

    image_size: int
    patch_stride: int
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_sizes: tuple[int, ...]
    mlp_ratio: float
    mbconv_expand_ratio: float
    local_conv_size: int

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for every TinyViT-SAM)."""
        return EMBEDDING_SIZE

    @property
    def arch(self) -> str:
        """``"vit_t"`` (MobileSAM's encoder), ``"lite_medsam"`` (LiteMedSAM's), else ``"custom"``."""
        dims = (self.embed_dims, self.depths, self.num_heads[1:], self.window_sizes[1:])
        if dims != _MOBILE_SAM:
            return "custom"
        return "vit_t" if self.patch_stride == 4 else "lite_medsam"


def is_tinyvit_state(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether a SAM state dict holds a TinyViT image encoder."""
    return _ENC + "patch_embed.seq.0.c.weight" in state_dict


def without_classifier(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict without TinyViT's ImageNet classifier (``head``, ``norm_head``)."""
    return {k: v for k, v in state_dict.items() if not k.startswith(_CLASSIFIER)}


def _merge_stride(width: int) -> int:
    return 1 if width in _STRIDE_ONE_WIDTHS else 2


def infer_tinyvit_config(state_dict: Mapping[str, torch.Tensor], decoder: dict) -> TinyViTConfig:
    """Read a TinyViT-SAM architecture off its weights.

    The patch embedding's kernel gives the layout (3: stride 4, 1: stride 1);
    each stage's width comes from its first block, its heads from the rows of
    ``attention_biases`` and its window from that tensor's columns (one per
    offset: ``window ** 2``); the input size is the 64 x 64 grid times the
    total stride (patch embedding and stage merges).

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
        Keys as in segment-anything's ``Sam.state_dict()``.
    decoder : dict
        The decoder fields, from :func:`~napari_samrefine.models.state_dict.infer_decoder_config`.

    Returns
    -------
    TinyViTConfig

    Raises
    ------
    CheckpointError
        For a missing tensor or a layout that ``TinyViT`` cannot build.
    """
    kernel = int(tensor(state_dict, _ENC + "patch_embed.seq.0.c.weight").shape[-1])
    if kernel not in (1, 3):
        raise CheckpointError(f"Unknown TinyViT patch embedding with {kernel} x {kernel} kernels.")
    n_stages = count_blocks(state_dict, _ENC + "layers")
    if n_stages < 2:
        raise CheckpointError("Not a TinyViT-SAM checkpoint: fewer than two encoder stages.")
    stage = [f"{_ENC}layers.{i}.blocks" for i in range(n_stages)]
    conv1 = tensor(state_dict, stage[0] + ".0.conv1.c.weight")  # (dim * expand, dim, 1, 1)
    dims, heads, windows = [int(conv1.shape[1])], [0], [0]
    for i in range(1, n_stages):
        dims.append(int(tensor(state_dict, stage[i] + ".0.attn.norm.weight").shape[0]))
        biases = tensor(state_dict, stage[i] + ".0.attn.attention_biases")  # (heads, window ** 2)
        heads.append(int(biases.shape[0]))
        window = math.isqrt(int(biases.shape[1]))
        if window * window != biases.shape[1]:
            raise CheckpointError(f"TinyViT stage {i} has a non-square attention window.")
        windows.append(window)
    stride = 4 if kernel == 3 else 1
    for width in dims[1:]:
        stride *= _merge_stride(width)
    neck = int(tensor(state_dict, _ENC + "neck.0.weight").shape[0])
    if neck != NECK_CHANNELS or decoder["prompt_dim"] != NECK_CHANNELS:
        raise CheckpointError(
            f"TinyViT-SAM encoders have a {NECK_CHANNELS}-channel neck and decoder; this file "
            f"has {neck} and {decoder['prompt_dim']}."
        )
    fc1 = tensor(state_dict, stage[1] + ".0.mlp.fc1.weight")
    return TinyViTConfig(
        image_size=EMBEDDING_SIZE * stride,
        patch_stride=4 if kernel == 3 else 1,
        embed_dims=tuple(dims),
        depths=tuple(count_blocks(state_dict, s) for s in stage),
        num_heads=tuple(heads),
        window_sizes=tuple(windows),
        mlp_ratio=int(fc1.shape[0]) / int(fc1.shape[1]),
        mbconv_expand_ratio=int(conv1.shape[0]) / int(conv1.shape[1]),
        local_conv_size=int(tensor(state_dict, stage[1] + ".0.local_conv.c.weight").shape[-1]),
        **decoder,
    )


def _tinyvit_module():
    try:
        with warnings.catch_warnings():
            # mobile_sam imports timm's deprecated module paths and re-registers timm's TinyViTs
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", "Overwriting tiny_vit", UserWarning)
            from mobile_sam.modeling import tiny_vit_sam
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in ("mobile_sam", "timm"):
            raise
        raise ModuleNotFoundError(
            f"TinyViT models (vit_t, vit_t_lm, vit_t_em_organelles, medsam_lite) need MobileSAM's "
            f"encoder code, which is not installed (missing module {err.name!r}). Install it: "
            f"{TINYVIT_EXTRA}",
            name=err.name,
        ) from err
    return tiny_vit_sam


def build_tinyvit_encoder(config: TinyViTConfig) -> torch.nn.Module:
    """Build the TinyViT image encoder of ``config`` with random weights (no classifier).

    Parameters
    ----------
    config : TinyViTConfig

    Returns
    -------
    torch.nn.Module
        MobileSAM's ``TinyViT``; its ``img_size`` is ``config.image_size``.

    Raises
    ------
    ModuleNotFoundError
        If ``mobile_sam`` (``mobilesam-mirror``) or ``timm`` is missing; the
        message says what to install.
    """
    tvs = _tinyvit_module()
    # TinyViT derives its stage resolutions from img_size / 4; LiteMedSAM's layout has
    # the same stage resolutions at a 4 x smaller input and a stride-1 patch embedding.
    encoder = tvs.TinyViT(
        img_size=config.image_size * 4 // config.patch_stride,
        in_chans=3,
        num_classes=0,
        embed_dims=list(config.embed_dims),
        depths=list(config.depths),
        num_heads=list(config.num_heads),
        window_sizes=list(config.window_sizes),
        mlp_ratio=config.mlp_ratio,
        drop_rate=0.0,
        drop_path_rate=0.0,
        mbconv_expand_ratio=config.mbconv_expand_ratio,
        local_conv_size=config.local_conv_size,
    )
    if config.patch_stride == 1:
        n = config.embed_dims[0]
        encoder.patch_embed.seq[0] = tvs.Conv2d_BN(3, n // 2, 1, 1, 0)
        encoder.patch_embed.seq[2] = tvs.Conv2d_BN(n // 2, n, 1, 1, 0)
        encoder.img_size = config.image_size
    encoder.head = torch.nn.Identity()
    encoder.norm_head = torch.nn.Identity()
    return encoder
