"""Load a SAM checkpoint onto a device, its architecture read off the weights, once per process.

:func:`load_sam` takes a registry name (downloaded and hash-checked by
:mod:`~napari_samrefine.models.registry`, or found inside an installed package) or
the path of a local checkpoint of any file name. The file is read with
``torch.load(weights_only=True)``; the architecture (ViT or TinyViT encoder,
image size, decoder ...) is inferred from tensor shapes by
:func:`~napari_samrefine.models.architecture.infer_sam_config`, so Meta's
ViT-B/L/H, micro-sam's fine-tuned models, MobileSAM, LiteMedSAM and small test
models all load through the same code, without a model-type argument. Loaded
models are kept in the process-wide cache (:mod:`~napari_samrefine.models.cache`)
under the file's content hash; what is known about a model (its
:class:`~napari_samrefine.models.profile.ModelProfile`, source, encoder path) is
read with :func:`~napari_samrefine.models.info.model_info`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from segment_anything.modeling import Sam

from napari_samrefine.models.architecture import CheckpointError, build_sam, infer_sam_config
from napari_samrefine.models.cache import cached_model
from napari_samrefine.models.checkpoint import (
    CHECKPOINT_SUFFIXES,
    checkpoint_digest,
    read_sam_state_dict,
)
from napari_samrefine.models.device import resolve_device
from napari_samrefine.models.download import fetch_checkpoint
from napari_samrefine.models.fast_encoder import (
    FAST_ENCODER_DEFAULTS,
    enable_fast_encoder,
    fast_encoder_key,
)
from napari_samrefine.models.finetune_file import apply_finetune
from napari_samrefine.models.info import tensor_signature
from napari_samrefine.models.profile import (
    BOX_ONLY_MINMAX_PROFILE,
    SAM_PROFILE,
    ModelProfile,
    model_profile,
    set_model_profile,
)
from napari_samrefine.models.registry import ModelEntry, find_model_by_hash, get_model, list_models
from napari_samrefine.models.source import ModelSource, model_source, set_model_source

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


def _what_to_load(model, checkpoint) -> tuple[ModelEntry | None, Path | None]:
    """(registry entry or None, local file or None: a registry name is fetched on a miss)."""
    if checkpoint is not None:
        if not (isinstance(model, str) and model in list_models()):
            raise ValueError(
                f"checkpoint= needs model to be a registry name (the expected model), got {model!r}; "
                "to load a file, pass its path as model alone."
            )
        return get_model(model), _existing_file(checkpoint)
    if isinstance(model, str) and model in list_models():
        return get_model(model), None
    if isinstance(model, os.PathLike) or (isinstance(model, str) and _looks_like_path(model)):
        return None, _existing_file(model)
    if isinstance(model, str) and Path(model).expanduser().is_file():
        return None, _existing_file(model)
    raise ValueError(
        f"Unknown model {model!r}: neither a registered name nor an existing file. "
        f"Registered models: {', '.join(list_models())}. A local checkpoint file also works: "
        "load_sam('/path/to/sam_vit_b_01ec64.pth')."
    )


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda" and dev.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(dev)


def _check_arch(arch: str, expected: ModelEntry | None, path, what: str = "") -> None:
    if expected is not None and arch != expected.arch:
        raise CheckpointError(
            f"{path} holds a {arch} SAM{what}, but model {expected.name!r} is a {expected.arch}. "
            f"Pass the right file, or pass the file alone to load it as it is."
        )


def _state(sam: Sam) -> tuple:
    """What must be as it was loaded for a cached model to be handed out again."""
    tensors = tensor_signature([*sam.named_parameters(), *sam.named_buffers()])
    return tensors, sam.training, fast_encoder_key(sam), model_profile(sam), model_source(sam)


def _read(
    path: Path,
    digest: str,
    dev: torch.device,
    entry: ModelEntry | None,
    profile: ModelProfile | None,
    fast_encoder: bool,
    allow_unsafe_pickle: bool,
) -> Sam:
    """Read, check and build the model of one file; record its facts."""
    match = find_model_by_hash(digest)
    state = read_sam_state_dict(
        path, trusted=match is not None, allow_unsafe_pickle=allow_unsafe_pickle
    )
    config = infer_sam_config(state)
    what = f" ({type(config).__name__}, input {config.image_size} px)"
    _check_arch(config.arch, entry or match, path, what)
    sam = build_sam(config, state).to(dev).eval()
    if fast_encoder:
        enable_fast_encoder(sam, **FAST_ENCODER_DEFAULTS)
    if profile is None:
        if match is not None:
            profile = match.profile
        else:
            profile = BOX_ONLY_MINMAX_PROFILE if config.arch == "lite_medsam" else SAM_PROFILE
    set_model_profile(sam, profile)
    name = match.name if match is not None else path.name
    set_model_source(sam, ModelSource(name, config.arch, str(path), digest))
    return sam


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
    finetune: str | os.PathLike | None = None,
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
        (:data:`~napari_samrefine.models.fast_encoder.FAST_ENCODER_DEFAULTS`:
        fused attention, equal to the stock encoder to float rounding); False
        keeps segment-anything's stock encoder. See
        :func:`~napari_samrefine.models.fast_encoder.enable_fast_encoder`.
    finetune : path-like, optional
        A taught model's file (:func:`~napari_samrefine.teach.finetune.finetune`):
        the model returned is ``model`` with the file's prompt encoder and mask
        decoder, sharing ``model``'s image encoder (and so its embeddings); see
        :func:`~napari_samrefine.models.finetune_file.apply_finetune`. A file
        taught from another base model is refused with a message naming it.

    Returns
    -------
    segment_anything.modeling.Sam
        In evaluation mode on the device. What is known about it (registry or
        file name, architecture, checkpoint path and hash, profile, encoder
        path) is read with :func:`~napari_samrefine.models.info.model_info`.
        The model is loaded once per process (:mod:`~napari_samrefine.models.cache`):
        a later call for a file of the same content (at any path), device,
        ``fast_encoder``, ``profile`` and ``allow_unsafe_pickle`` returns the
        same object without reading the file, unless the model was changed
        meanwhile (moved, weights changed, another profile): then the file is
        read again. Its ``checkpoint`` is the file that was read.

    Notes
    -----
    A registry model already in memory is returned without touching the cache
    folder or the network; a local file is hashed once while it is unchanged
    (its size and times are checked at each call).

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
    >>> from napari_samrefine.models.info import model_info
    >>> model_info(sam).arch  # doctest: +SKIP
    'vit_b'
    """
    dev = resolve_device(device)
    entry, path = _what_to_load(model, checkpoint)
    # a registry name's hash is known before any download; a local file is hashed
    digest = entry.xxh128 if path is None else checkpoint_digest(path)
    if profile is None and entry is not None:
        profile = entry.profile
    key = ("sam", digest, _device_name(dev), bool(fast_encoder), bool(allow_unsafe_pickle), profile)

    def load() -> Sam:
        if path is None:  # verified: pooch's xxh128, or a packaged file's SHA-256
            file = fetch_checkpoint(model, cache_dir=cache_dir, progressbar=progressbar).resolve()
        else:
            file = path
        return _read(file, digest, dev, entry, profile, fast_encoder, allow_unsafe_pickle)

    sam = cached_model(key, load, stamp=_state)
    source = model_source(sam)
    _check_arch(source.arch, entry, path or source.checkpoint)  # the file was loaded as another
    if finetune is None:
        return sam
    taught = Path(finetune)
    if not taught.is_file():
        raise FileNotFoundError(f"No taught-model file at {taught} (finetune=).")
    base = sam
    return cached_model(("finetune", key, checkpoint_digest(taught)),
                        lambda: apply_finetune(base, taught), stamp=_state)


def resolve_sam(sam, device: str = "auto") -> Sam:
    """A ``Sam`` model: ``sam`` itself, or the model a registry name or checkpoint path loads.

    Every public function that takes a model (refine, the judge, adaption)
    accepts a loaded model, a registry name or a checkpoint path through this;
    names and paths go through :func:`load_sam` and its process-wide cache, so
    each file is read once per process.

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
