"""Load a SAM checkpoint onto a device, its architecture read off the weights.

:func:`load_sam` takes a registry name (downloaded and hash-checked by
:mod:`~napari_samrefine.sam.registry`) or the path of a local checkpoint of any
file name. The file is read with ``torch.load(weights_only=True)``; the
architecture (encoder width, depth, heads, windows, image size, decoder ...) is
inferred from tensor shapes by :func:`infer_sam_config`, so Meta's ViT-B/L/H,
micro-sam's fine-tuned models and small test models all load through the same
code, without a model-type argument.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pooch
import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from .registry import (
    ModelEntry,
    fetch_checkpoint,
    find_model_by_hash,
    get_model,
    list_models,
)

__all__ = [
    "CheckpointError",
    "SamConfig",
    "available_devices",
    "build_sam",
    "infer_sam_config",
    "load_sam",
    "read_sam_state_dict",
    "resolve_device",
]

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

# (encoder width, depth, heads) of Meta's published encoders
SAM_ARCHITECTURES = {"vit_b": (768, 12, 12), "vit_l": (1024, 24, 16), "vit_h": (1280, 32, 16)}

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar", ".pkl")


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: unreadable, not SAM, unsafe, or not the expected model."""


@dataclass(frozen=True)
class SamConfig:
    """Everything needed to build a segment-anything ``Sam`` for a state dict.

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
    prompt_dim : int
        Width of the encoder neck, the prompt encoder and the mask decoder.
    mask_in_chans : int
        Hidden channels of the mask-prompt encoder.
    decoder_depth, decoder_mlp_dim, decoder_heads, decoder_downsample_rate : int
        Two-way transformer of the mask decoder. The heads are not visible in the
        weights: see :func:`infer_sam_config`.
    num_multimask_outputs, iou_head_depth, iou_head_hidden_dim : int
        Mask decoder outputs and IoU prediction head.
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
    prompt_dim: int
    mask_in_chans: int
    decoder_depth: int
    decoder_mlp_dim: int
    decoder_heads: int
    decoder_downsample_rate: int
    num_multimask_outputs: int
    iou_head_depth: int
    iou_head_hidden_dim: int

    @property
    def arch(self) -> str:
        """``"vit_b"``, ``"vit_l"`` or ``"vit_h"`` for Meta's encoder sizes, else ``"custom"``."""
        key = (self.encoder_dim, self.encoder_depth, self.encoder_heads)
        return next((name for name, dims in SAM_ARCHITECTURES.items() if dims == key), "custom")


def _count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of consecutive numbered submodules ``prefix.0``, ``prefix.1``, ..."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    indexes = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    n = 0
    while n in indexes:
        n += 1
    return n


def _decoder_heads(dim: int, internal_dim: int) -> int:
    # SAM's decoder is 256 wide with 8 heads; tiny_sam's (narrower) have 2. Fall back
    # to fewer heads where that number does not divide the attention widths.
    heads = 8 if dim >= 256 else 2
    while heads > 1 and (dim % heads or internal_dim % heads):
        heads //= 2
    return heads


def infer_sam_config(state_dict: Mapping[str, torch.Tensor]) -> SamConfig:
    """Read a SAM architecture off the tensor shapes of a state dict.

    Encoder width and patch size come from ``patch_embed.proj.weight``, the
    image size from the ``pos_embed`` grid times the patch size, the depth from
    the number of blocks, the head width from ``rel_pos_h`` (heads = width /
    head width), and the window size and global-attention blocks from
    ``rel_pos_h``'s length: ``2 * window - 1`` for windowed blocks,
    ``2 * grid - 1`` for global ones. The decoder's attention heads leave no
    trace in the weights; the rule is SAM's 8 heads for decoders 256 or more
    channels wide and 2 heads for narrower ones (as in
    :func:`napari_samrefine.testing.tiny_sam`), halved until they divide the
    attention widths. LayerNorm epsilons and pixel statistics are SAM's.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
        Keys as in segment-anything's ``Sam.state_dict()``.

    Returns
    -------
    SamConfig

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

    def get(key: str) -> torch.Tensor:
        try:
            return state_dict[key]
        except KeyError:
            raise CheckpointError(
                f"Not a SAM checkpoint that segment-anything can build: tensor {key!r} is missing."
            ) from None

    enc = "image_encoder."
    proj = get(enc + "patch_embed.proj.weight")  # (dim, 3, p, p)
    encoder_dim, patch_size = int(proj.shape[0]), int(proj.shape[-1])
    grid = int(get(enc + "pos_embed").shape[1])
    depth = _count(state_dict, enc + "blocks")
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

    prompt_dim = int(get(enc + "neck.0.weight").shape[0])
    dec = "mask_decoder.transformer."
    decoder_depth = _count(state_dict, dec + "layers")
    internal_dim = int(get(dec + "final_attn_token_to_image.q_proj.weight").shape[0])
    iou = "mask_decoder.iou_prediction_head.layers"
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
        prompt_dim=prompt_dim,
        mask_in_chans=int(get("prompt_encoder.mask_downscaling.3.weight").shape[0]),
        decoder_depth=decoder_depth,
        decoder_mlp_dim=int(get(dec + "layers.0.mlp.lin1.weight").shape[0]),
        decoder_heads=_decoder_heads(prompt_dim, internal_dim),
        decoder_downsample_rate=max(prompt_dim // max(internal_dim, 1), 1),
        num_multimask_outputs=int(get("mask_decoder.mask_tokens.weight").shape[0]) - 1,
        iou_head_depth=_count(state_dict, iou),
        iou_head_hidden_dim=int(get(iou + ".0.weight").shape[0]),
    )


def _build(config: SamConfig) -> Sam:
    grid = config.image_size // config.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
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
        ),
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


def build_sam(config: SamConfig, state_dict: Mapping[str, torch.Tensor] | None = None) -> Sam:
    """Build a segment-anything ``Sam`` of ``config``, with the weights of ``state_dict``.

    Parameters
    ----------
    config : SamConfig
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
    with torch.device("meta"):  # no random initialisation, no second copy of the weights
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
    sam.load_state_dict(weights, strict=True, assign=True)
    # the only buffers outside the state dict (persistent=False)
    sam.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), False)
    sam.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), False)
    left = [n for n, t in [*sam.named_parameters(), *sam.named_buffers()] if t.is_meta]
    if left:  # a segment-anything version with other non-persistent buffers
        raise RuntimeError(f"Tensors left unset after loading: {left}")
    return sam.eval()


def _torch_load(path: Path, weights_only: bool):
    return torch.load(path, map_location="cpu", weights_only=weights_only)


def _unreadable(path: Path, err: BaseException) -> CheckpointError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return CheckpointError(
        f"Cannot read {path} as a PyTorch checkpoint: the file is truncated, corrupted or "
        f"not a checkpoint ({first[:200]}). Download or copy it again."
    )


def _extract_state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a SAM state dict.")
    for key in ("model_state", "state_dict", "model"):  # micro-sam, lightning, generic wrappers
        inner = obj.get(key)
        if isinstance(inner, torch.nn.Module):
            inner = inner.state_dict()
        if isinstance(inner, Mapping):
            obj = inner
            break
    state = {}
    for key, value in obj.items():
        if not (isinstance(key, str) and isinstance(value, torch.Tensor)):
            continue
        for prefix in ("module.", "sam."):  # DistributedDataParallel, micro-sam's trainer
            if key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = value
    if "image_encoder.patch_embed.proj.weight" not in state:
        sample = ", ".join(list(state)[:4]) or "no tensors"
        raise CheckpointError(
            f"{path} is not a SAM checkpoint: it has no 'image_encoder.patch_embed.proj.weight' "
            f"(found {sample}). Pass a segment-anything or micro-sam checkpoint."
        )
    return state


def read_sam_state_dict(
    path: str | os.PathLike, *, trusted: bool = False, allow_unsafe_pickle: bool = False
) -> dict[str, torch.Tensor]:
    """Read the SAM weights of a checkpoint file, safely.

    The file is read with ``torch.load(weights_only=True)``. Only if that refuses
    the file because it holds other Python objects (a training config, ...) is it
    unpickled without that guard, and only when the file is ``trusted`` (its hash
    is in the registry) or the user opted in with ``allow_unsafe_pickle``.

    Supported layouts: a plain ``Sam`` state dict (Meta); a dict with
    ``model_state`` (micro-sam), ``state_dict`` or ``model``; keys may carry
    ``module.`` and/or ``sam.`` prefixes, which are stripped; non-tensor entries
    are ignored.

    Parameters
    ----------
    path : path-like
        The checkpoint.
    trusted : bool
        The file's hash matched a registry entry.
    allow_unsafe_pickle : bool
        Allow unpickling arbitrary objects from an untrusted file.

    Returns
    -------
    dict of str to torch.Tensor
        On the CPU, keys as in ``Sam.state_dict()``.

    Raises
    ------
    CheckpointError
        For a truncated or corrupted file, an untrusted file that needs unsafe
        unpickling, or a file without SAM weights.
    """
    path = Path(path)
    try:
        obj = _torch_load(path, weights_only=True)
    except Exception as err:
        message = str(err)
        if not (isinstance(err, pickle.UnpicklingError) and "Unsupported global" in message):
            raise _unreadable(path, err) from err
        if not (trusted or allow_unsafe_pickle):
            found = sorted(set(re.findall(r"GLOBAL (\S+) was not an allowed global", message)))
            raise CheckpointError(
                f"{path} holds Python objects besides tensors ({', '.join(found) or 'unknown'}), "
                "which the safe loader torch.load(weights_only=True) refuses: unpickling them can "
                "run arbitrary code. The file's hash matches no registered model. If you trust "
                "its source, pass allow_unsafe_pickle=True (CLI: --allow-unsafe-pickle); or "
                "re-save its weights as a plain state dict with torch.save."
            ) from err
        try:
            obj = _torch_load(path, weights_only=False)
        except Exception as err2:
            raise _unreadable(path, err2) from err2
    return _extract_state_dict(obj, path)


def available_devices() -> list[str]:
    """Torch devices usable here, in the order ``device="auto"`` prefers them.

    Returns
    -------
    list of str
        ``"cuda:0"``, ``"cuda:1"``, ... if CUDA is available, then ``"mps"`` if
        Apple's Metal backend is, then ``"cpu"`` (always last).
    """
    devices = []
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return [*devices, "cpu"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Check a device request against the machine.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (the first of :func:`available_devices`), or e.g. ``"cpu"``,
        ``"cuda"``, ``"cuda:1"``, ``"mps"``.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If the device is malformed or not available; the message lists those available.
    """
    available = available_devices()
    if isinstance(device, str) and device == "auto":
        return torch.device(available[0])
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"{device!r} is not a device name. Use 'auto' or one of: {', '.join(available)}."
        ) from err
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()
    else:
        ok = dev.type in ("cpu", "mps") and dev.type in available or str(dev) in available
    if not ok:
        raise ValueError(
            f"Device {str(dev)!r} is not available on this machine. Available: "
            f"{', '.join(available)} (or 'auto')."
        )
    return dev


def _looks_like_path(model: str) -> bool:
    return "/" in model or "\\" in model or model.lower().endswith(_CHECKPOINT_SUFFIXES)


def _existing_file(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"Checkpoint file {str(p)!r} does not exist.")
    if not p.is_file():
        raise FileNotFoundError(f"Checkpoint {str(p)!r} is a folder, not a file.")
    return p.resolve()


def load_sam(
    model: str | os.PathLike = "vit_b_lm",
    *,
    device: str | torch.device = "auto",
    checkpoint: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    allow_unsafe_pickle: bool = False,
    progressbar: bool = True,
) -> Sam:
    """Load a SAM model from the registry or from a local checkpoint.

    Parameters
    ----------
    model : str or path-like
        A registry name (see :func:`~napari_samrefine.sam.registry.list_models`),
        downloaded on first use into the cache folder and checked against its
        xxh128 hash; or the path of a local checkpoint, whatever its file name.
        A string that is a registry name means the registry entry.
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU) or an available device, see
        :func:`available_devices`.
    checkpoint : path-like, optional
        A local file to use instead of downloading ``model`` (which must then be
        a registry name): its architecture must be the entry's.
    cache_dir : path-like, optional
        Download folder; default ``$NAPARI_SAMREFINE_CACHE`` or the user's cache.
    allow_unsafe_pickle : bool
        Let a file whose hash is not in the registry be unpickled beyond tensors
        when the safe loader refuses it. Only for files from a source you trust.
    progressbar : bool
        Show a download progress bar.

    Returns
    -------
    segment_anything.modeling.Sam
        In evaluation mode on the device, with a ``samrefine_info`` dict
        attribute: ``name`` (registry name, or the file name for an unregistered
        file), ``arch`` (``vit_b``/``vit_l``/``vit_h``/``custom``), ``checkpoint``
        (absolute path) and ``xxh128`` (the file's hash).

    Raises
    ------
    ValueError
        For an unknown model name or an unavailable device.
    FileNotFoundError
        For a checkpoint path that does not exist.
    ~napari_samrefine.sam.registry.ModelDownloadError
        When the download fails or does not match the registry's hash.
    CheckpointError
        For a truncated, corrupted, non-SAM or unsafe file, or a file whose
        architecture is not the registry entry's.

    Examples
    --------
    >>> sam = load_sam("vit_b_lm")  # doctest: +SKIP
    >>> sam = load_sam("/data/models/sam_vit_b_01ec64.pth", device="cpu")  # doctest: +SKIP
    >>> sam.samrefine_info["arch"]  # doctest: +SKIP
    'vit_b'
    """
    dev = resolve_device(device)
    entry: ModelEntry | None = None
    digest: str | None = None
    if checkpoint is not None:
        if not (isinstance(model, str) and model in list_models()):
            raise ValueError(
                f"checkpoint= needs model to be a registry name (the expected model), got {model!r}; "
                "to load a file, pass its path as model alone."
            )
        entry = get_model(model)
        path = _existing_file(checkpoint)
    elif isinstance(model, str) and model in list_models():
        entry = get_model(model)
        path = fetch_checkpoint(model, cache_dir=cache_dir, progressbar=progressbar).resolve()
        digest = entry.xxh128  # pooch verified it
    elif isinstance(model, os.PathLike) or (isinstance(model, str) and _looks_like_path(model)):
        path = _existing_file(model)
    elif isinstance(model, str) and Path(model).expanduser().is_file():
        path = _existing_file(model)
    else:
        raise ValueError(
            f"Unknown model {model!r}: neither a registered name nor an existing file. "
            f"Registered models: {', '.join(list_models())}. A local checkpoint file also works: "
            "load_sam('/path/to/sam_vit_b_01ec64.pth')."
        )

    if digest is None:
        digest = pooch.file_hash(str(path), alg="xxh128")
    match = find_model_by_hash(digest)
    state = read_sam_state_dict(
        path, trusted=match is not None, allow_unsafe_pickle=allow_unsafe_pickle
    )
    config = infer_sam_config(state)
    expected = entry or match
    if expected is not None and config.arch != expected.arch:
        raise CheckpointError(
            f"{path} holds a {config.arch} SAM (encoder width {config.encoder_dim}, "
            f"depth {config.encoder_depth}), but model {expected.name!r} is a {expected.arch}. "
            f"Pass the right file, or pass the file alone to load it as it is."
        )
    sam = build_sam(config, state).to(dev).eval()
    name = match.name if match is not None else path.name
    sam.samrefine_info = {
        "name": name,
        "arch": config.arch,
        "checkpoint": str(path),
        "xxh128": digest,
    }
    return sam
