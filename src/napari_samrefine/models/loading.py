"""Load a SAM checkpoint onto a device, its architecture read off the weights.

:func:`load_sam` takes a registry name (downloaded and hash-checked by
:mod:`~napari_samrefine.models.registry`, or found inside an installed package) or
the path of a local checkpoint of any file name. The file is read with
``torch.load(weights_only=True)``; the architecture (ViT or TinyViT encoder,
image size, decoder ...) is inferred from tensor shapes by
:func:`~napari_samrefine.models.architecture.infer_sam_config`, so Meta's
ViT-B/L/H, micro-sam's fine-tuned models, MobileSAM, LiteMedSAM and small test
models all load through the same code, without a model-type argument. The
loaded model carries its :class:`~napari_samrefine.models.profile.ModelProfile`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pooch
import torch
from segment_anything.modeling import Sam

from napari_samrefine.engine.fast_encoder import FAST_ENCODER_DEFAULTS, enable_fast_encoder
from napari_samrefine.models.architecture import CheckpointError, build_sam, infer_sam_config
from napari_samrefine.models.checkpoint import CHECKPOINT_SUFFIXES, read_sam_state_dict
from napari_samrefine.models.device import resolve_device
from napari_samrefine.models.download import fetch_checkpoint
from napari_samrefine.models.profile import BOX_ONLY_MINMAX_PROFILE, SAM_PROFILE, ModelProfile
from napari_samrefine.models.registry import ModelEntry, find_model_by_hash, get_model, list_models

__all__ = ["CheckpointError", "load_sam", "resolve_sam"]

def _looks_like_path(model: str) -> bool:
    return "/" in model or "\\" in model or model.lower().endswith(CHECKPOINT_SUFFIXES)


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
    profile: ModelProfile | None = None,
    fast_encoder: bool = True,
) -> Sam:
    """Load a SAM model from the registry or from a local checkpoint.

    Parameters
    ----------
    model : str or path-like
        A registry name (see :func:`~napari_samrefine.models.registry.list_models`),
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
    profile : ModelProfile, optional
        Override the model's profile (normalisation, prompt kinds, IoU head).
        Default: the registry entry's for a registered model or a file whose
        hash is registered; LiteMedSAM's for an unregistered LiteMedSAM-layout
        file; SAM's otherwise.
    fast_encoder : bool
        Run the image encoder through the fast path with the same weights
        (:data:`~napari_samrefine.engine.fast_encoder.FAST_ENCODER_DEFAULTS`:
        fused attention, equal to the stock encoder to float rounding); False
        keeps segment-anything's stock encoder. See
        :func:`~napari_samrefine.engine.fast_encoder.enable_fast_encoder`.

    Returns
    -------
    segment_anything.modeling.Sam
        In evaluation mode on the device, with a ``samrefine_info`` dict
        attribute: ``name`` (registry name, or the file name for an unregistered
        file), ``arch`` (``vit_b``/``vit_l``/``vit_h``/``vit_t``/``lite_medsam``/
        ``custom``), ``checkpoint`` (absolute path) and ``xxh128`` (the file's
        hash); and a ``samrefine_profile`` attribute (see
        :func:`~napari_samrefine.models.profile.model_profile`).

    Raises
    ------
    ValueError
        For an unknown model name or an unavailable device.
    ModuleNotFoundError
        For a TinyViT model when MobileSAM's encoder code is not installed
        (the message names the ``tinyvit`` extra).
    FileNotFoundError
        For a checkpoint path that does not exist.
    ~napari_samrefine.models.download.ModelDownloadError
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
        digest = entry.xxh128  # verified: pooch's xxh128, or a packaged file's SHA-256
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
            f"{path} holds a {config.arch} SAM ({type(config).__name__}, input "
            f"{config.image_size} px), but model {expected.name!r} is a {expected.arch}. "
            f"Pass the right file, or pass the file alone to load it as it is."
        )
    sam = build_sam(config, state).to(dev).eval()
    if fast_encoder:
        enable_fast_encoder(sam, **FAST_ENCODER_DEFAULTS)
    if profile is None:
        if expected is not None:
            profile = expected.profile
        else:
            profile = BOX_ONLY_MINMAX_PROFILE if config.arch == "lite_medsam" else SAM_PROFILE
    sam.samrefine_profile = profile
    name = match.name if match is not None else path.name
    sam.samrefine_info = {
        "name": name,
        "arch": config.arch,
        "checkpoint": str(path),
        "xxh128": digest,
    }
    return sam


def resolve_sam(sam, device: str = "auto") -> Sam:
    """A ``Sam`` model: ``sam`` itself, or the model a registry name or checkpoint path loads.

    Every public function that takes a model (refine, the judge, adaption)
    accepts a loaded model, a registry name or a checkpoint path through this.

    Raises
    ------
    TypeError
        For anything else, naming what was given.
    """
    if isinstance(sam, (str, os.PathLike)):
        return load_sam(sam, device=device)
    if sam is None or not hasattr(sam, "mask_decoder"):
        raise TypeError(
            f"sam must be a segment_anything Sam model, a registry name or a checkpoint path; "
            f"got {type(sam).__name__}."
        )
    return sam
